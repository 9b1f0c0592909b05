package search

import (
	"bytes"

	"github.com/bulkstream/bulkstream/internal/fhir"
	"github.com/bulkstream/bulkstream/internal/fhirdefs"
	"github.com/bulkstream/bulkstream/internal/jsonobj"
)

// eachValue calls fn with each JSON value that path p reaches in body, a
// resource as a JSON object, until fn returns false. The values are the
// exact bytes of body (an object, string, number or boolean; never null):
// at every step the member's value may be one value or an array, whose
// elements are each followed (a nested array is not: FHIR JSON has
// none). A step's Where keeps only the objects whose member Where.Field
// is the string Where.Value; a path with Targets keeps only the
// Reference objects whose "reference" is a literal reference
// (fhir.ParseReference) to one of those types.
//
// A member name that appears twice in an object counts once, at its last
// place, as encoding/json reads it. Names are compared unescaped. The walk
// allocates nothing unless a member name it reads has escapes.
//
// The error is jsonobj.ErrSyntax when the text the walk reads is not
// JSON; fn may already have been called.
func eachValue(body []byte, p *fhirdefs.SearchPath, fn func(v []byte) bool) error {
	w := walker{p: p, fn: fn}
	if len(body) == 0 || body[0] != '{' || len(p.Steps) == 0 {
		return jsonobj.ErrSyntax
	}
	w.object(body, 0, 0, 1)
	if w.bad {
		return jsonobj.ErrSyntax
	}
	return nil
}

// walker is one eachValue walk.
type walker struct {
	p  *fhirdefs.SearchPath
	fn func(v []byte) bool
	// fast walks with jsonobj's plain walk, which does not check what it
	// skips: only for text without backslashes. bad then means that the
	// walk failed (whitespace, or text that is not JSON), and the caller
	// walks again with the validating Scanner.
	fast bool
	stop bool // fn returned false
	bad  bool // the text is not JSON
}

// object follows step si from the object at b[i] (depth its nesting).
func (w *walker) object(b []byte, i, si, depth int) {
	step := &w.p.Steps[si]
	vs, ve, ok := w.member(b, i, depth, step.Name)
	if !ok {
		return
	}
	w.step(b, vs, ve, si, depth)
}

// step follows step si from b[vs:ve], the value of its member in an
// object at nesting depth. In the fast walk, a container value may end
// before ve: the plain walk stops at its closing bracket.
func (w *walker) step(b []byte, vs, ve, si, depth int) {
	if b[vs] != '[' {
		w.value(b, vs, ve, si, depth+1)
		return
	}
	if w.fast {
		// An element is not skipped before it is read: the walk may
		// stop in it (its end bounded by the array's).
		it := jsonobj.PlainArray(b[:ve], vs)
		it.Lazy = true
		for it.Next() {
			if b[it.ValueStart] == '[' {
				continue // nested arrays are not FHIR JSON
			}
			end := it.ValueEnd
			if end < 0 {
				end = ve
			}
			w.value(b, it.ValueStart, end, si, depth+2)
			if w.stop || w.bad {
				return
			}
		}
		if it.End() < 0 {
			w.bad = true
		}
		return
	}
	var s jsonobj.Scanner
	it := s.Array(b, vs, depth+1)
	for it.Next() {
		if b[it.ValueStart] == '[' {
			continue // nested arrays are not FHIR JSON
		}
		w.value(b, it.ValueStart, it.ValueEnd, si, depth+2)
		if w.stop || w.bad {
			return
		}
	}
	if it.End() < 0 {
		w.bad = true
	}
}

// value handles one value b[vs:ve] of step si: filters it by the step's
// Where, then hands it to fn (last step) or follows the next step.
func (w *walker) value(b []byte, vs, ve, si, depth int) {
	if b[vs] == 'n' { // null
		return
	}
	step := &w.p.Steps[si]
	if step.Where != nil {
		if b[vs] != '{' {
			return
		}
		fs, fe, ok := w.member(b, vs, depth, step.Where.Field)
		if !ok || !stringIs(b[fs:fe], step.Where.Value) {
			return
		}
	}
	if si+1 < len(w.p.Steps) {
		if b[vs] == '{' {
			w.object(b, vs, si+1, depth)
		}
		return
	}
	if len(w.p.Targets) > 0 && !w.targetOK(b, vs, depth) {
		return
	}
	if !w.fn(b[vs:ve]) {
		w.stop = true
	}
}

// targetOK reports whether the value at b[vs] is a Reference whose
// "reference" is to one of the path's target types.
func (w *walker) targetOK(b []byte, vs, depth int) bool {
	if b[vs] != '{' {
		return false
	}
	rs, re, ok := w.member(b, vs, depth, "reference")
	if !ok || b[rs] != '"' {
		return false
	}
	lit := b[rs+1 : re-1]
	if bytes.IndexByte(lit, '\\') >= 0 {
		lit = jsonobj.Unquote(b[rs:re])
	}
	typ, _, ok := fhir.ParseReference(lit)
	if !ok {
		return false
	}
	for _, t := range w.p.Targets {
		if string(typ) == t {
			return true
		}
	}
	return false
}

// member returns the bounds of the value of the last member named name
// of the object at b[i], reading the whole object (a later duplicate
// wins). It sets w.bad when the object is not JSON (or, fast, when the
// plain walk fails).
func (w *walker) member(b []byte, i, depth int, name string) (vs, ve int, ok bool) {
	if w.fast {
		it := jsonobj.PlainObject(b, i)
		for it.Next() {
			if string(it.Name()) == name {
				vs, ve, ok = it.ValueStart, it.ValueEnd, true
			}
		}
		if it.End() < 0 {
			w.bad = true
			return 0, 0, false
		}
		return vs, ve, ok
	}
	var s jsonobj.Scanner
	it := s.Object(b, i, depth)
	for it.Next() {
		var key []byte
		if it.Escaped {
			key = it.Key()
		} else {
			key = b[it.KeyStart+1 : it.KeyEnd-1]
		}
		if string(key) == name {
			vs, ve, ok = it.ValueStart, it.ValueEnd, true
		}
	}
	if it.End() < 0 {
		w.bad = true
		return 0, 0, false
	}
	return vs, ve, ok
}

// stringIs reports whether the JSON value lit is a string literal whose
// value is s.
func stringIs(lit []byte, s string) bool {
	if len(lit) < 2 || lit[0] != '"' {
		return false
	}
	in := lit[1 : len(lit)-1]
	if bytes.IndexByte(in, '\\') < 0 {
		return string(in) == s
	}
	return string(jsonobj.Unquote(lit)) == s
}
