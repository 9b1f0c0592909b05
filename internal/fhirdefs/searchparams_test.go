package fhirdefs

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/bulkstream/bulkstream/internal/fhir"
)

// TestSearchParamsCoverEveryType: the table has an entry for exactly the
// R4 resource types ingest accepts, each sorted by code (LookupSearchParam
// searches it), with the parameters every type has.
func TestSearchParamsCoverEveryType(t *testing.T) {
	var got []string
	for typ := range searchParams {
		got = append(got, typ)
	}
	slices.Sort(got)
	want := fhir.ResourceTypes()
	if !slices.Equal(got, want) {
		t.Fatalf("table types differ from internal/fhir's:\nonly in table: %v\nonly in internal/fhir: %v", minus(got, want), minus(want, got))
	}
	for _, typ := range want {
		ps := SearchParams(typ)
		if !slices.IsSortedFunc(ps, func(a, b SearchParam) int { return strings.Compare(a.Code, b.Code) }) {
			t.Errorf("%s: parameters not sorted by code", typ)
		}
		for i := 1; i < len(ps); i++ {
			if ps[i].Code == ps[i-1].Code {
				t.Errorf("%s: parameter %s twice", typ, ps[i].Code)
			}
		}
		for _, code := range []string{"_id", "_lastUpdated", "_tag", "_profile", "_security", "_source"} {
			p, ok := LookupSearchParam(typ, code)
			if !ok || p.Unsupported != "" || len(p.Paths) != 1 {
				t.Errorf("%s %s: %+v, %v; want a supported parameter with one path", typ, code, p, ok)
			}
		}
		for _, code := range []string{"_has", "_list", "_type", "_content", "_query"} {
			if p, ok := LookupSearchParam(typ, code); !ok || p.Unsupported == "" {
				t.Errorf("%s %s: %+v, %v; want an Unsupported entry", typ, code, p, ok)
			}
		}
		for _, p := range ps {
			if (p.Unsupported == "") == (len(p.Paths) == 0) {
				t.Errorf("%s %s: Unsupported %q with %d paths", typ, p.Code, p.Unsupported, len(p.Paths))
			}
			for _, sp := range p.Paths {
				if len(sp.Steps) == 0 || sp.Type == "" {
					t.Errorf("%s %s: path %+v", typ, p.Code, sp)
				}
				for _, st := range sp.Steps {
					if st.Name == "" || strings.ContainsAny(st.Name, "[]().") {
						t.Errorf("%s %s: step %q", typ, p.Code, st.Name)
					}
				}
			}
		}
	}
	// _text is defined on DomainResource, which Bundle does not specialize.
	if _, ok := LookupSearchParam("Bundle", "_text"); ok {
		t.Error("Bundle has _text")
	}
	if _, ok := LookupSearchParam("Observation", "nonesuch"); ok {
		t.Error("LookupSearchParam found a parameter that does not exist")
	}
	if ps := SearchParams("Resource"); ps != nil {
		t.Errorf("SearchParams(Resource) = %d parameters, want none", len(ps))
	}
}

// show renders a parameter's paths as "a.b[f=v]:Type>Targets | ...".
func show(p *SearchParam) string {
	if p.Unsupported != "" {
		return "unsupported"
	}
	var out []string
	for _, sp := range p.Paths {
		var steps []string
		for _, st := range sp.Steps {
			s := st.Name
			if st.Where != nil {
				s += fmt.Sprintf("[%s=%s]", st.Where.Field, st.Where.Value)
			}
			steps = append(steps, s)
		}
		s := strings.Join(steps, ".") + ":" + sp.Type
		if len(sp.Targets) > 0 {
			s += ">" + strings.Join(sp.Targets, ",")
		}
		out = append(out, s)
	}
	return strings.Join(out, " | ")
}

// TestSearchParamsKnown checks entries against the R4 search parameter
// registry (https://hl7.org/fhir/R4/searchparameter-registry.html) and the
// resources' element definitions: choice elements expanded per type or
// selected by ofType, reference type filters, where(field='literal')
// filters, paths into data types and BackboneElements, and
// contentReference elements.
func TestSearchParamsKnown(t *testing.T) {
	for _, c := range []struct{ typ, code, want string }{
		{"Observation", "category", "category:CodeableConcept"},
		{"Observation", "date", "effectiveDateTime:dateTime | effectivePeriod:Period | effectiveTiming:Timing | effectiveInstant:instant"},
		{"Observation", "value-string", "valueString:string | valueCodeableConcept.text:string"},
		{"Observation", "combo-code", "code:CodeableConcept | component.code:CodeableConcept"},
		{"Observation", "patient", "subject:Reference>Patient"},
		{"Observation", "_lastUpdated", "meta.lastUpdated:instant"},
		{"Observation", "_tag", "meta.tag:Coding"},
		{"Observation", "_profile", "meta.profile:canonical"},
		{"Observation", "_id", "id:string"},
		{"Observation", "value-quantity", "unsupported"},
		{"Condition", "onset-date", "onsetDateTime:dateTime | onsetPeriod:Period"},
		{"MedicationRequest", "code", "medicationCodeableConcept:CodeableConcept"},
		{"MedicationRequest", "medication", "medicationReference:Reference"},
		{"Patient", "family", "name.family:string"},
		{"Patient", "email", "telecom[system=email]:ContactPoint"},
		{"Patient", "deceased", "unsupported"},
		{"Patient", "general-practitioner", "generalPractitioner:Reference"},
		{"Encounter", "date", "period:Period"},
		{"Encounter", "participant-type", "participant.type:CodeableConcept"},
		{"ActivityDefinition", "composed-of", "relatedArtifact[type=composed-of].resource:canonical"},
		{"Questionnaire", "code", "item.code:Coding"},
		{"InsurancePlan", "name", "name:string | alias:string"},
		{"Composition", "related-ref", "relatesTo.targetReference:Reference"},
		{"Bundle", "composition", "unsupported"},
		{"Observation", "_text", "unsupported"},
	} {
		p, ok := LookupSearchParam(c.typ, c.code)
		if !ok {
			t.Errorf("%s %s: not found", c.typ, c.code)
			continue
		}
		if got := show(p); got != c.want {
			t.Errorf("%s %s: %s, want %s (expression %s)", c.typ, c.code, got, c.want, p.Expression)
		}
	}
}

// TestSearchParamsCompiled: nearly every parameter of a type bulkstream
// evaluates is compiled; the exceptions are listed in the generated
// file.
func TestSearchParamsCompiled(t *testing.T) {
	var n, compiled int
	for _, ps := range searchParams {
		for _, p := range ps {
			switch p.Type {
			case "token", "date", "reference", "string", "uri":
				if p.Expression == "" {
					continue
				}
				n++
				if p.Unsupported == "" {
					compiled++
				}
			}
		}
	}
	if compiled*100 < n*95 {
		t.Errorf("%d of %d parameters of evaluated types compiled, want at least 95%%", compiled, n)
	}
}
