package export

import (
	"encoding/json"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"
)

// The oracles below decide, from a resource decoded with encoding/json,
// whether it matches one _typeFilter query of the tests, by the R4
// search rules written out by hand for that query alone: they share
// nothing with internal/search or the generated search parameter table.

// codings returns the codes of the Codings at doc[member] (a
// CodeableConcept or an array of them; a Coding itself when coding is
// false).
func codings(doc map[string]any, member string, coding bool) []string {
	var out []string
	var vals []any
	switch v := doc[member].(type) {
	case []any:
		vals = v
	case map[string]any:
		vals = []any{v}
	}
	for _, v := range vals {
		o, _ := v.(map[string]any)
		if coding {
			if c, ok := o["code"].(string); ok {
				out = append(out, c)
			}
			continue
		}
		cs, _ := o["coding"].([]any)
		for _, c := range cs {
			if code, ok := c.(map[string]any)["code"].(string); ok {
				out = append(out, code)
			}
		}
	}
	return out
}

// dateTimeOf parses a full FHIR dateTime (the sample's have seconds and a
// zone) and returns the second it covers as [lo, hi).
func dateTimeOf(t *testing.T, v any) (lo, hi time.Time, ok bool) {
	s, isStr := v.(string)
	if !isStr {
		return lo, hi, false
	}
	tm, err := time.Parse(time.RFC3339, s)
	if err != nil {
		t.Fatalf("sample dateTime %q: %v", s, err)
	}
	return tm, tm.Add(time.Second), true
}

func utc(s string) time.Time {
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		panic(err)
	}
	return t
}

// oracle is one test query's hand-written predicate.
type oracle func(t *testing.T, doc map[string]any) bool

var (
	// Observation?category=laboratory
	obsLaboratory oracle = func(t *testing.T, doc map[string]any) bool {
		return slices.Contains(codings(doc, "category", false), "laboratory")
	}
	// Observation?date=ge2020-01-01: the effective dateTime's second
	// reaches into [2020-01-01, ∞).
	obsSince2020 oracle = func(t *testing.T, doc map[string]any) bool {
		_, hi, ok := dateTimeOf(t, doc["effectiveDateTime"])
		return ok && hi.After(utc("2020-01-01T00:00:00Z"))
	}
	// Condition?clinical-status=active
	condActive oracle = func(t *testing.T, doc map[string]any) bool {
		return slices.Contains(codings(doc, "clinicalStatus", false), "active")
	}
	// Condition?onset-date=lt2000: the onset starts before 2000.
	condOnsetBefore2000 oracle = func(t *testing.T, doc map[string]any) bool {
		lo, _, ok := dateTimeOf(t, doc["onsetDateTime"])
		return ok && lo.Before(utc("2000-01-01T00:00:00Z"))
	}
	// Encounter?class=AMB&date=ge2015: an ambulatory encounter whose
	// period, by the R4 range rules for ge
	// (https://hl7.org/fhir/R4/search.html#prefix), reaches past 2015
	// (the range above the search value overlaps it: its end, or an open
	// end, is after 2015) or lies within 2015. A period from 1983 to
	// mid-2015 does neither.
	encAmbulatorySince2015 oracle = func(t *testing.T, doc map[string]any) bool {
		if !slices.Contains(codings(doc, "class", true), "AMB") {
			return false
		}
		period, _ := doc["period"].(map[string]any)
		if period == nil {
			return false
		}
		y2015, y2016 := utc("2015-01-01T00:00:00Z"), utc("2016-01-01T00:00:00Z")
		lo, _, hasStart := dateTimeOf(t, period["start"])
		_, hi, hasEnd := dateTimeOf(t, period["end"])
		if !hasEnd || hi.After(y2016) {
			return true
		}
		return hasStart && !lo.Before(y2015) && !hi.After(y2016)
	}
	// Patient?gender=female
	patientFemale oracle = func(t *testing.T, doc map[string]any) bool {
		return doc["gender"] == "female"
	}
)

// filterWant is what an export of types (all types when empty) with
// filters (per type, ORed) holds: "Type/id" of every sample resource of
// those types that one of its type's oracles accepts (all of a type with
// none). Only resources in keep (when not nil) count.
func filterWant(t *testing.T, types []string, filters map[string][]oracle, keep map[string]bool) map[string]bool {
	t.Helper()
	rs, err := rawSample()
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]bool{}
	for _, r := range rs {
		k := r.typ + "/" + r.id
		if len(types) > 0 && !slices.Contains(types, r.typ) || keep != nil && !keep[k] {
			continue
		}
		ors := filters[r.typ]
		ok := len(ors) == 0
		if !ok {
			var doc map[string]any
			if err := json.Unmarshal(r.body, &doc); err != nil {
				t.Fatal(err)
			}
			for _, o := range ors {
				ok = ok || o(t, doc)
			}
		}
		if ok {
			want[k] = true
		}
	}
	return want
}

// TestTypeFilterSample: on the Synthea sample, exports with _typeFilter
// hold exactly the resources the hand-written oracles accept, per type,
// with queries for one type ORed, parameters of one query ANDed, types
// without a query unfiltered, and _elements applied after the filter.
func TestTypeFilterSample(t *testing.T) {
	e := newSampleEnv(t)
	m := e.manager(t, Config{}, nil)
	cases := []struct {
		name     string
		types    []string
		queries  []string
		elements []Element
		oracles  map[string][]oracle
	}{
		{name: "token", types: []string{"Observation", "Patient"},
			queries: []string{"Observation?category=laboratory"},
			oracles: map[string][]oracle{"Observation": {obsLaboratory}}},
		{name: "date", types: []string{"Observation"},
			queries: []string{"Observation?date=ge2020-01-01"},
			oracles: map[string][]oracle{"Observation": {obsSince2020}}},
		{name: "or", types: []string{"Condition"},
			queries: []string{"Condition?clinical-status=active", "Condition?onset-date=lt2000"},
			oracles: map[string][]oracle{"Condition": {condActive, condOnsetBefore2000}}},
		{name: "and, every type", types: nil,
			queries: []string{"Encounter?class=AMB&date=ge2015"},
			oracles: map[string][]oracle{"Encounter": {encAmbulatorySince2015}}},
		{name: "elements", types: []string{"Observation"},
			queries:  []string{"Observation?category=laboratory"},
			elements: []Element{{Name: "status"}},
			oracles:  map[string][]oracle{"Observation": {obsLaboratory}}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			req := fullRequest()
			req.Types, req.TypeFilters, req.Elements = c.types, c.queries, c.elements
			got, content, _, _ := exportedKeys(t, m, req)
			want := filterWant(t, c.types, c.oracles, nil)
			for typ := range c.oracles {
				all := filterWant(t, []string{typ}, nil, nil)
				n := 0
				for k := range want {
					if strings.HasPrefix(k, typ+"/") {
						n++
					}
				}
				// The query must select a real subset, or it proves nothing.
				if n == 0 || n == len(all) {
					t.Fatalf("%s: the oracles keep %d of %d: pick a query that selects a proper subset", typ, n, len(all))
				}
			}
			diffKeys(t, c.name, got, want)
			if c.elements != nil {
				for k, line := range content.resources {
					if strings.Contains(string(line), `"category"`) {
						t.Fatalf("%s kept an element _elements drops: %s", k, line)
					}
				}
			}
		})
	}
}

// TestTypeFilterSince: a _since export with a _typeFilter holds the
// resources changed since that match, and every deletion of the type
// since (a deleted resource has no body to test: listing a deletion the
// client never received is harmless, leaving one out would keep a stale
// copy).
func TestTypeFilterSince(t *testing.T) {
	e := newSampleEnv(t)
	m := e.manager(t, Config{}, nil)
	rs, err := rawSample()
	if err != nil {
		t.Fatal(err)
	}
	since := e.x.Clock()
	var lab, vital []resource
	for _, r := range rs {
		if r.typ != "Observation" {
			continue
		}
		switch {
		case strings.Contains(string(r.body), `"code":"laboratory"`) && len(lab) < 3:
			lab = append(lab, r)
		case strings.Contains(string(r.body), `"code":"vital-signs"`) && len(vital) < 3:
			vital = append(vital, r)
		}
	}
	if len(lab) < 3 || len(vital) < 3 {
		t.Fatal("the sample has too few laboratory or vital-signs Observations")
	}
	relabel := func(r resource, from, to string) resource {
		r.body = []byte(strings.Replace(string(r.body), `"code":"`+from+`"`, `"code":"`+to+`"`, 1))
		return r
	}
	touch := func(r resource) resource { // a change that keeps the category
		r.body = []byte(strings.Replace(string(r.body), `"status":"final"`, `"status":"amended"`, 1))
		if !strings.Contains(string(r.body), `"status":"amended"`) {
			t.Fatalf("%s/%s has no final status to change", r.typ, r.id)
		}
		return r
	}
	e.put(t, touch(lab[0]))                                // changed, still laboratory
	e.put(t, relabel(lab[1], "laboratory", "vital-signs")) // leaves the filter
	e.put(t, resource{typ: lab[2].typ, id: lab[2].id})     // deleted
	e.put(t, relabel(vital[0], "vital-signs", "laboratory"))
	e.put(t, touch(vital[1]))                              // changed, never matches
	e.put(t, resource{typ: vital[2].typ, id: vital[2].id}) // deleted, never matched
	req := sinceRequest(since)
	req.Types, req.TypeFilters = []string{"Observation"}, []string{"Observation?category=laboratory"}
	got, content, _, _ := exportedKeys(t, m, req)
	diffKeys(t, "resources", got, map[string]bool{"Observation/" + lab[0].id: true, "Observation/" + vital[0].id: true})
	diffKeys(t, "deleted", maps.Collect(func(yield func(string, bool) bool) {
		for k := range content.deleted {
			if !yield(k, true) {
				return
			}
		}
	}), map[string]bool{"Observation/" + lab[2].id: true, "Observation/" + vital[2].id: true})
}

// TestTypeFilterPatientLevel: at Patient level a Patient query filters
// only the Patient resources (not the cohort: filtering Patients does not
// filter Encounters), in files by type and in organized blocks, where a
// patient left out keeps a block, without its Patient line.
func TestTypeFilterPatientLevel(t *testing.T) {
	e := newSampleEnv(t)
	m := e.manager(t, Config{}, nil)
	patients := e.patients[:10]
	inCohort := e.want(patients...)
	filters := map[string][]oracle{"Patient": {patientFemale}, "Observation": {obsLaboratory}}
	want := filterWant(t, nil, filters, inCohort)
	females := 0
	for k := range want {
		if strings.HasPrefix(k, "Patient/") {
			females++
		}
	}
	if females == 0 || females == len(patients) {
		t.Fatalf("%d of the %d patients are female: pick others", females, len(patients))
	}
	req := levelRequest(LevelPatient, "", patients...)
	req.TypeFilters = []string{"Patient?gender=female", "Observation?category=laboratory"}
	got, _, _, _ := exportedKeys(t, m, req)
	diffKeys(t, "by type", got, want)

	req.OrganizeBy = "Patient"
	id := submit(t, m, req)
	mf := waitManifest(t, m, id)
	blocks := map[string]bool{}
	got = map[string]bool{}
	for _, fi := range mf.Output {
		lines := readLines(t, m, id, fi.Name)
		for i, l := range lines {
			mt := parseLine(t, l)
			if mt.ResourceType == "Parameters" {
				if i == len(lines)-1 || parseLine(t, lines[i+1]).ResourceType == "Parameters" {
					t.Errorf("%s line %d: an empty block", fi.Name, i+1)
				}
				blocks[string(l)] = true
				continue
			}
			got[mt.ResourceType+"/"+mt.ID] = true
		}
	}
	diffKeys(t, "organized", got, want)
	if len(blocks) != len(patients) {
		t.Errorf("%d blocks, want one per patient (%d): a Patient left out by the filter still has its block", len(blocks), len(patients))
	}

	// Only Patients, filtered: a patient with nothing left has no block.
	req.Types = []string{"Patient"}
	id = submit(t, m, req)
	mf = waitManifest(t, m, id)
	var lines int
	for _, fi := range mf.Output {
		ls := readLines(t, m, id, fi.Name)
		for i, l := range ls {
			if parseLine(t, l).ResourceType == "Parameters" && (i == len(ls)-1 || parseLine(t, ls[i+1]).ResourceType != "Patient") {
				t.Errorf("%s line %d: a block without its Patient: %s", fi.Name, i+1, l)
			}
		}
		lines += len(ls)
	}
	if lines != 2*females {
		t.Errorf("%d lines, want a header and a Patient for each of the %d female patients", lines, females)
	}
}
