package ingest

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"

	"github.com/bulkstream/bulkstream/internal/fhir"
)

var deleteHdr = nats.Header{HeaderOp: {OpDelete}}

func deep(n int) string {
	return `{"resourceType":"Patient","id":"1","x":` + strings.Repeat("[", n-1) + strings.Repeat("]", n-1) + `}`
}

// decodeCases is the table of TestDecode and the seed corpus of
// FuzzDecode. reason "" means accepted.
var decodeCases = []struct {
	name    string
	subject string
	hdr     nats.Header
	body    string
	reason  string
	want    string // compact body when accepted; "" = body unchanged
}{
	{"ok", "fhir.Patient.1", nil, `{"resourceType":"Patient","id":"1"}`, "", ""},
	{"ok upsert header", "fhir.Patient.1", nats.Header{HeaderOp: {OpUpsert}}, `{"resourceType":"Patient","id":"1"}`, "", ""},
	{"ok dotted id", "fhir.Patient.a%2Eb", nil, `{"resourceType":"Patient","id":"a.b"}`, "", ""},
	{"ok whitespace compacted", "fhir.Patient.1", nil, " {\n \"resourceType\" : \"Patient\",\t\"id\":\"1\", \"n\": [ 1.50, 1e400 ] }\n",
		"", `{"resourceType":"Patient","id":"1","n":[1.50,1e400]}`},
	{"ok numbers kept", "fhir.Observation.o", nil, `{"resourceType":"Observation","id":"o","valueQuantity":{"value":12345678901234567890.000}}`, "", ""},
	{"ok meta", "fhir.Patient.1", nil, `{"resourceType":"Patient","id":"1","meta":{"source":"x"}}`, "", ""},
	{"ok escaped key", "fhir.Patient.1", nil, `{"resource\u0054ype":"Patient","id":"1"}`, "", ""},
	{"ok depth 64", "fhir.Patient.1", nil, deep(MaxDepth), "", ""},
	{"ok delete empty", "fhir.Patient.1", deleteHdr, ``, "", ""},
	{"ok delete any body", "fhir.Patient.1", deleteHdr, `not json`, "", ""},
	{"ok lower-case header name", "fhir.Patient.1", nats.Header{"fhir-op": {OpDelete}}, ``, "", ""},

	{"bad subject tokens", "fhir.Patient", nil, `{}`, ReasonBadSubject, ""},
	{"bad subject empty id", "fhir.Patient.", deleteHdr, ``, ReasonBadSubject, ""},
	{"bad subject escape", "fhir.Patient.%zz", nil, `{}`, ReasonBadSubject, ""},
	{"bad op", "fhir.Patient.1", nats.Header{HeaderOp: {"DELETE"}}, ``, ReasonBadOp, ""},
	{"bad op patch", "fhir.Patient.1", nats.Header{HeaderOp: {"patch"}}, `{}`, ReasonBadOp, ""},
	{"unknown subject type", "fhir.Patientx.1", nil, `{"resourceType":"Patientx","id":"1"}`, ReasonUnknownType, ""},
	{"unknown subject type delete", "fhir.DomainResource.1", deleteHdr, ``, ReasonUnknownType, ""},
	{"bad subject id", "fhir.Patient.a_b", nil, `{"resourceType":"Patient","id":"a_b"}`, ReasonBadID, ""},
	{"bad subject id long", "fhir.Patient." + strings.Repeat("a", 65), deleteHdr, ``, ReasonBadID, ""},
	{"empty body", "fhir.Patient.1", nil, ``, ReasonNotJSON, ""},
	{"not json", "fhir.Patient.1", nil, `{"resourceType":"Patient",`, ReasonNotJSON, ""},
	{"invalid utf8", "fhir.Patient.1", nil, "{\"resourceType\":\"Patient\",\"id\":\"1\",\"x\":\"\xff\"}", ReasonInvalidUTF8, ""},
	{"array", "fhir.Patient.1", nil, `[{"resourceType":"Patient","id":"1"}]`, ReasonNotObject, ""},
	{"string", "fhir.Patient.1", nil, `"Patient"`, ReasonNotObject, ""},
	{"too deep", "fhir.Patient.1", nil, deep(MaxDepth + 1), ReasonTooDeep, ""},
	{"duplicate id", "fhir.Patient.1", nil, `{"resourceType":"Patient","id":"1","id":"2"}`, ReasonDuplicateKey, ""},
	{"duplicate escaped", "fhir.Patient.1", nil, `{"resourceType":"Patient","id":"1","\u0069d":"1"}`, ReasonDuplicateKey, ""},
	{"duplicate other", "fhir.Patient.1", nil, `{"resourceType":"Patient","id":"1","a":1,"a":1}`, ReasonDuplicateKey, ""},
	{"missing type", "fhir.Patient.1", nil, `{"id":"1"}`, ReasonMissingType, ""},
	{"missing id", "fhir.Patient.1", nil, `{"resourceType":"Patient"}`, ReasonMissingID, ""},
	{"type not string", "fhir.Patient.1", nil, `{"resourceType":1,"id":"1"}`, ReasonUnknownType, ""},
	{"unknown type", "fhir.Patient.1", nil, `{"resourceType":"DomainResource","id":"1"}`, ReasonUnknownType, ""},
	{"id not string", "fhir.Patient.1", nil, `{"resourceType":"Patient","id":1}`, ReasonBadID, ""},
	{"bad id", "fhir.Patient.1", nil, `{"resourceType":"Patient","id":"a/b"}`, ReasonBadID, ""},
	{"type mismatch", "fhir.Patient.1", nil, `{"resourceType":"Observation","id":"1"}`, ReasonTypeMismatch, ""},
	{"id mismatch", "fhir.Patient.1", nil, `{"resourceType":"Patient","id":"2"}`, ReasonIDMismatch, ""},
	{"meta array", "fhir.Patient.1", nil, `{"resourceType":"Patient","id":"1","meta":[]}`, ReasonBadMeta, ""},
	{"meta escaped", "fhir.Patient.1", nil, `{"resourceType":"Patient","id":"1","m\u0065ta":{}}`, ReasonBadMeta, ""},
	{"meta null", "fhir.Patient.1", nil, `{"resourceType":"Patient","id":"1","meta":null}`, ReasonBadMeta, ""},
	{"ok meta tag", "fhir.Patient.1", nil, `{"resourceType":"Patient","id":"1","meta":{"tag":[{"code":"a"},{}],"versionId":7,"lastUpdated":null}}`, "", ""},
	{"ok meta tag spaced", "fhir.Patient.1", nil, `{"resourceType":"Patient","id":"1","meta": { "tag" : [ {"code":"a"} , { } ] } }`,
		"", `{"resourceType":"Patient","id":"1","meta":{"tag":[{"code":"a"},{}]}}`},
	{"ok meta other shapes", "fhir.Patient.1", nil, `{"resourceType":"Patient","id":"1","meta":{"security":"x","profile":1,"tags":"x"}}`, "", ""},
	{"meta tag string", "fhir.Patient.1", nil, `{"resourceType":"Patient","id":"1","meta":{"tag":"not-an-array"}}`, ReasonBadMeta, ""},
	{"meta tag object", "fhir.Patient.1", nil, `{"resourceType":"Patient","id":"1","meta":{"tag":{"code":"a"}}}`, ReasonBadMeta, ""},
	{"meta tag null", "fhir.Patient.1", nil, `{"resourceType":"Patient","id":"1","meta":{"tag":null}}`, ReasonBadMeta, ""},
	{"meta tag of strings", "fhir.Patient.1", nil, `{"resourceType":"Patient","id":"1","meta":{"tag":[{"code":"a"},"b"]}}`, ReasonBadMeta, ""},
	{"meta tag of arrays", "fhir.Patient.1", nil, `{"resourceType":"Patient","id":"1","meta":{"tag":[[]]}}`, ReasonBadMeta, ""},
	{"meta tag escaped name", "fhir.Patient.1", nil, `{"resourceType":"Patient","id":"1","meta":{"t\u0061g":"x"}}`, ReasonBadMeta, ""},
	{"meta tag twice", "fhir.Patient.1", nil, `{"resourceType":"Patient","id":"1","meta":{"tag":[],"tag":[]}}`, ReasonBadMeta, ""},
	{"meta versionId twice", "fhir.Patient.1", nil, `{"resourceType":"Patient","id":"1","meta":{"versionId":"1","versionId":"2"}}`, ReasonBadMeta, ""},
	{"meta lastUpdated twice", "fhir.Patient.1", nil, `{"resourceType":"Patient","id":"1","meta":{"lastUpdated":"x","lastUpd\u0061ted":"y"}}`, ReasonBadMeta, ""},
	{"meta tag spaced string", "fhir.Patient.1", nil, `{"resourceType":"Patient","id":"1", "meta" : { "tag" : "x" } }`, ReasonBadMeta, ""},
	{"too large", "fhir.Patient.1", nil, `{"resourceType":"Patient","id":"1","x":"` + strings.Repeat("x", 200) + `"}`, ReasonTooLarge, ""},
}

func TestDecode(t *testing.T) {
	for _, tc := range decodeCases {
		t.Run(tc.name, func(t *testing.T) {
			ch, err := Decode(tc.subject, tc.hdr, []byte(tc.body), 200)
			if tc.reason != "" {
				var rej *RejectError
				if !errors.As(err, &rej) {
					t.Fatalf("got %v, want a RejectError %s", err, tc.reason)
				}
				if rej.Reason != tc.reason {
					t.Fatalf("got reason %s (%s), want %s", rej.Reason, rej.Detail, tc.reason)
				}
				return
			}
			if err != nil {
				t.Fatalf("got %v, want nil", err)
			}
			wantTyp, wantID, _ := ParseSubject(tc.subject)
			if ch.Type != wantTyp || ch.ID != wantID {
				t.Errorf("got %s/%s, want %s/%s", ch.Type, ch.ID, wantTyp, wantID)
			}
			if ch.Delete {
				if ch.Body != nil {
					t.Errorf("delete has body %q", ch.Body)
				}
				return
			}
			want := tc.want
			if want == "" {
				want = tc.body
			}
			if string(ch.Body) != want {
				t.Errorf("got body %s, want %s", ch.Body, want)
			}
		})
	}
}

func TestDecodeSharesCompactBody(t *testing.T) {
	body := []byte(`{"resourceType":"Patient","id":"1"}`)
	ch, err := Decode("fhir.Patient.1", nil, body, 0)
	if err != nil {
		t.Fatal(err)
	}
	if &ch.Body[0] != &body[0] {
		t.Error("a compact body was copied")
	}
}

func TestReasonsAreSubjectTokens(t *testing.T) {
	for _, r := range Reasons {
		if strings.Trim(r, "abcdefghijklmnopqrstuvwxyz0123456789_") != "" {
			t.Errorf("reason %q is not a plain subject token", r)
		}
	}
}

func FuzzDecode(f *testing.F) {
	for _, tc := range decodeCases {
		op := ""
		if tc.hdr != nil {
			op = headerOp(tc.hdr)
		}
		f.Add(tc.subject, op, []byte(tc.body))
	}
	f.Fuzz(func(t *testing.T, subject, op string, body []byte) {
		hdr := nats.Header{}
		if op != "" {
			hdr.Set(HeaderOp, op)
		}
		ch, err := Decode(subject, hdr, body, 1<<16)
		if err != nil {
			var rej *RejectError
			if !errors.As(err, &rej) || !containsString(Reasons, rej.Reason) {
				t.Fatalf("error %v is not a RejectError with a known reason", err)
			}
			return
		}
		typ, id, perr := ParseSubject(subject)
		if perr != nil || ch.Type != typ || ch.ID != id || !fhir.IsResourceType(typ) || !fhir.IsID(id) {
			t.Fatalf("accepted %q as %s/%s", subject, ch.Type, ch.ID)
		}
		if ch.Delete {
			return
		}
		var compact bytes.Buffer
		if err := json.Compact(&compact, ch.Body); err != nil || !bytes.Equal(compact.Bytes(), ch.Body) {
			t.Fatalf("accepted body is not compact JSON: %q", ch.Body)
		}
		var top map[string]json.RawMessage
		if err := json.Unmarshal(ch.Body, &top); err != nil {
			t.Fatalf("accepted body is not an object: %v", err)
		}
		var bt, bid string
		if json.Unmarshal(top["resourceType"], &bt) != nil || json.Unmarshal(top["id"], &bid) != nil || bt != typ || bid != id {
			t.Fatalf("accepted body %s/%s under subject %s", bt, bid, subject)
		}
	})
}

func containsString(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

func BenchmarkDecode(b *testing.B) {
	body := []byte(`{"resourceType":"Observation","id":"0b6f1c2e-7f9a-4d0e-9a7b-3f2b8c1d4e5f","status":"final","category":[{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/observation-category","code":"vital-signs","display":"vital-signs"}]}],"code":{"coding":[{"system":"http://loinc.org","code":"8302-2","display":"Body Height"}],"text":"Body Height"},"subject":{"reference":"Patient/3b1a9cb0-e3d3-4bce-8b20-864c3dc7e8c0"},"encounter":{"reference":"Encounter/5c1d2e3f-4a5b-6c7d-8e9f-0a1b2c3d4e5f"},"effectiveDateTime":"2015-06-01T10:00:00-04:00","issued":"2015-06-01T10:00:00.000-04:00","valueQuantity":{"value":172.4,"unit":"cm","system":"http://unitsofmeasure.org","code":"cm"}}`)
	subj := EncodeSubject("fhir", "Observation", "0b6f1c2e-7f9a-4d0e-9a7b-3f2b8c1d4e5f")
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Decode(subj, nil, body, 0); err != nil {
			b.Fatal(err)
		}
	}
}
