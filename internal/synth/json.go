package synth

import (
	"errors"
	"fmt"
)

var errUnterminated = errors.New("unterminated JSON value")

// eachMember calls fn with the key (raw, without quotes) and the value
// bounds b[vs:ve] of each member of the JSON object b, in order, until fn
// returns false. Only the structure needed to find the members is checked.
func eachMember(b []byte, fn func(key []byte, vs, ve int) bool) error {
	i := skipWS(b, 0)
	if i >= len(b) || b[i] != '{' {
		return errors.New("not a JSON object")
	}
	i = skipWS(b, i+1)
	if i < len(b) && b[i] == '}' {
		return nil
	}
	for {
		if i >= len(b) || b[i] != '"' {
			return fmt.Errorf("offset %d: want an object key", i)
		}
		ke, err := skipString(b, i)
		if err != nil {
			return err
		}
		key := b[i+1 : ke-1]
		i = skipWS(b, ke)
		if i >= len(b) || b[i] != ':' {
			return fmt.Errorf("offset %d: want ':'", i)
		}
		vs := skipWS(b, i+1)
		ve, err := skipValue(b, vs)
		if err != nil {
			return err
		}
		if !fn(key, vs, ve) {
			return nil
		}
		i = skipWS(b, ve)
		switch {
		case i < len(b) && b[i] == ',':
			i = skipWS(b, i+1)
		case i < len(b) && b[i] == '}':
			return nil
		default:
			return fmt.Errorf("offset %d: want ',' or '}'", i)
		}
	}
}

// member returns the bounds of the value of the top-level member key of the
// JSON object b.
func member(b []byte, key string) (vs, ve int, ok bool) {
	eachMember(b, func(k []byte, s, e int) bool {
		if string(k) == key {
			vs, ve, ok = s, e, true
			return false
		}
		return true
	})
	return vs, ve, ok
}

func skipWS(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// skipString returns the offset just after the string starting at b[i].
func skipString(b []byte, i int) (int, error) {
	for j := i + 1; j < len(b); j++ {
		switch b[j] {
		case '\\':
			j++
		case '"':
			return j + 1, nil
		}
	}
	return 0, errUnterminated
}

// skipValue returns the offset just after the JSON value starting at b[i].
func skipValue(b []byte, i int) (int, error) {
	if i >= len(b) {
		return 0, errUnterminated
	}
	switch b[i] {
	case '"':
		return skipString(b, i)
	case '{', '[':
		depth := 0
		for j := i; j < len(b); j++ {
			switch b[j] {
			case '"':
				e, err := skipString(b, j)
				if err != nil {
					return 0, err
				}
				j = e - 1
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return j + 1, nil
				}
			}
		}
		return 0, errUnterminated
	default:
		j := i
		for j < len(b) {
			switch b[j] {
			case ',', '}', ']', ' ', '\t', '\r', '\n':
				if j == i {
					return 0, fmt.Errorf("offset %d: want a value", i)
				}
				return j, nil
			}
			j++
		}
		if j == i {
			return 0, errUnterminated
		}
		return j, nil
	}
}
