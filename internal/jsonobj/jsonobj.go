// Package jsonobj is bulkstream's one JSON walker. A Scanner checks JSON
// text as json.Valid does (and, if asked, UTF-8 as utf8.Valid does) and
// reports offsets instead of decoding values; its Iter reads an object's
// members or an array's elements one at a time. ingest validates event
// bodies with it in one pass, whitespace and all.
//
// Each, EachKey, Members, Lookup and SkipValue build on it for compact text
// (no whitespace between tokens), as stored resources and NDJSON lines are,
// so that callers can rewrite a resource while keeping every other byte
// (number literals, escapes, member order) as it was: the index stamps meta
// with them, export applies _elements and the synthetic data generator
// rewrites fields. Text they cannot walk is ErrSyntax, never a panic.
//
// It is a pure leaf: the standard library only.
package jsonobj

import "errors"

// ErrSyntax is returned for bytes that are not a compact JSON object.
var ErrSyntax = errors.New("jsonobj: not a compact JSON object")

// Each calls fn for each member of the object b, in order, with its key
// (unescaped when it has escapes, so "me\u0074a" is "meta", as every JSON
// decoder reads it), the offset ks of the key's opening quote and the
// bounds b[vs:ve] of its value, until fn returns false.
func Each(b []byte, fn func(key string, ks, vs, ve int) bool) error {
	return EachKey(b, func(key []byte, ks, vs, ve int) bool {
		return fn(string(key), ks, vs, ve)
	})
}

// EachKey is Each with the key as bytes, for callers that only compare
// it: a key without escapes (every FHIR name) is a slice of b, so the
// walk allocates nothing; a key with escapes is unescaped into a new
// slice. fn must not keep or modify key.
func EachKey(b []byte, fn func(key []byte, ks, vs, ve int) bool) error {
	if len(b) < 2 || b[0] != '{' || b[len(b)-1] != '}' {
		return ErrSyntax
	}
	var s Scanner
	it := s.Object(b, 0, 1)
	for it.Next() {
		if it.Space {
			return ErrSyntax
		}
		if !fn(it.Key(), it.KeyStart, it.ValueStart, it.ValueEnd) {
			return nil
		}
	}
	if it.End() != len(b) || it.Space {
		return ErrSyntax
	}
	return nil
}

// Member is one "key":value pair of an object.
type Member struct {
	Key   string // unescaped
	Raw   []byte // "key":value as published
	Value []byte
}

// Members returns every member of the object b; the slices alias b.
func Members(b []byte) ([]Member, error) {
	var out []Member
	err := Each(b, func(key string, ks, vs, ve int) bool {
		out = append(out, Member{Key: key, Raw: b[ks:ve], Value: b[vs:ve]})
		return true
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// Lookup returns the bounds of the value of the last top-level member
// named key (the one encoding/json would decode).
func Lookup(b []byte, key string) (vs, ve int, ok bool) {
	Each(b, func(k string, _, s, e int) bool {
		if k == key {
			vs, ve, ok = s, e, true
		}
		return true
	})
	return vs, ve, ok
}

// SkipValue returns the index just past the compact JSON value at b[i],
// checked as Scanner checks it (UTF-8 aside), or ErrSyntax.
func SkipValue(b []byte, i int) (int, error) {
	var s Scanner
	end := s.Value(b, i, 1)
	if end < 0 || s.Space {
		return 0, ErrSyntax
	}
	return end, nil
}
