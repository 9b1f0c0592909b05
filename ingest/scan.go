package ingest

import (
	"bytes"
	"encoding/binary"
	"unicode/utf8"

	"github.com/bulkstream/bulkstream/index"
)

// The fast path of Decode: one pass over an upsert body that checks
// everything utf8.Valid and json.Valid check (the JSON grammar with its
// number and literal syntax, string escapes, control characters, UTF-8
// inside strings, encoding/json's nesting limit) and reads the top level
// on the way. It accepts only the plain case: a compact or compactable
// object whose resourceType and id equal the subject's, without escaped
// or duplicate top-level names, nested at most MaxDepth deep, with an
// object meta if any whose members pass checkMeta. Everything else it
// leaves to scanResource, which decides (and explains) as before, so
// Decode's answers and reasons do not depend on which path ran.

// scanStatus is the outcome of scanBody.
type scanStatus int

const (
	scanOK      scanStatus = iota // accepted
	scanInvalid                   // not UTF-8 or not JSON: rejected
	scanUnsure                    // valid JSON (if an object), but not the plain case
)

// maxJSONDepth is encoding/json's nesting limit, beyond which json.Valid
// fails.
const maxJSONDepth = 10000

// bodyScanner holds the state of one scanBody pass.
type bodyScanner struct {
	b      []byte
	ws     bool // whitespace between tokens seen
	unsure bool // something scanResource must decide
}

// scanBody validates data, the body of an upsert of typ/id (both already
// checked), and returns its compact form and the layout index.Apply's
// stamper can use (set only when data was compact already, so that its
// offsets are those of body).
func scanBody(data []byte, typ, id string) (body []byte, l index.BodyLayout, st scanStatus) {
	s := bodyScanner{b: data}
	n := len(data)
	i := s.skipWS(0)
	if i >= n || data[i] != '{' {
		return nil, l, scanUnsure // empty, or not an object: scanResource says which
	}
	var keyBuf [64][]byte
	keys := keyBuf[:0]
	var haveType, haveID bool
	if i = s.skipWS(i + 1); i < n && data[i] == '}' {
		i++
	} else {
		for {
			if i >= n || data[i] != '"' {
				return nil, l, scanInvalid
			}
			ks := i
			ke, esc := s.str(i)
			if ke < 0 {
				return nil, l, scanInvalid
			}
			key := data[ks+1 : ke-1]
			if esc || len(keys) == cap(keys) {
				s.unsure = true // scanResource unescapes and compares
			} else {
				for _, k := range keys {
					if len(k) == len(key) && string(k) == string(key) {
						s.unsure = true // duplicate
						break
					}
				}
				keys = append(keys, key)
			}
			if i = s.skipWS(ke); i >= n || data[i] != ':' {
				return nil, l, scanInvalid
			}
			vs := s.skipWS(i + 1)
			if i = s.value(vs, 2); i < 0 {
				return nil, l, scanInvalid
			}
			if !esc {
				v := data[vs:i]
				switch string(key) {
				case "resourceType":
					haveType = true
					if !plainStringIs(v, typ) {
						s.unsure = true
					}
				case "id":
					haveID = true
					l.IDEnd = i
					if !plainStringIs(v, id) {
						s.unsure = true
					}
				case "meta":
					if v[0] != '{' {
						s.unsure = true
					}
					l.MetaStart, l.MetaEnd = vs, i
				}
			}
			if i = s.skipWS(i); i >= n {
				return nil, l, scanInvalid
			}
			if data[i] == '}' {
				i++
				break
			}
			if data[i] != ',' {
				return nil, l, scanInvalid
			}
			i = s.skipWS(i + 1)
		}
	}
	if s.skipWS(i) != n {
		return nil, l, scanInvalid
	}
	if s.unsure || !haveType || !haveID {
		return nil, index.BodyLayout{}, scanUnsure
	}
	if l.MetaEnd > 0 && checkMeta(data[l.MetaStart:l.MetaEnd]) != nil {
		return nil, index.BodyLayout{}, scanUnsure // scanResource explains
	}
	if s.ws {
		return compactJSON(make([]byte, 0, n), data), index.BodyLayout{}, scanOK
	}
	l.Set = true
	return data, l, scanOK
}

// plainStringIs reports whether the JSON value v is a string literal
// without escapes whose content is want.
func plainStringIs(v []byte, want string) bool {
	return len(v) == len(want)+2 && v[0] == '"' && string(v[1:len(v)-1]) == want
}

func (s *bodyScanner) skipWS(i int) int {
	b := s.b
	for i < len(b) {
		switch b[i] {
		case ' ', '\t', '\n', '\r':
			s.ws = true
			i++
		default:
			return i
		}
	}
	return i
}

// value validates the JSON value at b[i] and returns the offset just past
// it, or -1 if it is not valid. depth is the nesting depth of the value if
// it is an object or array (the body itself is depth 1).
func (s *bodyScanner) value(i, depth int) int {
	b := s.b
	n := len(b)
	var stackBuf [MaxDepth]byte
	stack := stackBuf[:0] // closers of the open containers
	for {
		// A value starts at b[i].
		if i >= n {
			return -1
		}
		switch c := b[i]; c {
		case '"':
			if i, _ = s.str(i); i < 0 {
				return -1
			}
		case '{', '[':
			d := depth + len(stack)
			if d > MaxDepth {
				s.unsure = true // too deep: scanResource rejects it
				if d > maxJSONDepth {
					return -1
				}
			}
			closer := byte('}')
			if c == '[' {
				closer = ']'
			}
			stack = append(stack, closer)
			i = s.skipWS(i + 1)
			if i < n && b[i] == closer {
				i++
				stack = stack[:len(stack)-1]
				break // an empty container is a complete value
			}
			if c == '{' {
				if i = s.memberName(i); i < 0 {
					return -1
				}
			}
			continue // the first element
		case 't':
			if !bytes.HasPrefix(b[i:], []byte("true")) {
				return -1
			}
			i += 4
		case 'f':
			if !bytes.HasPrefix(b[i:], []byte("false")) {
				return -1
			}
			i += 5
		case 'n':
			if !bytes.HasPrefix(b[i:], []byte("null")) {
				return -1
			}
			i += 4
		default:
			if i = number(b, i); i < 0 {
				return -1
			}
		}
		// A value ended at b[i]: close containers until one continues.
		for {
			if len(stack) == 0 {
				return i
			}
			if i = s.skipWS(i); i >= n {
				return -1
			}
			top := stack[len(stack)-1]
			if b[i] == ',' {
				i = s.skipWS(i + 1)
				if top == '}' {
					if i = s.memberName(i); i < 0 {
						return -1
					}
				}
				break
			}
			if b[i] != top {
				return -1
			}
			i++
			stack = stack[:len(stack)-1]
		}
	}
}

// memberName validates `"name" :` at b[i] and returns the offset of the
// value, or -1.
func (s *bodyScanner) memberName(i int) int {
	b := s.b
	if i >= len(b) || b[i] != '"' {
		return -1
	}
	if i, _ = s.str(i); i < 0 {
		return -1
	}
	if i = s.skipWS(i); i >= len(b) || b[i] != ':' {
		return -1
	}
	return s.skipWS(i + 1)
}

// SWAR constants: a byte repeated in every byte of a word.
const (
	swarOnes  = 0x0101010101010101
	swarHighs = 0x8080808080808080
)

// str validates the string literal at b[i] (which is '"') and returns the
// offset just past it, or -1, and whether it has escapes.
func (s *bodyScanner) str(i int) (end int, esc bool) {
	b := s.b
	n := len(b)
	i++
	for {
		// Skip 8 bytes at a time while none is a quote, a backslash, a
		// control character or non-ASCII.
		for i+8 <= n {
			w := binary.LittleEndian.Uint64(b[i:])
			q := w ^ (swarOnes * '"')
			bs := w ^ (swarOnes * '\\')
			special := w | ((w - swarOnes*0x20) & ^w) | ((q - swarOnes) & ^q) | ((bs - swarOnes) & ^bs)
			if special&swarHighs != 0 {
				break
			}
			i += 8
		}
		if i >= n {
			return -1, esc
		}
		switch c := b[i]; {
		case c == '"':
			return i + 1, esc
		case c == '\\':
			esc = true
			if i+1 >= n {
				return -1, esc
			}
			switch b[i+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				i += 2
			case 'u':
				if i+6 > n || !isHex(b[i+2]) || !isHex(b[i+3]) || !isHex(b[i+4]) || !isHex(b[i+5]) {
					return -1, esc
				}
				i += 6
			default:
				return -1, esc
			}
		case c < 0x20:
			return -1, esc
		case c < utf8.RuneSelf:
			i++
		default:
			r, size := utf8.DecodeRune(b[i:])
			if r == utf8.RuneError && size == 1 {
				return -1, esc
			}
			i += size
		}
	}
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

// number validates the number literal at b[i] and returns the offset just
// past it, or -1.
func number(b []byte, i int) int {
	n := len(b)
	if i < n && b[i] == '-' {
		i++
	}
	switch {
	case i >= n:
		return -1
	case b[i] == '0':
		i++
	case '1' <= b[i] && b[i] <= '9':
		for i++; i < n && isDigit(b[i]); i++ {
		}
	default:
		return -1
	}
	if i < n && b[i] == '.' {
		i++
		if i >= n || !isDigit(b[i]) {
			return -1
		}
		for i++; i < n && isDigit(b[i]); i++ {
		}
	}
	if i < n && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < n && (b[i] == '+' || b[i] == '-') {
			i++
		}
		if i >= n || !isDigit(b[i]) {
			return -1
		}
		for i++; i < n && isDigit(b[i]); i++ {
		}
	}
	return i
}

// compactJSON appends valid JSON b to dst without the whitespace between
// tokens, as json.Compact does.
func compactJSON(dst, b []byte) []byte {
	start := 0
	inStr := false
	for i := 0; i < len(b); i++ {
		c := b[i]
		if inStr {
			switch c {
			case '\\':
				i++
			case '"':
				inStr = false
			}
			continue
		}
		switch c {
		case '"':
			inStr = true
		case ' ', '\t', '\n', '\r':
			dst = append(dst, b[start:i]...)
			start = i + 1
		}
	}
	return append(dst, b[start:]...)
}
