package index

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"errors"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bulkstream/bulkstream"
	"github.com/bulkstream/bulkstream/internal/fhir"
	"github.com/bulkstream/bulkstream/internal/fhirdefs"
)

// ---- an independent reference implementation, with encoding/json ----

// refRE is a reference by the rules of refs.go, written as the R4
// Reference.reference pattern (https://hl7.org/fhir/R4/references.html#regex)
// with any http(s) base.
var refRE = regexp.MustCompile(`(?s)^(?:https?://.+/)?([A-Za-z]+)/([A-Za-z0-9\-.]{1,64})(?:/_history/[A-Za-z0-9\-.]{1,64})?$`)

var idRE = regexp.MustCompile(`^[A-Za-z0-9\-.]{1,64}$`)

// refTypeID parses a reference value by refRE.
func refTypeID(v any) (typ, id string, ok bool) {
	s, isStr := v.(string)
	if !isStr {
		return "", "", false
	}
	m := refRE.FindStringSubmatch(s)
	if m == nil || !fhir.IsResourceType(m[1]) {
		return "", "", false
	}
	return m[1], m[2], true
}

// refObjects returns the objects at path under v, following arrays (one
// level) at every step.
func refObjects(v any, path []string) []map[string]any {
	var objs []map[string]any
	switch x := v.(type) {
	case map[string]any:
		objs = []map[string]any{x}
	case []any:
		for _, e := range x {
			if m, ok := e.(map[string]any); ok {
				objs = append(objs, m)
			}
		}
	}
	if len(path) == 0 {
		return objs
	}
	var out []map[string]any
	for _, o := range objs {
		if next, ok := o[path[0]]; ok {
			out = append(out, refObjects(next, path[1:])...)
		}
	}
	return out
}

func refDecode(body []byte) (map[string]any, error) {
	d := json.NewDecoder(bytes.NewReader(body))
	d.UseNumber()
	var v any
	if err := d.Decode(&v); err != nil {
		return nil, err
	}
	m, ok := v.(map[string]any)
	if !ok {
		return nil, errors.New("not an object")
	}
	return m, nil
}

// refCompartment is compartmentOf by encoding/json.
func refCompartment(typ, id string, body []byte) ([]string, error) {
	m, err := refDecode(body)
	if err != nil {
		return nil, err
	}
	var out []string
	if typ == "Patient" {
		out = append(out, id)
	}
	for _, p := range fhirdefs.PatientCompartment[typ] {
		for _, o := range refObjects(m, strings.Split(p, ".")) {
			if t, i, ok := refTypeID(o["reference"]); ok && t == "Patient" {
				out = append(out, i)
			}
		}
	}
	slices.Sort(out)
	return slices.Compact(out), nil
}

// refProvenance is provenanceTargets by encoding/json.
func refProvenance(body []byte) ([]string, error) {
	m, err := refDecode(body)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, o := range refObjects(m["target"], nil) {
		if t, i, ok := refTypeID(o["reference"]); ok {
			out = append(out, t+"/"+i)
		}
	}
	slices.Sort(out)
	return slices.Compact(out), nil
}

// dateTimeRE is the R4 dateTime pattern (https://hl7.org/fhir/R4/datatypes.html#dateTime).
var dateTimeRE = regexp.MustCompile(`^([0-9]([0-9]([0-9][1-9]|[1-9]0)|[1-9]00)|[1-9]000)(-(0[1-9]|1[0-2])(-(0[1-9]|[1-2][0-9]|3[0-1])(T([01][0-9]|2[0-3]):[0-5][0-9]:([0-5][0-9]|60)(\.([0-9]+))?(Z|(\+|-)((0[0-9]|1[0-3]):[0-5][0-9]|14:00)))?)?)?$`)

// refBound is periodBound by time.Parse (no leap seconds).
func refBound(v any, last bool) uint64 {
	s, _ := v.(string)
	m := dateTimeRE.FindStringSubmatch(s)
	if m == nil {
		return 0
	}
	var t time.Time
	var err error
	var step func(time.Time) time.Time
	switch len(s) {
	case 4:
		t, err = time.Parse("2006", s)
		step = func(t time.Time) time.Time { return t.AddDate(1, 0, 0) }
	case 7:
		t, err = time.Parse("2006-01", s)
		step = func(t time.Time) time.Time { return t.AddDate(0, 1, 0) }
	case 10:
		t, err = time.Parse("2006-01-02", s)
		step = func(t time.Time) time.Time { return t.AddDate(0, 0, 1) }
	default:
		t, err = time.Parse(time.RFC3339Nano, s)
		unit := time.Second
		for range min(len(m[12]), 6) {
			unit /= 10
		}
		if len(m[12]) > 6 {
			unit = time.Microsecond
		}
		t = t.Truncate(time.Microsecond)
		step = func(t time.Time) time.Time { return t.Add(unit) }
	}
	if err != nil {
		return 0 // e.g. February 30
	}
	if !last {
		return uint64(max(t.UnixMicro(), 0))
	}
	return uint64(max(step(t).UnixMicro()-1, 1))
}

// refGroup is groupMembers by encoding/json.
func refGroup(body []byte) ([]groupMember, error) {
	m, err := refDecode(body)
	if err != nil {
		return nil, err
	}
	arr, _ := m["member"].([]any)
	var out []groupMember
	for _, e := range arr {
		mem, ok := e.(map[string]any)
		if !ok {
			continue
		}
		var g groupMember
		ent, _ := mem["entity"].(map[string]any)
		ref, _ := ent["reference"].(string)
		if u, isUUID := strings.CutPrefix(ref, "urn:uuid:"); isUUID {
			if !idRE.MatchString(u) {
				continue
			}
			g.ID = u
		} else if t, i, ok := refTypeID(ref); ok {
			g.Type, g.ID = t, i
		} else {
			continue
		}
		g.Inactive = mem["inactive"] == true
		if p, ok := mem["period"].(map[string]any); ok {
			g.Start, g.End = refBound(p["start"], false), refBound(p["end"], true)
		}
		out = append(out, g)
	}
	return out, nil
}

// ---- table tests ----

// TestCompartmentOf: each reference rule, at compartment paths of
// several shapes.
func TestCompartmentOf(t *testing.T) {
	const p1, p2 = "p1", "q-2.x"
	for _, c := range []struct {
		name, typ, id, body string
		want                []string
	}{
		{"literal", "Observation", "o", `{"subject":{"reference":"Patient/p1"}}`, []string{p1}},
		{"history", "Observation", "o", `{"subject":{"reference":"Patient/p1/_history/3"}}`, []string{p1}},
		{"absolute URL", "Observation", "o", `{"subject":{"reference":"https://fhir.example.org/r4/Patient/p1"}}`, []string{p1}},
		{"absolute URL with history", "Observation", "o", `{"subject":{"reference":"http://x/Patient/p1/_history/a.1"}}`, []string{p1}},
		{"URL without a host", "Observation", "o", `{"subject":{"reference":"https://Patient/p1"}}`, nil},
		{"other scheme", "Observation", "o", `{"subject":{"reference":"ftp://x/Patient/p1"}}`, nil},
		{"relative path", "Observation", "o", `{"subject":{"reference":"fhir/Patient/p1"}}`, nil},
		{"leading slash", "Observation", "o", `{"subject":{"reference":"/Patient/p1"}}`, nil},
		{"contained", "Observation", "o", `{"subject":{"reference":"#p1"}}`, nil},
		{"urn:uuid", "Observation", "o", `{"subject":{"reference":"urn:uuid:p1"}}`, nil},
		{"urn:oid", "Observation", "o", `{"subject":{"reference":"urn:oid:1.2.3"}}`, nil},
		{"logical", "Observation", "o", `{"subject":{"identifier":{"system":"s","value":"Patient/p1"}}}`, nil},
		{"conditional", "Observation", "o", `{"subject":{"reference":"Patient?identifier=x"}}`, nil},
		{"bad id", "Observation", "o", `{"subject":{"reference":"Patient/p_1"}}`, nil},
		{"id too long", "Observation", "o", `{"subject":{"reference":"Patient/` + strings.Repeat("a", 65) + `"}}`, nil},
		{"id of 64", "Observation", "o", `{"subject":{"reference":"Patient/` + strings.Repeat("a", 64) + `"}}`, []string{strings.Repeat("a", 64)}},
		{"bad history", "Observation", "o", `{"subject":{"reference":"Patient/p1/_history/"}}`, nil},
		{"not a string", "Observation", "o", `{"subject":{"reference":7}}`, nil},
		{"not an object", "Observation", "o", `{"subject":"Patient/p1"}`, nil},
		{"escaped slash", "Observation", "o", `{"subject":{"reference":"Patient\/p1"}}`, []string{p1}},
		{"escaped letters", "Observation", "o", `{"subject":{"reference":"\u0050atient/p\u0031"}}`, []string{p1}},
		{"escaped key", "Observation", "o", `{"sub\u006aect":{"refer\u0065nce":"Patient/p1"}}`, []string{p1}},
		{"subject Group", "Observation", "o", `{"subject":{"reference":"Group/g1"}}`, nil},
		{"performer Practitioner and Patient", "Observation", "o",
			`{"subject":{"reference":"Patient/p1"},"performer":[{"reference":"Practitioner/d"},{"reference":"Patient/q-2.x"}]}`, []string{p1, p2}},
		{"duplicates", "Observation", "o",
			`{"subject":{"reference":"Patient/p1"},"performer":[{"reference":"Patient/p1"},{"reference":"http://x/Patient/p1"}]}`, []string{p1}},
		{"last member wins", "Observation", "o", `{"subject":{"reference":"Patient/p2"},"subject":{"reference":"Patient/p1"}}`, []string{p1}},
		{"last reference wins", "Observation", "o", `{"subject":{"reference":"Patient/p2","reference":"Patient/p1"}}`, []string{p1}},
		{"array at the first step", "Appointment", "a",
			`{"participant":[{"actor":{"reference":"Patient/p1"}},{"actor":{"reference":"Location/l"}},{"actor":{"reference":"Patient/q-2.x"}}]}`, []string{p1, p2}},
		{"array at the last step", "CarePlan", "c",
			`{"activity":[{"detail":{"performer":[{"reference":"Practitioner/d"},{"reference":"Patient/p1"}]}},{"detail":{"performer":[{"reference":"Patient/q-2.x"}]}}]}`,
			[]string{p1, p2}},
		{"array at a middle step", "CarePlan", "c",
			`{"activity":{"detail":[{"performer":{"reference":"Patient/p1"}},{"performer":[{"reference":"Patient/q-2.x"}]}]}}`, []string{p1, p2}},
		{"non-objects in arrays", "Appointment", "a", `{"participant":[1,"x",null,[{"actor":{"reference":"Patient/p2"}}],{"actor":{"reference":"Patient/p1"}}]}`, []string{p1}},
		{"wrong nesting", "Appointment", "a", `{"actor":{"reference":"Patient/p1"},"participant":{"reference":"Patient/p2"}}`, nil},
		{"a path of another type", "Encounter", "e", `{"patient":{"reference":"Patient/p2"},"subject":{"reference":"Patient/p1"}}`, []string{p1}},
		{"Patient itself", "Patient", "me", `{"resourceType":"Patient","id":"me"}`, []string{"me"}},
		{"Patient.link.other", "Patient", "me",
			`{"link":[{"other":{"reference":"Patient/p1"},"type":"seealso"},{"other":{"reference":"RelatedPerson/r"}},{"other":{"reference":"Patient/me"}}]}`,
			[]string{"me", p1}},
		{"Provenance target", "Provenance", "v", `{"target":[{"reference":"Observation/o"},{"reference":"Patient/p1"}]}`, []string{p1}},
		{"Group member", "Group", "g", `{"member":[{"entity":{"reference":"Patient/p1"}},{"entity":{"reference":"urn:uuid:p2"}}]}`, []string{p1}},
		{"not in the compartment", "Practitioner", "d", `{"subject":{"reference":"Patient/p1"}}`, nil},
		{"empty object", "Observation", "o", `{}`, nil},
		// The walk stops after the last place a path's member name appears
		// (with no backslash in the body); these check it stops late enough.
		{"name nested later", "Observation", "o",
			`{"subject":{"reference":"Patient/p1"},"contained":[{"resourceType":"Observation","subject":{"reference":"Patient/q-2.x"}}],"x":1}`, []string{p1}},
		{"name as a value", "Observation", "o", `{"code":"subject","subject":{"reference":"Patient/p1"},"text":"performer"}`, []string{p1}},
		{"performer last", "Observation", "o",
			`{"subject":{"reference":"Patient/p1"},"component":[{"code":{"text":"a"}},{"valueString":"Patient/x"}],"performer":[{"reference":"Patient/q-2.x"}]}`,
			[]string{p1, p2}},
		{"escaped name last", "Observation", "o", `{"subject":{"reference":"Patient/p1"},"sub\u006aect":{"reference":"Group/g"}}`, nil},
		{"no path name", "Observation", "o", `{"focus":{"reference":"Patient/p1"},"x":"Patient/p1"}`, nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, err := compartmentOf([]string{"keep"}, c.typ, c.id, []byte(c.body))
			if err != nil {
				t.Fatal(err)
			}
			if want := append([]string{"keep"}, c.want...); !slices.Equal(got, want) {
				t.Errorf("compartmentOf = %q, want %q", got, want)
			}
			ref, err := refCompartment(c.typ, c.id, []byte(c.body))
			if err != nil || !slices.Equal(ref, c.want) && len(ref)+len(c.want) > 0 {
				t.Errorf("reference implementation = %q, %v; want %q (the test is wrong)", ref, err, c.want)
			}
		})
	}
}

// TestExtractorsRefuse: a body that is not a JSON object is an error for
// each extractor, and dst is given back unchanged; compartmentOf reports
// it where it reads the fault (it stops after the last member it may
// need).
func TestExtractorsRefuse(t *testing.T) {
	for _, b := range []string{``, `[]`, `"x"`, `{`, `{"subject":}`, `{"subject":{"reference":"Patient/p1"}`, `{"a":1}}`, `{"a":1} `, `null`,
		`{"subject":{"reference":"Patient/p1"},"x":[1,}`, `{"x":[1,],"subject":{"reference":"Patient/p1"}}`,
		`{"subject":{"reference":"Patient\/p1"},"x":[1,}`, `{"subject":{"reference":"Patient/p1"},"subject":{"reference":"Patient/p2",}}`} {
		got, err := compartmentOf([]string{"keep"}, "Observation", "o", []byte(b))
		// Unread faults: after the last subject, or no subject at all.
		readsFault := !strings.HasPrefix(b, `{"subject":{"reference":"Patient/p1"}`) && b != `{"a":1}}`
		if readsFault && (err == nil || !slices.Equal(got, []string{"keep"})) {
			t.Errorf("compartmentOf(%q) = %q, %v; want [keep] and an error", b, got, err)
		}
		if err != nil && !slices.Equal(got, []string{"keep"}) {
			t.Errorf("compartmentOf(%q) = %q, %v; want [keep] with the error", b, got, err)
		}
		if got, err := compartmentOf(nil, "Practitioner", "o", []byte(b)); err == nil && !isObject([]byte(b)) {
			t.Errorf("compartmentOf(Practitioner, %q) = %q, nil; want an error", b, got)
		}
		if got, err := provenanceTargets([]string{"keep"}, []byte(b)); err == nil || !slices.Equal(got, []string{"keep"}) {
			t.Errorf("provenanceTargets(%q) = %q, %v; want [keep] and an error", b, got, err)
		}
		if got, err := groupMembers([]byte(b)); err == nil {
			t.Errorf("groupMembers(%q) = %v, nil; want an error", b, got)
		}
	}
}

// TestProvenanceTargets: any resource type, versions and bases dropped,
// sorted and deduplicated.
func TestProvenanceTargets(t *testing.T) {
	body := `{"resourceType":"Provenance","target":[{"reference":"Observation/o2/_history/1"},{"reference":"Patient/p1"},` +
		`{"reference":"https://x.org/fhir/Observation/o2"},{"reference":"#c"},{"reference":"urn:uuid:u"},{"reference":"Nope/1"},` +
		`{"display":"x"},{"reference":"Encounter\/e1"}],"agent":[{"who":{"reference":"Practitioner/d"}}]}`
	got, err := provenanceTargets(nil, []byte(body))
	if want := []string{"Encounter/e1", "Observation/o2", "Patient/p1"}; err != nil || !slices.Equal(got, want) {
		t.Errorf("provenanceTargets = %q, %v; want %q", got, err, want)
	}
	if ref, _ := refProvenance([]byte(body)); !slices.Equal(ref, got) {
		t.Errorf("reference implementation = %q", ref)
	}
	got, err = provenanceTargets(nil, []byte(`{"target":{"reference":"Patient/p1"}}`))
	if err != nil || !slices.Equal(got, []string{"Patient/p1"}) {
		t.Errorf("a single target object: %q, %v", got, err)
	}
	if got, err = provenanceTargets(nil, []byte(`{"resourceType":"Provenance"}`)); err != nil || len(got) != 0 {
		t.Errorf("no target: %q, %v", got, err)
	}
}

func us(s string) uint64 {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		panic(err)
	}
	return uint64(t.UnixMicro())
}

// TestGroupMembers: entity forms, inactive, and period bounds at each
// precision.
func TestGroupMembers(t *testing.T) {
	body := `{"resourceType":"Group","member":[` +
		`{"entity":{"reference":"Patient/p1"}},` +
		`{"entity":{"reference":"urn:uuid:3b1a9cb0-e3d3-4bce-8b20-864c3dc7e8c0"},"inactive":true},` +
		`{"entity":{"reference":"Group/g2"},"period":{"start":"2020","end":"2020"}},` +
		`{"entity":{"reference":"#contained"}},` +
		`{"entity":{"reference":"urn:uuid:bad_id"}},` +
		`{"entity":{"identifier":{"value":"x"}}},` +
		`{"period":{"start":"2020"}},` +
		`"not an object",` +
		`{"entity":{"reference":"http:\/\/x\/fhir\/Patient\/p2\/_history\/9"},"inactive":false,"period":{"start":"2020-02","end":"2020-02"}},` +
		`{"entity":{"reference":"Patient/p3"},"period":{"start":"2021-03-04","end":"2021-03-04"}},` +
		`{"entity":{"reference":"Patient/p4"},"period":{"start":"2021-03-04T10:20:30+02:00","end":"2021-03-04T10:20:30Z"}},` +
		`{"entity":{"reference":"Patient/p5"},"period":{"start":"2021-03-04T10:20:30.123456789Z","end":"2021-03-04T10:20:30.12Z"}},` +
		`{"entity":{"reference":"Patient/p6"},"period":{"start":"2021-02-30","end":"yesterday"}},` +
		`{"entity":{"reference":"Patient/p7"},"period":{"start":"1950-01-01","end":"1960"}},` +
		`{"entity":{"reference":"Patient/p8"},"period":{"end":"2016-12-31T23:59:60Z","start":7},"inactive":"true"},` +
		`{"entity":{"reference":"Patient/p9"},"period":{"start":"2021-03-04T10:20:30","end":"2021-03-04T10:20Z"}},` +
		`{"entity":{"reference":"Patient/p10"},"period":{"start":"0000","end":"2021-13"}},` +
		`{"entity":{"reference":"Patient/p11"},"period":{"start":"2024-02-29","end":"2021-03-04T10:20:30-14:30"}}` +
		`]}`
	want := []groupMember{
		{Type: "Patient", ID: "p1"},
		{ID: "3b1a9cb0-e3d3-4bce-8b20-864c3dc7e8c0", Inactive: true},
		{Type: "Group", ID: "g2", Start: us("2020-01-01T00:00:00Z"), End: us("2020-12-31T23:59:59.999999Z")},
		{Type: "Patient", ID: "p2", Start: us("2020-02-01T00:00:00Z"), End: us("2020-02-29T23:59:59.999999Z")},
		{Type: "Patient", ID: "p3", Start: us("2021-03-04T00:00:00Z"), End: us("2021-03-04T23:59:59.999999Z")},
		{Type: "Patient", ID: "p4", Start: us("2021-03-04T08:20:30Z"), End: us("2021-03-04T10:20:30.999999Z")},
		{Type: "Patient", ID: "p5", Start: us("2021-03-04T10:20:30.123456Z"), End: us("2021-03-04T10:20:30.129999Z")},
		{Type: "Patient", ID: "p6"},
		{Type: "Patient", ID: "p7", Start: 0, End: 1},
		{Type: "Patient", ID: "p8", End: us("2016-12-31T23:59:59.999999Z")},
		{Type: "Patient", ID: "p9"}, // a time needs a zone, and seconds
		{Type: "Patient", ID: "p10"},
		{Type: "Patient", ID: "p11", Start: us("2024-02-29T00:00:00Z")}, // zone beyond -14:00
	}
	got, err := groupMembers([]byte(body))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got, want) {
		t.Errorf("groupMembers:\n got %+v\nwant %+v", got, want)
	}
	// The reference implementation has no leap seconds.
	ref, err := refGroup([]byte(body))
	if err != nil {
		t.Fatal(err)
	}
	if len(ref) == len(want) {
		ref[9].End = want[9].End
	}
	if !slices.Equal(ref, want) {
		t.Errorf("reference implementation (the test is wrong):\n got %+v\nwant %+v", ref, want)
	}
	for _, b := range []string{`{"resourceType":"Group"}`, `{"member":{"entity":{"reference":"Patient/p1"}}}`, `{"member":[]}`} {
		if got, err := groupMembers([]byte(b)); err != nil || len(got) != 0 {
			t.Errorf("groupMembers(%s) = %v, %v; want none", b, got, err)
		}
	}
	// Last member wins, for each member of a member.
	got, err = groupMembers([]byte(`{"member":[{"entity":{"reference":"Patient/a"},"inactive":true,"entity":{"reference":"#x"}},` +
		`{"entity":{"reference":"Patient/b"},"inactive":true,"inactive":false,"period":{"start":"2020"},"period":{}}]}`))
	if err != nil || !slices.Equal(got, []groupMember{{Type: "Patient", ID: "b"}}) {
		t.Errorf("duplicate members: %+v, %v", got, err)
	}
}

// ---- the Synthea sample ----

type sampleLine struct {
	typ, id string
	body    []byte
}

var (
	sampleOnce  sync.Once
	sampleLines []sampleLine
	sampleErr   error
)

// loadSampleLines reads the embedded Synthea sample once.
func loadSampleLines(tb testing.TB) []sampleLine {
	tb.Helper()
	sampleOnce.Do(func() {
		r, _ := bulkstream.Sample()
		zr, err := gzip.NewReader(r)
		if err != nil {
			sampleErr = err
			return
		}
		sc := bufio.NewScanner(zr)
		sc.Buffer(nil, 16<<20)
		for sc.Scan() {
			var h struct{ ResourceType, ID string }
			if err := json.Unmarshal(sc.Bytes(), &h); err != nil {
				sampleErr = err
				return
			}
			sampleLines = append(sampleLines, sampleLine{h.ResourceType, h.ID, bytes.Clone(sc.Bytes())})
		}
		sampleErr = sc.Err()
	})
	if sampleErr != nil {
		tb.Fatal(sampleErr)
	}
	if len(sampleLines) != bulkstream.SampleResources {
		tb.Fatalf("%d sample lines, want %d", len(sampleLines), bulkstream.SampleResources)
	}
	return sampleLines
}

// TestExtractorsOnSample compares the three extractors with the
// encoding/json reference implementation on every resource of the
// Synthea sample (compartmentOf also as if each 20th resource were of each
// compartment type), and checks what is known of the sample.
func TestExtractorsOnSample(t *testing.T) {
	lines := loadSampleLines(t)
	types := slices.Sorted(func(yield func(string) bool) {
		for typ := range fhirdefs.PatientCompartment {
			if !yield(typ) {
				return
			}
		}
	})
	patients := map[string]bool{}
	for _, l := range lines {
		if l.typ == "Patient" {
			patients[l.id] = true
		}
	}
	if len(patients) != 100 {
		t.Fatalf("%d patients in the sample", len(patients))
	}
	byType := map[string]int{} // resources in at least one compartment
	groups := 0
	for n, l := range lines {
		got, err := compartmentOf(nil, l.typ, l.id, l.body)
		want, rerr := refCompartment(l.typ, l.id, l.body)
		if err != nil || rerr != nil || !slices.Equal(got, want) {
			t.Fatalf("%s/%s: compartmentOf = %q, %v; reference %q, %v", l.typ, l.id, got, err, want, rerr)
		}
		for _, p := range got {
			if !patients[p] {
				t.Errorf("%s/%s: in the compartment of %s, not a patient of the sample", l.typ, l.id, p)
			}
		}
		if len(got) > 0 {
			byType[l.typ]++
		}
		switch l.typ {
		case "Observation", "Encounter", "Condition", "Procedure", "Immunization", "MedicationRequest", "Claim", "ExplanationOfBenefit":
			if len(got) != 1 {
				t.Errorf("%s/%s: in %d compartments, want 1", l.typ, l.id, len(got))
			}
		case "Patient":
			if !slices.Equal(got, []string{l.id}) {
				t.Errorf("Patient/%s: compartments %q", l.id, got)
			}
		case "Practitioner", "Organization":
			if len(got) != 0 {
				t.Errorf("%s/%s: compartments %q", l.typ, l.id, got)
			}
		}
		if n%20 == 0 {
			for _, typ := range types {
				got, err := compartmentOf(nil, typ, l.id, l.body)
				want, rerr := refCompartment(typ, l.id, l.body)
				if err != nil || rerr != nil || !slices.Equal(got, want) {
					t.Fatalf("%s/%s as a %s: compartmentOf = %q, %v; reference %q, %v", l.typ, l.id, typ, got, err, want, rerr)
				}
			}
		}

		targets, err := provenanceTargets(nil, l.body)
		rtargets, rerr := refProvenance(l.body)
		if err != nil || rerr != nil || !slices.Equal(targets, rtargets) {
			t.Fatalf("%s/%s: provenanceTargets = %q, %v; reference %q, %v", l.typ, l.id, targets, err, rtargets, rerr)
		}
		members, err := groupMembers(l.body)
		rmembers, rerr := refGroup(l.body)
		if err != nil || rerr != nil || !slices.Equal(members, rmembers) {
			t.Fatalf("%s/%s: groupMembers = %+v, %v; reference %+v, %v", l.typ, l.id, members, err, rmembers, rerr)
		}
		if l.typ == "Group" {
			groups++
			if len(members) == 0 {
				t.Errorf("Group/%s: no members", l.id)
			}
			for _, m := range members {
				if m.Type != "" || !patients[m.ID] || m.Inactive || m.Start != 0 || m.End != 0 {
					t.Errorf("Group/%s: member %+v, want urn:uuid: of a sample patient", l.id, m)
				}
			}
		} else if len(members) != 0 {
			t.Errorf("%s/%s: group members %+v", l.typ, l.id, members)
		}
	}
	if groups != 8 {
		t.Errorf("%d Groups, want 8", groups)
	}
	t.Logf("resources in a compartment, by type: %v", byType)
}

// TestCompartmentOfAllocs: the walk allocates nothing for a body without
// escapes; only the ids it returns are new strings (one here, though found
// twice), and none for a Patient whose only compartment is its own.
func TestCompartmentOfAllocs(t *testing.T) {
	obs := []byte(`{"resourceType":"Observation","id":"o","status":"final","code":{"text":"x"},` +
		`"subject":{"reference":"Patient/3b1a9cb0-e3d3-4bce-8b20-864c3dc7e8c0"},"performer":[{"reference":"Practitioner/d"},{"reference":"Patient/3b1a9cb0-e3d3-4bce-8b20-864c3dc7e8c0"}],` +
		`"valueQuantity":{"value":1.5,"unit":"kg"}}`)
	dst := make([]string, 0, 8)
	if n := testing.AllocsPerRun(100, func() { compartmentOf(dst[:0], "Observation", "o", obs) }); n != 1 {
		t.Errorf("compartmentOf(Observation) allocates %v times, want 1 (the id, found twice)", n)
	}
	pat := []byte(`{"resourceType":"Patient","id":"me","name":[{"family":"X"}],"link":[{"other":{"reference":"RelatedPerson/r"}}]}`)
	if n := testing.AllocsPerRun(100, func() { compartmentOf(dst[:0], "Patient", "me", pat) }); n != 0 {
		t.Errorf("compartmentOf(Patient) allocates %v times, want 0", n)
	}
	if n := testing.AllocsPerRun(100, func() { compartmentOf(dst[:0], "Organization", "x", pat) }); n != 0 {
		t.Errorf("compartmentOf(Organization) allocates %v times, want 0", n)
	}
}

// BenchmarkCompartmentOf runs each extractor over the whole sample (49 MB,
// so each body comes from memory), and compartmentOf over its first 1,000
// resources (1.3 MB, cache-resident, as a body just stamped by apply is),
// reporting ns/resource; allocs/op are per pass over the lines.
func BenchmarkCompartmentOf(b *testing.B) {
	all := loadSampleLines(b)
	b.Run("hot", func(b *testing.B) {
		lines := all[:1000]
		var size int64
		for _, l := range lines {
			size += int64(len(l.body))
		}
		b.ReportAllocs()
		b.SetBytes(size)
		dst := make([]string, 0, 16)
		for b.Loop() {
			for _, l := range lines {
				var err error
				if dst, err = compartmentOf(dst[:0], l.typ, l.id, l.body); err != nil {
					b.Fatal(err)
				}
			}
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(len(lines)), "ns/resource")
	})
	lines := all
	var size int64
	for _, l := range lines {
		size += int64(len(l.body))
	}
	for _, bc := range []struct {
		name string
		fn   func(dst []string, l sampleLine) ([]string, error)
	}{
		{"compartmentOf", func(dst []string, l sampleLine) ([]string, error) { return compartmentOf(dst, l.typ, l.id, l.body) }},
		{"provenanceTargets", func(dst []string, l sampleLine) ([]string, error) { return provenanceTargets(dst, l.body) }},
		{"groupMembers", func(dst []string, l sampleLine) ([]string, error) { _, err := groupMembers(l.body); return dst, err }},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(size)
			dst := make([]string, 0, 16)
			for b.Loop() {
				for _, l := range lines {
					var err error
					if dst, err = bc.fn(dst[:0], l); err != nil {
						b.Fatal(err)
					}
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(len(lines)), "ns/resource")
		})
	}
}
