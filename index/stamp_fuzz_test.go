package index

import (
	"bytes"
	"encoding/json"
	"maps"
	"reflect"
	"strconv"
	"testing"
)

// FuzzStamp checks stamp on arbitrary bytes (it must not panic) and, for
// compact valid JSON objects, that it errors exactly when meta is not an
// object, and otherwise returns valid JSON whose meta.versionId and
// meta.lastUpdated are the stamped ones and whose other members, meta's
// included, decode to what was published.
func FuzzStamp(f *testing.F) {
	for _, s := range []string{
		`{}`,
		`{"resourceType":"Patient","id":"p1"}`,
		`{"resourceType":"Patient","id":"p1","meta":{"versionId":"3","lastUpdated":"2020-01-01T00:00:00Z","source":"#x"}}`,
		`{"meta":{},"id":"p"}`,
		`{"id":"p","a":1.50,"b":1e400,"c":-0.0}`,
		`{"id":"p\"","t":"}{][\\","u":"\u00e9"}`,
		`{"id":"p","me\u0074a":{"x":1}}`,
		`{"meta":{"a":1},"meta":{"b":2}}`,
		`{"meta":[]}`,
		`{"a":[{"b":{"c":[1,2,{"d":"}"}]}}]}`,
		`{"id":"p","meta":{"version\u0049d":"1"}}`,
		`{"id":}`,
		`[1]`,
	} {
		f.Add([]byte(s), uint64(2), uint64(stampTime))
	}
	f.Fuzz(func(t *testing.T, body []byte, version, commitTime uint64) {
		commitTime %= 253402300800000000 // years 1970 to 9999
		out, err := stamp(nil, body, version, commitTime)
		var compact bytes.Buffer
		if !json.Valid(body) || json.Compact(&compact, body) != nil || !bytes.Equal(compact.Bytes(), body) || body[0] != '{' {
			return // only checked for not panicking
		}
		in := decodeObject(t, body)
		metaIn, hasMeta := in["meta"]
		_, metaIsObject := metaIn.(map[string]any)
		if hasMeta && !metaIsObject {
			if err == nil {
				t.Fatalf("stamp(%s) = %s, want an error for a non-object meta", body, out)
			}
			return
		}
		if err != nil {
			t.Fatalf("stamp(%s): %v", body, err)
		}
		if !json.Valid(out) {
			t.Fatalf("stamp(%s) = %s: invalid JSON", body, out)
		}
		compact.Reset()
		if json.Compact(&compact, out) != nil || !bytes.Equal(compact.Bytes(), out) {
			t.Fatalf("stamp(%s) = %s: not compact", body, out)
		}
		got := decodeObject(t, out)
		meta, ok := got["meta"].(map[string]any)
		if !ok {
			t.Fatalf("stamp(%s) = %s: no meta object", body, out)
		}
		if v, want := meta["versionId"], strconv.FormatUint(version, 10); v != want {
			t.Fatalf("stamp(%s) = %s: versionId %v, want %q", body, out, v, want)
		}
		if v, want := meta["lastUpdated"], FormatInstant(commitTime); v != want {
			t.Fatalf("stamp(%s) = %s: lastUpdated %v, want %q", body, out, v, want)
		}
		// Everything else is as published.
		wantMeta := map[string]any{}
		if hasMeta {
			wantMeta = metaIn.(map[string]any)
		}
		for _, m := range []map[string]any{wantMeta, meta} {
			delete(m, "versionId")
			delete(m, "lastUpdated")
		}
		delete(in, "meta")
		delete(got, "meta")
		if !reflect.DeepEqual(in, got) || !maps.EqualFunc(wantMeta, meta, func(a, b any) bool { return reflect.DeepEqual(a, b) }) {
			t.Fatalf("stamp(%s) = %s: other members changed", body, out)
		}
	})
}

// decodeObject decodes a JSON object keeping number literals (json.Number),
// so that 1.50 and 1.5 differ.
func decodeObject(t *testing.T, b []byte) map[string]any {
	t.Helper()
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	var m map[string]any
	if err := d.Decode(&m); err != nil {
		t.Fatalf("decode %s: %v", b, err)
	}
	return m
}
