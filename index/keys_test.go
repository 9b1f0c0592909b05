package index

import (
	"bytes"
	"cmp"
	"errors"
	"math"
	"reflect"
	"slices"
	"strings"
	"testing"
)

func TestChangeKeyRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		name, typ, id string
		ts            uint64
	}{
		{"plain", "Patient", "p1", 1_700_000_000_000_000},
		{"zero ts", "Patient", "p1", 0},
		{"max ts", "Patient", "p1", math.MaxUint64},
		{"ts with NUL and slash bytes", "Observation", "o-1", 0x2f00_2f00_0000_2f00},
		{"id with slash and NUL", "Patient", "a/b\x00c", 42},
		{"id with dots", "Patient", "a.b.c", 42},
		{"one-letter type", "P", "x", 7},
	} {
		t.Run(tc.name, func(t *testing.T) {
			k := changeKey([]byte("junk"), tc.typ, tc.ts, tc.id)
			if !bytes.HasPrefix(k, []byte("junk")) {
				t.Fatalf("changeKey did not append to dst: %q", k)
			}
			k = k[len("junk"):]
			typ, ts, id, err := parseChangeKey(k)
			if err != nil {
				t.Fatalf("parseChangeKey(%q): %v", k, err)
			}
			if typ != tc.typ || ts != tc.ts || id != tc.id {
				t.Fatalf("parseChangeKey(%q) = %q %d %q, want %q %d %q", k, typ, ts, id, tc.typ, tc.ts, tc.id)
			}
			if lo := changeBound(tc.typ, tc.ts); !bytes.HasPrefix(k, lo) {
				t.Errorf("changeKey %q does not start with changeBound %q", k, lo)
			}
			if up := typeUpperBound(tc.typ); bytes.Compare(k, up) >= 0 {
				t.Errorf("changeKey %q >= typeUpperBound %q", k, up)
			}
		})
	}
}

func TestChangeKeyLayout(t *testing.T) {
	got := changeKey(nil, "Patient", 0x0102030405060708, "p1")
	want := []byte("c/Patient\x00\x01\x02\x03\x04\x05\x06\x07\x08/p1")
	if !bytes.Equal(got, want) {
		t.Fatalf("changeKey = %q, want %q", got, want)
	}
	if got, want := resourceKey(nil, "Patient", "p1"), []byte("r/Patient\x00p1"); !bytes.Equal(got, want) {
		t.Fatalf("resourceKey = %q, want %q", got, want)
	}
	if got, want := jobKey("j1"), []byte("j/j1"); !bytes.Equal(got, want) {
		t.Fatalf("jobKey = %q, want %q", got, want)
	}
}

func TestParseChangeKeyMalformed(t *testing.T) {
	for _, k := range []string{
		"",
		"c",
		"c/",
		"r/Patient\x00\x00\x00\x00\x00\x00\x00\x00\x01/p1", // wrong prefix
		"c/Patient",                     // no NUL
		"c/Patient\x00",                 // no ts
		"c/Patient\x00\x00\x00\x00\x01", // short ts
		"c/Patient\x00\x00\x00\x00\x00\x00\x00\x00\x01",  // no slash
		"c/Patient\x00\x00\x00\x00\x00\x00\x00\x00\x01x", // not a slash
	} {
		if typ, ts, id, err := parseChangeKey([]byte(k)); !errors.Is(err, errBadKey) {
			t.Errorf("parseChangeKey(%q) = %q %d %q %v, want errBadKey", k, typ, ts, id, err)
		}
	}
	// An empty id is structurally fine (Apply never writes one).
	if _, _, id, err := parseChangeKey(changeKey(nil, "P", 1, "")); err != nil || id != "" {
		t.Errorf("parseChangeKey(empty id) = %q, %v", id, err)
	}
}

func TestResourceKeyRoundTrip(t *testing.T) {
	for _, tc := range []struct{ typ, id string }{
		{"Patient", "p1"},
		{"Patient", "a\x00b"},
		{"Patient", ""},
		{"X", "y/z"},
	} {
		k := resourceKey(nil, tc.typ, tc.id)
		typ, id, err := parseResourceKey(k)
		if err != nil || typ != tc.typ || id != tc.id {
			t.Errorf("parseResourceKey(%q) = %q %q %v, want %q %q", k, typ, id, err, tc.typ, tc.id)
		}
	}
	for _, k := range []string{"", "r/", "r/Patient", "c/Patient\x00p1"} {
		if _, _, err := parseResourceKey([]byte(k)); !errors.Is(err, errBadKey) {
			t.Errorf("parseResourceKey(%q) err = %v, want errBadKey", k, err)
		}
	}
}

func TestResourceRecordRoundTrip(t *testing.T) {
	for _, r := range []resourceRecord{
		{HasSum: true},
		{CommitTime: 1, Version: 1, Sum: 0xdeadbeef, HasSum: true},
		{CommitTime: 1_764_179_921_120_000, Version: 3, Deleted: true, HasSum: true},
		{CommitTime: math.MaxUint64, Version: math.MaxUint64, Deleted: true, Sum: math.MaxUint32, HasSum: true},
		{CommitTime: 9, Version: 4, HasSum: true, Patients: []string{"a", "b-1"}},
		{CommitTime: 9, Version: 4, HasSum: true, Targets: []string{"Observation/x"}},
		{CommitTime: 9, Version: 4, HasSum: true, Patients: []string{strings.Repeat("p", 200)}, Targets: []string{"Patient/p", "Encounter/e"}},
	} {
		v := r.encode([]byte{0xff})[1:]
		if len(r.Patients)+len(r.Targets) == 0 && len(v) != resourceRecordLen {
			t.Fatalf("encode(%+v) has %d bytes, want %d", r, len(v), resourceRecordLen)
		}
		got, err := decodeResourceRecord(v)
		if r.Patients == nil && r.Targets != nil {
			r.Patients = []string{}
		}
		if r.Targets == nil && r.Patients != nil {
			r.Targets = []string{}
		}
		if err != nil || !reflect.DeepEqual(got, r) {
			t.Errorf("decodeResourceRecord(encode(%+v)) = %+v, %v", r, got, err)
		}
	}
	// A record written before the checksum existed: no Sum.
	good := resourceRecord{CommitTime: 5, Version: 2, Sum: 7, HasSum: true}.encode(nil)
	legacy := good[:legacyRecordLen]
	if got, err := decodeResourceRecord(legacy); err != nil || !reflect.DeepEqual(got, resourceRecord{CommitTime: 5, Version: 2}) {
		t.Errorf("decodeResourceRecord(legacy %x) = %+v, %v", legacy, got, err)
	}
	for name, v := range map[string][]byte{
		"empty":           nil,
		"short":           good[:16],
		"between":         good[:legacyRecordLen+2],
		"long":            append(bytes.Clone(good), 0),
		"refs cut":        resourceRecord{HasSum: true, Patients: []string{"abc"}}.encode(nil)[:resourceRecordLen+3],
		"refs trailing":   append(resourceRecord{HasSum: true, Patients: []string{"abc"}}.encode(nil), 0),
		"refs huge count": append(bytes.Clone(good), 0xff, 0xff, 0xff, 0x0f),
		"bad flag":        append(bytes.Clone(good[:16]), 2),
	} {
		if _, err := decodeResourceRecord(v); err == nil {
			t.Errorf("decodeResourceRecord(%s %x) succeeded, want error", name, v)
		}
	}
}

func TestUint64Value(t *testing.T) {
	for _, v := range []uint64{0, 1, 1 << 40, math.MaxUint64} {
		got, err := decodeUint64(encodeUint64(v))
		if err != nil || got != v {
			t.Errorf("decodeUint64(encodeUint64(%d)) = %d, %v", v, got, err)
		}
	}
	for _, b := range [][]byte{nil, make([]byte, 7), make([]byte, 9)} {
		if _, err := decodeUint64(b); err == nil {
			t.Errorf("decodeUint64(%x) succeeded, want error", b)
		}
	}
}

// TestChangeKeyOrder checks that, within one type, key order is (ts, id)
// order, and that a type's keys sort between changeBound(typ, 0) and
// typeUpperBound(typ) and never inside another type's bounds, including
// types that are prefixes of each other.
func TestChangeKeyOrder(t *testing.T) {
	type entry struct {
		typ string
		ts  uint64
		id  string
	}
	types := []string{"P", "Pat", "Pat\x01", "PatX", "Patient", "PatientX", "Patient\x01", "Patient\xff", "Q"}
	tss := []uint64{0, 1, 255, 256, 0x2f, 0x2f00, 1 << 32, 1_764_179_921_120_000, math.MaxUint64 - 1, math.MaxUint64}
	ids := []string{"", "0", "a", "a/b", "a\x00", "aa", "b", "\xff"}
	var entries []entry
	for _, typ := range types {
		for _, ts := range tss {
			for _, id := range ids {
				entries = append(entries, entry{typ, ts, id})
			}
		}
	}
	key := func(e entry) []byte { return changeKey(nil, e.typ, e.ts, e.id) }
	for _, a := range entries {
		ka := key(a)
		for _, typ := range types {
			lo, hi := changeBound(typ, 0), typeUpperBound(typ)
			inside := bytes.Compare(ka, lo) >= 0 && bytes.Compare(ka, hi) < 0
			if inside != (a.typ == typ) {
				t.Fatalf("key %q inside bounds [%q, %q) of type %q = %v", ka, lo, hi, typ, inside)
			}
		}
	}
	// Same type: byte order of keys == (ts, id) order.
	for _, typ := range []string{"Pat", "Patient"} {
		var same []entry
		for _, e := range entries {
			if e.typ == typ {
				same = append(same, e)
			}
		}
		for _, a := range same {
			for _, b := range same {
				want := cmp.Or(cmp.Compare(a.ts, b.ts), cmp.Compare(a.id, b.id))
				if got := bytes.Compare(key(a), key(b)); got != want {
					t.Fatalf("compare(%+v, %+v) = %d, want %d", a, b, got, want)
				}
			}
		}
		// changeBound(typ, ts) sits below every key at ts and above every key before ts.
		for _, e := range same {
			for _, ts := range tss {
				b := changeBound(typ, ts)
				if got := bytes.Compare(key(e), b) >= 0; got != (e.ts >= ts) {
					t.Fatalf("key %+v >= changeBound(%d) = %v", e, ts, got)
				}
			}
		}
	}
	// A sorted sample of keys parses back in (type-grouped, ts, id) order.
	keys := make([][]byte, len(entries))
	for i, e := range entries {
		keys[i] = key(e)
	}
	slices.SortFunc(keys, bytes.Compare)
	var prev *entry
	for _, k := range keys {
		typ, ts, id, err := parseChangeKey(k)
		if err != nil {
			t.Fatal(err)
		}
		cur := entry{typ, ts, id}
		if prev != nil && prev.typ == cur.typ && cmp.Or(cmp.Compare(prev.ts, cur.ts), cmp.Compare(prev.id, cur.id)) >= 0 {
			t.Fatalf("sorted keys out of order: %+v then %+v", *prev, cur)
		}
		prev = &cur
	}
}
