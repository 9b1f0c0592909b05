package export

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"errors"
	"os"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/bulkstream/bulkstream/internal/fhirdefs"
	"github.com/bulkstream/bulkstream/internal/jsonobj"
)

const sub = `{"system":"http://terminology.hl7.org/CodeSystem/v3-ObservationValue","code":"SUBSETTED"}`

// obs is a stored Observation: compact, stamped meta, a decimal with a
// trailing zero, a primitive extension, nested objects and arrays.
const obs = `{"resourceType":"Observation","id":"o1","meta":{"versionId":"2","lastUpdated":"2026-01-02T03:04:05.000000Z"},` +
	`"status":"final","_status":{"extension":[{"url":"http://x","valueString":"y"}]},` +
	`"code":{"coding":[{"system":"http://loinc.org","code":"1-8","display":"a,b}\"]"}]},` +
	`"valueQuantity":{"value":1.50,"unit":"mg","comparator":"<"},"note":[{"text":"n1"},{"text":"}{"}]}`

// obsMandatory are obs's members that are mandatory in R4 (status, with
// its extension, and code).
const obsMandatory = `"status":"final","_status":{"extension":[{"url":"http://x","valueString":"y"}]},` +
	`"code":{"coding":[{"system":"http://loinc.org","code":"1-8","display":"a,b}\"]"}]}`

const obsMeta = `"meta":{"versionId":"2","lastUpdated":"2026-01-02T03:04:05.000000Z","tag":[` + sub + `]}`

func TestApplyElements(t *testing.T) {
	for _, tc := range []struct {
		name  string
		typ   string
		elems []Element
		in    string
		want  string
	}{
		{name: "no elements: unchanged", typ: "Observation", in: obs, want: obs},
		{name: "elements for other types only: unchanged", typ: "Observation",
			elems: []Element{{Type: "Patient", Name: "birthDate"}, {Type: "Condition", Name: "code"}}, in: obs, want: obs},
		{name: "element for all types, with its primitive extension; mandatory code kept", typ: "Observation",
			elems: []Element{{Name: "status"}}, in: obs,
			want: `{"resourceType":"Observation","id":"o1",` + obsMeta + `,` + obsMandatory + `}`},
		{name: "element for this type keeps the number literal", typ: "Observation",
			elems: []Element{{Type: "Observation", Name: "valueQuantity"}, {Type: "Patient", Name: "status"}}, in: obs,
			want: `{"resourceType":"Observation","id":"o1",` + obsMeta + `,` + obsMandatory + `,"valueQuantity":{"value":1.50,"unit":"mg","comparator":"<"}}`},
		{name: "nested objects and arrays kept intact, original order", typ: "Observation",
			elems: []Element{{Name: "note"}, {Type: "Observation", Name: "code"}}, in: obs,
			want: `{"resourceType":"Observation","id":"o1",` + obsMeta + `,` + obsMandatory + `,"note":[{"text":"n1"},{"text":"}{"}]}`},
		{name: "unknown element names are simply absent; mandatory ones kept", typ: "Observation",
			elems: []Element{{Name: "birthDate"}, {Name: "nope"}}, in: obs,
			want: `{"resourceType":"Observation","id":"o1",` + obsMeta + `,` + obsMandatory + `}`},
		{name: "a type with no mandatory element keeps only what is asked", typ: "Organization",
			elems: []Element{{Name: "partOf"}},
			in:    `{"resourceType":"Organization","id":"o","active":true,"name":"N","partOf":{"reference":"Organization/p"}}`,
			want:  `{"resourceType":"Organization","id":"o","partOf":{"reference":"Organization/p"},"meta":{"tag":[` + sub + `]}}`},
		{name: "required choice: the typed name present is kept", typ: "MedicationRequest",
			elems: []Element{{Name: "id"}},
			in: `{"resourceType":"MedicationRequest","id":"m","status":"active","intent":"order","medicationReference":{"reference":"Medication/x"},` +
				`"subject":{"reference":"Patient/p"},"authoredOn":"2020-01-01","_authoredOn":{"id":"a"},"medication":{"text":"not an R4 member"}}`,
			want: `{"resourceType":"MedicationRequest","id":"m","status":"active","intent":"order","medicationReference":{"reference":"Medication/x"},` +
				`"subject":{"reference":"Patient/p"},"meta":{"tag":[` + sub + `]}}`},
		{name: "a type outside R4 keeps only what is asked", typ: "SubscriptionStatus",
			elems: []Element{{Name: "id"}}, in: `{"resourceType":"SubscriptionStatus","id":"s","status":"active"}`,
			want: `{"resourceType":"SubscriptionStatus","id":"s","meta":{"tag":[` + sub + `]}}`},
		{name: "BDT: id and Type.meta", typ: "Patient",
			elems: []Element{{Name: "id"}, {Type: "Patient", Name: "meta"}},
			in:    `{"resourceType":"Patient","id":"p","meta":{"versionId":"1"},"gender":"female"}`,
			want:  `{"resourceType":"Patient","id":"p","meta":{"versionId":"1","tag":[` + sub + `]}}`},
		{name: "existing tag array", typ: "Patient", elems: []Element{{Name: "gender"}},
			in:   `{"resourceType":"Patient","id":"p","meta":{"versionId":"1","tag":[{"system":"s","code":"c"}],"source":"x"},"gender":"female","name":[{"family":"F"}]}`,
			want: `{"resourceType":"Patient","id":"p","meta":{"versionId":"1","tag":[{"system":"s","code":"c"},` + sub + `],"source":"x"},"gender":"female"}`},
		{name: "empty tag array", typ: "Patient", elems: []Element{{Name: "gender"}},
			in:   `{"resourceType":"Patient","id":"p","meta":{"tag":[]},"gender":"female"}`,
			want: `{"resourceType":"Patient","id":"p","meta":{"tag":[` + sub + `]},"gender":"female"}`},
		{name: "empty meta", typ: "Patient", elems: []Element{{Name: "gender"}},
			in:   `{"resourceType":"Patient","id":"p","meta":{},"gender":"female"}`,
			want: `{"resourceType":"Patient","id":"p","meta":{"tag":[` + sub + `]},"gender":"female"}`},
		{name: "already SUBSETTED (with display): meta unchanged", typ: "Patient", elems: []Element{{Name: "gender"}},
			in:   `{"resourceType":"Patient","id":"p","meta":{"tag":[{"code":"SUBSETTED","display":"subsetted","system":"http://terminology.hl7.org/CodeSystem/v3-ObservationValue"}]},"gender":"female","active":true}`,
			want: `{"resourceType":"Patient","id":"p","meta":{"tag":[{"code":"SUBSETTED","display":"subsetted","system":"http://terminology.hl7.org/CodeSystem/v3-ObservationValue"}]},"gender":"female"}`},
		{name: "SUBSETTED code of another system does not count", typ: "Patient", elems: []Element{{Name: "gender"}},
			in:   `{"resourceType":"Patient","id":"p","meta":{"tag":[{"system":"other","code":"SUBSETTED"},"odd",1]}}`,
			want: `{"resourceType":"Patient","id":"p","meta":{"tag":[{"system":"other","code":"SUBSETTED"},"odd",1,` + sub + `]}}`},
		{name: "duplicate tag: only the decoded (last) one is kept, tagged", typ: "Patient", elems: []Element{{Name: "gender"}},
			in:   `{"resourceType":"Patient","id":"p","meta":{"tag":[{"code":"a"}],"source":"s","tag":[{"code":"b"}]}}`,
			want: `{"resourceType":"Patient","id":"p","meta":{"source":"s","tag":[{"code":"b"},` + sub + `]}}`},
		{name: "duplicate tag, the first not an array", typ: "Patient", elems: []Element{{Name: "gender"}},
			in:   `{"resourceType":"Patient","id":"p","meta":{"tag":{},"tag":[]}}`,
			want: `{"resourceType":"Patient","id":"p","meta":{"tag":[` + sub + `]}}`},
		{name: "duplicate tag, the last already SUBSETTED", typ: "Patient", elems: []Element{{Name: "gender"}},
			in:   `{"resourceType":"Patient","id":"p","meta":{"t\u0061g":1,"versionId":"1","tag":[` + sub + `]}}`,
			want: `{"resourceType":"Patient","id":"p","meta":{"versionId":"1","tag":[` + sub + `]}}`},
		{name: "no meta: one is added", typ: "Patient", elems: []Element{{Name: "gender"}},
			in:   `{"resourceType":"Patient","id":"p","gender":"female","active":false}`,
			want: `{"resourceType":"Patient","id":"p","gender":"female","meta":{"tag":[` + sub + `]}}`},
		{name: "empty object", typ: "Patient", elems: []Element{{Name: "gender"}},
			in: `{}`, want: `{"meta":{"tag":[` + sub + `]}}`},
		{name: "modifiers kept", typ: "Patient", elems: []Element{{Name: "id"}},
			in:   `{"resourceType":"Patient","implicitRules":"http://r","id":"p","meta":{},"text":{"status":"generated"},"modifierExtension":[{"url":"u","valueBoolean":true}],"_id":{"id":"x"}}`,
			want: `{"resourceType":"Patient","implicitRules":"http://r","id":"p","meta":{"tag":[` + sub + `]},"modifierExtension":[{"url":"u","valueBoolean":true}],"_id":{"id":"x"}}`},
		{name: "escaped keys match by their decoded name, bytes kept", typ: "Patient", elems: []Element{{Name: "gender"}},
			in:   `{"resourceType":"Patient","id":"p","me\u0074a":{"t\u0061g":[]},"g\u0065nder":"male","active":true}`,
			want: `{"resourceType":"Patient","id":"p","me\u0074a":{"t\u0061g":[` + sub + `]},"g\u0065nder":"male"}`},
		{name: "strings with escapes and unicode kept", typ: "Patient", elems: []Element{{Name: "name"}},
			in:   `{"resourceType":"Patient","id":"p","meta":{},"name":[{"text":"Zoë \"Z\" \u00e9\\"}]}`,
			want: `{"resourceType":"Patient","id":"p","meta":{"tag":[` + sub + `]},"name":[{"text":"Zoë \"Z\" \u00e9\\"}]}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			prefix := []byte("prev\n")
			got, err := applyElements(bytes.Clone(prefix), []byte(tc.in), tc.typ, tc.elems)
			if err != nil {
				t.Fatalf("applyElements: %v", err)
			}
			if !bytes.HasPrefix(got, prefix) {
				t.Fatalf("dst prefix lost: %q", got)
			}
			if got := string(got[len(prefix):]); got != tc.want {
				t.Fatalf("got\n%s\nwant\n%s", got, tc.want)
			}
			checkSubsetJSON(t, got[len(prefix):], tc.in != tc.want)
		})
	}
}

func TestApplyElementsErrors(t *testing.T) {
	for _, in := range []string{
		``, `[]`, `{`, `{"resourceType":"Patient",}`, `{"a":1}x`, `{"a" :1}`, `{"meta":[1}`, `{"a":"x}`,
		`{"resourceType":"Patient","meta":null}`,         // meta not an object
		`{"resourceType":"Patient","meta":"x"}`,          // meta not an object
		`{"resourceType":"Patient","meta":{"tag":{}}}`,   // tag not an array
		`{"resourceType":"Patient","meta":{"tag":"x"}}`,  // tag not an array
		`{"resourceType":"Patient","meta":{"tag":[,]}}`,  // broken array
		`{"resourceType":"Patient","meta":{"tag":[1,]}}`, // broken array
		`{"resourceType":"Patient","meta":{"tag":[{"code":}]}}`,
	} {
		dst := []byte("keep")
		got, err := applyElements(dst, []byte(in), "Patient", []Element{{Name: "gender"}})
		if err == nil {
			t.Errorf("%s: got %s, want an error", in, got)
			continue
		}
		if !errors.Is(err, jsonobj.ErrSyntax) {
			t.Errorf("%s: error %v does not wrap jsonobj.ErrSyntax", in, err)
		}
		if string(got) != "keep" {
			t.Errorf("%s: dst = %q after an error, want it unchanged", in, got)
		}
	}
}

// checkSubsetJSON checks that out is one line of compact JSON and, when
// subsetted, carries the SUBSETTED tag in meta.
func checkSubsetJSON(t testing.TB, out []byte, subsetted bool) {
	t.Helper()
	var c bytes.Buffer
	if err := json.Compact(&c, out); err != nil || !bytes.Equal(c.Bytes(), out) {
		t.Fatalf("output is not compact JSON (%v): %s", err, out)
	}
	if bytes.IndexByte(out, '\n') >= 0 {
		t.Fatalf("output has a newline: %s", out)
	}
	if !subsetted {
		return
	}
	// Maps, not a struct: encoding/json matches struct field names without
	// regard to case, and FHIR names are case-sensitive ("tAG" is not tag).
	var r, meta map[string]json.RawMessage
	var tags []json.RawMessage
	if err := json.Unmarshal(out, &r); err != nil {
		t.Fatalf("decode output: %v", err)
	}
	if err := json.Unmarshal(r["meta"], &meta); err != nil {
		t.Fatalf("decode output meta: %v: %s", err, out)
	}
	if err := json.Unmarshal(meta["tag"], &tags); err != nil {
		t.Fatalf("decode output meta.tag: %v: %s", err, out)
	}
	for _, raw := range tags {
		var tag map[string]any
		if json.Unmarshal(raw, &tag) == nil && tag["system"] == "http://terminology.hl7.org/CodeSystem/v3-ObservationValue" && tag["code"] == "SUBSETTED" {
			return
		}
	}
	t.Fatalf("no SUBSETTED tag in %s", out)
}

// TestApplyElementsSynthea subsets real Synthea resources (stamped with a
// meta by the test, as the index would) and checks the output.
func TestApplyElementsSynthea(t *testing.T) {
	lines := syntheaLines(t, 2000)
	elems := []Element{{Name: "id"}, {Name: "status"}, {Type: "Observation", Name: "valueQuantity"}, {Type: "Patient", Name: "birthDate"}}
	var dst []byte
	for _, line := range lines {
		typ := resourceType(t, line)
		var err error
		dst, err = applyElements(dst[:0], line, typ, elems)
		if err != nil {
			t.Fatalf("%s: %v", line, err)
		}
		checkSubsetJSON(t, dst, true)
		var in, out map[string]json.RawMessage
		if err := json.Unmarshal(line, &in); err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(dst, &out); err != nil {
			t.Fatal(err)
		}
		mandatory, ok := fhirdefs.MandatoryElements(typ)
		if !ok {
			t.Fatalf("%s: not in the mandatory-elements table", typ)
		}
		for k := range in {
			if slices.Contains(mandatory, strings.TrimPrefix(k, "_")) {
				if _, ok := out[k]; !ok {
					t.Fatalf("%s: mandatory %s dropped: %s", typ, k, dst)
				}
			}
		}
		for k, v := range out {
			switch k {
			case "resourceType", "id", "meta", "status", "_status", "implicitRules", "modifierExtension":
			case "valueQuantity":
				if typ != "Observation" {
					t.Fatalf("%s kept valueQuantity", typ)
				}
			case "birthDate", "_birthDate":
				if typ != "Patient" {
					t.Fatalf("%s kept %s", typ, k)
				}
			default:
				if !slices.Contains(mandatory, strings.TrimPrefix(k, "_")) {
					t.Fatalf("%s kept %s", typ, k)
				}
			}
			if k != "meta" && !bytes.Equal(v, in[k]) {
				t.Fatalf("%s changed: %s -> %s", k, in[k], v)
			}
		}
		for _, k := range []string{"status", "valueQuantity", "birthDate"} {
			if _, ok := in[k]; ok && (k == "status" || k == "valueQuantity" && typ == "Observation" || k == "birthDate" && typ == "Patient") {
				if _, ok := out[k]; !ok {
					t.Fatalf("%s: %s dropped", typ, k)
				}
			}
		}
	}
}

// syntheaLines reads up to n resources of the repository's Synthea sample,
// each stamped with a meta as the index stores it.
func syntheaLines(tb testing.TB, n int) [][]byte {
	tb.Helper()
	f, err := os.Open("../testdata/synthea-r4-100-patients.ndjson.gz")
	if err != nil {
		tb.Skipf("synthea sample: %v", err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		tb.Fatal(err)
	}
	sc := bufio.NewScanner(zr)
	sc.Buffer(nil, 16<<20)
	var out [][]byte
	for sc.Scan() && len(out) < n {
		out = append(out, stampForTest(tb, sc.Bytes()))
	}
	if err := sc.Err(); err != nil {
		tb.Fatal(err)
	}
	return out
}

// stampForTest adds the meta the index would (versionId, lastUpdated)
// after id, keeping an existing meta's other members.
func stampForTest(tb testing.TB, line []byte) []byte {
	tb.Helper()
	ms, err := jsonobj.Members(line)
	if err != nil {
		tb.Fatalf("%s: %v", line, err)
	}
	const stamped = `"meta":{"versionId":"3","lastUpdated":"2026-11-26T17:58:41.120000Z"`
	var b []byte
	var oldMeta []byte
	for _, m := range ms {
		if m.Key == "meta" {
			oldMeta = m.Value
		}
	}
	b = append(b, '{')
	for i, m := range ms {
		if m.Key == "meta" {
			continue
		}
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, m.Raw...)
		if m.Key == "id" {
			b = append(b, ","+stamped...)
			if len(oldMeta) > 2 {
				b = append(b, ',')
				b = append(b, oldMeta[1:len(oldMeta)-1]...)
			}
			b = append(b, '}')
		}
	}
	return append(b, '}')
}

func resourceType(tb testing.TB, line []byte) string {
	tb.Helper()
	vs, ve, ok := jsonobj.Lookup(line, "resourceType")
	if !ok {
		tb.Fatalf("no resourceType: %s", line)
	}
	return strings.Trim(string(line[vs:ve]), `"`)
}

// benchObservation is a Synthea blood-pressure Observation as the index
// stores it (meta stamped, a profile added): about 1.3 KB.
const benchObservation = `{"resourceType":"Observation","id":"fe3ff93a-1909-435f-bc0d-066c4278f798",` +
	`"meta":{"versionId":"3","lastUpdated":"2026-11-26T17:58:41.120000Z","profile":["http://hl7.org/fhir/us/core/StructureDefinition/us-core-blood-pressure"]},` +
	`"status":"final","category":[{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/observation-category","code":"vital-signs","display":"vital-signs"}]}],` +
	`"code":{"coding":[{"system":"http://loinc.org","code":"85354-9","display":"Blood Pressure"}],"text":"Blood Pressure"},` +
	`"subject":{"reference":"Patient/eca04de4-760d-41bb-9735-36549acbf46c"},"encounter":{"reference":"Encounter/54732668-b32e-4d3a-ae27-1a3f1cb43e7a"},` +
	`"effectiveDateTime":"2014-02-23T17:30:47-05:00","issued":"2014-02-23T17:30:47.453-05:00",` +
	`"component":[{"code":{"coding":[{"system":"http://loinc.org","code":"8462-4","display":"Diastolic Blood Pressure"}],"text":"Diastolic Blood Pressure"},` +
	`"valueQuantity":{"value":81,"unit":"mm[Hg]","system":"http://unitsofmeasure.org","code":"mm[Hg]"}},` +
	`{"code":{"coding":[{"system":"http://loinc.org","code":"8480-6","display":"Systolic Blood Pressure"}],"text":"Systolic Blood Pressure"},` +
	`"valueQuantity":{"value":106,"unit":"mm[Hg]","system":"http://unitsofmeasure.org","code":"mm[Hg]"}}]}`

func BenchmarkApplyElements(b *testing.B) {
	res := []byte(benchObservation)
	for _, bc := range []struct {
		name  string
		elems []Element
	}{
		{"subset", []Element{{Name: "id"}, {Name: "status"}, {Type: "Observation", Name: "code"}, {Type: "Observation", Name: "subject"}}},
		{"keep-most", []Element{{Name: "status"}, {Name: "category"}, {Name: "code"}, {Name: "subject"}, {Name: "encounter"},
			{Name: "effectiveDateTime"}, {Name: "issued"}, {Name: "component"}}},
		{"other-type", []Element{{Type: "Patient", Name: "birthDate"}}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			dst := make([]byte, 0, 4096)
			b.ReportAllocs()
			b.SetBytes(int64(len(res)))
			for b.Loop() {
				var err error
				if dst, err = applyElements(dst[:0], res, "Observation", bc.elems); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// FuzzApplyElements: on valid compact objects applyElements either fails
// because a meta is not an object (or its tag not an array), or returns
// compact JSON in which every member is kept or dropped by the rules,
// kept members are byte-identical, and meta gained only the SUBSETTED tag.
func FuzzApplyElements(f *testing.F) {
	for _, s := range []struct{ in, elems string }{
		{obs, "status"},
		{obs, "Observation.code,note"},
		{obs, "Patient.birthDate"},
		{benchObservation, "id,Observation.component"},
		{`{"resourceType":"Patient","id":"p","meta":{"tag":[]},"gender":"female"}`, "gender"},
		{`{"resourceType":"Patient","meta":{"tag":[{"system":"http://terminology.hl7.org/CodeSystem/v3-ObservationValue","code":"SUBSETTED"}]}}`, "x"},
		{`{"me\u0074a":{"t\u0061g":[1]},"a":1.50,"_a":{}}`, "a"},
		{`{}`, "a"},
		{`{"meta":{"tag":{}}}`, "a"},
		{`{"meta":{"tag":{},"tag":[]}}`, "a"},
		{`{"meta":1,"meta":{}}`, "a"},
	} {
		f.Add([]byte(s.in), s.elems)
	}
	f.Fuzz(func(t *testing.T, in []byte, spec string) {
		if !utf8.Valid(in) || !json.Valid(in) || !isCompactJSON(in) || len(in) == 0 || in[0] != '{' {
			return
		}
		var elems []Element
		for e := range strings.SplitSeq(spec, ",") {
			typ, name, ok := strings.Cut(e, ".")
			if !ok {
				typ, name = "", e
			}
			elems = append(elems, Element{Type: typ, Name: name})
		}
		const typ = "Observation"
		out, err := applyElements(nil, in, typ, elems)
		if err != nil {
			if !badMeta(in) {
				t.Fatalf("applyElements(%s, %q): %v", in, spec, err)
			}
			return
		}
		applies := false
		for _, e := range elems {
			applies = applies || e.Type == "" || e.Type == typ
		}
		if !applies {
			if !bytes.Equal(out, in) {
				t.Fatalf("no element applies, but %s became %s", in, out)
			}
			return
		}
		checkSubsetJSON(t, out, true)
		var inM, outM map[string]json.RawMessage
		if err := json.Unmarshal(in, &inM); err != nil {
			return // e.g. a duplicate key of another kind; json.Valid allows it
		}
		if err := json.Unmarshal(out, &outM); err != nil {
			t.Fatalf("decode %s: %v", out, err)
		}
		for k, v := range inM {
			mandatory, _ := fhirdefs.MandatoryElements(typ)
			kept := keepMember([]byte(k), typ, elems, mandatory)
			ov, ok := outM[k]
			switch {
			case k == "meta":
				checkMetaTagged(t, v, ov)
			case kept && (!ok || !bytes.Equal(v, ov)):
				t.Fatalf("%q: kept member %s changed: %s -> %s", spec, k, v, ov)
			case !kept && ok:
				t.Fatalf("%q: member %s should be dropped: %s", spec, k, out)
			}
		}
		for k := range outM {
			if _, ok := inM[k]; !ok && k != "meta" {
				t.Fatalf("%q: member %s appeared: %s", spec, k, out)
			}
		}
	})
}

// checkMetaTagged: out is in (both meta objects) with the SUBSETTED coding
// appended to tag, unless tag already had it, and with one tag member.
func checkMetaTagged(t *testing.T, in, out json.RawMessage) {
	t.Helper()
	tags := 0
	jsonobj.Each(out, func(key string, _, _, _ int) bool {
		if key == "tag" {
			tags++
		}
		return true
	})
	if tags != 1 {
		t.Fatalf("meta %s -> %s: %d tag members, want 1", in, out, tags)
	}
	var im, om map[string]json.RawMessage
	if json.Unmarshal(in, &im) != nil || json.Unmarshal(out, &om) != nil {
		t.Fatalf("meta %s -> %s is not an object", in, out)
	}
	for k, v := range im {
		if k != "tag" && !bytes.Equal(v, om[k]) {
			t.Fatalf("meta.%s changed: %s -> %s", k, v, om[k])
		}
	}
	var it, ot []json.RawMessage
	if im["tag"] != nil {
		if err := json.Unmarshal(im["tag"], &it); err != nil {
			t.Fatalf("meta.tag %s: %v", im["tag"], err)
		}
	}
	if err := json.Unmarshal(om["tag"], &ot); err != nil {
		t.Fatalf("meta.tag %s: %v", om["tag"], err)
	}
	if len(ot) < len(it) || len(ot) > len(it)+1 {
		t.Fatalf("meta.tag %s -> %s", im["tag"], om["tag"])
	}
	for i := range it {
		if !bytes.Equal(it[i], ot[i]) {
			t.Fatalf("meta.tag %s -> %s", im["tag"], om["tag"])
		}
	}
	if len(ot) == len(it)+1 && string(ot[len(it)]) != sub {
		t.Fatalf("appended tag %s", ot[len(it)])
	}
}

// badMeta reports whether some top-level meta member is not an object or
// its last tag member is not an array: the inputs applyElements refuses.
func badMeta(b []byte) bool {
	bad := false
	jsonobj.Each(b, func(key string, _, vs, ve int) bool {
		if key != "meta" {
			return true
		}
		m := b[vs:ve]
		if m[0] != '{' {
			bad = true
			return false
		}
		if ts, _, ok := jsonobj.Lookup(m, "tag"); ok && m[ts] != '[' {
			bad = true
			return false
		}
		return true
	})
	return bad
}

func isCompactJSON(b []byte) bool {
	var c bytes.Buffer
	return json.Compact(&c, b) == nil && bytes.Equal(c.Bytes(), b)
}

// TestApplyElementsAllocs guards the hot path: subsetting a resource whose
// keys have no escapes allocates nothing beyond growing dst (the member
// walk is jsonobj.EachKey, which hands out keys as slices of the input).
func TestApplyElementsAllocs(t *testing.T) {
	res := []byte(benchObservation)
	elems := []Element{{Name: "id"}, {Name: "status"}, {Type: "Observation", Name: "code"}, {Type: "Observation", Name: "subject"}}
	dst := make([]byte, 0, 4096)
	allocs := testing.AllocsPerRun(100, func() {
		var err error
		if dst, err = applyElements(dst[:0], res, "Observation", elems); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Errorf("applyElements allocates %v times per call, want 0", allocs)
	}
}
