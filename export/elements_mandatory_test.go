package export

import (
	"encoding/json"
	"maps"
	"slices"
	"strings"
	"testing"
)

// TestElementsKeepsMandatory: a kick-off with _type=Observation and
// _elements=subject, through the real parameter parser and job runner,
// exports each Observation with exactly resourceType, id, meta, subject
// and the elements R4 makes mandatory (status, code), byte for byte; and
// _elements=id on other types keeps each one's mandatory elements,
// including a required choice by the typed name the resource has.
func TestElementsKeepsMandatory(t *testing.T) {
	e := newEnv(t)
	rs := syntheaResources(t, 10)
	rs = append(rs,
		resource{"MedicationRequest", "by-ref", []byte(`{"resourceType":"MedicationRequest","id":"by-ref","status":"active","intent":"order",` +
			`"medicationReference":{"reference":"Medication/m1"},"subject":{"reference":"Patient/p1"},"authoredOn":"2020-01-01"}`)},
		resource{"Observation", "ext", []byte(`{"resourceType":"Observation","id":"ext","status":"final","_status":{"extension":[{"url":"http://x","valueString":"y"}]},` +
			`"code":{"text":"c"},"subject":{"reference":"Patient/p1"},"valueString":"v","issued":"2020-01-01T00:00:00Z"}`)})
	e.f.apply(t, rs...)
	inputs := map[string]map[string]json.RawMessage{}
	for _, r := range rs {
		var m map[string]json.RawMessage
		if err := json.Unmarshal(r.body, &m); err != nil {
			t.Fatal(err)
		}
		inputs[r.typ+"/"+r.id] = m
	}
	m := e.manager(t, Config{}, nil)
	export := func(params ...string) map[string][]byte {
		t.Helper()
		id, err := m.Kickoff(t.Context(), Kickoff{Params: ps(params...), RequestURL: "http://x/$export"})
		if err != nil {
			t.Fatal(err)
		}
		return readExport(t, m, id, waitManifest(t, m, id)).resources
	}
	check := func(k string, line []byte, want []string) {
		t.Helper()
		var out map[string]json.RawMessage
		if err := json.Unmarshal(line, &out); err != nil {
			t.Fatalf("%s: %v", k, err)
		}
		in := inputs[k]
		var wantKeys []string
		for _, w := range append([]string{"resourceType", "id", "meta"}, want...) {
			if _, ok := in[w]; ok || w == "meta" {
				wantKeys = append(wantKeys, w)
			}
		}
		got := slices.Sorted(maps.Keys(out))
		if slices.Sort(wantKeys); !slices.Equal(got, wantKeys) {
			t.Fatalf("%s exported with %q, want %q:\n%s", k, got, wantKeys, line)
		}
		for _, key := range got {
			if key != "meta" && string(out[key]) != string(in[key]) {
				t.Errorf("%s: %s changed: %s -> %s", k, key, in[key], out[key])
			}
		}
		if !strings.Contains(string(out["meta"]), `"SUBSETTED"`) {
			t.Errorf("%s: meta %s is not tagged SUBSETTED", k, out["meta"])
		}
	}

	obs := export("_type", "Observation", "_elements", "subject")
	if len(obs) < 50 {
		t.Fatalf("exported %d Observations, want the sample's", len(obs))
	}
	for k, line := range obs {
		if !strings.HasPrefix(k, "Observation/") {
			t.Fatalf("exported %s", k)
		}
		check(k, line, []string{"subject", "status", "_status", "code"})
	}
	if !strings.Contains(string(obs["Observation/ext"]), `"_status":{"extension"`) {
		t.Errorf("Observation/ext lost status's extension: %s", obs["Observation/ext"])
	}

	// _elements=id: only the mandatory ones beyond resourceType, id, meta.
	others := export("_type", "MedicationRequest,Encounter,Patient,Condition", "_elements", "id")
	seen := map[string]int{}
	for k, line := range others {
		typ, _, _ := strings.Cut(k, "/")
		seen[typ]++
		var want []string
		switch typ {
		case "MedicationRequest":
			want = []string{"status", "intent", "medicationCodeableConcept", "medicationReference", "subject"}
			in := inputs[k]
			_, cc := in["medicationCodeableConcept"]
			_, ref := in["medicationReference"]
			if cc == ref {
				t.Fatalf("%s: test input has not exactly one medication[x]", k)
			}
		case "Encounter":
			want = []string{"status", "class"}
		case "Condition":
			want = []string{"subject"}
		case "Patient":
		}
		check(k, line, want)
	}
	for _, typ := range []string{"MedicationRequest", "Encounter", "Patient", "Condition"} {
		if seen[typ] == 0 {
			t.Errorf("no %s exported", typ)
		}
	}
	if !strings.Contains(string(others["MedicationRequest/by-ref"]), `"medicationReference"`) {
		t.Errorf("MedicationRequest/by-ref lost medicationReference: %s", others["MedicationRequest/by-ref"])
	}
}
