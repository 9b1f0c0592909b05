package index

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

// stampTime is 2025-11-26T17:58:41.120000Z.
const stampTime = 1_764_179_921_120_000

func TestStamp(t *testing.T) {
	const meta2 = `"meta":{"versionId":"2","lastUpdated":"2025-11-26T17:58:41.120000Z"`
	for _, tc := range []struct {
		name, body, want string
	}{
		{
			"meta absent: inserted after id",
			`{"resourceType":"Patient","id":"p1","active":true}`,
			`{"resourceType":"Patient","id":"p1",` + meta2 + `},"active":true}`,
		},
		{
			"meta absent, id last",
			`{"resourceType":"Patient","id":"p1"}`,
			`{"resourceType":"Patient","id":"p1",` + meta2 + `}}`,
		},
		{
			"meta present: others kept, versionId and lastUpdated replaced",
			`{"resourceType":"Patient","id":"p1","meta":{"versionId":"7","source":"#a","lastUpdated":"2020-01-01T00:00:00Z","profile":["http://x/y"],"tag":[{"code":"z"}]},"active":true}`,
			`{"resourceType":"Patient","id":"p1",` + meta2 + `,"source":"#a","profile":["http://x/y"],"tag":[{"code":"z"}]},"active":true}`,
		},
		{
			"meta present, empty",
			`{"meta":{},"resourceType":"Patient","id":"p1"}`,
			`{` + meta2 + `},"resourceType":"Patient","id":"p1"}`,
		},
		{
			"meta with only versionId",
			`{"id":"p1","meta":{"versionId":"1"}}`,
			`{"id":"p1",` + meta2 + `}}`,
		},
		{
			"no id: meta first",
			`{"resourceType":"Patient","active":false}`,
			`{` + meta2 + `},"resourceType":"Patient","active":false}`,
		},
		{
			"empty object",
			`{}`,
			`{` + meta2 + `}}`,
		},
		{
			"nested id and meta are not top level",
			`{"contained":[{"id":"c1","meta":{"versionId":"9"}}],"resourceType":"Patient"}`,
			`{` + meta2 + `},"contained":[{"id":"c1","meta":{"versionId":"9"}}],"resourceType":"Patient"}`,
		},
		{
			"numbers kept byte-exact",
			`{"resourceType":"Observation","id":"o1","valueQuantity":{"value":1.50},"a":1e400,"b":-0.0,"c":[1.0,2E+3,-0,0.1e-7],"d":12345678901234567890123}`,
			`{"resourceType":"Observation","id":"o1",` + meta2 + `},"valueQuantity":{"value":1.50},"a":1e400,"b":-0.0,"c":[1.0,2E+3,-0,0.1e-7],"d":12345678901234567890123}`,
		},
		{
			"escaped strings kept",
			`{"id":"p\"1\\","text":"a\\\"}{b","u":"\u00e9\/\n\ud83d\ude00","raw":"é"}`,
			`{"id":"p\"1\\",` + meta2 + `},"text":"a\\\"}{b","u":"\u00e9\/\n\ud83d\ude00","raw":"é"}`,
		},
		{
			"braces and brackets inside strings",
			`{"resourceType":"Patient","name":[{"text":"}{]["}],"id":"p","extension":{"a":{"b":"{\"meta\":{}}"}}}`,
			`{"resourceType":"Patient","name":[{"text":"}{]["}],"id":"p",` + meta2 + `},"extension":{"a":{"b":"{\"meta\":{}}"}}}`,
		},
		{
			"literals",
			`{"id":"p","a":true,"b":false,"c":null,"d":[],"e":{},"f":[[]],"g":""}`,
			`{"id":"p",` + meta2 + `},"a":true,"b":false,"c":null,"d":[],"e":{},"f":[[]],"g":""}`,
		},
		{
			"escaped meta key is meta",
			`{"id":"p","me\u0074a":{"versionId":"9","source":"s"}}`,
			`{"id":"p",` + meta2 + `,"source":"s"}}`,
		},
		{
			"escaped keys inside meta are versionId and lastUpdated",
			`{"id":"p","meta":{"version\u0049d":"9","last\u0055pdated":"x","s":1}}`,
			`{"id":"p",` + meta2 + `,"s":1}}`,
		},
		{
			"duplicate meta: the last wins",
			`{"id":"p","meta":{"source":"a"},"x":1,"meta":{"source":"b"}}`,
			`{"id":"p","x":1,` + meta2 + `,"source":"b"}}`,
		},
		{
			"duplicate versionId inside meta dropped",
			`{"id":"p","meta":{"versionId":"1","versionId":"2","security":[]}}`,
			`{"id":"p",` + meta2 + `,"security":[]}}`,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := stamp([]byte("prefix:"), []byte(tc.body), 2, stampTime)
			if err != nil {
				t.Fatalf("stamp(%s): %v", tc.body, err)
			}
			if !strings.HasPrefix(string(got), "prefix:") {
				t.Fatalf("stamp did not append to dst: %s", got)
			}
			got = got[len("prefix:"):]
			if string(got) != tc.want {
				t.Fatalf("stamp(%s)\n got %s\nwant %s", tc.body, got, tc.want)
			}
			if !json.Valid(got) {
				t.Fatalf("stamp(%s) = %s: not valid JSON", tc.body, got)
			}
		})
	}
}

func TestStampVersionAndTime(t *testing.T) {
	got, err := stamp(nil, []byte(`{"id":"x"}`), 18446744073709551615, 0)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"id":"x","meta":{"versionId":"18446744073709551615","lastUpdated":"1970-01-01T00:00:00.000000Z"}}`
	if string(got) != want {
		t.Fatalf("stamp = %s, want %s", got, want)
	}
}

func TestStampMalformed(t *testing.T) {
	for _, body := range []string{
		``,
		`{`,
		`}`,
		`[]`,
		`"x"`,
		`null`,
		`1`,
		` {"id":"p"}`,
		`{"id":"p"} `,
		`{"id":"p"`,
		`{"id":"p",`,
		`{"id":"p",}`,
		`{"id":"p"}}`,
		`{"id":"p"},{}`,
		`{"id"}`,
		`{"id":}`,
		`{"id":,"a":1}`,
		`{id:1}`,
		`{"id":"p" }`,
		`{"id":"p"x}`,
		`{"a":1"b":2}`,
		`{"a":"unterminated}`,
		`{"a":"esc\"}`,
		`{"a\":1}`,
		`{"a":{"b":1}`,
		`{"a":[1}}`,
		`{"a":{"b":[}]}}`,
		`{"a":[1]]}`,
		`{"a":1]}`,
		`{"meta":[]}`,
		`{"meta":"x"}`,
		`{"meta":null}`,
		`{"meta":1}`,
		`{"id":"p","meta":{"versionId":"1"}`,
		`{"meta":{"a"}}`,
		`{"meta":{"a":}}`,
		`{"meta":{,}}`,
		`{"meta":{"a":1,}}`,
		`{"bad\escape":1}`,
		`{"bad\u12":1}`,
	} {
		t.Run(body, func(t *testing.T) {
			got, err := stamp(nil, []byte(body), 1, stampTime)
			if !errors.Is(err, errBadResource) {
				t.Fatalf("stamp(%q) = %s, %v; want errBadResource", body, got, err)
			}
		})
	}
}

func BenchmarkStamp(b *testing.B) {
	body := []byte(syntheticResource("Patient", "bench-1", 1300))
	var dst []byte
	b.ReportAllocs()
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		var err error
		if dst, err = stamp(dst[:0], body, 7, stampTime); err != nil {
			b.Fatal(err)
		}
	}
}

// syntheticResource returns a compact resource of about size bytes.
func syntheticResource(typ, id string, size int) string {
	var sb strings.Builder
	sb.WriteString(`{"resourceType":"` + typ + `","id":"` + id + `","meta":{"source":"#bench","profile":["http://example.org/p"]},"active":true,"name":[{"family":"Doe","given":["Jane","Q"]}],"text":{"status":"generated","div":"`)
	for sb.Len() < size-3 {
		sb.WriteString("x")
	}
	sb.WriteString(`"}}`)
	return sb.String()
}
