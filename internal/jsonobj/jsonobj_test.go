package jsonobj

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestMembers(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want string // key=value|key=value, or "error"
	}{
		{`{}`, ``},
		{`{"a":1}`, `a=1`},
		{`{"a":1.50,"b":"x,}]","c":{"d":[1,{"e":"}"}]},"f":[],"g":null}`, `a=1.50|b="x,}]"|c={"d":[1,{"e":"}"}]}|f=[]|g=null`},
		{`{"me\u0074a":{},"q\"":true}`, `meta={}|q"=true`},
		{`{"s":"a\\"}`, `s="a\\"`},
		{`{"n":-0.0,"m":1e400}`, `n=-0.0|m=1e400`},
		{``, `error`},
		{`[]`, `error`},
		{`{`, `error`},
		{`{"a":}`, `error`},
		{`{"a":1,}`, `error`},
		{`{"a":[1}}`, `error`},
		{`{"a":"x}`, `error`},
		{`{"a" :1}`, `error`}, // not compact
		{`{"a":1}x`, `error`},
		{`{"a":1}}`, `error`},
		{`{a:1}`, `error`},
	} {
		ms, err := Members([]byte(tc.in))
		var got string
		if err != nil {
			if !errors.Is(err, ErrSyntax) {
				t.Errorf("%q: error %v is not ErrSyntax", tc.in, err)
			}
			got = "error"
		} else {
			var parts []string
			for _, m := range ms {
				parts = append(parts, m.Key+"="+string(m.Value))
				if !strings.HasSuffix(string(m.Raw), string(m.Value)) || m.Raw[0] != '"' {
					t.Errorf("%q: raw %q does not span key and value %q", tc.in, m.Raw, m.Value)
				}
			}
			got = strings.Join(parts, "|")
		}
		if got != tc.want {
			t.Errorf("Members(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestLookupLastWins(t *testing.T) {
	b := []byte(`{"status":"a","x":1,"status":"b"}`)
	vs, ve, ok := Lookup(b, "status")
	if !ok || string(b[vs:ve]) != `"b"` {
		t.Fatalf("Lookup = %q %v, want \"b\" (the member encoding/json decodes)", b[vs:ve], ok)
	}
	if _, _, ok := Lookup(b, "nope"); ok {
		t.Error("Lookup found a missing key")
	}
}

// FuzzMembers: never panics; on valid compact JSON objects it agrees with
// encoding/json on the member values.
func FuzzMembers(f *testing.F) {
	for _, s := range []string{`{}`, `{"a":1}`, `{"a":{"b":[1,"]"]},"c":"\\"}`, `{"a":}`, `{"a":[}`, `{"\u0061":2}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		ms, err := Members(b)
		var want map[string]json.RawMessage
		// encoding/json rewrites invalid UTF-8; ingest rejects it before
		// anything here sees it.
		if !utf8.Valid(b) || !json.Valid(b) || json.Unmarshal(b, &want) != nil || !isCompact(b) {
			return
		}
		if err != nil {
			t.Fatalf("Members(%q): %v, but it is a valid compact object", b, err)
		}
		got := map[string]json.RawMessage{}
		for _, m := range ms {
			got[m.Key] = m.Value
		}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("Members(%q) = %s, want %s", b, got, want)
		}
	})
}

func isCompact(b []byte) bool {
	var c bytes.Buffer
	return json.Compact(&c, b) == nil && bytes.Equal(c.Bytes(), b)
}
