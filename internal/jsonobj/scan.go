package jsonobj

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"math/bits"
	"unicode/utf8"
)

// MaxNesting is encoding/json's nesting limit: text nested deeper is
// invalid, as json.Valid says.
const MaxNesting = 10000

// A Scanner walks JSON text and checks it on the way: the grammar as
// json.Valid checks it (number and literal syntax, string escapes, control
// characters, nesting up to MaxNesting) and, with UTF8 set, the UTF-8 of
// strings as utf8.Valid checks it. It never decodes a value; it reports
// offsets. Whitespace is allowed wherever JSON allows it and noted in
// Space, so that a caller that wants compact text can tell.
//
// The zero Scanner is ready to use. Its methods return -1 for an offset
// where the text is not valid JSON.
type Scanner struct {
	// UTF8 makes strings with invalid UTF-8 invalid. json.Valid lets them
	// through (and encoding/json replaces the bytes with U+FFFD).
	UTF8 bool
	// MaxDepth, if positive, is the nesting depth (the outermost container
	// is depth 1) beyond which Deep is set. The walk goes on: only
	// MaxNesting makes text invalid.
	MaxDepth int

	// Space is set once whitespace has been seen between tokens.
	Space bool
	// Deep is set once a container nested deeper than MaxDepth has been
	// seen.
	Deep bool
}

// SkipSpace returns the offset of the first byte at or after b[i] that is
// not whitespace (len(b) if there is none).
func (s *Scanner) SkipSpace(b []byte, i int) int {
	for i < len(b) {
		switch b[i] {
		case ' ', '\t', '\n', '\r':
			s.Space = true
			i++
		default:
			return i
		}
	}
	return i
}

// Value returns the offset just past the JSON value at b[i], or -1. depth
// is the nesting depth the value has if it is an object or array.
func (s *Scanner) Value(b []byte, i, depth int) int {
	n := len(b)
	var stackBuf [64]byte
	stack := stackBuf[:0] // closers of the open containers
	for {
		// A value starts at b[i].
		if i >= n {
			return -1
		}
		switch c := b[i]; c {
		case '"':
			if i, _ = s.String(b, i); i < 0 {
				return -1
			}
		case '{', '[':
			d := depth + len(stack)
			if d > MaxNesting {
				return -1
			}
			if s.MaxDepth > 0 && d > s.MaxDepth {
				s.Deep = true
			}
			closer := byte('}')
			if c == '[' {
				closer = ']'
			}
			stack = append(stack, closer)
			i = s.SkipSpace(b, i+1)
			if i < n && b[i] == closer {
				i++
				stack = stack[:len(stack)-1]
				break // an empty container is a complete value
			}
			if c == '{' {
				if i = s.memberName(b, i); i < 0 {
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
			if i = s.SkipSpace(b, i); i >= n {
				return -1
			}
			top := stack[len(stack)-1]
			if b[i] == ',' {
				i = s.SkipSpace(b, i+1)
				if top == '}' {
					if i = s.memberName(b, i); i < 0 {
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

// memberName checks `"name" :` at b[i] and returns the offset of the
// value, or -1.
func (s *Scanner) memberName(b []byte, i int) int {
	if i >= len(b) || b[i] != '"' {
		return -1
	}
	if i, _ = s.String(b, i); i < 0 {
		return -1
	}
	if i = s.SkipSpace(b, i); i >= len(b) || b[i] != ':' {
		return -1
	}
	return s.SkipSpace(b, i+1)
}

// SWAR constants: a byte repeated in every byte of a word.
const (
	swarOnes  = 0x0101010101010101
	swarHighs = 0x8080808080808080
)

// String returns the offset just past the string literal at b[i] (which
// must be '"'), or -1, and whether it has escapes.
func (s *Scanner) String(b []byte, i int) (end int, escaped bool) {
	n := len(b)
	i++
	for {
		// Skip 8 bytes at a time while none is a quote, a backslash, a
		// control character or non-ASCII, then to the first that is: the
		// lowest flagged byte is always a true one (a borrow only flags
		// bytes above it).
		for i+8 <= n {
			w := binary.LittleEndian.Uint64(b[i:])
			q := w ^ (swarOnes * '"')
			bs := w ^ (swarOnes * '\\')
			special := (w | ((w - swarOnes*0x20) & ^w) | ((q - swarOnes) & ^q) | ((bs - swarOnes) & ^bs)) & swarHighs
			if special != 0 {
				i += bits.TrailingZeros64(special) >> 3
				break
			}
			i += 8
		}
		if i >= n {
			return -1, escaped
		}
		switch c := b[i]; {
		case c == '"':
			return i + 1, escaped
		case c == '\\':
			escaped = true
			if i+1 >= n {
				return -1, escaped
			}
			switch b[i+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				i += 2
			case 'u':
				if i+6 > n || !isHex(b[i+2]) || !isHex(b[i+3]) || !isHex(b[i+4]) || !isHex(b[i+5]) {
					return -1, escaped
				}
				i += 6
			default:
				return -1, escaped
			}
		case c < 0x20:
			return -1, escaped
		case c < utf8.RuneSelf || !s.UTF8:
			i++
		default:
			r, size := utf8.DecodeRune(b[i:])
			if r == utf8.RuneError && size == 1 {
				return -1, escaped
			}
			i += size
		}
	}
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

// number returns the offset just past the number literal at b[i], or -1.
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

// An Iter reads the members of an object, or the elements of an array,
// one at a time, checking each as the Scanner it came from checks text. It
// works on a copy of that Scanner, embedded, whose Space and Deep cover
// the container once the walk is done:
//
//	it := s.Object(b, i, 1)
//	for it.Next() {
//		… b[it.KeyStart:it.KeyEnd], b[it.ValueStart:it.ValueEnd] …
//	}
//	end := it.End() // -1 if the object is not valid
type Iter struct {
	Scanner
	// The current item: its name (objects only) as a string literal,
	// quotes included, at b[KeyStart:KeyEnd], Escaped when it has escapes,
	// and its value at b[ValueStart:ValueEnd].
	KeyStart, KeyEnd     int
	ValueStart, ValueEnd int
	Escaped              bool

	b     []byte
	i     int // where the next item or the closer is due
	depth int // the container's
	close byte
	state byte // iterStart, iterMore, iterEnd, or iterBad
}

const (
	iterStart = iota
	iterMore
	iterEnd
	iterBad
)

// Object returns an Iter over the members of the object at b[i]; depth is
// its nesting depth. If b[i] is not '{', the Iter has no items and End
// returns -1.
func (s *Scanner) Object(b []byte, i, depth int) Iter {
	return s.iter(b, i, depth, '{', '}')
}

// Array returns an Iter over the elements of the array at b[i], as Object
// does for objects.
func (s *Scanner) Array(b []byte, i, depth int) Iter {
	return s.iter(b, i, depth, '[', ']')
}

func (s *Scanner) iter(b []byte, i, depth int, open, close byte) Iter {
	it := Iter{Scanner: *s, b: b, depth: depth, close: close}
	if i >= len(b) || b[i] != open || depth > MaxNesting {
		it.state = iterBad
		return it
	}
	if it.MaxDepth > 0 && depth > it.MaxDepth {
		it.Deep = true
	}
	it.i = it.SkipSpace(b, i+1)
	return it
}

// Next reads the next item and reports whether there was one. It returns
// false at the end of the container and where the text is not valid.
func (it *Iter) Next() bool {
	b, s := it.b, &it.Scanner
	i, state, ok := separator(b, it.i, it.state, it.close)
	if !ok {
		it.i, it.state = i, state
		return false
	}
	if state == iterMore {
		i = s.SkipSpace(b, i) // after the ','
	}
	if it.close == '}' {
		if i >= len(b) || b[i] != '"' {
			it.state = iterBad
			return false
		}
		it.KeyStart = i
		if it.KeyEnd, it.Escaped = s.String(b, i); it.KeyEnd < 0 {
			it.state = iterBad
			return false
		}
		if i = s.SkipSpace(b, it.KeyEnd); i >= len(b) || b[i] != ':' {
			it.state = iterBad
			return false
		}
		i = s.SkipSpace(b, i+1)
	}
	it.ValueStart = i
	if it.ValueEnd = s.Value(b, i, it.depth+1); it.ValueEnd < 0 {
		it.state = iterBad
		return false
	}
	it.i, it.state = s.SkipSpace(b, it.ValueEnd), iterMore
	return true
}

// separator reads what comes at b[i] before the next item of a container
// that closes with close, in state: nothing before the first item
// (iterStart), a ',' before any other (iterMore), or the closer. It
// returns the offset of the item and ok, or where the iterator then stands
// and its state (iterEnd past the closer, iterBad on anything else, state
// unchanged after the end).
func separator(b []byte, i int, state, close byte) (int, byte, bool) {
	switch state {
	case iterStart:
		if i < len(b) && b[i] == close {
			return i + 1, iterEnd, false
		}
		return i, state, true
	case iterMore:
		switch {
		case i >= len(b):
			return i, iterBad, false
		case b[i] == close:
			return i + 1, iterEnd, false
		case b[i] != ',':
			return i, iterBad, false
		}
		return i + 1, state, true
	}
	return i, state, false
}

// End returns the offset just past the container's closing bracket, once
// Next has returned false, or -1 if the container is not valid (or Next
// has not reached its end).
func (it *Iter) End() int {
	if it.state != iterEnd {
		return -1
	}
	return it.i
}

// Key returns the current member's name, unescaped when it has escapes
// (so "me\u0074a" is "meta", as every JSON decoder reads it). A name
// without escapes, which is every FHIR name, is a slice of the text.
func (it *Iter) Key() []byte {
	lit := it.b[it.KeyStart:it.KeyEnd]
	if !it.Escaped {
		return lit[1 : len(lit)-1]
	}
	return Unquote(bytes.Clone(lit)) // a copy, so that the text does not escape
}

// Unquote returns the value of the string literal lit (quotes included),
// which a Scanner has checked, decoded as encoding/json decodes it (a
// lone surrogate escape becomes U+FFFD).
func Unquote(lit []byte) []byte {
	var s string
	json.Unmarshal(lit, &s) // cannot fail: the literal is valid
	return []byte(s)
}
