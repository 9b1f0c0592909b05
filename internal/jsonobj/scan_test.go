package jsonobj

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"unicode/utf8"
)

var scannerSeeds = []string{
	``, ` `, `1`, `-0.5e+3`, `01`, `1.`, `.5`, `1e`, `-`, `+1`, `tru`, `nulll`, `"\x"`, `"\u12"`, `"\u00e9"`,
	"\"\xed\xa0\x80\"", "\"\xc0\xaf\"", "\"a\x1fb\"", "\"a\x7fb\"", "{}\xff",
	`{"a":[1,]}`, `{"a":{"b":1,}}`, `{"a":{"b"}}`, `{"a":[}`, `{"a":1}}`, `{"a":1} {}`, `{"a" "b":1}`,
	" \t\r\n{ \"a\" :\"b\" , \"c\" : [ 1 , { \"d\" : \" x y \" } ] } \n",
	`{"me\u0074a":{"tag":[{"code":"x"}]},"a":[1,-0,0.5,1e5,1E+5,-2.5e-3,true,false,null,{},[],""]}`,
	strings.Repeat(`[`, 10000) + strings.Repeat(`]`, 10000),
	strings.Repeat(`[`, 10001) + strings.Repeat(`]`, 10001),
}

// checkScanner checks Scanner against json.Valid and utf8.Valid, and its
// Iter against encoding/json on the members of valid objects.
func checkScanner(t *testing.T, b []byte) {
	t.Helper()
	for _, strict := range []bool{false, true} {
		s := Scanner{UTF8: strict}
		end := s.Value(b, s.SkipSpace(b, 0), 1)
		valid := end >= 0 && s.SkipSpace(b, end) == len(b)
		want := json.Valid(b) && (!strict || utf8.Valid(b))
		if valid != want {
			t.Fatalf("Scanner{UTF8: %v} valid(%q) = %v, want %v", strict, b, valid, want)
		}
		if !valid {
			continue
		}
		var c bytes.Buffer
		json.Compact(&c, b)
		if s.Space != (c.Len() != len(b)) {
			t.Fatalf("Space = %v for %q", s.Space, b)
		}
	}
	var want map[string]json.RawMessage
	// encoding/json rewrites invalid UTF-8 in names; ingest rejects it
	// before anything reads names.
	// JSON null unmarshals into a map too, as nil: it is no object.
	if !utf8.Valid(b) || !json.Valid(b) || json.Unmarshal(b, &want) != nil || want == nil {
		return
	}
	var s Scanner
	it := s.Object(b, s.SkipSpace(b, 0), 1)
	if !it.Space && s.Space {
		t.Fatal("the Iter does not start from its Scanner's state")
	}
	got := map[string]json.RawMessage{}
	for it.Next() {
		got[string(it.Key())] = b[it.ValueStart:it.ValueEnd]
	}
	if it.End() < 0 || s.SkipSpace(b, it.End()) != len(b) {
		t.Fatalf("Iter over %q ended at %d", b, it.End())
	}
	for k, v := range want {
		var cv, cg bytes.Buffer
		json.Compact(&cv, v)
		json.Compact(&cg, got[k])
		if !bytes.Equal(cv.Bytes(), cg.Bytes()) {
			t.Fatalf("Iter over %q: member %q = %s, want %s", b, k, got[k], v)
		}
	}
	if len(got) != len(want) {
		t.Fatalf("Iter over %q: %d members, want %d", b, len(got), len(want))
	}
}

func TestScanner(t *testing.T) {
	for _, s := range scannerSeeds {
		checkScanner(t, []byte(s))
	}
}

func TestScannerDeep(t *testing.T) {
	b := []byte(`{"a":[[{"b":1}]],"c":1}`)
	s := Scanner{MaxDepth: 3}
	it := s.Object(b, 0, 1)
	var deepAt []string
	for it.Next() {
		if it.Deep {
			deepAt = append(deepAt, string(it.Key()))
			it.Deep = false
		}
	}
	if len(deepAt) != 1 || deepAt[0] != "a" {
		t.Errorf("Deep after members %q, want [a]", deepAt)
	}
}

// FuzzScanner checks Scanner against json.Valid and utf8.Valid.
func FuzzScanner(f *testing.F) {
	for _, s := range scannerSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(checkScanner)
}
