package search

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/bulkstream/bulkstream/internal/fhir"
	"github.com/bulkstream/bulkstream/internal/fhirdefs"
	"github.com/bulkstream/bulkstream/internal/jsonobj"
)

// Match reports whether the resource body (a JSON object) matches q:
// every one of q.Params matches (AND). A Param matches when one of its
// Values matches one of the values its Def.Paths reach (OR), with the
// FHIR R4 search rules (https://hl7.org/fhir/R4/search.html) by
// parameter type:
//
//   - token (https://hl7.org/fhir/R4/search.html#token): on a
//     CodeableConcept any of its codings; on a Coding its system and
//     code; on an Identifier its system and value; on a ContactPoint its
//     value; on a code, string, uri, id or other primitive its value; on a
//     boolean the literal true or false. "code" matches any system,
//     "system|code" that system, "|code" only a coding or identifier
//     without a system, "system|" any code of the system. A primitive (and
//     a ContactPoint's value) has no system of its own: "|code" and
//     "system|code" match it on the code alone, and "system|" matches any
//     value (the system is the one its element is bound to, which a search
//     cannot contradict). Codes compare exactly (case-sensitive).
//   - date (https://hl7.org/fhir/R4/search.html#date): the target's range
//     is a date, dateTime or instant's implicit range (fhir.DateRange), a
//     Period's start to end (a missing start or end is open), or a
//     Timing's outer limits: from the earliest to the latest of its event
//     dateTimes and its repeat.boundsPeriod (the schedule itself is
//     ignored). With the
//     search value's range [lo, hi]: eq the target lies within it, ne it
//     does not, gt it reaches after hi, lt it reaches before lo, ge (le)
//     gt (lt) or eq, sa it starts after hi, eb it ends before lo, and ap
//     it overlaps [lo, hi] widened on both sides by 10% of the distance
//     between now and the search value (at least by the value's own
//     precision, so ap2024-03-01 widens by at least a day).
//   - reference (https://hl7.org/fhir/R4/search.html#reference): a bare
//     id matches a literal reference (relative, absolute or versioned,
//     fhir.ParseReference) with that id, Type/id one with that type and id,
//     an absolute URL the same string or a reference to the URL's Type/id.
//     On a canonical or uri element the strings compare, a "|version"
//     suffix of the element ignored unless the search value has one.
//   - string (https://hl7.org/fhir/R4/search.html#string): on a string
//     its value, on a HumanName its family, given, prefix, suffix and text,
//     on an Address its line, city, district, state, postalCode, country
//     and text, each on its own. By default the folded (Fold) string
//     starts with the search value; :contains it contains it; :exact it is
//     the value exactly as written.
//   - uri: the element's string equals the value.
//
// :missing=true matches a resource where no path reaches a value,
// :missing=false one where some does; :not (token) matches a resource
// where no value matches, including one without the element.
//
// A value of the wrong JSON shape for its path's type never matches and
// is no error. The error names a parameter Match does not evaluate
// (number, quantity, composite or special, or Unsupported), or is
// jsonobj.ErrSyntax when body is not a JSON object: not valid JSON where
// the walk reads it. A body without a backslash (every string as written)
// is read by a fast walk (matchFast) that checks only the structure it
// walks through, not the values it jumps over (ingest stored the body as
// validated JSON), stops after the last member a path starts with, and
// rejects a parameter whose needed literal bytes (a token's code, a
// reference's id) are not in the members its paths start with; text the
// fast walk cannot read (whitespace between tokens, broken structure) is
// read again by the validating walk, whose answers and errors count.
//
// Match of a query from ParseQuery allocates nothing for a body without
// escapes in the common cases.
func (q *Query) Match(body []byte) (bool, error) {
	if len(body) < 2 || body[0] != '{' {
		return false, jsonobj.ErrSyntax
	}
	for i := range q.Params {
		if err := supported(&q.Params[i]); err != nil {
			return false, err
		}
	}
	m := matcher{body: body, plain: bytes.IndexByte(body, '\\') < 0}
	if m.plain {
		// Cheap rejects first: a needle every match needs missing from
		// the text. Such a body is not read any further.
		for i := range q.Params {
			if !m.mayMatch(&q.Params[i], nil) {
				return false, nil
			}
		}
		plan := q.plan
		if plan == nil {
			plan = newFastPlan(q)
		}
		if ok, done := m.matchFast(q, plan); done {
			return ok, nil
		}
		m.fast, m.bad = false, false
	}
	for i := range q.Params {
		ok, err := m.param(&q.Params[i], nil)
		if err != nil || !ok {
			return false, err
		}
	}
	return true, nil
}

// matcher evaluates one Query.Match.
type matcher struct {
	body  []byte
	plain bool // body has no backslash: every string is as written
	// fast reads body with jsonobj's plain walk (plain bodies only); bad
	// is set when that walk fails, and the match is then done again with
	// the validating walk.
	fast, bad bool
	now       int64
}

// maxFastPaths bounds the paths of a query that matchFast reads in one
// walk (its offsets live on the stack); a query with more is read path by
// path.
const maxFastPaths = 32

// topValue is the value of a path's first member in the resource:
// body[vs:ve], ve 0 when the resource has none.
type topValue struct{ vs, ve int }

// matchFast evaluates q on a plain body (no backslash) with one walk of
// the resource's members for all the paths of all of q's parameters, each
// member handed to the paths that start with it, and the plain walk
// (jsonobj.SkipPlain) that jumps over strings and containers without
// checking them: ingest stored the body as validated JSON. With no
// backslash every name is written as itself, so the last place where the
// text has the name of a path's first member as a string is the last
// member of that name (the one that counts) when it is a member of the
// resource at all: when each is (topMember), the members are read there
// and not walked. Otherwise the walk stops after the last of those
// places: no member the paths need starts after it. done is false when
// the fast walk cannot answer (whitespace between tokens, text that is
// not compact JSON where it reads, or too many paths): the caller then
// evaluates q with the validating walk, whose answers and errors are the
// reference.
func (m *matcher) matchFast(q *Query, plan *fastPlan) (ok, done bool) {
	b := m.body
	// Text that does not end as an object does is left to the
	// validating walk, which reads it and says why.
	end := len(b) - 1
	if b[end] != '}' || end > 1 && b[end-1] == ',' {
		return false, false
	}
	if len(plan.names) > maxFastPaths {
		return false, false
	}
	names := plan.names
	n := len(names)
	var tops [maxFastPaths]topValue
	var at [maxFastPaths]int
	// The walk goes as far as the last place where the text has one of
	// the names.
	plan.findNames(b, at[:n])
	limit, jumped := -1, true
	for k := range n {
		if at[k] >= 0 {
			limit = max(limit, at[k])
			if jumped {
				tops[k].vs, tops[k].ve, jumped = topMember(b, at[k], names[k])
			}
		}
	}
	if limit >= 0 && !jumped {
		tops = [maxFastPaths]topValue{}
		// Values are skipped lazily: the member where the walk stops is
		// read by the paths, not skipped first. Its value is then known
		// to end by the end of the body, which bounds it (the plain walk
		// of a container stops at its own closing bracket).
		it := jsonobj.PlainObject(b, 0)
		it.Lazy = true
		stopped := false
		for it.Next() {
			name := it.Name()
			ve := it.ValueEnd
			if ve < 0 {
				ve = len(b)
			}
			hit := false
			for k := range n {
				if at[k] >= 0 && string(name) == names[k] {
					tops[k] = topValue{it.ValueStart, ve}
					hit = true
				}
			}
			if it.ValueStart > limit {
				stopped = true
				break
			}
			if hit && it.ValueEnd < 0 {
				// The walk goes on: the value's end is needed.
				if ve = it.SkipValue(); ve < 0 {
					break
				}
				for k := range n {
					if tops[k].vs == it.ValueStart && tops[k].ve > 0 {
						tops[k].ve = ve
					}
				}
			}
		}
		if !stopped && it.End() != len(b) {
			return false, false
		}
	}
	m.fast = true
	// A needle every match needs (in the text: Match looked) missing
	// from the values the parameter's paths start with.
	k := 0
	for i := range q.Params {
		p := &q.Params[i]
		if !m.mayMatch(p, tops[k:k+len(p.Def.Paths)]) {
			return false, true
		}
		k += len(p.Def.Paths)
	}
	k = 0
	for i := range q.Params {
		p := &q.Params[i]
		ok, _ := m.param(p, tops[k:k+len(p.Def.Paths)])
		if m.bad {
			return false, false
		}
		if !ok {
			return false, true
		}
		k += len(p.Def.Paths)
	}
	return true, true
}

// topMember returns the value of the resource's member at b[at-1] (the
// last place where the text has name between quotes) when it is one: a
// name followed by ':' at depth 1. Then no member of that name comes
// after it, so it is the one that counts, and the walk to it is saved:
// the depth is counted on the shorter side of the text, in 8-byte words
// (jsonobj.PlainDepth). ok is false when the text there is not a member
// of the resource, or not compact: the caller walks the members.
func topMember(b []byte, at int, name string) (vs, ve int, ok bool) {
	vs = at + len(name) + 2 // past '":'
	if vs >= len(b) || b[vs-1] != ':' {
		return 0, 0, false
	}
	switch b[vs] {
	case ' ', '\t', '\n', '\r', ',', ':', '}', ']':
		return 0, 0, false
	}
	if jsonobj.PlainDepth(b, at-1) != 1 {
		return 0, 0, false
	}
	if ve = jsonobj.SkipPlain(b, vs); ve < 0 {
		return 0, 0, false
	}
	return vs, ve, true
}

// minShared is the shortest common prefix for which findNames looks for
// several names at once.
const minShared = 4

// A fastPlan is what matchFast needs of a query beyond its parameters,
// worked out once (by ParseQuery) rather than for each body: the name of
// the first member of each path of each parameter, in order, and the
// groups of names findNames looks for in one pass.
type fastPlan struct {
	names  []string // "" for a path without steps
	groups []nameGroup
}

// A nameGroup is names that share prefix (at least minShared bytes, or
// one name): the effective[x] of a date parameter (effectiveDateTime,
// effectivePeriod, ...) is looked for as "effective".
type nameGroup struct {
	prefix  string
	off     int   // rarest(prefix), the byte looked for
	members []int // indexes in fastPlan.names
}

func newFastPlan(q *Query) *fastPlan {
	p := new(fastPlan)
	for i := range q.Params {
		for _, path := range q.Params[i].Def.Paths {
			name := ""
			if len(path.Steps) > 0 {
				name = path.Steps[0].Name
			}
			p.names = append(p.names, name)
		}
	}
	grouped := make([]bool, len(p.names))
	for k, name := range p.names {
		if grouped[k] || name == "" {
			continue
		}
		// The prefix that name shares with the names not yet grouped,
		// if at least minShared bytes long.
		prefix := name
		for l := k + 1; l < len(p.names); l++ {
			if !grouped[l] && p.names[l] != "" {
				if c := commonPrefix(prefix, p.names[l]); c >= minShared {
					prefix = prefix[:c]
				}
			}
		}
		g := nameGroup{prefix: prefix, off: rarest(prefix)}
		for l := k; l < len(p.names); l++ {
			if !grouped[l] && p.names[l] != "" && hasPrefixStr(p.names[l], prefix) {
				grouped[l] = true
				g.members = append(g.members, l)
			}
		}
		p.groups = append(p.groups, g)
	}
	return p
}

// findNames sets at[k] to the offset of the last place where b has
// p.names[k] between quotes (the offset of the name, after its quote; -1
// when there is none or the name is "").
func (p *fastPlan) findNames(b []byte, at []int) {
	for k := range at {
		at[k] = -1
	}
	for _, g := range p.groups {
		for i := 0; i < len(b); {
			j := indexBy(b[i:], g.prefix, g.off, true, false)
			if j < 0 {
				break
			}
			o := i + j
			i = o + 1
			for _, l := range g.members {
				nm := p.names[l]
				if e := o + len(nm); e < len(b) && b[e] == '"' && string(b[o:e]) == nm {
					at[l] = o
				}
			}
		}
	}
}

// commonPrefix returns the length of the common prefix of a and b.
func commonPrefix(a, b string) int {
	n := min(len(a), len(b))
	for i := range n {
		if a[i] != b[i] {
			return i
		}
	}
	return n
}

// hasPrefixStr is strings.HasPrefix.
func hasPrefixStr(s, prefix string) bool {
	return len(s) >= len(prefix) && s[:len(prefix)] == prefix
}

// mayMatch reports whether p can match m.body as far as a look for the
// literal bytes a match needs can tell (only valid when m.plain: then a
// string's value is its literal bytes). With tops (the fast walk), it
// looks only in the values of the first members of p's paths, which hold
// every value the paths reach.
func (m *matcher) mayMatch(p *Param, tops []topValue) bool {
	if p.Modifier == "not" || p.Modifier == "missing" || len(p.Values) == 0 {
		return true
	}
	for i := range p.Values {
		v := &p.Values[i]
		var needle string
		switch p.Def.Type {
		case "token":
			needle = v.Code
			if needle == "" && v.HasSystem && codedOnly(p.Def) {
				// "system|" on a primitive matches any value.
				needle = v.System
			}
		case "reference":
			needle = v.RefID
			if needle == "" {
				needle = v.URL
			}
		case "uri":
			needle = v.Text
		case "string":
			if p.Modifier == "exact" {
				needle = v.Text
			}
		}
		if needle == "" {
			return true
		}
		if tops == nil {
			if contains(m.body, needle) {
				return true
			}
			continue
		}
		for _, t := range tops {
			if t.ve > 0 && contains(m.body[t.vs:t.ve], needle) {
				return true
			}
		}
	}
	return false
}

// errUnsupported is wrapped for a parameter Match cannot evaluate.
var errUnsupported = errors.New("search: parameter not supported")

// codedOnly reports whether every path of d reaches a type with a
// system: a CodeableConcept, Coding or Identifier.
func codedOnly(d *fhirdefs.SearchParam) bool {
	for i := range d.Paths {
		switch d.Paths[i].Type {
		case "CodeableConcept", "Coding", "Identifier":
		default:
			return false
		}
	}
	return true
}

// contains is bytes.Contains(b, []byte(s)) without the conversion.
func contains(b []byte, s string) bool {
	return index(b, s, false) >= 0
}

// hasName reports whether the JSON text b, which has no backslash, may
// have a member named name: whether it has the string "name".
func hasName(b []byte, name string) bool {
	return index(b, name, true) >= 0
}

// index returns the offset of the first s in b (quoted: with a '"' on
// either side), or -1. It looks for the rarest byte of s with
// bytes.IndexByte and compares around it: member names and codes start
// with common letters (and JSON strings with '"'), so that a search from
// their first byte stops everywhere.
func index(b []byte, s string, quoted bool) int {
	if len(s) == 0 {
		return 0
	}
	return indexBy(b, s, rarest(s), quoted, quoted)
}

// indexBy is index looking for the byte s[off] (for a caller that
// searches for s many times), with a '"' before s when open and after it
// when close. The quotes are checked before the bytes of s: most places
// where the byte is are not in a string of their own.
func indexBy(b []byte, s string, off int, open, close bool) int {
	c := s[off]
	before, after := 0, 0
	if open {
		before = 1
	}
	if close {
		after = 1
	}
	for i := before + off; i < len(b); {
		j := bytes.IndexByte(b[i:], c)
		if j < 0 {
			return -1
		}
		i += j
		start, end := i-off, i-off+len(s)
		if end+after > len(b) {
			return -1
		}
		if (!open || b[start-1] == '"') && (!close || b[end] == '"') && string(b[start:end]) == s {
			return start
		}
		i++
	}
	return -1
}

// rarest returns the offset of the byte of s least likely in JSON text
// (byteRarity).
func rarest(s string) int {
	best := 0
	for i := 1; i < len(s); i++ {
		if byteRarity[s[i]] > byteRarity[s[best]] {
			best = i
		}
	}
	return best
}

// byteRarity ranks bytes by how rare they are in FHIR JSON: printable
// ASCII by its frequency in the Synthea sample of the repository (which
// put JSON's punctuation, the letters of the common member names and the
// digits of ids and codes ahead of, say, 'h' or 'k'), any other byte
// rarest. A read-only table.
var byteRarity = func() (r [256]uint8) {
	// Most common first, as measured on testdata/synthea-r4-100-patients.
	const common = `"et:rcoaisnd0-,ul/ym1p4bf2{}g93578 6v.h[]TSCP_xDOAEjLUqMRBIHN()GwzQkF#WVK<>Y'J%*\ZX=+@&!$;?^` + "`|~"
	for c := range r {
		r[c] = 255
	}
	for i := range len(common) {
		r[common[i]] = uint8(i)
	}
	return r
}()

// hasPrefix is bytes.HasPrefix(b, []byte(s)) without the conversion.
func hasPrefix(b []byte, s string) bool {
	return len(b) >= len(s) && string(b[:len(s)]) == s
}

// supported returns an error when Match cannot evaluate p.
func supported(p *Param) error {
	if p.Def == nil || p.Def.Unsupported != "" {
		return fmt.Errorf("%w: %s", errUnsupported, p.Name)
	}
	switch p.Def.Type {
	case "token", "date", "reference", "string", "uri":
		return nil
	}
	return fmt.Errorf("%w: %s (type %s)", errUnsupported, p.Name, p.Def.Type)
}

// param evaluates one parameter.
// In the fast walk, tops are the values of the first members of
// p.Def.Paths.
func (m *matcher) param(p *Param, tops []topValue) (bool, error) {
	switch p.Modifier {
	case "missing":
		has, err := m.any(p, tops, true)
		return has != p.Missing, err
	case "not":
		found, err := m.any(p, tops, false)
		return !found, err
	}
	return m.any(p, tops, false)
}

// any reports whether some path of p reaches a value (presence) or a
// value that matches one of p's Values.
func (m *matcher) any(p *Param, tops []topValue, presence bool) (bool, error) {
	found := false
	fn := func(path *fhirdefs.SearchPath) func(v []byte) bool {
		return func(v []byte) bool {
			found = presence || m.value(p, path.Type, v)
			return !found && !m.bad
		}
	}
	for i := range p.Def.Paths {
		path := &p.Def.Paths[i]
		if m.fast {
			t := tops[i]
			if t.ve == 0 {
				continue
			}
			w := walker{p: path, fn: fn(path), fast: true}
			w.step(m.body, t.vs, t.ve, 0, 1)
			if w.bad {
				m.bad = true
			}
			if m.bad {
				return false, nil
			}
		} else {
			if m.plain && len(path.Steps) > 0 && !hasName(m.body, path.Steps[0].Name) {
				continue // the path's first member is not in the text
			}
			if err := eachValue(m.body, path, fn(path)); err != nil {
				return false, err
			}
		}
		if found {
			return true, nil
		}
	}
	return false, nil
}

// value reports whether v, a value of FHIR type typ, matches one of p's
// Values.
func (m *matcher) value(p *Param, typ string, v []byte) bool {
	switch p.Def.Type {
	case "token":
		return m.matchToken(p.Values, typ, v)
	case "date":
		lo, hi, ok := m.targetRange(typ, v)
		if !ok {
			return false
		}
		for i := range p.Values {
			if m.matchDate(&p.Values[i], lo, hi) {
				return true
			}
		}
	case "reference":
		return m.matchReference(p.Values, v)
	case "string":
		return m.matchString(p.Values, p.Modifier, typ, v)
	case "uri":
		s, ok := str(v)
		if !ok {
			return false
		}
		for i := range p.Values {
			if string(s) == p.Values[i].Text {
				return true
			}
		}
	}
	return false
}

// str returns the value of the JSON string v (unescaped: a new slice only
// when it has escapes); ok is false when v is not a string.
func str(v []byte) (s []byte, ok bool) {
	if len(v) < 2 || v[0] != '"' {
		return nil, false
	}
	in := v[1 : len(v)-1]
	if bytes.IndexByte(in, '\\') < 0 {
		return in, true
	}
	return jsonobj.Unquote(v), true
}

// eachMember calls fn with the name (as written: FHIR names have no
// escapes) and value of each member of the JSON object v; false when v is
// not an object.
func (m *matcher) eachMember(v []byte, fn func(name, val []byte)) bool {
	if len(v) == 0 || v[0] != '{' {
		return false
	}
	if m.fast {
		it := jsonobj.PlainObject(v, 0)
		for it.Next() {
			fn(it.Name(), v[it.ValueStart:it.ValueEnd])
		}
		if it.End() < 0 {
			m.bad = true
		}
		return true
	}
	var s jsonobj.Scanner
	it := s.Object(v, 0, 1)
	for it.Next() {
		fn(v[it.KeyStart+1:it.KeyEnd-1], v[it.ValueStart:it.ValueEnd])
	}
	return true
}

// eachElem calls fn with v, or with each element of v when it is a JSON
// array, until fn returns false.
func (m *matcher) eachElem(v []byte, fn func(e []byte) bool) {
	if len(v) == 0 || v[0] != '[' {
		if len(v) > 0 {
			fn(v)
		}
		return
	}
	if m.fast {
		// An element is not skipped before fn reads it: fn may stop
		// there (its end bounded by the array's).
		it := jsonobj.PlainArray(v, 0)
		it.Lazy = true
		for it.Next() {
			end := it.ValueEnd
			if end < 0 {
				end = len(v)
			}
			if !fn(v[it.ValueStart:end]) {
				return
			}
		}
		if it.End() < 0 {
			m.bad = true
		}
		return
	}
	var s jsonobj.Scanner
	it := s.Array(v, 0, 1)
	for it.Next() {
		if !fn(v[it.ValueStart:it.ValueEnd]) {
			return
		}
	}
}

// matchToken reports whether the value v of FHIR type typ matches one of
// vals.
func (m *matcher) matchToken(vals []Value, typ string, v []byte) bool {
	switch typ {
	case "CodeableConcept":
		var codings []byte
		if !m.eachMember(v, func(name, val []byte) {
			if string(name) == "coding" {
				codings = val
			}
		}) {
			return false
		}
		found := false
		m.eachElem(codings, func(c []byte) bool {
			found = m.matchCoding(vals, c, "code")
			return !found
		})
		return found
	case "Coding":
		return m.matchCoding(vals, v, "code")
	case "Identifier":
		return m.matchCoding(vals, v, "value")
	case "ContactPoint":
		var value []byte
		m.eachMember(v, func(name, val []byte) {
			if string(name) == "value" {
				value = val
			}
		})
		return matchPrimitiveToken(vals, "string", value)
	}
	return matchPrimitiveToken(vals, typ, v)
}

// matchCoding matches a Coding or Identifier object: its system and its
// member codeName ("code" or "value").
func (m *matcher) matchCoding(vals []Value, v []byte, codeName string) bool {
	var sys, code []byte
	hasSys, hasCode := false, false
	if !m.eachMember(v, func(name, val []byte) {
		switch string(name) {
		case "system":
			sys, hasSys = str(val)
		case codeName:
			code, hasCode = str(val)
		}
	}) {
		return false
	}
	for i := range vals {
		t := &vals[i]
		if t.HasSystem {
			if t.System == "" {
				if hasSys {
					continue // "|code": no system
				}
			} else if !hasSys || string(sys) != t.System {
				continue
			}
			if t.Code == "" {
				return true // "system|": any code of the system
			}
		}
		if hasCode && string(code) == t.Code {
			return true
		}
	}
	return false
}

// matchPrimitiveToken matches a primitive of FHIR type typ by its value
// alone (see Match for the system): a boolean is the JSON literal true or
// false, an integer or decimal a JSON number (as written), any other
// primitive (code, string, uri, id, ...) a JSON string.
func matchPrimitiveToken(vals []Value, typ string, v []byte) bool {
	if len(v) == 0 {
		return false
	}
	var s []byte
	switch typ {
	case "boolean":
		if v[0] != 't' && v[0] != 'f' {
			return false
		}
		s = v
	case "integer", "positiveInt", "unsignedInt", "decimal", "integer64":
		if v[0] != '-' && (v[0] < '0' || v[0] > '9') {
			return false
		}
		s = v
	default:
		var ok bool
		if s, ok = str(v); !ok {
			return false
		}
	}
	for i := range vals {
		t := &vals[i]
		if t.Code == "" && t.HasSystem && t.System != "" {
			return true
		}
		if string(s) == t.Code {
			return true
		}
	}
	return false
}

// targetRange returns the range of microseconds a date, dateTime,
// instant, Period or Timing value v covers (math.MinInt64 and
// math.MaxInt64 for open ends).
func (m *matcher) targetRange(typ string, v []byte) (lo, hi int64, ok bool) {
	switch typ {
	case "Period":
		return m.periodRange(v)
	case "Timing":
		// Only the outer limits count
		// (https://hl7.org/fhir/R4/search.html#date): the earliest
		// and latest of its events and of its repeat.boundsPeriod.
		lo, hi = math.MaxInt64, math.MinInt64
		hull := func(l, h int64) { lo, hi = min(lo, l), max(hi, h) }
		m.eachMember(v, func(name, val []byte) {
			switch string(name) {
			case "event":
				m.eachElem(val, func(e []byte) bool {
					if l, h, ok := jsonDateRange(e); ok {
						hull(l, h)
					}
					return true
				})
			case "repeat":
				m.eachMember(val, func(name, val []byte) {
					if string(name) == "boundsPeriod" {
						if l, h, ok := m.periodRange(val); ok {
							hull(l, h)
						}
					}
				})
			}
		})
		return lo, hi, lo <= hi
	case "date", "dateTime", "instant":
		return jsonDateRange(v)
	}
	return 0, 0, false
}

// periodRange returns the range of the Period v: its start's first µs to
// its end's last, a missing start or end open (math.MinInt64,
// math.MaxInt64); ok is false when it has neither or one is not a date.
func (m *matcher) periodRange(v []byte) (lo, hi int64, ok bool) {
	var start, end []byte
	if !m.eachMember(v, func(name, val []byte) {
		switch string(name) {
		case "start":
			start = val
		case "end":
			end = val
		}
	}) {
		return 0, 0, false
	}
	if start == nil && end == nil {
		return 0, 0, false
	}
	lo, hi = math.MinInt64, math.MaxInt64
	if start != nil {
		if lo, _, ok = jsonDateRange(start); !ok {
			return 0, 0, false
		}
	}
	if end != nil {
		if _, hi, ok = jsonDateRange(end); !ok {
			return 0, 0, false
		}
	}
	return lo, hi, true
}

// jsonDateRange is fhir.DateRange of the JSON string v.
func jsonDateRange(v []byte) (lo, hi int64, ok bool) {
	s, ok := str(v)
	if !ok {
		return 0, 0, false
	}
	return fhir.DateRange(s)
}

// matchDate applies the prefix of t to the target range [lo, hi].
func (m *matcher) matchDate(t *Value, lo, hi int64) bool {
	within := t.Lo <= lo && hi <= t.Hi
	switch t.Prefix {
	case "", "eq":
		return within
	case "ne":
		return !within
	case "gt":
		return hi > t.Hi
	case "lt":
		return lo < t.Lo
	case "ge":
		return hi > t.Hi || within
	case "le":
		return lo < t.Lo || within
	case "sa":
		return lo > t.Hi
	case "eb":
		return hi < t.Lo
	case "ap":
		if m.now == 0 {
			m.now = time.Now().UnixMicro()
		}
		w := approxWidth(t, m.now)
		return lo <= satAdd(t.Hi, w) && hi >= satAdd(t.Lo, -w)
	}
	return false
}

// approxWidth is how much ap widens each side of t's range: 10% of the
// distance between now and the range, at least the range's own width.
func approxWidth(t *Value, now int64) int64 {
	var d int64
	switch {
	case now < t.Lo:
		d = t.Lo - now
	case now > t.Hi:
		d = now - t.Hi
	}
	return max(d/10, t.Hi-t.Lo+1)
}

// satAdd is a+b clamped to the int64 range.
func satAdd(a, b int64) int64 {
	s := a + b
	if b > 0 && s < a {
		return math.MaxInt64
	}
	if b < 0 && s > a {
		return math.MinInt64
	}
	return s
}

// matchReference matches a Reference object (its literal reference) or a
// canonical or uri string.
func (m *matcher) matchReference(vals []Value, v []byte) bool {
	if len(v) > 0 && v[0] == '"' { // canonical, uri
		s, _ := str(v)
		for i := range vals {
			want := vals[i].URL
			if want == "" {
				want = vals[i].Raw
			}
			got := s
			if strings.IndexByte(want, '|') < 0 {
				if j := bytes.LastIndexByte(got, '|'); j >= 0 {
					got = got[:j]
				}
			}
			if string(got) == want {
				return true
			}
		}
		return false
	}
	var ref []byte
	hasRef := false
	if !m.eachMember(v, func(name, val []byte) {
		if string(name) == "reference" {
			ref, hasRef = str(val)
		}
	}) || !hasRef {
		return false
	}
	rtyp, rid, parsed := fhir.ParseReference(ref)
	for i := range vals {
		t := &vals[i]
		if t.URL != "" && string(ref) == t.URL {
			return true
		}
		if !parsed || t.RefID == "" || string(rid) != t.RefID {
			continue
		}
		if t.RefType == "" || string(rtyp) == t.RefType {
			return true
		}
	}
	return false
}

// matchString matches a string, HumanName or Address value.
func (m *matcher) matchString(vals []Value, modifier, typ string, v []byte) bool {
	if len(v) == 0 {
		return false
	}
	var fields []string
	switch typ {
	case "HumanName":
		fields = humanNameFields
	case "Address":
		fields = addressFields
	default:
		s, ok := str(v)
		return ok && matchText(vals, modifier, s)
	}
	found := false
	m.eachMember(v, func(name, val []byte) {
		if found || !isOneOf(name, fields) {
			return
		}
		m.eachElem(val, func(e []byte) bool {
			if s, ok := str(e); ok {
				found = matchText(vals, modifier, s)
			}
			return !found
		})
	})
	return found
}

// The string parts of a HumanName and an Address that string search
// reads (https://hl7.org/fhir/R4/search.html#string).
var (
	humanNameFields = []string{"family", "given", "prefix", "suffix", "text"}
	addressFields   = []string{"line", "city", "district", "state", "postalCode", "country", "text"}
)

func isOneOf(name []byte, set []string) bool {
	for _, s := range set {
		if string(name) == s {
			return true
		}
	}
	return false
}

// matchText matches the string s by modifier against vals.
func matchText(vals []Value, modifier string, s []byte) bool {
	if modifier == "exact" {
		for i := range vals {
			if string(s) == vals[i].Text {
				return true
			}
		}
		return false
	}
	var buf [256]byte
	f := appendFold(buf[:0], s)
	for i := range vals {
		if modifier == "contains" {
			if contains(f, vals[i].Text) {
				return true
			}
		} else if hasPrefix(f, vals[i].Text) {
			return true
		}
	}
	return false
}
