package jsonobj

import (
	"bytes"
	"encoding/binary"
	"math/bits"
)

// The plain walk: a fast, non-validating reader for text that has no
// backslash, such as most stored resources (which ingest validated). Without
// a backslash a string literal has no escape, so it ends at the next '"',
// and a container ends where its brackets, counted outside strings,
// balance. The walk does not check the grammar inside the values it skips:
// it is for callers that only need the offsets of members in text already
// known to be JSON. On any other text it returns offsets within the text
// or -1 (it reaches the end without finding what it needs), never panics
// and always ends; the caller must have checked that the text has no
// backslash (bytes.IndexByte(b, '\\') < 0), or a quote escaped inside a
// string misleads it.

// SkipPlain returns the offset just past the JSON value at b[i] in text
// without backslashes, or -1 when the text ends first or no value starts
// at b[i]. It checks only what it needs to find the end: the quotes of
// strings and the brackets of containers (a container ends at the bracket
// that balances its first one, whichever kind); a number or literal ends
// at the next ',', '}', ']' or whitespace.
func SkipPlain(b []byte, i int) int {
	if i < 0 || i >= len(b) {
		return -1
	}
	switch b[i] {
	case '"':
		return plainStringEnd(b, i)
	case '{', '[':
		return skipPlainContainer(b, i)
	case ',', '}', ']', ':', ' ', '\t', '\n', '\r':
		return -1
	}
	j := i + 1
	for j < len(b) && !plainEnd[b[j]] {
		j++
	}
	return j
}

// plainStringEnd returns the offset just past the string at b[i] (a
// '"'), in text without backslashes: past the next '"'; -1 if there is
// none. Names and most values are short: it looks 8 bytes at a time
// before it hands a long string to bytes.IndexByte.
func plainStringEnd(b []byte, i int) int {
	i++
	for k := 0; k < 4 && i+8 <= len(b); k++ {
		if q := zeroBytes(binary.LittleEndian.Uint64(b[i:]) ^ (swarOnes * '"')); q != 0 {
			return i + bits.TrailingZeros64(q)>>3 + 1
		}
		i += 8
	}
	if i > len(b) {
		return -1
	}
	j := bytes.IndexByte(b[i:], '"')
	if j < 0 {
		return -1
	}
	return i + j + 1
}

// plainEnd marks the bytes that end a number or literal.
var plainEnd = [256]bool{',': true, '}': true, ']': true, ' ': true, '\t': true, '\n': true, '\r': true}

// skipPlainContainer returns the offset just past the object or array at
// b[i], or -1.
func skipPlainContainer(b []byte, i int) int {
	end, _ := plainBrackets(b, i+1, 1)
	return end
}

// PlainDepth returns the number of objects and arrays open at b[i] in the
// JSON text b, which has no backslash: 1 for a member of the outermost
// object. b[i] must be outside a string (a string's opening quote is). It
// counts the brackets outside strings on the shorter side, before b[i]
// from the start or after it to the end, so the text must be JSON (every
// bracket balanced) for both counts to agree; it does not check it.
func PlainDepth(b []byte, i int) int {
	if i < 0 || i > len(b) {
		return -1
	}
	if i <= len(b)-i {
		return plainNet(b[:i])
	}
	return -plainNet(b[i:])
}

// plainNet returns the openers less the closers outside strings in b,
// which starts outside a string and has no backslash: the loop of
// plainBrackets without its stop, which makes it a third faster.
func plainNet(b []byte) int {
	var inStr uint64
	n := 0
	for ; len(b) >= 8; b = b[8:] {
		w := binary.LittleEndian.Uint64(b)
		var s uint64
		s, inStr = quoteParity(w, inStr)
		o, c := bracketMarks(w, s)
		n += bits.OnesCount64(o) - bits.OnesCount64(c)
	}
	// The last bytes one by one, from a depth no closer among them can
	// bring to 0.
	_, d := plainTail(b, 0, inStr != 0, len(b)+1)
	return n + d - (len(b) + 1)
}

// plainBrackets counts the brackets outside strings in b from b[i], which
// is outside a string, with depth containers open there: it returns the
// offset just past the closer that brings depth to 0 (or -1) and the
// depth where it stopped. It reads 8 bytes at a time (SWAR) without a
// branch per byte (quoteParity, bracketMarks), counts the brackets of each
// word, and visits them one by one only in a word where the count says
// depth may reach 0.
func plainBrackets(b []byte, i, depth int) (end, d int) {
	n := len(b)
	var inStr uint64
	for ; i+8 <= n; i += 8 {
		w := binary.LittleEndian.Uint64(b[i : i+8])
		var s uint64
		s, inStr = quoteParity(w, inStr)
		o, c := bracketMarks(w, s)
		if nc := bits.OnesCount64(c); nc < depth {
			depth += bits.OnesCount64(o) - nc
			continue
		}
		for m := o | c; m != 0; m &= m - 1 {
			bit := m & -m
			if o&bit != 0 {
				depth++
			} else if depth--; depth == 0 {
				return i + bits.TrailingZeros64(bit)>>3 + 1, 0
			}
		}
	}
	return plainTail(b, i, inStr != 0, depth)
}

// plainTail is plainBrackets one byte at a time, from b[i] (inside a
// string when str), for the last bytes that do not fill a word.
func plainTail(b []byte, i int, str bool, depth int) (end, d int) {
	for ; i < len(b); i++ {
		switch b[i] {
		case '"':
			str = !str
		case '{', '[':
			if !str {
				depth++
			}
		case '}', ']':
			if !str {
				if depth--; depth == 0 {
					return i + 1, 0
				}
			}
		}
	}
	return -1, depth
}

// quoteParity returns s, the high bit of each byte of the 8 bytes of w
// (little-endian: the first byte lowest) that comes after an odd number of
// quotes (inside a string, or its opening quote), given inStr, the high
// bits all set when w starts inside a string; next is that for the next
// word. It is the prefix XOR of the quotes: without a backslash no quote
// is escaped.
func quoteParity(w, inStr uint64) (s, next uint64) {
	q := zeroBytes(w ^ (swarOnes * '"'))
	s = q ^ q<<8
	s ^= s << 16
	s ^= (s << 32) ^ inStr
	return s, uint64(int64(s)>>63) & (swarOnes * 0x80)
}

// bracketMarks returns the high bit of each byte of w that is an opener
// ('{', '[') in o and of each closer in c, outside the string bytes s.
func bracketMarks(w, s uint64) (o, c uint64) {
	f := w | swarOnes*0x20 // folds '[' onto '{' and ']' onto '}'
	return zeroBytes(f^(swarOnes*'{')) &^ s, zeroBytes(f^(swarOnes*'}')) &^ s
}

// zeroBytes returns the high bit of each byte of x that is zero, and no
// other bit.
func zeroBytes(x uint64) uint64 {
	const low7 = swarOnes * 0x7f
	return ^(((x & low7) + low7) | x | low7)
}

// A PlainIter reads the members of an object, or the elements of an
// array, in text without backslashes, as Iter does but without checking
// the values it skips (SkipPlain). It checks the container's own
// structure: '"name":' before each member's value, ',' between items and
// the closing bracket (not whitespace: compact text only).
//
//	it := jsonobj.PlainObject(b, i)
//	for it.Next() {
//		… b[it.KeyStart:it.KeyEnd], b[it.ValueStart:it.ValueEnd] …
//	}
//	end := it.End() // -1 if the walk failed
type PlainIter struct {
	// The current item: its name (objects only) as a string literal,
	// quotes included, at b[KeyStart:KeyEnd], and its value at
	// b[ValueStart:ValueEnd].
	KeyStart, KeyEnd     int
	ValueStart, ValueEnd int
	// Lazy, set before the first Next, leaves an object or array value
	// unskipped until it is needed: Next then sets ValueEnd to -1, and
	// SkipValue (or the next Next) finds it. A caller that reads the
	// value itself, and may stop there, saves a walk over it.
	Lazy bool

	b     []byte
	i     int // where the next item or the closer is due
	close byte
	state byte // iterStart, iterMore, iterEnd, or iterBad
}

// PlainObject returns a PlainIter over the members of the object at b[i]
// (text without backslashes). If b[i] is not '{', the iterator has no
// items and End returns -1.
func PlainObject(b []byte, i int) PlainIter { return plainIter(b, i, '{', '}') }

// PlainArray returns a PlainIter over the elements of the array at b[i],
// as PlainObject does for objects.
func PlainArray(b []byte, i int) PlainIter { return plainIter(b, i, '[', ']') }

func plainIter(b []byte, i int, open, close byte) PlainIter {
	it := PlainIter{b: b, close: close, i: i + 1}
	if i < 0 || i >= len(b) || b[i] != open {
		it.state = iterBad
	}
	return it
}

// Next reads the next item and reports whether there was one. It returns
// false at the end of the container and where the walk fails.
func (it *PlainIter) Next() bool {
	if it.ValueEnd < 0 && it.state == iterMore && it.SkipValue() < 0 {
		return false
	}
	b := it.b
	i, state, ok := separator(b, it.i, it.state, it.close)
	if !ok {
		it.i, it.state = i, state
		return false
	}
	if it.close == '}' {
		if i >= len(b) || b[i] != '"' {
			it.state = iterBad
			return false
		}
		it.KeyStart, it.KeyEnd = i, plainStringEnd(b, i)
		if it.KeyEnd < 0 {
			it.state = iterBad
			return false
		}
		if i = it.KeyEnd; i >= len(b) || b[i] != ':' {
			it.state = iterBad
			return false
		}
		i++
	}
	it.ValueStart = i
	if it.Lazy && i < len(b) && (b[i] == '{' || b[i] == '[') {
		it.i, it.ValueEnd, it.state = i, -1, iterMore
		return true
	}
	if it.ValueEnd = SkipPlain(b, i); it.ValueEnd < 0 {
		it.state = iterBad
		return false
	}
	it.i, it.state = it.ValueEnd, iterMore
	return true
}

// SkipValue returns ValueEnd, finding it first when Lazy left it unknown
// (-1); -1 when the walk fails.
func (it *PlainIter) SkipValue() int {
	if it.ValueEnd >= 0 || it.state != iterMore {
		return it.ValueEnd
	}
	if it.ValueEnd = skipPlainContainer(it.b, it.ValueStart); it.ValueEnd < 0 {
		it.state = iterBad
		return -1
	}
	it.i = it.ValueEnd
	return it.ValueEnd
}

// Name returns the current member's name without its quotes (a slice of
// the text: without backslashes it has no escapes).
func (it *PlainIter) Name() []byte { return it.b[it.KeyStart+1 : it.KeyEnd-1] }

// End returns the offset just past the container's closing bracket, once
// Next has returned false, or -1 if the walk failed (or Next has not
// reached the end).
func (it *PlainIter) End() int {
	if it.state != iterEnd {
		return -1
	}
	return it.i
}
