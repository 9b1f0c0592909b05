package main

import (
	"bytes"
	"fmt"
	"slices"
	"strings"
	"testing"
)

// cdFile is a compartmentdefinition-patient.json with the given resource
// entries and 50 filler types (the generator refuses fewer).
func cdFile(resources ...string) []byte {
	for i := range 50 {
		resources = append(resources, fmt.Sprintf(`{"code":"Filler%s","param":["subject"]}`, filler(i)))
	}
	return []byte(`{"resourceType":"CompartmentDefinition","url":"` + patientCompartmentURL + `","code":"Patient","resource":[` +
		strings.Join(resources, ",") + `]}`)
}

// filler names the i-th filler type with letters only.
func filler(i int) string { return string(rune('a'+i/26)) + string(rune('a'+i%26)) }

// spFile is a search-parameters.json with the given SearchParameters
// (`id|code|base,base|expression`) and the fillers' subject parameters.
func spFile(params ...string) []byte {
	var entries []string
	for i := range 50 {
		params = append(params, fmt.Sprintf("Filler%[1]s-subject|subject|Filler%[1]s|Filler%[1]s.subject", filler(i)))
	}
	for _, p := range params {
		f := strings.SplitN(p, "|", 4)
		bases := `"` + strings.Join(strings.Split(f[2], ","), `","`) + `"`
		entries = append(entries, fmt.Sprintf(`{"resource":{"resourceType":"SearchParameter","id":%q,"code":%q,"base":[%s],"expression":%q}}`,
			f[0], f[1], bases, f[3]))
	}
	entries = append(entries, `{"resource":{"resourceType":"CompartmentDefinition","id":"x"}}`)
	return []byte(`{"resourceType":"Bundle","entry":[` + strings.Join(entries, ",") + `]}`)
}

var (
	testCD = cdFile(`{"code":"Patient","param":["link"]}`, `{"code":"Obs","param":["subject","performer","patient"]}`,
		`{"code":"Appt","param":["actor"]}`, `{"code":"Practitioner"}`)
	testSP = spFile("Patient-link|link|Patient|Patient.link.other",
		"Obs-subject|subject|Obs|Obs.subject",
		"Obs-performer|performer|Obs|Obs.performer",
		"clinical-patient|patient|Cond,Obs|Cond.subject.where(resolve() is Patient) | Obs.subject.where(resolve() is Patient) | Obs.focus",
		"Appt-actor|actor|Appt|Appt.participant.actor")
)

// TestPatientCompartment: paths come from the branches on the type (a
// shared expression's other types left out), with the Patient filter
// dropped, deduplicated and sorted; types without params are left out.
func TestPatientCompartment(t *testing.T) {
	got, err := patientCompartment(testCD, testSP)
	if err != nil {
		t.Fatal(err)
	}
	for typ, want := range map[string][]string{
		"Patient": {"link.other"},
		"Obs":     {"focus", "performer", "subject"},
		"Appt":    {"participant.actor"},
	} {
		if !slices.Equal(got[typ].paths, want) {
			t.Errorf("%s: %q, want %q", typ, got[typ].paths, want)
		}
	}
	if _, ok := got["Practitioner"]; ok || len(got) != 53 {
		t.Errorf("%d types (Practitioner in: %v), want 53 (the ones with params)", len(got), ok)
	}
	if _, ok := got["Cond"]; ok {
		t.Error("a type of a shared expression that the compartment does not list is in the table")
	}
	src, err := genCompartment([][]byte{testCD, testSP})
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range []string{`"Obs": {"focus", "performer", "subject"},`, `// subject: subject; performer: performer; patient: subject, focus`,
		`"Patient": {"link.other"},`, "var PatientCompartment = map[string][]string{"} {
		if !bytes.Contains(src, []byte(w)) {
			t.Errorf("generated source lacks %s:\n%s", w, src[:min(len(src), 1500)])
		}
	}
}

// TestPatientCompartmentRefuses: a branch the generator cannot turn into
// an element path, a param without its SearchParameter, and files of
// another kind fail the generation, naming what is wrong.
func TestPatientCompartmentRefuses(t *testing.T) {
	for name, c := range map[string]struct {
		cd, sp []byte
		want   string
	}{
		"function branch": {testCD, spFile("Patient-link|link|Patient|Patient.link.other", "Obs-subject|subject|Obs|Obs.subject",
			"Obs-performer|performer|Obs|Obs.performer.where(resolve() is Practitioner)",
			"clinical-patient|patient|Obs|Obs.subject", "Appt-actor|actor|Appt|Appt.participant.actor"),
			`"Obs.performer.where(resolve() is Practitioner)"`},
		"as cast": {testCD, spFile("Patient-link|link|Patient|Patient.link.other", "Obs-subject|subject|Obs|(Obs.subject as Reference)",
			"Obs-performer|performer|Obs|Obs.performer", "clinical-patient|patient|Obs|Obs.subject", "Appt-actor|actor|Appt|Appt.participant.actor"),
			"no branch on Obs"},
		"choice": {testCD, spFile("Patient-link|link|Patient|Patient.link.other", "Obs-subject|subject|Obs|Obs.value[x]",
			"Obs-performer|performer|Obs|Obs.performer", "clinical-patient|patient|Obs|Obs.subject", "Appt-actor|actor|Appt|Appt.participant.actor"),
			`"Obs.value[x]"`},
		"missing param": {testCD, spFile("Patient-link|link|Patient|Patient.link.other", "Obs-subject|subject|Obs|Obs.subject",
			"clinical-patient|patient|Obs|Obs.subject", "Appt-actor|actor|Appt|Appt.participant.actor"),
			`Obs param "performer": 0 SearchParameters`},
		"no branch on the type": {testCD, spFile("Patient-link|link|Patient|Patient.link.other", "Obs-subject|subject|Obs|Cond.subject",
			"Obs-performer|performer|Obs|Obs.performer", "clinical-patient|patient|Obs|Obs.subject", "Appt-actor|actor|Appt|Appt.participant.actor"),
			"no branch on Obs"},
		"not a compartment": {[]byte(`{"resourceType":"Bundle"}`), testSP, "want the CompartmentDefinition"},
		"not JSON":          {testCD, []byte(`{`), "search-parameters.json"},
		"too few types": {[]byte(`{"resourceType":"CompartmentDefinition","url":"` + patientCompartmentURL + `","code":"Patient","resource":[{"code":"Patient","param":["link"]}]}`),
			testSP, "only 1 resource types"},
		"duplicate type": {cdFile(`{"code":"Patient","param":["link"]}`, `{"code":"Patient","param":["link"]}`), testSP, "there twice"},
	} {
		_, err := patientCompartment(c.cd, c.sp)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want an error with %s", name, err, c.want)
		}
	}
}
