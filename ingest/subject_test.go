package ingest

import (
	"errors"
	"testing"

	"github.com/bulkstream/bulkstream/internal/fhir"
)

func TestEncodeSubject(t *testing.T) {
	for _, tc := range []struct{ typ, id, want string }{
		{"Patient", "123", "fhir.Patient.123"},
		{"Patient", "a.b", "fhir.Patient.a%2Eb"},
		{"Patient", "a%2Eb", "fhir.Patient.a%252Eb"},
		{"Observation", "x-1.2.3", "fhir.Observation.x-1%2E2%2E3"},
		{"Patient", "a b*>", "fhir.Patient.a%20b%2A%3E"},
	} {
		if got := EncodeSubject("fhir", tc.typ, tc.id); got != tc.want {
			t.Errorf("EncodeSubject(%q, %q) = %q, want %q", tc.typ, tc.id, got, tc.want)
		}
		typ, id, err := ParseSubject(tc.want)
		if err != nil || typ != tc.typ || id != tc.id {
			t.Errorf("ParseSubject(%q) = %q, %q, %v; want %q, %q", tc.want, typ, id, err, tc.typ, tc.id)
		}
	}
}

func TestParseSubjectErrors(t *testing.T) {
	for _, s := range []string{
		"", "fhir", "fhir.Patient", "fhir.Patient.", "fhir..1", ".Patient.1",
		"fhir.Patient.1.2", "fhir.*.1", "fhir.Patient.*", "fhir.Patient.>",
		"fhir.Pat ient.1", "fhir.Patient.1\t", "fhir.Patient.%", "fhir.Patient.%2",
		"fhir.Patient.%zz", "fhir.Pa%74ient.1", "fhir.Patient.\x00",
	} {
		if typ, id, err := ParseSubject(s); err == nil {
			t.Errorf("ParseSubject(%q) = %q, %q, nil; want an error", s, typ, id)
		} else if !errors.Is(err, errSubject) {
			t.Errorf("ParseSubject(%q) error %v does not wrap errSubject", s, err)
		}
	}
}

func FuzzSubject(f *testing.F) {
	for _, s := range []struct{ typ, id string }{
		{"Patient", "1"}, {"Patient", "a.b"}, {"Observation", "%2E"},
		{"Patient", ""}, {"Patient", "a b"}, {"Pa.tient", "x"}, {"*", ">"},
		{"Patient", "\x00\xff"}, {"Patient", "%%%"},
	} {
		f.Add(s.typ, s.id)
	}
	f.Fuzz(func(t *testing.T, typ, id string) {
		subj := EncodeSubject("fhir", typ, id)
		gotTyp, gotID, err := ParseSubject(subj)
		if err == nil && (gotTyp != typ || gotID != id) {
			t.Fatalf("round trip of %q, %q via %q gave %q, %q", typ, id, subj, gotTyp, gotID)
		}
		if fhir.IsResourceType(typ) && id != "" && err != nil {
			t.Fatalf("ParseSubject(EncodeSubject(%q, %q)) = %v", typ, id, err)
		}
		// Arbitrary input never panics.
		_, _, _ = ParseSubject(typ)
		_, _, _ = ParseSubject(id)
	})
}
