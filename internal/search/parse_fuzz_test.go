package search

import (
	"errors"
	"net/url"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/bulkstream/bulkstream/internal/fhir"
)

// parseSeeds are queries for the fuzzers' corpora: accepted and refused.
var parseSeeds = []string{
	"Observation?category=laboratory",
	"Observation?code=http://loinc.org|8867-4,|1234&status:not=final",
	"Observation?code=http%3A%2F%2Floinc.org%7C8867-4&status=final%2Camended",
	`Observation?code=s\|x|c\$d,a\\,b\,c`,
	"Observation?date=ge2024-01-01T00:00:00+01:00&date=lt2024-03",
	"Encounter?date=sa2024-03-05T10:20&_lastUpdated=ap2024",
	"Observation?subject=Patient/1,https://x.org/fhir/Patient/2/_history/3,7&subject:missing=false",
	"Patient?name=Müller&family:exact=Ø&address:contains=x+y&active=true",
	"Observation?_profile=http://hl7.org/fhir/StructureDefinition/vitalsigns&_tag=a|b",
	"Observation?foo=1",
	"Observation?subject:Patient.name=x",
	"Observation?_include=Observation:subject",
	"Observation?value-quantity=5",
	"Observation?date=2024-13",
	"Observation?code=%zz",
	"Observation?",
	"?x=1",
}

// FuzzParseQuery: ParseQuery never panics; a refusal is a complete *Error
// whose message names the parameter; an accepted query keeps the
// invariants of Query and parses the same again, from its Raw and from a
// re-encoding of its parameters.
func FuzzParseQuery(f *testing.F) {
	for _, s := range parseSeeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, q string) {
		got, err := ParseQuery(q)
		if err != nil {
			var e *Error
			if !errors.As(err, &e) || e.Query != q || e.Msg == "" {
				t.Fatalf("ParseQuery(%q): %#v", q, err)
			}
			if code, _, _ := strings.Cut(e.Param, ":"); code != "" && show(code) == code && !strings.Contains(e.Msg, code) {
				t.Fatalf("ParseQuery(%q) = %q: does not name %q", q, e.Msg, e.Param)
			}
			if utf8.ValidString(q) && !utf8.ValidString(err.Error()) {
				t.Fatalf("ParseQuery(%q): message %q is not UTF-8", q, err.Error())
			}
			return
		}
		checkQueryInvariants(t, q, got)
		again, err := ParseQuery(got.Raw)
		if err != nil || !reflect.DeepEqual(again, got) {
			t.Fatalf("ParseQuery(%q) again from Raw: %+v, %v; first %+v", q, again, err, got)
		}
		// Re-encode every parameter from its Values' Raw and parse again:
		// the same parameters.
		enc := got.Type + "?" + encodeParams(got.Params)
		if len(enc) > MaxQueryBytes { // percent-encoding made it longer
			return
		}
		again, err = ParseQuery(enc)
		if err != nil {
			t.Fatalf("ParseQuery(%q), re-encoded from %q: %v", enc, q, err)
		}
		again.Raw = got.Raw
		if !reflect.DeepEqual(again, got) {
			t.Fatalf("ParseQuery(%q) re-encoded as %q:\n got %+v\nwant %+v", q, enc, again, got)
		}
	})
}

// encodeParams writes params back as a query string.
func encodeParams(params []Param) string {
	var b strings.Builder
	for i, p := range params {
		if i > 0 {
			b.WriteByte('&')
		}
		b.WriteString(url.QueryEscape(p.Name))
		b.WriteByte('=')
		if p.Modifier == "missing" {
			b.WriteString(map[bool]string{true: "true", false: "false"}[p.Missing])
			continue
		}
		raws := make([]string, len(p.Values))
		for j, v := range p.Values {
			raws[j] = v.Raw
		}
		b.WriteString(url.QueryEscape(strings.Join(raws, ",")))
	}
	return b.String()
}

func checkQueryInvariants(t *testing.T, q string, got Query) {
	t.Helper()
	if got.Raw != q || !fhir.IsResourceType(got.Type) || len(got.Params) == 0 || len(q) > MaxQueryBytes {
		t.Fatalf("ParseQuery(%q) = %+v", q, got)
	}
	n := 0
	for _, p := range got.Params {
		code, mod, _ := strings.Cut(p.Name, ":")
		if p.Def == nil || p.Def.Code != code || p.Def.Unsupported != "" || p.Modifier != mod {
			t.Fatalf("ParseQuery(%q): param %+v", q, p)
		}
		switch {
		case p.Modifier == "missing":
			n++
			if len(p.Values) != 0 {
				t.Fatalf("ParseQuery(%q): :missing with values: %+v", q, p)
			}
			continue
		case p.Modifier == "", p.Modifier == "not" && p.Def.Type == "token",
			(p.Modifier == "exact" || p.Modifier == "contains") && p.Def.Type == "string":
		default:
			t.Fatalf("ParseQuery(%q): modifier %q on a %s parameter", q, p.Modifier, p.Def.Type)
		}
		if len(p.Values) == 0 {
			t.Fatalf("ParseQuery(%q): %s without values", q, p.Name)
		}
		n += len(p.Values)
		for _, v := range p.Values {
			ok := v.Raw != ""
			switch p.Def.Type {
			case "token":
				ok = ok && (v.Code != "" || v.HasSystem && v.System != "")
			case "date":
				ok = ok && slices.Contains(datePrefixes, v.Prefix) && v.Lo <= v.Hi
			case "reference":
				ok = ok && (v.URL != "" || fhir.IsID(v.RefID) && (v.RefType == "" || fhir.IsResourceType(v.RefType)))
			case "string", "uri":
				ok = ok && (v.Text != "" || p.Def.Type == "string" && p.Modifier != "exact")
			default:
				ok = false
			}
			if !ok {
				t.Fatalf("ParseQuery(%q): %s value %+v", q, p.Name, v)
			}
		}
	}
	if n > MaxQueryValues {
		t.Fatalf("ParseQuery(%q): %d values", q, n)
	}
}

// splitPoint is what must follow a comma that separates two queries.
var splitPoint = regexp.MustCompile(`^[A-Z][A-Za-z]*\?`)

// FuzzSplitTypeFilter: SplitTypeFilter never panics, agrees with a plain
// implementation of the rule, drops only empty pieces, and its pieces
// joined back (with the commas between them) are the input.
func FuzzSplitTypeFilter(f *testing.F) {
	f.Add("Observation?category=laboratory,MedicationRequest?status=active,completed")
	f.Add(`,,Patient?name=a\,B?x,Observation?a=b,,`)
	f.Add(`Patient?name=a\\,Observation?x\`)
	for _, s := range parseSeeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		got := SplitTypeFilter(v)
		// The rule, written plainly: split at every unescaped comma
		// followed by Type?, drop the empty pieces.
		var want []string
		start, escaped := 0, false
		for i := range len(v) {
			switch {
			case escaped:
				escaped = false
			case v[i] == '\\':
				escaped = true
			case v[i] == ',' && splitPoint.MatchString(v[i+1:]):
				want = append(want, v[start:i])
				start = i + 1
			}
		}
		want = slices.DeleteFunc(append(want, v[start:]), func(s string) bool { return s == "" })
		if !slices.Equal(got, want) {
			t.Fatalf("SplitTypeFilter(%q) = %q, want %q", v, got, want)
		}
		// Joined back: the pieces in order, only separator commas between.
		pos := 0
		for _, piece := range got {
			for !strings.HasPrefix(v[pos:], piece) {
				if v[pos] != ',' {
					t.Fatalf("SplitTypeFilter(%q) = %q: lost %q", v, got, v[pos:])
				}
				pos++
			}
			pos += len(piece)
			if again := SplitTypeFilter(piece); len(again) != 1 || again[0] != piece {
				t.Fatalf("SplitTypeFilter(%q) piece %q splits again: %q", v, piece, again)
			}
		}
		if strings.Trim(v[pos:], ",") != "" {
			t.Fatalf("SplitTypeFilter(%q) = %q: lost the tail %q", v, got, v[pos:])
		}
	})
}
