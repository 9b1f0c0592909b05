package jsonobj

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"os"
	"strings"
	"testing"
)

// checkPlain checks the plain walk on b: it never panics, always ends,
// returns offsets inside b, and on compact JSON without backslashes agrees
// with the validating Scanner: the same value ends, the same members and
// elements (lazily skipped or not).
func checkPlain(t *testing.T, b []byte) {
	t.Helper()
	for i := range b {
		if e := SkipPlain(b, i); e > len(b) || e >= 0 && e <= i {
			t.Fatalf("SkipPlain(%q, %d) = %d", b, i, e)
		}
		for _, lazy := range []bool{false, true} {
			for _, open := range []byte{'{', '['} {
				it := plainIter(b, i, open, map[byte]byte{'{': '}', '[': ']'}[open])
				it.Lazy = lazy
				for n := 0; it.Next(); n++ {
					if n > len(b) {
						t.Fatalf("%q at %d: no end", b, i)
					}
				}
				if e := it.End(); e > len(b) {
					t.Fatalf("End %d of %q", e, b)
				}
			}
		}
	}
	for i := -1; i <= len(b)+1; i++ {
		PlainDepth(b, i) // never panics
	}
	if bytes.IndexByte(b, '\\') >= 0 || len(b) == 0 || !json.Valid(b) {
		return
	}
	// PlainDepth agrees with a byte-by-byte count at every offset
	// outside a string (whitespace or not).
	depth, inStr := 0, false
	for i, c := range b {
		if !inStr {
			if got := PlainDepth(b, i); got != depth {
				t.Fatalf("PlainDepth(%q, %d) = %d, want %d", b, i, got, depth)
			}
		}
		switch {
		case c == '"':
			inStr = !inStr
		case inStr:
		case c == '{' || c == '[':
			depth++
		case c == '}' || c == ']':
			depth--
		}
	}
	var c bytes.Buffer
	json.Compact(&c, b)
	if c.Len() != len(b) {
		return
	}
	var s Scanner
	if got, want := SkipPlain(b, 0), s.Value(b, 0, 1); got != want {
		t.Fatalf("SkipPlain(%q) = %d, Scanner: %d", b, got, want)
	}
	if b[0] != '{' && b[0] != '[' {
		return
	}
	for _, lazy := range []bool{false, true} {
		var want, got []string
		vit := s.Object(b, 0, 1)
		pit := PlainObject(b, 0)
		if b[0] == '[' {
			vit, pit = s.Array(b, 0, 1), PlainArray(b, 0)
		}
		pit.Lazy = lazy
		for vit.Next() {
			want = append(want, string(b[vit.KeyStart:vit.KeyEnd])+"="+string(b[vit.ValueStart:vit.ValueEnd]))
		}
		for pit.Next() {
			got = append(got, string(b[pit.KeyStart:pit.KeyEnd])+"="+string(b[pit.ValueStart:pit.SkipValue()]))
		}
		if strings.Join(got, "\n") != strings.Join(want, "\n") || pit.End() != vit.End() {
			t.Fatalf("lazy %v on %q:\n%q end %d\nwant\n%q end %d", lazy, b, got, pit.End(), want, vit.End())
		}
	}
}

var plainSeeds = []string{
	``, `{`, `{}`, `[]`, `[[]]`, `{"a":1}`, `{"a":"b}"}`, `{"a":"[{"}`, `{"a":[1,{"b":"]"},"x"],"c":{"d":{}}}`,
	`{"a":tru}`, `{"a":}`, `{"a"1}`, `{"a":1,}`, `{,}`, `[1,]`, `{"a":[}`, `{"a":{"b":1}`, `{"a":"`, `"x`, `{"a" :1}`,
	`{"resourceType":"Observation","category":[{"coding":[{"system":"s","code":"laboratory"}]}],"valueQuantity":{"value":-1.5e3}}`,
	"{\"a\":\"\xff\xfe\"}", `{"a":[` + strings.Repeat(`{"b":"xxxxxxxxxxxx"},`, 20) + `null]}`,
}

func TestPlainWalk(t *testing.T) {
	for _, s := range plainSeeds {
		checkPlain(t, []byte(s))
	}
}

// The plain walk agrees with the Scanner on every resource of the
// Synthea sample.
func TestPlainWalkSample(t *testing.T) {
	for _, b := range sampleBodies(t) {
		var s Scanner
		it := s.Object(b, 0, 1)
		for it.Next() {
			// Every member's value, and each of its members or
			// elements.
			v := b[it.ValueStart:it.ValueEnd]
			if d := PlainDepth(b, it.KeyStart); d != 1 {
				t.Fatalf("PlainDepth at the member %s of %s = %d, want 1", b[it.KeyStart:it.KeyEnd], b, d)
			}
			if got := SkipPlain(b, it.ValueStart); got != it.ValueEnd {
				t.Fatalf("SkipPlain at %d of %s = %d, want %d", it.ValueStart, b, got, it.ValueEnd)
			}
			if v[0] == '{' || v[0] == '[' {
				checkPlainContainer(t, v)
			}
		}
	}
}

// sampleBodies returns the first 5,000 resources of the Synthea sample
// without a backslash.
func sampleBodies(tb testing.TB) [][]byte {
	tb.Helper()
	f, err := os.Open("../../testdata/synthea-r4-100-patients.ndjson.gz")
	if err != nil {
		tb.Skip("no Synthea sample:", err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		tb.Fatal(err)
	}
	var bodies [][]byte
	sc := bufio.NewScanner(zr)
	sc.Buffer(nil, 16<<20)
	for sc.Scan() && len(bodies) < 5000 {
		if bytes.IndexByte(sc.Bytes(), '\\') < 0 {
			bodies = append(bodies, bytes.Clone(sc.Bytes()))
		}
	}
	if err := sc.Err(); err != nil {
		tb.Fatal(err)
	}
	return bodies
}

func checkPlainContainer(t *testing.T, v []byte) {
	t.Helper()
	var s Scanner
	vit, pit := s.Object(v, 0, 1), PlainObject(v, 0)
	if v[0] == '[' {
		vit, pit = s.Array(v, 0, 1), PlainArray(v, 0)
	}
	pit.Lazy = true
	for vit.Next() {
		if !pit.Next() || pit.KeyStart != vit.KeyStart || pit.ValueStart != vit.ValueStart || pit.SkipValue() != vit.ValueEnd {
			t.Fatalf("plain walk of %s differs at %d", v, vit.ValueStart)
		}
	}
	if pit.Next() || pit.End() != vit.End() {
		t.Fatalf("plain walk of %s: end %d, want %d", v, pit.End(), vit.End())
	}
}

func FuzzPlainWalk(f *testing.F) {
	for _, s := range append(plainSeeds, scannerSeeds[:len(scannerSeeds)-2]...) {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) > 4096 {
			return
		}
		checkPlain(t, b)
	})
}
