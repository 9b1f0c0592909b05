// Package jsonobj walks the top-level members of a compact JSON object
// without decoding their values, so callers can rewrite a resource while
// keeping every other byte (number literals, escapes, member order) as it
// was. It is a pure leaf: the index stamps meta with it and the synthetic
// data generator rewrites fields with it.
//
// Input must be compact (no whitespace between tokens), as NDJSON lines
// and ingested event bodies are. Scalars are assumed valid (callers check
// with json.Valid where input is untrusted); strings, nesting and bracket
// matching are checked, and a malformed object is ErrSyntax, never a panic.
package jsonobj

import (
	"bytes"
	"encoding/json"
	"errors"
)

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
	i := 1
	if b[i] == '}' {
		if i+1 != len(b) {
			return ErrSyntax
		}
		return nil
	}
	for {
		ks := i
		if i >= len(b) || b[i] != '"' {
			return ErrSyntax
		}
		end, err := skipString(b, i)
		if err != nil {
			return err
		}
		key := b[i+1 : end-1]
		if bytes.IndexByte(key, '\\') >= 0 {
			var s string
			if err := json.Unmarshal(b[i:end], &s); err != nil {
				return ErrSyntax
			}
			key = []byte(s)
		}
		i = end
		if i >= len(b) || b[i] != ':' {
			return ErrSyntax
		}
		vs := i + 1
		if i, err = SkipValue(b, vs); err != nil {
			return err
		}
		if !fn(key, ks, vs, i) {
			return nil
		}
		if i >= len(b) {
			return ErrSyntax
		}
		switch b[i] {
		case ',':
			i++
		case '}':
			if i+1 != len(b) {
				return ErrSyntax
			}
			return nil
		default:
			return ErrSyntax
		}
	}
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

// skipString returns the index just past the JSON string starting at b[i].
func skipString(b []byte, i int) (int, error) {
	for i++; i < len(b); i++ {
		switch b[i] {
		case '\\':
			i++
		case '"':
			return i + 1, nil
		}
	}
	return 0, ErrSyntax
}

// SkipValue returns the index just past the compact JSON value at b[i]. It
// tracks strings and nesting and rejects what it can see is broken: empty
// values, unbalanced or mismatched brackets, unterminated strings.
func SkipValue(b []byte, i int) (int, error) {
	if i >= len(b) {
		return 0, ErrSyntax
	}
	switch b[i] {
	case '"':
		return skipString(b, i)
	case '{', '[':
		var buf [32]byte
		stack := buf[:0] // expected closers
		for ; i < len(b); i++ {
			switch b[i] {
			case '"':
				end, err := skipString(b, i)
				if err != nil {
					return 0, err
				}
				i = end - 1
			case '{':
				stack = append(stack, '}')
			case '[':
				stack = append(stack, ']')
			case '}', ']':
				if len(stack) == 0 || stack[len(stack)-1] != b[i] {
					return 0, ErrSyntax
				}
				stack = stack[:len(stack)-1]
				if len(stack) == 0 {
					return i + 1, nil
				}
			}
		}
		return 0, ErrSyntax
	default:
		start := i
		for ; i < len(b); i++ {
			switch b[i] {
			case ',', '}', ']', '{', '[', '"', ':':
				if i == start {
					return 0, ErrSyntax
				}
				return i, nil
			}
		}
		return i, nil
	}
}
