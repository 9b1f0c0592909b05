package fhir

import (
	"slices"
	"testing"
)

func TestResourceTypes(t *testing.T) {
	types := ResourceTypes()
	if len(types) != 146 {
		t.Fatalf("got %d R4 resource types, want 146", len(types))
	}
	if !slices.IsSorted(types) || len(slices.Compact(slices.Clone(types))) != 146 {
		t.Error("resource types are not sorted and unique")
	}
	for _, s := range []string{"Account", "Patient", "Observation", "Bundle", "Parameters", "Binary",
		"MedicinalProductUndesirableEffect", "VisionPrescription", "ExplanationOfBenefit"} {
		if !IsResourceType(s) {
			t.Errorf("IsResourceType(%q) = false, want true", s)
		}
	}
	for _, s := range []string{"", "Resource", "DomainResource", "patient", "PATIENT", "Patient ",
		"BackboneElement", "Element", "SubscriptionTopic", "Ingredient", "MedicinalProductDefinition"} {
		if IsResourceType(s) {
			t.Errorf("IsResourceType(%q) = true, want false", s)
		}
	}
}
