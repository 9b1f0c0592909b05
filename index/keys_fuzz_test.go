package index

import (
	"bytes"
	"cmp"
	"strings"
	"testing"
)

// FuzzChangeKey checks the change-key codec: every key round-trips, keys of
// one type sort in (ts, id) order, keys of different types never fall in
// each other's scan bounds, and parseChangeKey never panics.
func FuzzChangeKey(f *testing.F) {
	for _, s := range []struct {
		typ1, id1 string
		ts1       uint64
		typ2, id2 string
		ts2       uint64
	}{
		{"Patient", "p1", 1, "Patient", "p2", 1},
		{"Patient", "p1", 2, "Patient", "p0", 1},
		{"Pat", "x", 5, "Patient", "x", 5},
		{"Patient", "x", 5, "PatientX", "x", 5},
		{"Patient", "a/b", 0x2f2f, "Patient", "a", 0x2f2f},
		{"Patient", "", 0, "Patient", "\x00", 0},
		{"P\x01", "x", 1<<64 - 1, "P", "x", 0},
		{"Observation", "o", 1_764_179_921_120_000, "Observation", "o", 1_764_179_921_120_001},
	} {
		f.Add(s.typ1, s.ts1, s.id1, s.typ2, s.ts2, s.id2)
	}
	f.Fuzz(func(t *testing.T, typ1 string, ts1 uint64, id1 string, typ2 string, ts2 uint64, id2 string) {
		// Never panics on arbitrary bytes.
		_, _, _, _ = parseChangeKey([]byte(typ1 + id1))
		_, _, _, _ = parseChangeKey([]byte("c/" + typ1))
		if strings.IndexByte(typ1, 0) >= 0 || strings.IndexByte(typ2, 0) >= 0 {
			return // Apply rejects such types
		}
		k1, k2 := changeKey(nil, typ1, ts1, id1), changeKey(nil, typ2, ts2, id2)
		for _, c := range []struct {
			k       []byte
			typ, id string
			ts      uint64
		}{{k1, typ1, id1, ts1}, {k2, typ2, id2, ts2}} {
			typ, ts, id, err := parseChangeKey(c.k)
			if err != nil || typ != c.typ || ts != c.ts || id != c.id {
				t.Fatalf("parseChangeKey(%q) = %q %d %q %v, want %q %d %q", c.k, typ, ts, id, err, c.typ, c.ts, c.id)
			}
		}
		in := func(k []byte, typ string) bool {
			return bytes.Compare(k, changeBound(typ, 0)) >= 0 && bytes.Compare(k, typeUpperBound(typ)) < 0
		}
		if !in(k1, typ1) || !in(k2, typ2) {
			t.Fatalf("key outside its own type's bounds")
		}
		if typ1 != typ2 && (in(k1, typ2) || in(k2, typ1)) {
			t.Fatalf("key of %q inside bounds of %q (or the reverse)", typ1, typ2)
		}
		if typ1 == typ2 {
			want := cmp.Or(cmp.Compare(ts1, ts2), strings.Compare(id1, id2))
			if got := bytes.Compare(k1, k2); got != want {
				t.Fatalf("compare(%q, %q) = %d, want %d", k1, k2, got, want)
			}
			if got := bytes.Compare(k1, changeBound(typ1, ts2)) >= 0; got != (ts1 >= ts2) {
				t.Fatalf("key %q >= changeBound(%d) = %v", k1, ts2, got)
			}
		}
	})
}

// FuzzResourceKey checks the resource-key codec round trip and that the
// decoders never panic.
func FuzzResourceKey(f *testing.F) {
	for _, s := range [][2]string{{"Patient", "p1"}, {"Pat", "ient\x00x"}, {"", ""}, {"Observation", "a/b.c"}} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, typ, id string) {
		_, _, _ = parseResourceKey([]byte(typ + id))
		_, _ = decodeResourceRecord([]byte(typ))
		if strings.IndexByte(typ, 0) >= 0 {
			return
		}
		k := resourceKey(nil, typ, id)
		gtyp, gid, err := parseResourceKey(k)
		if err != nil || gtyp != typ || gid != id {
			t.Fatalf("parseResourceKey(%q) = %q %q %v, want %q %q", k, gtyp, gid, err, typ, id)
		}
	})
}
