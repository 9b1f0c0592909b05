package fhirdefs

import (
	"regexp"
	"slices"
	"testing"

	"github.com/bulkstream/bulkstream/internal/fhir"
)

// TestPatientCompartmentKnownTypes checks the table against the R4 Patient
// CompartmentDefinition
// (https://hl7.org/fhir/R4/compartmentdefinition-patient.html) and the
// expressions of the search parameters it names.
func TestPatientCompartmentKnownTypes(t *testing.T) {
	for typ, want := range map[string][]string{
		"Observation":  {"performer", "subject"},
		"Encounter":    {"subject"},             // param subject only (Encounter.subject)
		"Patient":      {"link.other"},          // param link; the Patient itself is added by the extractor
		"Provenance":   {"target"},              // param patient: Provenance.target.where(resolve() is Patient)
		"Appointment":  {"participant.actor"},   // param actor
		"Condition":    {"asserter", "subject"}, // param patient is the shared clinical-patient expression
		"Group":        {"member.entity"},
		"AuditEvent":   {"agent.who", "entity.what"},
		"CarePlan":     {"activity.detail.performer", "subject"},
		"Coverage":     {"beneficiary", "payor", "policyHolder", "subscriber"},
		"Task":         {"focus", "for"},
		"Immunization": {"patient"},
		"Claim":        {"patient", "payee.party"},
	} {
		if got := PatientCompartment[typ]; !slices.Equal(got, want) {
			t.Errorf("PatientCompartment[%q] = %q, want %q", typ, got, want)
		}
		if !InPatientCompartment(typ) {
			t.Errorf("InPatientCompartment(%q) = false", typ)
		}
	}
	for _, typ := range []string{"Practitioner", "Organization", "Location", "Medication", "Device", "Bundle", "", "patient"} {
		if paths, ok := PatientCompartment[typ]; ok || InPatientCompartment(typ) {
			t.Errorf("%q is in the table (%q), want absent", typ, paths)
		}
	}
	// The CompartmentDefinition lists 145 resources, 67 of them with params.
	if len(PatientCompartment) != 67 {
		t.Errorf("%d types, want 67", len(PatientCompartment))
	}
	path := regexp.MustCompile(`^[a-z][A-Za-z]*(\.[a-z][A-Za-z]*)*$`)
	for typ, paths := range PatientCompartment {
		if !fhir.IsResourceType(typ) {
			t.Errorf("%q is not an R4 resource type", typ)
		}
		if len(paths) == 0 || !slices.IsSorted(paths) || len(slices.Compact(slices.Clone(paths))) != len(paths) {
			t.Errorf("%s: %q, want sorted, deduplicated and not empty", typ, paths)
		}
		for _, p := range paths {
			if !path.MatchString(p) {
				t.Errorf("%s: path %q is not a dotted element path", typ, p)
			}
		}
	}
}
