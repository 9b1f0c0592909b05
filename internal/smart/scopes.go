package smart

import (
	"fmt"
	"slices"
	"strings"

	"github.com/bulkstream/bulkstream/internal/fhir"
)

// Limits on a requested scope string, so that a hostile request costs little.
const (
	maxScopeLen    = 4096
	maxScopeTokens = 64
)

// Permission bits of a SMART scope, in the v2 suffix order c r u d s.
const (
	permC uint8 = 1 << iota
	permR
	permU
	permD
	permS

	permRead  = permR | permS         // what a bulk export needs
	permWrite = permC | permU | permD // v1 ".write"
	permAll   = permRead | permWrite  // v1 ".*", v2 ".cruds"
)

const (
	v2Letters = "cruds"   // permission bit i is v2Letters[i]
	wildcard  = "*"       // every resource type
	sysPrefix = "system/" // the only context we serve
)

// scope is one parsed system scope.
type scope struct {
	typ   string // a resource type or "*"
	perms uint8
	v1    bool // written as .read/.write/.*
}

// String writes the scope back in its own syntax version.
func (s scope) String() string {
	var action string
	if s.v1 {
		switch s.perms {
		case permRead:
			action = "read"
		case permWrite:
			action = "write"
		case permAll:
			action = "*"
		}
	}
	if action == "" {
		var b strings.Builder
		for i := range len(v2Letters) {
			if s.perms&(1<<i) != 0 {
				b.WriteByte(v2Letters[i])
			}
		}
		action = b.String()
	}
	return sysPrefix + s.typ + "." + action
}

// covers reports whether s grants everything o asks for.
func (s scope) covers(o scope) bool {
	return (s.typ == wildcard || s.typ == o.typ) && s.perms&o.perms == o.perms
}

// parseScope parses one scope token. Any problem is an invalid_scope
// *OAuthError that names the token.
func parseScope(tok string) (scope, error) {
	rest, ok := strings.CutPrefix(tok, sysPrefix)
	if !ok {
		switch {
		case strings.HasPrefix(tok, "user/"), strings.HasPrefix(tok, "patient/"):
			return scope{}, invalidScope(fmt.Sprintf("scope %q: only system/ scopes are supported by bulk export", tok))
		default:
			return scope{}, invalidScope(fmt.Sprintf("scope %q: not a system/ scope (launch, openid, fhirUser and the like are not supported)", tok))
		}
	}
	if strings.Contains(rest, "?") {
		return scope{}, invalidScope(fmt.Sprintf("scope %q: ?param constraints are not supported", tok))
	}
	typ, action, ok := strings.Cut(rest, ".")
	if !ok || typ == "" || action == "" {
		return scope{}, invalidScope(fmt.Sprintf("scope %q: want system/<Type|*>.<action>", tok))
	}
	if typ != wildcard && !fhir.IsResourceType(typ) {
		return scope{}, invalidScope(fmt.Sprintf("scope %q: unknown resource type %q", tok, typ))
	}
	s := scope{typ: typ}
	switch action {
	case "read":
		s.perms, s.v1 = permRead, true
	case "write":
		s.perms, s.v1 = permWrite, true
	case "*":
		s.perms, s.v1 = permAll, true
	default:
		// v2: a non-empty subsequence of "cruds", in that order.
		next := 0
		for i := 0; i < len(action); i++ {
			j := strings.IndexByte(v2Letters[next:], action[i])
			if j < 0 {
				return scope{}, invalidScope(fmt.Sprintf("scope %q: unknown or out-of-order action %q (want read, write, * or a subset of cruds in that order)", tok, action))
			}
			s.perms |= 1 << (next + j)
			next += j + 1
		}
	}
	return s, nil
}

// GrantScopes decides which scopes a token request gets
// (https://hl7.org/fhir/smart-app-launch/scopes-and-launch-context.html).
//
// requested is the space-separated scope parameter; allowed is the client's
// registered scope list (already validated by LoadRegistry). Every requested
// token must be a system/ scope, v1 (system/T.read|write|*) or v2
// (system/T.[c][r][u][d][s]), on "*" or an R4 resource type, without ?param
// constraints. A bulk export only reads, so each request is reduced to its
// read part (read and search, "rs"): system/*.* becomes system/*.read and
// system/*.cruds becomes system/*.rs; a request with no full read part
// (system/Patient.write, .c, .cud, .r, …) is rejected, as is anything else
// malformed, with an invalid_scope *OAuthError.
//
// Granted = requested ∩ allowed: a requested scope covered by an allowed one
// (system/Patient.rs by system/*.rs or system/*.read) is granted as written,
// in its own syntax version (v1 requests are echoed as v1); a requested
// system/*.rs that only specific allowed scopes cover is narrowed to those
// types. Requested scopes outside the allowed set are dropped; when nothing
// is left the result is invalid_scope. granted keeps request order and has
// no duplicates.
func GrantScopes(requested string, allowed []string) (granted []string, err error) {
	if len(requested) > maxScopeLen {
		return nil, invalidScope("scope parameter too long")
	}
	toks := strings.Fields(requested)
	if len(toks) == 0 {
		return nil, invalidScope("scope is required (for example system/*.rs)")
	}
	if len(toks) > maxScopeTokens {
		return nil, invalidScope(fmt.Sprintf("too many scopes (at most %d)", maxScopeTokens))
	}
	allow := make([]scope, 0, len(allowed))
	for _, a := range allowed {
		s, err := parseScope(a)
		if err != nil {
			// LoadRegistry validates allowed scopes, so this is a caller bug.
			return nil, fmt.Errorf("smart: allowed scope %q: %w", a, err)
		}
		allow = append(allow, s)
	}
	add := func(s scope) {
		if str := s.String(); !slices.Contains(granted, str) {
			granted = append(granted, str)
		}
	}
	for _, tok := range toks {
		s, err := parseScope(tok)
		if err != nil {
			return nil, err
		}
		if s.perms&permRead != permRead {
			return nil, invalidScope(fmt.Sprintf("scope %q: bulk export needs read and search (system/<Type>.rs or .read)", tok))
		}
		s.perms = permRead
		covered := false
		for _, a := range allow {
			if a.covers(s) {
				covered = true
				break
			}
		}
		if covered {
			add(s)
			continue
		}
		if s.typ == wildcard {
			// Narrow a wildcard request to the specific types allowed.
			for _, a := range allow {
				if a.typ != wildcard && a.perms&permRead == permRead {
					add(scope{typ: a.typ, perms: permRead, v1: s.v1})
				}
			}
		}
	}
	if len(granted) == 0 {
		return nil, invalidScope("none of the requested scopes is allowed for this client")
	}
	return granted, nil
}

// Scopes is the read access a granted scope string gives: which resource
// types a bearer may export. The zero value allows nothing.
type Scopes struct {
	all   bool
	types []string // sorted, without duplicates; empty when all
	str   string
}

// ParseScopes parses a granted scope string (the "scope" of a token
// response or access token). Only scopes with read and search access count;
// the string must be well formed (every token a valid system scope) or an
// invalid_scope *OAuthError is returned.
func ParseScopes(granted string) (Scopes, error) {
	if len(granted) > maxScopeLen {
		return Scopes{}, invalidScope("scope too long")
	}
	toks := strings.Fields(granted)
	if len(toks) > maxScopeTokens {
		return Scopes{}, invalidScope(fmt.Sprintf("too many scopes (at most %d)", maxScopeTokens))
	}
	return readScopes(toks)
}

// Allows reports whether the scopes let the bearer export resourceType.
func (s Scopes) Allows(resourceType string) bool {
	if s.all {
		return fhir.IsResourceType(resourceType)
	}
	_, found := slices.BinarySearch(s.types, resourceType)
	return found
}

// All reports whether the scopes cover every resource type (system/*.rs or
// system/*.read).
func (s Scopes) All() bool { return s.all }

// Types returns the resource types the scopes allow, sorted; when All is
// true it returns every R4 resource type. The slice is a copy.
func (s Scopes) Types() []string {
	if s.all {
		return fhir.ResourceTypes()
	}
	return slices.Clone(s.types)
}

// String returns the scope string as granted (space-separated).
func (s Scopes) String() string { return s.str }

// Empty reports whether the scopes allow no resource type at all.
func (s Scopes) Empty() bool { return !s.all && len(s.types) == 0 }

// Intersect returns what both s and o allow: an access token's granted
// scopes narrowed to what its client's registry entry allows now, so that
// narrowing a client's scopes and reloading the registry takes effect at
// its tokens' next request. When the result allows what s allows, it
// keeps s's string; otherwise its string lists the remaining types as
// system/<Type>.rs (empty when nothing is left).
func (s Scopes) Intersect(o Scopes) Scopes {
	var r Scopes
	switch {
	case s.all && o.all:
		r.all = true
	case s.all:
		r.types = slices.Clone(o.types)
	case o.all:
		r.types = slices.Clone(s.types)
	default:
		for _, t := range s.types {
			if _, found := slices.BinarySearch(o.types, t); found {
				r.types = append(r.types, t)
			}
		}
	}
	if r.all == s.all && slices.Equal(r.types, s.types) {
		r.str = s.str
		return r
	}
	toks := make([]string, len(r.types))
	for i, t := range r.types {
		toks[i] = sysPrefix + t + ".rs"
	}
	r.str = strings.Join(toks, " ")
	return r
}

// readScopes is what a list of validated scopes lets a bearer export: the
// ones with read and search access, like ParseScopes, without its limits
// on a client-supplied string.
func readScopes(list []string) (Scopes, error) {
	var s Scopes
	for _, tok := range list {
		sc, err := parseScope(tok)
		if err != nil {
			return Scopes{}, err
		}
		if sc.perms&permRead != permRead {
			continue
		}
		if sc.typ == wildcard {
			s.all = true
		} else if !slices.Contains(s.types, sc.typ) {
			s.types = append(s.types, sc.typ)
		}
	}
	if s.all {
		s.types = nil
	}
	slices.Sort(s.types)
	s.str = strings.Join(list, " ")
	return s, nil
}
