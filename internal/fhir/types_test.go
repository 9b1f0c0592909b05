package fhir

import (
	"slices"
	"strings"
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

func TestIsID(t *testing.T) {
	for s, want := range map[string]bool{
		"a": true, "A-b.9": true, strings.Repeat("x", 64): true,
		"": false, strings.Repeat("x", 65): false, "a/b": false, "a b": false, "a_b": false, "é": false,
	} {
		if got := IsID(s); got != want {
			t.Errorf("IsID(%q) = %v, want %v", s, got, want)
		}
		if got := IsID([]byte(s)); got != want {
			t.Errorf("IsID([]byte(%q)) = %v, want %v", s, got, want)
		}
	}
}
