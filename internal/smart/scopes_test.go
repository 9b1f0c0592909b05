package smart

import (
	"slices"
	"strings"
	"testing"
)

func TestGrantScopes(t *testing.T) {
	star := []string{"system/*.rs"}
	tests := []struct {
		name      string
		requested string
		allowed   []string
		want      []string // nil: want invalid_scope
		wantErr   string
	}{
		// The SMART Bulk Data test suite (BDT,
		// github.com/smart-on-fhir/bulk-data-tests) requires these to succeed.
		{name: "BDT v1 wildcard read", requested: "system/*.read", allowed: star, want: []string{"system/*.read"}},
		{name: "BDT v2 wildcard rs", requested: "system/*.rs", allowed: star, want: []string{"system/*.rs"}},
		{name: "BDT mixed v1 and v2", requested: "system/Patient.read system/Observation.rs", allowed: star, want: []string{"system/Patient.read", "system/Observation.rs"}},
		// BDT requires these to fail with invalid_scope.
		{name: "BDT empty", requested: "", allowed: star, wantErr: "required"},
		{name: "BDT blank", requested: "   ", allowed: star, wantErr: "required"},
		{name: "BDT launch fhirUser", requested: "launch fhirUser", allowed: star, wantErr: `"launch": not a system/ scope`},
		{name: "BDT unknownAction", requested: "system/Patient.unknownAction", allowed: star, wantErr: "unknown or out-of-order action"},
		{name: "BDT xyz", requested: "system/Patient.xyz", allowed: star, wantErr: "unknown or out-of-order action"},
		{name: "BDT UnknownResource.read", requested: "system/UnknownResource.read", allowed: star, wantErr: "unknown resource type"},
		{name: "BDT UnknownResource.r", requested: "system/UnknownResource.r", allowed: star, wantErr: "unknown resource type"},
		{name: "BDT write", requested: "system/Patient.write", allowed: star, wantErr: "needs read and search"},
		{name: "BDT c", requested: "system/Patient.c", allowed: star, wantErr: "needs read and search"},
		{name: "BDT cu", requested: "system/Patient.cu", allowed: star, wantErr: "needs read and search"},
		{name: "BDT cd", requested: "system/Patient.cd", allowed: star, wantErr: "needs read and search"},
		{name: "BDT cud", requested: "system/Patient.cud", allowed: star, wantErr: "needs read and search"},
		{name: "BDT ud", requested: "system/Patient.ud", allowed: star, wantErr: "needs read and search"},
		{name: "BDT d", requested: "system/Patient.d", allowed: star, wantErr: "needs read and search"},
		{name: "BDT u", requested: "system/Patient.u", allowed: star, wantErr: "needs read and search"},
		// BDT accepts success without write, or invalid_scope. We downgrade
		// to the read part, and reject constraints.
		{name: "BDT v1 star star", requested: "system/*.*", allowed: star, want: []string{"system/*.read"}},
		{name: "BDT v1 Patient star", requested: "system/Patient.*", allowed: star, want: []string{"system/Patient.read"}},
		{name: "BDT v2 star cruds", requested: "system/*.cruds", allowed: star, want: []string{"system/*.rs"}},
		{name: "BDT v2 Patient cruds", requested: "system/Patient.cruds", allowed: star, want: []string{"system/Patient.rs"}},
		{name: "BDT constraint", requested: "system/Patient.rs?a=b", allowed: star, wantErr: "?param constraints"},

		// Other contexts and syntax.
		{name: "user scope", requested: "user/*.read", allowed: star, wantErr: "only system/ scopes"},
		{name: "patient scope", requested: "patient/Patient.rs", allowed: star, wantErr: "only system/ scopes"},
		{name: "openid", requested: "openid system/*.rs", allowed: star, wantErr: `"openid": not a system/ scope`},
		{name: "out of order", requested: "system/Patient.sr", allowed: star, wantErr: "out-of-order"},
		{name: "repeated letter", requested: "system/Patient.rrs", allowed: star, wantErr: "out-of-order"},
		{name: "read without search", requested: "system/Patient.r", allowed: star, wantErr: "needs read and search"},
		{name: "search without read", requested: "system/Patient.s", allowed: star, wantErr: "needs read and search"},
		{name: "rud has no full read part", requested: "system/Patient.rud", allowed: star, wantErr: "needs read and search"},
		{name: "no action", requested: "system/Patient", allowed: star, wantErr: "want system/<Type|*>.<action>"},
		{name: "empty type", requested: "system/.rs", allowed: star, wantErr: "want system/<Type|*>.<action>"},
		{name: "lower-case type", requested: "system/patient.rs", allowed: star, wantErr: "unknown resource type"},
		{name: "one bad token fails all", requested: "system/*.rs system/Patient.write", allowed: star, wantErr: "needs read and search"},
		{name: "too many", requested: strings.Repeat("system/*.rs ", maxScopeTokens+1), allowed: star, wantErr: "too many"},

		// requested ∩ allowed.
		{name: "v2 covered by v1 allowed", requested: "system/Patient.rs", allowed: []string{"system/*.read"}, want: []string{"system/Patient.rs"}},
		{name: "v1 covered by v2 allowed", requested: "system/Patient.read", allowed: []string{"system/Patient.rs"}, want: []string{"system/Patient.read"}},
		{name: "covered by cruds allowed", requested: "system/Patient.rs", allowed: []string{"system/*.cruds"}, want: []string{"system/Patient.rs"}},
		{name: "not covered by write-only allowed", requested: "system/Patient.rs", allowed: []string{"system/*.write"}, wantErr: "none of the requested scopes"},
		{name: "outside the allowed set", requested: "system/Condition.rs", allowed: []string{"system/Patient.rs"}, wantErr: "none of the requested scopes"},
		{name: "partly outside", requested: "system/Patient.rs system/Condition.rs", allowed: []string{"system/Patient.rs"}, want: []string{"system/Patient.rs"}},
		{name: "wildcard narrowed to allowed types", requested: "system/*.rs", allowed: []string{"system/Patient.rs", "system/Observation.read", "system/Condition.write"}, want: []string{"system/Patient.rs", "system/Observation.rs"}},
		{name: "v1 wildcard narrowed stays v1", requested: "system/*.read", allowed: []string{"system/Patient.rs"}, want: []string{"system/Patient.read"}},
		{name: "duplicates removed", requested: "system/*.rs system/*.rs system/*.cruds", allowed: star, want: []string{"system/*.rs"}},
		{name: "tabs and newlines separate", requested: "system/Patient.rs\tsystem/Group.rs\n", allowed: star, want: []string{"system/Patient.rs", "system/Group.rs"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := GrantScopes(tc.requested, tc.allowed)
			if tc.wantErr != "" {
				wantOAuth(t, err, CodeInvalidScope, tc.wantErr)
				if got != nil {
					t.Fatalf("granted %q with an error", got)
				}
				return
			}
			if err != nil {
				t.Fatalf("GrantScopes: %v", err)
			}
			if !slices.Equal(got, tc.want) {
				t.Fatalf("granted %q, want %q", got, tc.want)
			}
		})
	}
}

func TestGrantScopesBadAllowed(t *testing.T) {
	_, err := GrantScopes("system/*.rs", []string{"system/Nope.rs"})
	if err == nil || !strings.Contains(err.Error(), "allowed scope") {
		t.Fatalf("err = %v, want an error naming the bad allowed scope", err)
	}
}

func TestParseScopes(t *testing.T) {
	tests := []struct {
		granted string
		all     bool
		types   []string // when !all
		allows  []string
		denies  []string
		wantErr bool
	}{
		{granted: "system/*.rs", all: true, allows: []string{"Patient", "Observation"}, denies: []string{"NotAType", "", "*"}},
		{granted: "system/*.read", all: true, allows: []string{"Group"}},
		{granted: "system/Patient.read system/Observation.rs", types: []string{"Observation", "Patient"}, allows: []string{"Patient", "Observation"}, denies: []string{"Condition", "*"}},
		{granted: "system/Patient.rs system/Patient.read", types: []string{"Patient"}, allows: []string{"Patient"}},
		{granted: "system/Patient.write system/Condition.r", types: nil, denies: []string{"Patient", "Condition"}},
		{granted: "", types: nil, denies: []string{"Patient"}},
		{granted: "system/Nope.rs", wantErr: true},
		{granted: "system/Patient.rs?x=y", wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.granted, func(t *testing.T) {
			s, err := ParseScopes(tc.granted)
			if tc.wantErr {
				wantOAuth(t, err, CodeInvalidScope, "")
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if s.All() != tc.all {
				t.Errorf("All() = %v, want %v", s.All(), tc.all)
			}
			if !tc.all && !slices.Equal(s.Types(), tc.types) {
				t.Errorf("Types() = %q, want %q", s.Types(), tc.types)
			}
			if tc.all && len(s.Types()) < 100 {
				t.Errorf("Types() has %d types, want every R4 type", len(s.Types()))
			}
			for _, ty := range tc.allows {
				if !s.Allows(ty) {
					t.Errorf("Allows(%q) = false, want true", ty)
				}
			}
			for _, ty := range tc.denies {
				if s.Allows(ty) {
					t.Errorf("Allows(%q) = true, want false", ty)
				}
			}
			if got, want := s.String(), strings.Join(strings.Fields(tc.granted), " "); got != want {
				t.Errorf("String() = %q, want %q", got, want)
			}
		})
	}
	var zero Scopes
	if zero.Allows("Patient") || zero.All() {
		t.Error("zero Scopes allows something")
	}
}

// TestScopesIntersect: a token's scopes narrowed to its client's current
// registry entry.
func TestScopesIntersect(t *testing.T) {
	tests := []struct {
		token, registry string
		all             bool
		types           []string
		str             string
	}{
		{token: "system/*.rs", registry: "system/*.read", all: true, str: "system/*.rs"},
		{token: "system/*.rs", registry: "system/Patient.rs system/Group.read", types: []string{"Group", "Patient"}, str: "system/Group.rs system/Patient.rs"},
		{token: "system/Patient.rs system/Observation.rs", registry: "system/*.rs", types: []string{"Observation", "Patient"}, str: "system/Patient.rs system/Observation.rs"},
		{token: "system/Patient.rs system/Observation.rs", registry: "system/Patient.rs", types: []string{"Patient"}, str: "system/Patient.rs"},
		{token: "system/Patient.read", registry: "system/Patient.rs system/Condition.rs", types: []string{"Patient"}, str: "system/Patient.read"},
		{token: "system/Observation.rs", registry: "system/Patient.rs system/Observation.write", types: nil, str: ""},
	}
	for _, tc := range tests {
		t.Run(tc.token+" ∩ "+tc.registry, func(t *testing.T) {
			tok, err := ParseScopes(tc.token)
			if err != nil {
				t.Fatal(err)
			}
			reg, err := readScopes(strings.Fields(tc.registry))
			if err != nil {
				t.Fatal(err)
			}
			got := tok.Intersect(reg)
			if got.All() != tc.all || !tc.all && !slices.Equal(got.Types(), tc.types) {
				t.Errorf("= all %v types %q, want all %v types %q", got.All(), got.Types(), tc.all, tc.types)
			}
			if got.Empty() != (!tc.all && len(tc.types) == 0) {
				t.Errorf("Empty() = %v", got.Empty())
			}
			if got.String() != tc.str {
				t.Errorf("String() = %q, want %q", got.String(), tc.str)
			}
		})
	}
}

// FuzzGrantScopes checks GrantScopes never panics and never grants
// anything but read+search scopes covered by the allowed set.
func FuzzGrantScopes(f *testing.F) {
	for _, s := range []string{
		"", "system/*.read", "system/*.rs", "system/Patient.read system/Observation.rs", "launch fhirUser",
		"system/Patient.unknownAction", "system/UnknownResource.r", "system/Patient.cud", "system/*.*",
		"system/*.cruds", "system/Patient.rs?a=b", "user/*.read", "system/Patient.", "system/.", "system/*.rs\x00",
	} {
		f.Add(s, "system/Patient.rs system/Observation.read")
		f.Add(s, "system/*.rs")
	}
	f.Fuzz(func(t *testing.T, requested, allowedStr string) {
		var allowed []string
		for _, a := range strings.Fields(allowedStr) {
			if _, err := parseScope(a); err == nil {
				allowed = append(allowed, a)
			}
		}
		granted, err := GrantScopes(requested, allowed)
		if err != nil {
			if granted != nil {
				t.Fatalf("granted %q with error %v", granted, err)
			}
			return
		}
		if len(granted) == 0 {
			t.Fatal("success with nothing granted")
		}
		for _, g := range granted {
			s, err := parseScope(g)
			if err != nil {
				t.Fatalf("granted unparseable %q: %v", g, err)
			}
			if s.perms != permRead {
				t.Fatalf("granted %q with permissions %05b, want read+search only", g, s.perms)
			}
			covered := false
			for _, a := range allowed {
				as, _ := parseScope(a)
				covered = covered || as.covers(s)
			}
			if !covered {
				t.Fatalf("granted %q not covered by allowed %q", g, allowed)
			}
		}
		if _, err := ParseScopes(strings.Join(granted, " ")); err != nil {
			t.Fatalf("ParseScopes(granted): %v", err)
		}
	})
}
