package index

import (
	"bytes"
	"testing"
)

var stampLayoutBodies = []string{
	`{}`,
	`{"id":"p"}`,
	`{"resourceType":"Patient","id":"p1"}`,
	`{"resourceType":"Patient","id":"p1","meta":{"versionId":"3","lastUpdated":"2020-01-01T00:00:00Z","source":"#x"}}`,
	`{"meta":{},"id":"p"}`,
	`{"id":"p","meta":{}}`,
	`{"a":1,"meta":{"source":"s","versionId":"9"},"z":[1]}`,
	`{"id":"p","a":1.50,"b":1e400,"c":-0.0}`,
	`{"id":"p\"","t":"}{][\\","u":"\u00e9"}`,
	`{"id":"p","me\u0074a":{"x":1}}`,
	`{"\u0069d":"p","x":{}}`,
	`{"id":"p","id":"q","x":1}`,
	`{"meta":{"a":1},"meta":{"b":2}}`,
	`{"meta":[]}`,
	`{"id":"p","meta":null}`,
	`{"a":[{"b":{"c":[1,2,{"d":"}"}]}}]}`,
	`{"id":"p","meta":{"version\u0049d":"1","tag":[{"code":"x"}]}}`,
	`{"id":}`,
	`[1]`,
}

// TestStampLayoutMatchesMembers checks that splicing at the layout stamp
// finds writes the same bytes as the member-by-member stamper, and fails
// the same way.
func TestStampLayoutMatchesMembers(t *testing.T) {
	for _, s := range stampLayoutBodies {
		checkStampLayout(t, []byte(s), 7, stampTime)
	}
}

func FuzzStampLayout(f *testing.F) {
	for _, s := range stampLayoutBodies {
		f.Add([]byte(s), uint64(2))
	}
	f.Fuzz(func(t *testing.T, body []byte, version uint64) {
		checkStampLayout(t, body, version, stampTime)
	})
}

func checkStampLayout(t *testing.T, body []byte, version, commitTime uint64) {
	t.Helper()
	want, werr := stampMembers(nil, body, version, commitTime)
	got, err := stamp(nil, body, version, commitTime)
	if (err != nil) != (werr != nil) || !bytes.Equal(got, want) {
		t.Fatalf("stamp(%s) = %s, %v; member by member %s, %v", body, got, err, want, werr)
	}
	l, ok, err := findLayout(body)
	if err != nil || !ok {
		return
	}
	got, err = stampLayout([]byte("x"), body, l, version, commitTime)
	if (err != nil) != (werr != nil) || (err == nil && !bytes.Equal(got[1:], want)) {
		t.Fatalf("stampLayout(%s, %+v) = %s, %v; member by member %s, %v", body, l, got, err, want, werr)
	}
}
