package index

import (
	"bytes"
	"errors"
	"slices"
	"strings"

	"github.com/bulkstream/bulkstream/internal/fhir"
	"github.com/bulkstream/bulkstream/internal/fhirdefs"
	"github.com/bulkstream/bulkstream/internal/jsonobj"
)

// The reference extractors below read the references of one stored
// resource at apply time. They walk its JSON with jsonobj's iterators, one
// pass over the top-level members and then only the values on their
// paths, and allocate nothing but what they return (and a decoded copy of
// a string or member name that has escapes).
//
// A reference is the string "reference" member of a Reference object
// (https://hl7.org/fhir/R4/references.html#Reference). It counts when it
// is:
//
//   - a literal reference Type/id or Type/id/_history/version;
//   - an absolute URL, http:// or https:// then a non-empty rest, whose
//     last segments are Type/id, optionally followed by /_history/version.
//
// Type must be an R4 resource type (internal/fhir.IsResourceType), id and
// version FHIR ids ([A-Za-z0-9\-\.]{1,64}). Anything else is ignored:
// contained references (#x), urn:oid: and urn:uuid: references (but see
// groupMembers), a logical reference (an identifier without reference),
// conditional and malformed references, a "reference" that is not a
// string. JSON escapes in the string are decoded first, so "Patient\/1"
// is Patient/1. Where an object has a member name twice, the last one
// counts, as encoding/json reads it.
//
// A path (fhirdefs.PatientCompartment) is a dotted list of member names
// from the resource's root; at every step the value may be one object or
// an array of them (each element is followed; elements that are not
// objects, nested arrays included, are not).

// errNotObject is returned for a body that is not a JSON object.
var errNotObject = errors.New("index: resource body is not a JSON object")

// maxPaths bounds the paths of one type in fhirdefs.PatientCompartment
// (CommunicationRequest and Coverage have 4); a type with more is walked
// in several passes.
const maxPaths = 4

// compartmentOf appends to dst the ids of the patients in whose Patient
// compartment the resource is, sorted and deduplicated: the Patient
// references found at fhirdefs.PatientCompartment[typ]'s paths, and id
// itself when typ is "Patient". A body that is not a JSON object is an error.
//
// Only references whose type is Patient count (a Group, Practitioner or
// RelatedPerson at a compartment path puts the resource in no patient's
// compartment); references follow the rules above, so urn:uuid: ones do
// not count here.
//
// It reads only as much of body as it needs, so body must be valid JSON
// (Apply's bodies are: ingest checks them). It checks what it reads, and
// returns an error, with dst as given, where that is not a JSON object,
// but does not read: the body of a type not in the table beyond its
// first and last bytes; a body without a Patient reference path member
// name in it; the members after the last place a path's first member name
// appears, when body has no backslash (so that every member name is
// written as itself). A repeated member name counts once, at its last
// place, as elsewhere.
//
// Each id appended is a new string (ids never alias body, which the
// caller may reuse), one per distinct id; the walk allocates nothing
// else for a body without escapes.
func compartmentOf(dst []string, typ, id string, body []byte) ([]string, error) {
	return compartmentOfIn(dst, typ, id, body, nil)
}

// compartmentOfIn is compartmentOf taking the patient ids from intern
// when it holds them, and adding the others to it (nil: no interning):
// Apply's batches name the same patients over and over, and an interned
// id costs no allocation.
func compartmentOfIn(dst []string, typ, id string, body []byte, intern map[string]string) ([]string, error) {
	if !isObject(body) {
		return dst, errNotObject
	}
	start := len(dst)
	if typ == "Patient" {
		dst = append(dst, id)
	}
	paths := fhirdefs.PatientCompartment[typ]
	for len(paths) > 0 {
		n := min(len(paths), maxPaths)
		var err error
		dst, err = patientRefs(dst, start, body, paths[:n], intern)
		if err != nil {
			return dst[:start], err
		}
		paths = paths[n:]
	}
	return sortUnique(dst, start), nil
}

// patientRefs appends the ids of the Patient references at paths (at
// most maxPaths) in body, in one pass over its top-level members;
// dst[from:] is what compartmentOf has appended so far.
func patientRefs(dst []string, from int, body []byte, paths []string, intern map[string]string) ([]string, error) {
	w := refWalk{dst: dst, from: from, kind: refPatient, intern: intern}
	var vals [maxPaths]struct{ vs, ve int }
	var firsts [maxPaths]string
	for i, p := range paths {
		firsts[i], _, _ = strings.Cut(p, ".")
	}
	// Without a backslash in body, every member name is as written and
	// every `name":` follows a member name, so no member the walk wants
	// starts after the last such text: the walk stops there.
	limit := len(body)
	if bytes.IndexByte(body, '\\') < 0 {
		limit = -1
		for _, first := range firsts[:len(paths)] {
			limit = max(limit, lastName(body, first))
		}
		if limit < 0 {
			return dst, nil
		}
	}
	var s jsonobj.Scanner
	it := s.Object(body, 0, 1)
	stopped := false
	for it.Next() {
		key := it.Key()
		for i, first := range firsts[:len(paths)] {
			if string(key) == first {
				vals[i].vs, vals[i].ve = it.ValueStart, it.ValueEnd
			}
		}
		if it.ValueEnd > limit {
			stopped = true
			break
		}
	}
	if !stopped && it.End() != len(body) {
		return dst, errNotObject
	}
	for i, p := range paths {
		if vals[i].ve == 0 {
			continue
		}
		_, rest, _ := strings.Cut(p, ".")
		w.at(body[:vals[i].ve], vals[i].vs, rest, 2)
	}
	return w.dst, nil
}

// lastName returns the offset of the last `"name":` in b, or -1. It
// looks for the rarest byte of name (by rank) with bytes.IndexByte, then
// checks the text around it.
func lastName(b []byte, name string) int {
	k := 0
	for i := 1; i < len(name); i++ {
		if rank(name[i]) < rank(name[k]) {
			k = i
		}
	}
	last := -1
	c := name[k]
	for i := 0; ; {
		j := bytes.IndexByte(b[i:], c)
		if j < 0 {
			return last
		}
		j += i
		i = j + 1
		q := j - k - 1 // the opening quote
		if e := q + 1 + len(name); q >= 0 && e+1 < len(b) && b[q] == '"' && b[e] == '"' && b[e+1] == ':' &&
			string(b[q+1:e]) == name {
			last = q
		}
	}
}

// rank orders bytes by how rare they are in FHIR JSON text, rarest
// first: upper-case letters and other bytes, then lower-case letters in
// four bands.
func rank(c byte) int {
	switch c {
	case 'z', 'q', 'j', 'x', 'k', 'w', 'y', 'v':
		return 0
	case 'b', 'f', 'g', 'p', 'h', 'm':
		return 1
	case 'u', 'l', 'c', 'd':
		return 2
	case 's', 'n', 'o', 'r', 'a', 't', 'i', 'e':
		return 3
	}
	return -1
}

// refKind says what a refWalk appends for each reference.
type refKind uint8

const (
	refPatient refKind = iota // the id of a Patient reference
	refTyped                  // Type/id of any reference
)

// refWalk appends to dst what kind says of each reference it finds;
// dst[from:] is what this extractor has appended so far.
type refWalk struct {
	dst    []string
	from   int
	kind   refKind
	intern map[string]string // patient ids already allocated (nil: none)
}

// at walks the value at b[i], whose nesting depth is depth, to the
// references at path (the steps left, "" at the Reference itself). b ends
// at the end of the top-level member's value, which the top-level walk
// has checked, so a walk never leaves it.
func (w *refWalk) at(b []byte, i int, path string, depth int) {
	var s jsonobj.Scanner
	switch {
	case i < len(b) && b[i] == '[':
		it := s.Array(b, i, depth)
		for it.Next() {
			if b[it.ValueStart] == '{' {
				w.inObject(b, it.ValueStart, path, depth+1)
			}
		}
	case i < len(b) && b[i] == '{':
		w.inObject(b, i, path, depth)
	}
}

// inObject is at for the object at b[i].
func (w *refWalk) inObject(b []byte, i int, path string, depth int) {
	step, rest, _ := strings.Cut(path, ".")
	if path == "" {
		step = "reference"
	}
	vs, ve, ok := lastMember(b, i, depth, step)
	if !ok {
		return
	}
	if path != "" {
		w.at(b[:ve], vs, rest, depth+1)
		return
	}
	ref, ok := stringValue(b[vs:ve])
	if !ok {
		return
	}
	typ, id, ok := parseRef(ref)
	if !ok {
		return
	}
	switch w.kind {
	case refPatient:
		// A repeated id is not converted again (sortUnique would drop it).
		if string(typ) != "Patient" {
			return
		}
		for _, d := range w.dst[w.from:] {
			if d == string(id) {
				return
			}
		}
		s, ok := w.intern[string(id)]
		if !ok {
			s = string(id)
			if w.intern != nil {
				w.intern[s] = s
			}
		}
		w.dst = append(w.dst, s)
	case refTyped:
		w.dst = append(w.dst, string(typ)+"/"+string(id))
	}
}

// lastMember returns the bounds of the value of the last member named key
// of the object at b[i] (depth its nesting depth), and whether the
// object, valid, has one.
func lastMember(b []byte, i, depth int, key string) (vs, ve int, ok bool) {
	var s jsonobj.Scanner
	it := s.Object(b, i, depth)
	for it.Next() {
		if string(it.Key()) == key {
			vs, ve, ok = it.ValueStart, it.ValueEnd, true
		}
	}
	if it.End() < 0 {
		return 0, 0, false
	}
	return vs, ve, ok
}

// groupMember is one Group.member entry.
type groupMember struct {
	Type, ID   string // "Patient"/"Group"/other type and id of member.entity; Type "" for urn:uuid:<ID>
	Inactive   bool   // member.inactive
	Start, End uint64 // member.period as µs since the Unix epoch (0: open); End is the last µs the period covers
}

// groupMembers returns Group.member entries with a usable entity reference, in document order.
//
// member.entity is usable when its reference follows the rules above (any
// resource type), or is urn:uuid:<id> with id a FHIR id, which gives Type
// "" (Synthea's Groups reference their patients so; the export resolves
// it to Patient/<id>). Inactive is true only for member.inactive true.
// Start is the first µs of member.period.start, End the last µs that
// member.period.end covers at its precision (end "2020" is
// 2020-12-31T23:59:59.999999Z); both are FHIR dateTimes
// (https://hl7.org/fhir/R4/datatypes.html#dateTime), a date without a
// time being read as UTC. A missing or unparseable bound is 0 (open). A
// start before the epoch is 0 too (open, the same for any time since
// the epoch); an end before the epoch is 1, so that it stays closed and
// past. A body that is not a JSON object is an error.
func groupMembers(body []byte) ([]groupMember, error) {
	if !isObject(body) {
		return nil, errNotObject
	}
	var s jsonobj.Scanner
	it := s.Object(body, 0, 1)
	vs, ve := -1, -1
	for it.Next() {
		if string(it.Key()) == "member" {
			vs, ve = it.ValueStart, it.ValueEnd
		}
	}
	if it.End() != len(body) {
		return nil, errNotObject
	}
	if vs < 0 || body[vs] != '[' {
		return nil, nil
	}
	b := body[:ve]
	var out []groupMember
	arr := s.Array(b, vs, 2)
	for arr.Next() {
		if b[arr.ValueStart] != '{' {
			continue
		}
		var m groupMember
		var ok bool
		mem := s.Object(b, arr.ValueStart, 3)
		for mem.Next() {
			v := b[mem.ValueStart:mem.ValueEnd]
			switch string(mem.Key()) {
			case "entity":
				m.Type, m.ID, ok = "", "", false
				if v[0] != '{' {
					continue
				}
				rs, re, found := lastMember(b[:mem.ValueEnd], mem.ValueStart, 4, "reference")
				if !found {
					continue
				}
				ref, isStr := stringValue(b[rs:re])
				if !isStr {
					continue
				}
				if uuid, isUUID := strings.CutPrefix(string(ref), "urn:uuid:"); isUUID {
					if fhir.IsID(uuid) {
						m.ID, ok = uuid, true
					}
				} else if typ, id, valid := parseRef(ref); valid {
					m.Type, m.ID, ok = string(typ), string(id), true
				}
			case "inactive":
				m.Inactive = string(v) == "true"
			case "period":
				m.Start, m.End = 0, 0
				if v[0] != '{' {
					continue
				}
				if ps, pe, found := lastMember(b[:mem.ValueEnd], mem.ValueStart, 4, "start"); found {
					if str, isStr := stringValue(b[ps:pe]); isStr {
						m.Start, _ = periodBound(str, false)
					}
				}
				if ps, pe, found := lastMember(b[:mem.ValueEnd], mem.ValueStart, 4, "end"); found {
					if str, isStr := stringValue(b[ps:pe]); isStr {
						m.End, _ = periodBound(str, true)
					}
				}
			}
		}
		if ok && mem.End() >= 0 {
			out = append(out, m)
		}
	}
	return out, nil
}

// provenanceTargets appends "Type/id" of each Provenance.target reference, sorted and deduplicated.
//
// References follow the rules above (any resource type; a version is
// dropped, an absolute URL reduced to its Type/id). A body that is not a
// JSON object is an error.
func provenanceTargets(dst []string, body []byte) ([]string, error) {
	if !isObject(body) {
		return dst, errNotObject
	}
	var s jsonobj.Scanner
	it := s.Object(body, 0, 1)
	vs, ve := -1, -1
	for it.Next() {
		if string(it.Key()) == "target" {
			vs, ve = it.ValueStart, it.ValueEnd
		}
	}
	if it.End() != len(body) {
		return dst, errNotObject
	}
	start := len(dst)
	if vs >= 0 {
		w := refWalk{dst: dst, from: start, kind: refTyped}
		w.at(body[:ve], vs, "", 2)
		dst = w.dst
	}
	return sortUnique(dst, start), nil
}

// isObject is a cheap check that b may be a JSON object; the walks check
// the rest.
func isObject(b []byte) bool {
	return len(b) >= 2 && b[0] == '{' && b[len(b)-1] == '}'
}

// sortUnique sorts dst[start:] and removes its duplicates.
func sortUnique(dst []string, start int) []string {
	tail := dst[start:]
	if len(tail) < 2 {
		return dst
	}
	slices.Sort(tail)
	return dst[:start+len(slices.Compact(tail))]
}

// stringValue returns the value of the JSON value lit if it is a string
// (checked by a Scanner): lit without its quotes when it has no escapes,
// else a decoded copy.
func stringValue(lit []byte) ([]byte, bool) {
	if len(lit) < 2 || lit[0] != '"' {
		return nil, false
	}
	var s jsonobj.Scanner
	end, escaped := s.String(lit, 0)
	if end != len(lit) {
		return nil, false
	}
	if !escaped {
		return lit[1 : len(lit)-1], true
	}
	return jsonobj.Unquote(lit), true
}

// parseRef returns the type and id of a reference by the rules above;
// they alias ref.
func parseRef(ref []byte) (typ, id []byte, ok bool) { return fhir.ParseReference(ref) }

// periodBound reads a FHIR dateTime (fhir.DateRange) and returns the
// first µs the value covers at its precision, or with last the last one,
// clamped to the epoch as groupMembers says (at least 1 for last); ok is
// false, and the bound 0, when s is not a dateTime.
func periodBound(s []byte, last bool) (us uint64, ok bool) {
	lo, hi, ok := fhir.DateRange(s)
	if !ok {
		return 0, false
	}
	if last {
		return uint64(max(hi, 1)), true
	}
	return uint64(max(lo, 0)), true
}
