package ingest

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/bulkstream/bulkstream/index"
)

// scanSeeds are bodies for the differential tests of scanBody, on top of
// decodeCases' bodies.
var scanSeeds = []string{
	`{"resourceType":"Patient","id":"1","a":[1,-0,0.5,1e5,1E+5,-2.5e-3,true,false,null,{},[],""]}`,
	`{"resourceType":"Patient","id":"1","s":"\"\\\/\b\f\n\r\t\u00e9\uD83D\uDE00 é 😀 \ufffd"}`,
	"{\"resourceType\":\"Patient\",\"id\":\"1\",\"s\":\"\xed\xa0\x80\"}", // surrogate in UTF-8
	"{\"resourceType\":\"Patient\",\"id\":\"1\",\"s\":\"\xc0\xaf\"}",     // overlong
	"{\"resourceType\":\"Patient\",\"id\":\"1\",\"s\":\"\xef\xbf\xbd\"}", // U+FFFD itself
	"{\"resourceType\":\"Patient\",\"id\":\"1\",\"s\":\"a\x1fb\"}",
	"{\"resourceType\":\"Patient\",\"id\":\"1\",\"s\":\"a\x7fb\"}",
	"{\"resourceType\":\"Patient\",\"id\":\"1\"}\xff",
	`{"resourceType":"Patient","id":"1","n":01}`,
	`{"resourceType":"Patient","id":"1","n":1.}`,
	`{"resourceType":"Patient","id":"1","n":.5}`,
	`{"resourceType":"Patient","id":"1","n":1e}`,
	`{"resourceType":"Patient","id":"1","n":-}`,
	`{"resourceType":"Patient","id":"1","n":+1}`,
	`{"resourceType":"Patient","id":"1","n":tru}`,
	`{"resourceType":"Patient","id":"1","n":nulll}`,
	`{"resourceType":"Patient","id":"1","s":"\x"}`,
	`{"resourceType":"Patient","id":"1","s":"\u12"}`,
	`{"resourceType":"Patient","id":"1","a":[1,]}`,
	`{"resourceType":"Patient","id":"1","a":{"b":1,}}`,
	`{"resourceType":"Patient","id":"1","a":{"b"}}`,
	`{"resourceType":"Patient","id":"1","a":[}`,
	`{"resourceType":"Patient","id":"1",}`,
	`{"resourceType":"Patient","id":"1"}}`,
	`{"resourceType":"Patient","id":"1"} {}`,
	`{"resourceType":"Patient" "id":"1"}`,
	`{"resourceType":"Patient","id":"1","meta":{"source":"x","tag":[{"code":"a"}]},"z":1}`,
	`{"resourceType":"Patient","id":"1","meta":{}}`,
	`{"resourceType":"Patient","meta":{},"id":"1"}`,
	`{"id":"1","resourceType":"Patient"}`,
	`{"resourceType":"Patient","id":"1\u0030"}`,
	`{"resourceType":"Pati\u0065nt","id":"1"}`,
	" \t\r\n{ \"resourceType\" :\"Patient\" , \"id\":\"1\" , \"a\" : [ 1 , { \"b\" : \" x y \" } ] } \n",
	`{"resourceType":"Patient","id":"1","x":` + strings.Repeat(`{"a":`, 70) + `1` + strings.Repeat(`}`, 70) + `}`,
	`{"resourceType":"Patient","id":"1","x":` + strings.Repeat(`[`, 10001) + strings.Repeat(`]`, 10001) + `}`,
	`{"resourceType":"Patient","id":"1","x":` + strings.Repeat(`[`, 9998) + strings.Repeat(`]`, 9998) + `}`,
}

// jsonOK is what Decode checked before scanBody: UTF-8 and JSON.
func jsonOK(b []byte) bool { return utf8.Valid(b) && json.Valid(b) }

func startsObject(b []byte) bool {
	t := bytes.TrimLeft(b, " \t\r\n")
	return len(t) > 0 && t[0] == '{'
}

// checkScanBody is the differential check of scanBody on one body: its
// validity is utf8.Valid && json.Valid, what it accepts scanResource
// accepts with the same body, and a compact body is shared, not copied.
func checkScanBody(t *testing.T, data []byte) {
	t.Helper()
	for _, subj := range [][2]string{{"Patient", "1"}, {"Observation", "o"}} {
		body, st := scanBody(data, subj[0], subj[1])
		if startsObject(data) {
			if valid := st != scanInvalid; valid != jsonOK(data) {
				t.Fatalf("scanBody(%q) valid = %v, utf8.Valid && json.Valid = %v", data, valid, jsonOK(data))
			}
		}
		if st != scanOK {
			continue
		}
		r, rerr := scanResource(data)
		if rerr != nil {
			t.Fatalf("scanBody accepted %q, scanResource rejects it: %v", data, rerr)
		}
		if r.typ != subj[0] || r.id != subj[1] || !bytes.Equal(r.body, body) {
			t.Fatalf("scanBody(%q) = %q for %s/%s, scanResource %q for %s/%s", data, body, subj[0], subj[1], r.body, r.typ, r.id)
		}
		if bytes.Equal(body, data) && &body[0] != &data[0] {
			t.Fatalf("the compact body %q was copied", data)
		}
	}
}

func TestScanBodyDifferential(t *testing.T) {
	for _, tc := range decodeCases {
		checkScanBody(t, []byte(tc.body))
	}
	for _, s := range scanSeeds {
		checkScanBody(t, []byte(s))
	}
}

// FuzzScanBody checks scanBody against utf8.Valid && json.Valid and
// scanResource on arbitrary bodies.
func FuzzScanBody(f *testing.F) {
	for _, tc := range decodeCases {
		f.Add([]byte(tc.body))
	}
	for _, s := range scanSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		checkScanBody(t, data)
	})
}

// decodeGeneral is Decode with only the general path, as it was before
// scanBody.
func decodeGeneral(subject string, data []byte) (index.Change, error) {
	typ, id, err := ParseSubject(subject)
	if err != nil {
		return index.Change{}, err
	}
	r, rerr := scanResource(data)
	if rerr != nil {
		return index.Change{}, rerr
	}
	if r.typ != typ {
		return index.Change{}, reject(ReasonTypeMismatch, "")
	}
	if r.id != id {
		return index.Change{}, reject(ReasonIDMismatch, "")
	}
	return index.Change{Type: typ, ID: id, Body: r.body}, nil
}

// FuzzDecodePaths checks that Decode (fast path first) and the general
// path alone agree on every body: the same reason, or the same change.
func FuzzDecodePaths(f *testing.F) {
	for _, tc := range decodeCases {
		f.Add([]byte(tc.body))
	}
	for _, s := range scanSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		got, err := Decode("fhir.Patient.1", nil, data, 1<<20)
		want, werr := decodeGeneral("fhir.Patient.1", data)
		if (err == nil) != (werr == nil) {
			t.Fatalf("Decode(%q) = %v, general path %v", data, err, werr)
		}
		if err != nil {
			if err.(*RejectError).Reason != werr.(*RejectError).Reason {
				t.Fatalf("Decode(%q) = %v, general path %v", data, err, werr)
			}
			return
		}
		if got.Type != want.Type || got.ID != want.ID || !bytes.Equal(got.Body, want.Body) {
			t.Fatalf("Decode(%q) = %+v, general path %+v", data, got, want)
		}
	})
}
