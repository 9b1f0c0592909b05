package search

import (
	"errors"
	"testing"

	"github.com/bulkstream/bulkstream/internal/jsonobj"
)

func TestFilter(t *testing.T) {
	lab := Query{Type: "Observation", Params: []Param{mParam(defCategory, "", tokV("laboratory"))}}
	exam := Query{Type: "Observation", Params: []Param{mParam(defCategory, "", tokV("exam"))}}
	female := Query{Type: "Patient", Params: []Param{mParam(defGender, "", tokV("female"))}}
	f := NewFilter([]Query{lab, female, exam})

	for _, tc := range []struct {
		typ, body string
		filters   bool
		want      bool
	}{
		{"Observation", obsLab, true, true},                         // first query
		{"Observation", obsTwo, true, true},                         // second query (OR)
		{"Observation", `{"category":[{"text":"x"}]}`, true, false}, // neither
		{"Patient", `{"gender":"female"}`, true, true},              // its own type's query
		{"Patient", `{"gender":"male"}`, true, false},               //
		{"Patient", obsLab, true, false},                            // Observation's queries do not apply
		{"Encounter", `{"resourceType":"Encounter"}`, false, true},  // no query: unfiltered
		{"Encounter", `not even JSON`, false, true},                 // not read at all
	} {
		if got := f.Filters(tc.typ); got != tc.filters {
			t.Errorf("Filters(%s) = %v, want %v", tc.typ, got, tc.filters)
		}
		got, err := f.Match(tc.typ, []byte(tc.body))
		if err != nil || got != tc.want {
			t.Errorf("Match(%s, %s) = %v, %v; want %v", tc.typ, tc.body, got, err, tc.want)
		}
	}
	if _, err := f.Match("Patient", []byte(`[1]`)); !errors.Is(err, jsonobj.ErrSyntax) {
		t.Errorf("Match of a non-object: err = %v", err)
	}

	var none *Filter
	if none.Filters("Observation") {
		t.Error("nil Filter filters")
	}
	if ok, err := none.Match("Observation", []byte(`{"category":[]}`)); !ok || err != nil {
		t.Errorf("nil Filter: Match = %v, %v", ok, err)
	}
	empty := NewFilter(nil)
	if empty.Filters("Observation") {
		t.Error("empty Filter filters")
	}
	if ok, err := empty.Match("Observation", []byte(obsLab)); !ok || err != nil {
		t.Errorf("empty Filter: Match = %v, %v", ok, err)
	}
}
