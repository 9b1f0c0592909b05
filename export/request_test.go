package export

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/bulkstream/bulkstream/index"
)

// testNow is the ParseOptions.Now of the request tests: 2026-06-01T12:00:00Z.
var testNow = index.Micros(time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC))

// ps builds params from name, value pairs.
func ps(nv ...string) []Param {
	out := make([]Param, 0, len(nv)/2)
	for i := 0; i+1 < len(nv); i += 2 {
		out = append(out, Param{Name: nv[i], Value: nv[i+1]})
	}
	return out
}

// us is the commit-clock value of an RFC 3339 time, rounded down.
func us(t testing.TB, s string) uint64 {
	t.Helper()
	tt, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		t.Fatalf("bad test time %q: %v", s, err)
	}
	return index.Micros(tt)
}

type requestCase struct {
	name    string
	params  []Param
	lenient bool
	level   Level // LevelSystem when not set

	// Accepted: the fields to compare (Until 0 means index.Unbounded).
	types      []string
	since      uint64
	until      uint64
	elements   []Element
	ignored    []string // one substring per Ignored entry
	patients   []string
	organizeBy string
	provenance ProvenanceMode
	filters    []string // TypeFilters

	// Refused: Param, Code and a substring of Diagnostics.
	errParam, errCode, errDiag string
}

func requestCases(t testing.TB) []requestCase {
	return []requestCase{
		// Accepted forms.
		{name: "no params: everything, ndjson", params: nil},
		{name: "outputFormat fhir+ndjson", params: ps("_outputFormat", "application/fhir+ndjson")},
		{name: "outputFormat ndjson", params: ps("_outputFormat", "application/ndjson")},
		{name: "outputFormat short", params: ps("_outputFormat", "ndjson")},
		{name: "outputFormat unencoded plus", params: ps("_outputFormat", "application/fhir ndjson")},
		{name: "outputFormat case-insensitive", params: ps("_outputFormat", "Application/FHIR+NDJSON")},
		{name: "since Z", params: ps("_since", "2026-01-02T03:04:05Z"), since: us(t, "2026-01-02T03:04:05Z")},
		{name: "since fraction and offset", params: ps("_since", "2026-01-02T03:04:05.123456+01:00"),
			since: us(t, "2026-01-02T02:04:05.123456Z")},
		{name: "since offset plus as space", params: ps("_since", "2026-01-02T03:04:05 01:00"),
			since: us(t, "2026-01-02T02:04:05Z")},
		{name: "since negative offset", params: ps("_since", "2026-01-02T03:04:05.5-05:30"),
			since: us(t, "2026-01-02T08:34:05.5Z")},
		{name: "since sub-microsecond rounds down", params: ps("_since", "2026-01-02T03:04:05.1234569Z"),
			since: us(t, "2026-01-02T03:04:05.123456Z")},
		{name: "since 12 fraction digits", params: ps("_since", "2026-01-02T03:04:05.123456999999Z"),
			since: us(t, "2026-01-02T03:04:05.123456Z")},
		{name: "since equal to now", params: ps("_since", index.FormatInstant(testNow)), since: testNow},
		{name: "since before epoch: Since 0, HasSince", params: ps("_since", "1900-01-01T00:00:00Z"), since: 0},
		{name: "since leap day", params: ps("_since", "2024-02-29T00:00:00Z"), since: us(t, "2024-02-29T00:00:00Z")},
		{name: "since offset +14:00", params: ps("_since", "2026-01-02T03:04:05+14:00"),
			since: us(t, "2026-01-01T13:04:05Z")},
		{name: "until exclusive: last microsecond before", params: ps("_until", "2026-01-02T03:04:05Z"),
			until: us(t, "2026-01-02T03:04:05Z") - 1},
		{name: "until sub-microsecond: that microsecond is before it", params: ps("_until", "2026-01-02T03:04:05.0000001Z"),
			until: us(t, "2026-01-02T03:04:05Z")},
		{name: "until equal to now", params: ps("_until", index.FormatInstant(testNow)), until: testNow - 1},
		{name: "since and until", params: ps("_since", "2026-01-02T03:04:05Z", "_until", "2026-01-02T03:04:06Z"),
			since: us(t, "2026-01-02T03:04:05Z"), until: us(t, "2026-01-02T03:04:06Z") - 1},
		{name: "until two microseconds after since", params: ps("_since", "2026-01-02T03:04:05.000001Z", "_until", "2026-01-02T03:04:05.000003Z"),
			since: us(t, "2026-01-02T03:04:05.000001Z"), until: us(t, "2026-01-02T03:04:05.000002Z")},
		{name: "until same microsecond later digits", params: ps("_since", "2026-01-02T03:04:05.0000005Z", "_until", "2026-01-02T03:04:05.0000025Z"),
			since: us(t, "2026-01-02T03:04:05Z"), until: us(t, "2026-01-02T03:04:05.000002Z")},
		{name: "type comma and repeat", params: ps("_type", "Patient,Observation", "_type", "Condition"),
			types: []string{"Patient", "Observation", "Condition"}},
		{name: "type trimmed and deduplicated in order", params: ps("_type", " Observation , Patient", "_type", "Observation,Patient ,Encounter"),
			types: []string{"Observation", "Patient", "Encounter"}},
		{name: "type non-patient", params: ps("_type", "ValueSet,Practitioner"), types: []string{"ValueSet", "Practitioner"}},
		{name: "elements bare and typed, repeated", params: ps("_type", "Patient", "_elements", "id,Patient.meta", "_elements", " birthDate ,Observation.valueQuantity,id"),
			types:    []string{"Patient"},
			elements: []Element{{Name: "id"}, {Type: "Patient", Name: "meta"}, {Name: "birthDate"}, {Type: "Observation", Name: "valueQuantity"}}},
		{name: "everything together", params: ps("_outputFormat", "ndjson", "_type", "Patient", "_since", "2026-01-01T00:00:00Z",
			"_until", "2026-02-01T00:00:00Z", "_elements", "id"),
			types: []string{"Patient"}, since: us(t, "2026-01-01T00:00:00Z"), until: us(t, "2026-02-01T00:00:00Z") - 1,
			elements: []Element{{Name: "id"}}},

		// _typeFilter.
		{name: "typeFilter repeated, in request order, deduplicated",
			params:  ps("_typeFilter", "Observation?category=laboratory", "_typeFilter", "Condition?clinical-status=active", "_typeFilter", "Observation?category=laboratory"),
			filters: []string{"Observation?category=laboratory", "Condition?clinical-status=active"}},
		{name: "typeFilter 2.0 comma list, value commas kept",
			params:  ps("_typeFilter", "Observation?status=final,amended&category=laboratory,MedicationRequest?status=active,Encounter?class=AMB"),
			filters: []string{"Observation?status=final,amended&category=laboratory", "MedicationRequest?status=active", "Encounter?class=AMB"}},
		{name: "typeFilter encoded comma is a value comma",
			params:  ps("_typeFilter", "Observation?status=final%2Camended"),
			filters: []string{"Observation?status=final%2Camended"}},
		{name: "typeFilter outside _type has no effect", params: ps("_type", "Patient,Observation", "_typeFilter", "Condition?clinical-status=active", "_typeFilter", "Observation?category=laboratory"),
			types: []string{"Patient", "Observation"}, filters: []string{"Observation?category=laboratory"}},
		{name: "typeFilter _type after it still applies first", params: ps("_typeFilter", "Condition?clinical-status=active", "_type", "Patient"),
			types: []string{"Patient"}},
		{name: "typeFilter outside the compartment has no effect at Patient level", level: LevelPatient,
			params:  ps("_typeFilter", "Organization?name=x", "_typeFilter", "Observation?category=laboratory"),
			filters: []string{"Observation?category=laboratory"}},
		{name: "lenient typeFilter: a type with one bad query is exported whole", lenient: true,
			params:  ps("_typeFilter", "Observation?category=laboratory", "_typeFilter", "Observation?value-quantity=5", "_typeFilter", "Condition?clinical-status=active"),
			filters: []string{"Condition?clinical-status=active"},
			ignored: []string{`value-quantity`}},
		{name: "lenient typeFilter of no type ignored", lenient: true, params: ps("_typeFilter", "Nope?x=1", "_type", "Patient"),
			types: []string{"Patient"}, ignored: []string{`Nope`}},

		// Lenient: skipped and recorded.
		{name: "lenient unknown type skipped", lenient: true, params: ps("_type", "Patient,MissingType", "_type", "Observation"),
			types: []string{"Patient", "Observation"}, ignored: []string{`_type "MissingType" is not a FHIR R4 resource type`}},
		{name: "lenient empty type entry skipped", lenient: true, params: ps("_type", "Patient,,"),
			types: []string{"Patient"}, ignored: []string{`_type "Patient,," has an empty entry`}},
		{name: "lenient unsupported params ignored", lenient: true,
			params: ps("_typeFilter", "Patient?status=active", "_typeFilter", "Observation?code=1",
				"patient", "Patient/1", "organizeOutputBy", "Patient", "allowPartialManifests", "true"),
			filters: []string{"Observation?code=1"},
			ignored: []string{
				`Patient has no search parameter status; Patient is exported without any _typeFilter`,
				`patient is for [base]/Patient/$export and [base]/Group/[id]/$export, not the system-level [base]/$export (got patient="Patient/1")`,
				`organizeOutputBy=Patient is supported at Patient and Group level`,
				`allowPartialManifests is not supported yet`,
			}},
		{name: "lenient unknown param ignored once", lenient: true, params: ps("_foo", "1", "_foo", "1", "_type", "Patient"),
			types: []string{"Patient"}, ignored: []string{`unknown parameter "_foo" (value "1")`}},
		{name: "lenient bad elements skipped", lenient: true,
			params:   ps("_elements", "Patient.name.given,Foo.id,id,Name,,name.given"),
			elements: []Element{{Name: "id"}},
			ignored: []string{
				`_elements "Patient.name.given": only top-level elements`,
				`_elements "Foo.id": "Foo" is not a FHIR R4 resource type`,
				`_elements "Name": "Name" is not an element name`,
				`has an empty entry`,
				`_elements "name.given": only top-level elements`,
			}},
		{name: "lenient all elements skipped: whole resources", lenient: true, params: ps("_elements", "Patient.name.given"),
			ignored: []string{`only top-level elements`}},

		// _outputFormat errors.
		{name: "outputFormat xml", params: ps("_outputFormat", "application/xml"),
			errParam: "_outputFormat", errCode: "not-supported", errDiag: `_outputFormat "application/xml" is not supported; use application/fhir+ndjson`},
		{name: "outputFormat html even lenient", lenient: true, params: ps("_outputFormat", "text/html"),
			errParam: "_outputFormat", errCode: "not-supported", errDiag: `"text/html" is not supported`},
		{name: "outputFormat empty", params: ps("_outputFormat", ""),
			errParam: "_outputFormat", errCode: "not-supported", errDiag: `_outputFormat "" is not supported`},
		{name: "outputFormat with parameters", params: ps("_outputFormat", "application/fhir+ndjson;charset=utf-8"),
			errParam: "_outputFormat", errCode: "not-supported", errDiag: `is not supported`},
		{name: "outputFormat repeated, different", params: ps("_outputFormat", "ndjson", "_outputFormat", "x-custom"),
			errParam: "_outputFormat", errCode: "invalid", errDiag: `_outputFormat may be given at most once, but was given more than once ("ndjson" and "x-custom")`},
		{name: "outputFormat repeated, same, lenient", lenient: true, params: ps("_outputFormat", "ndjson", "_outputFormat", "ndjson"),
			errParam: "_outputFormat", errCode: "invalid", errDiag: `at most once`},

		// _since/_until errors.
		{name: "since BDT invalid", params: ps("_since", "0000-60-01T30:70:80+05:00"),
			errParam: "_since", errCode: "value", errDiag: `_since "0000-60-01T30:70:80+05:00" is not a FHIR instant`},
		{name: "since BDT future", params: ps("_since", "2057-01-01T00:00:00+05:00"),
			errParam: "_since", errCode: "value", errDiag: `_since "2057-01-01T00:00:00+05:00" is in the future (the server's time is 2026-06-01T12:00:00.000000Z)`},
		{name: "since future by a fraction", params: ps("_since", "2026-06-01T12:00:00.0000001Z"),
			errParam: "_since", errCode: "value", errDiag: `is in the future`},
		{name: "since future even lenient", lenient: true, params: ps("_since", "2030-01-01T00:00:00Z"),
			errParam: "_since", errCode: "value", errDiag: `is in the future`},
		{name: "until future", params: ps("_until", "2026-06-01T12:00:01Z"),
			errParam: "_until", errCode: "value", errDiag: `_until "2026-06-01T12:00:01Z" is in the future`},
		{name: "since date only", params: ps("_since", "2026-01-02"),
			errParam: "_since", errCode: "value", errDiag: `a date is not enough`},
		{name: "since without timezone", params: ps("_since", "2026-01-02T03:04:05"),
			errParam: "_since", errCode: "value", errDiag: `a timezone (Z or ±hh:mm) is required`},
		{name: "since without seconds", params: ps("_since", "2026-01-02T03:04Z"),
			errParam: "_since", errCode: "value", errDiag: `seconds are required`},
		{name: "since lower-case z", params: ps("_since", "2026-01-02T03:04:05z"),
			errParam: "_since", errCode: "value", errDiag: `must end with a timezone`},
		{name: "since lower-case t", params: ps("_since", "2026-01-02t03:04:05Z"),
			errParam: "_since", errCode: "value", errDiag: `followed by T`},
		{name: "since space not before offset", params: ps("_since", "2026-01-02 03:04:05Z"),
			errParam: "_since", errCode: "value", errDiag: `followed by T`},
		{name: "since trailing garbage", params: ps("_since", "2026-01-02T03:04:05Zx"),
			errParam: "_since", errCode: "value", errDiag: `must end with a timezone`},
		{name: "since two spaces", params: ps("_since", "2026-01-02T03:04:05  01:00"),
			errParam: "_since", errCode: "value", errDiag: `must end with a timezone`},
		{name: "since empty fraction", params: ps("_since", "2026-01-02T03:04:05.Z"),
			errParam: "_since", errCode: "value", errDiag: `has no digits`},
		{name: "since February 30", params: ps("_since", "2026-02-30T00:00:00Z"),
			errParam: "_since", errCode: "value", errDiag: `day 30 does not exist in 2026-02`},
		{name: "since February 29 not leap", params: ps("_since", "2025-02-29T00:00:00Z"),
			errParam: "_since", errCode: "value", errDiag: `day 29 does not exist`},
		{name: "since hour 24", params: ps("_since", "2026-01-02T24:00:00Z"),
			errParam: "_since", errCode: "value", errDiag: `hour 24 does not exist`},
		{name: "since leap second", params: ps("_since", "2016-12-31T23:59:60Z"),
			errParam: "_since", errCode: "value", errDiag: `leap seconds are not supported`},
		{name: "since offset too large", params: ps("_since", "2026-01-02T03:04:05+14:30"),
			errParam: "_since", errCode: "value", errDiag: `offset +14:30 is out of range`},
		{name: "since offset without colon", params: ps("_since", "2026-01-02T03:04:05+0100"),
			errParam: "_since", errCode: "value", errDiag: `must end with a timezone`},
		{name: "since year 0", params: ps("_since", "0000-01-01T00:00:00Z"),
			errParam: "_since", errCode: "value", errDiag: `year 0000 does not exist`},
		{name: "since empty", params: ps("_since", ""),
			errParam: "_since", errCode: "value", errDiag: `does not start with a date`},
		{name: "since unix seconds", params: ps("_since", "1767225600"),
			errParam: "_since", errCode: "value", errDiag: `does not start with a date`},
		{name: "since repeated", params: ps("_since", "2026-01-02T03:04:05Z", "_since", "2026-01-03T03:04:05Z"),
			errParam: "_since", errCode: "invalid", errDiag: `_since may be given at most once`},
		{name: "until repeated", params: ps("_until", "2026-01-02T03:04:05Z", "_until", "2026-01-02T03:04:05Z"),
			errParam: "_until", errCode: "invalid", errDiag: `_until may be given at most once`},
		{name: "until before since", params: ps("_until", "2026-01-01T00:00:00Z", "_since", "2026-01-02T00:00:00Z"),
			errParam: "_until", errCode: "invalid", errDiag: `_until "2026-01-01T00:00:00Z" is not later than _since "2026-01-02T00:00:00Z"`},
		{name: "until equal to since, other zone", params: ps("_since", "2026-01-02T00:00:00Z", "_until", "2026-01-02T01:00:00+01:00"),
			errParam: "_until", errCode: "invalid", errDiag: `is not later than _since`},
		{name: "until equal to since, trailing zeros", params: ps("_since", "2026-01-02T00:00:00.0000005Z", "_until", "2026-01-02T00:00:00.00000050Z"),
			errParam: "_until", errCode: "invalid", errDiag: `is not later than _since`},
		{name: "until one microsecond after since", params: ps("_since", "2026-01-02T00:00:00Z", "_until", "2026-01-02T00:00:00.000001Z"),
			errParam: "_until", errCode: "invalid", errDiag: `leaves no whole microsecond after _since "2026-01-02T00:00:00Z"`},
		{name: "until within since's microsecond", params: ps("_since", "2026-01-02T00:00:00.0000001Z", "_until", "2026-01-02T00:00:00.0000009Z"),
			errParam: "_until", errCode: "invalid", errDiag: `leaves no whole microsecond`},
		{name: "until at epoch", params: ps("_until", "1970-01-01T00:00:00Z"),
			errParam: "_until", errCode: "invalid", errDiag: `leaves no whole microsecond after the Unix epoch`},

		// _type errors.
		{name: "type unknown", params: ps("_type", "MissingType"),
			errParam: "_type", errCode: "not-supported", errDiag: `_type "MissingType" is not a FHIR R4 resource type`},
		{name: "type unknown in a list", params: ps("_type", "Patient, Foo ,Observation"),
			errParam: "_type", errCode: "not-supported", errDiag: `_type "Foo" is not`},
		{name: "type wrong case", params: ps("_type", "patient"),
			errParam: "_type", errCode: "not-supported", errDiag: `(resource types are case-sensitive: did you mean Patient?)`},
		{name: "type abstract", params: ps("_type", "DomainResource"),
			errParam: "_type", errCode: "not-supported", errDiag: `"DomainResource" is not a FHIR R4 resource type`},
		{name: "type empty", params: ps("_type", ""),
			errParam: "_type", errCode: "value", errDiag: `_type "" has an empty entry`},
		{name: "type trailing comma", params: ps("_type", "Patient,"),
			errParam: "_type", errCode: "value", errDiag: `_type "Patient," has an empty entry`},
		{name: "lenient type all skipped", lenient: true, params: ps("_type", "Foo,Bar"),
			errParam: "_type", errCode: "not-supported", errDiag: `_type names no exportable resource type (skipped: "Foo", "Bar")`},
		{name: "lenient type empty", lenient: true, params: ps("_type", ""),
			errParam: "_type", errCode: "not-supported", errDiag: `(skipped: "")`},

		// _elements errors.
		{name: "elements nested", params: ps("_elements", "Patient.name.given"),
			errParam: "_elements", errCode: "not-supported", errDiag: `_elements "Patient.name.given": only top-level elements (element or Type.element) are supported`},
		{name: "elements nested without type", params: ps("_elements", "name.given"),
			errParam: "_elements", errCode: "not-supported", errDiag: `_elements "name.given": only top-level`},
		{name: "elements unknown type", params: ps("_elements", "id,Foo.id"),
			errParam: "_elements", errCode: "not-supported", errDiag: `_elements "Foo.id": "Foo" is not a FHIR R4 resource type`},
		{name: "elements type wrong case", params: ps("_elements", "PATIENT.id"),
			errParam: "_elements", errCode: "not-supported", errDiag: `did you mean Patient?`},
		{name: "elements bad name", params: ps("_elements", "Patient.Name"),
			errParam: "_elements", errCode: "value", errDiag: `_elements "Patient.Name": "Name" is not an element name`},
		{name: "elements choice name", params: ps("_elements", "Observation.value[x]"),
			errParam: "_elements", errCode: "value", errDiag: `e.g. valueQuantity for value[x]`},
		{name: "elements primitive extension", params: ps("_elements", "_birthDate"),
			errParam: "_elements", errCode: "value", errDiag: `"_birthDate" is not an element name`},
		{name: "elements type only", params: ps("_elements", "Patient."),
			errParam: "_elements", errCode: "value", errDiag: `"" is not an element name`},
		{name: "elements empty", params: ps("_elements", ""),
			errParam: "_elements", errCode: "value", errDiag: `_elements "" has an empty entry`},
		{name: "elements leading dot", params: ps("_elements", ".id"),
			errParam: "_elements", errCode: "not-supported", errDiag: `only top-level`},

		// patient (Patient and Group level).
		{name: "patient at patient level", level: LevelPatient, params: ps("patient", "Patient/1"), patients: []string{"1"}},
		{name: "patient at group level, lists and repeats, deduplicated in order", level: LevelGroup,
			params:   ps("patient", "Patient/b, Patient/a", "patient", "Patient/b/_history/3,https://ehr.example.org/fhir/Patient/c", "patient", "Patient/a"),
			patients: []string{"b", "a", "c"}},
		{name: "patient absolute URL with history", level: LevelPatient,
			params: ps("patient", "http://x.example/fhir/Patient/p-1.2/_history/7"), patients: []string{"p-1.2"}},
		{name: "patient id of 64 characters", level: LevelGroup,
			params: ps("patient", "Patient/"+strings.Repeat("a", 64)), patients: []string{strings.Repeat("a", 64)}},
		{name: "patient with everything else", level: LevelGroup,
			params: ps("_type", "Patient,Observation", "patient", "Patient/1", "organizeOutputBy", "Patient", "includeAssociatedData", "LatestProvenanceResources"),
			types:  []string{"Patient", "Observation"}, patients: []string{"1"}, organizeBy: "Patient", provenance: ProvenanceLatest},
		{name: "patient not a Patient", level: LevelGroup, params: ps("patient", "Group/1"),
			errParam: "patient", errCode: "value", errDiag: `patient "Group/1" is not a Patient reference (Patient/[id], Patient/[id]/_history/[version] or an http(s) URL ending in one of those): it refers to a Group, not a Patient`},
		{name: "patient bare id", level: LevelPatient, params: ps("patient", "123"),
			errParam: "patient", errCode: "value", errDiag: `a bare id is not a reference; write Patient/123`},
		{name: "patient wrong case", level: LevelPatient, params: ps("patient", "patient/1"),
			errParam: "patient", errCode: "value", errDiag: `resource types are case-sensitive: write Patient/1`},
		{name: "patient bad id", level: LevelPatient, params: ps("patient", "Patient/a_b"),
			errParam: "patient", errCode: "value", errDiag: `the id "a_b" is not a FHIR id`},
		{name: "patient id too long", level: LevelPatient, params: ps("patient", "Patient/"+strings.Repeat("a", 65)),
			errParam: "patient", errCode: "value", errDiag: `is not a FHIR id`},
		{name: "patient bad version", level: LevelPatient, params: ps("patient", "Patient/1/_history/"),
			errParam: "patient", errCode: "value", errDiag: `the version "" is not a FHIR id`},
		{name: "patient extra segment", level: LevelPatient, params: ps("patient", "Patient/1/x"),
			errParam: "patient", errCode: "value", errDiag: `not of the form Patient/[id] or Patient/[id]/_history/[version]`},
		{name: "patient search URL", level: LevelPatient, params: ps("patient", "http://x.example/Patient?name=a"),
			errParam: "patient", errCode: "value", errDiag: `no query or fragment`},
		{name: "patient urn", level: LevelPatient, params: ps("patient", "urn:uuid:1234"),
			errParam: "patient", errCode: "value", errDiag: `not of the form Patient/[id]`},
		{name: "patient other scheme", level: LevelPatient, params: ps("patient", "ftp://x.example/Patient/1"),
			errParam: "patient", errCode: "value", errDiag: `http or https URL`},
		{name: "patient URL not ending in Patient", level: LevelPatient, params: ps("patient", "https://x.example/fhir/Group/1"),
			errParam: "patient", errCode: "value", errDiag: `it refers to a Group`},
		{name: "patient empty entry", level: LevelGroup, params: ps("patient", "Patient/1,"),
			errParam: "patient", errCode: "value", errDiag: `patient "Patient/1," has an empty entry`},
		{name: "patient empty", level: LevelGroup, params: ps("patient", ""),
			errParam: "patient", errCode: "value", errDiag: `has an empty entry`},
		{name: "lenient patient bad entries skipped", lenient: true, level: LevelPatient,
			params:   ps("patient", "Patient/1,Group/2,,Patient/1"),
			patients: []string{"1"},
			ignored:  []string{`patient "Group/2" is not a Patient reference`, `patient "Patient/1,Group/2,,Patient/1" has an empty entry`}},
		{name: "lenient patient none left", lenient: true, level: LevelGroup, params: ps("patient", "Group/2,x"),
			errParam: "patient", errCode: "value", errDiag: `patient names no valid Patient reference (skipped: "Group/2", "x"); refusing rather than exporting every patient`},
		{name: "lenient patient at system level ignored", lenient: true, params: ps("patient", "Patient/1"),
			ignored: []string{`patient is for [base]/Patient/$export`}},

		// includeAssociatedData (every level).
		{name: "associated latest at system level", params: ps("includeAssociatedData", "LatestProvenanceResources"), provenance: ProvenanceLatest},
		{name: "associated relevant at patient level", level: LevelPatient, params: ps("includeAssociatedData", "RelevantProvenanceResources"),
			provenance: ProvenanceRelevant},
		{name: "associated relevant wins over latest, list", level: LevelGroup,
			params: ps("includeAssociatedData", "LatestProvenanceResources, RelevantProvenanceResources"), provenance: ProvenanceRelevant},
		{name: "associated relevant wins over latest, repeats", params: ps("includeAssociatedData", "RelevantProvenanceResources",
			"includeAssociatedData", "LatestProvenanceResources"), provenance: ProvenanceRelevant},
		{name: "associated none alone", params: ps("includeAssociatedData", "_none", "includeAssociatedData", "_none"), provenance: ProvenanceNone},
		{name: "associated none with latest", level: LevelPatient, params: ps("includeAssociatedData", "_none,LatestProvenanceResources"),
			errParam: "includeAssociatedData", errCode: "invalid", errDiag: `includeAssociatedData _none (no associated data) contradicts LatestProvenanceResources, also given`},
		{name: "associated none with relevant, repeats", params: ps("includeAssociatedData", "RelevantProvenanceResources", "includeAssociatedData", "_none"),
			errParam: "includeAssociatedData", errCode: "invalid", errDiag: `contradicts RelevantProvenanceResources`},
		{name: "lenient associated none with relevant: relevant kept", lenient: true,
			params:     ps("includeAssociatedData", "_none,LatestProvenanceResources,RelevantProvenanceResources"),
			provenance: ProvenanceRelevant,
			ignored:    []string{`includeAssociatedData _none contradicts RelevantProvenanceResources, also given; RelevantProvenanceResources is kept`}},
		{name: "associated server code", params: ps("includeAssociatedData", "_myServerCode"),
			errParam: "includeAssociatedData", errCode: "not-supported", errDiag: `includeAssociatedData "_myServerCode" is not supported; supported: LatestProvenanceResources, RelevantProvenanceResources, _none`},
		{name: "associated unknown in a list", level: LevelGroup, params: ps("includeAssociatedData", "LatestProvenanceResources,Foo"),
			errParam: "includeAssociatedData", errCode: "not-supported", errDiag: `"Foo" is not supported`},
		{name: "associated wrong case", params: ps("includeAssociatedData", "latestprovenanceresources"),
			errParam: "includeAssociatedData", errCode: "not-supported", errDiag: `did you mean LatestProvenanceResources?`},
		{name: "associated empty", params: ps("includeAssociatedData", ""),
			errParam: "includeAssociatedData", errCode: "value", errDiag: `includeAssociatedData "" has an empty entry`},
		{name: "lenient associated unknown skipped", lenient: true, level: LevelPatient,
			params:     ps("includeAssociatedData", "_myServerCode,LatestProvenanceResources"),
			provenance: ProvenanceLatest, ignored: []string{`includeAssociatedData "_myServerCode" is not supported`}},

		// organizeOutputBy.
		{name: "organizeOutputBy at patient level", level: LevelPatient, params: ps("organizeOutputBy", "Patient"), organizeBy: "Patient"},
		{name: "organizeOutputBy at group level", level: LevelGroup, params: ps("organizeOutputBy", "Patient"), organizeBy: "Patient"},
		{name: "organizeOutputBy at system level", params: ps("organizeOutputBy", "Patient"),
			errParam: "organizeOutputBy", errCode: "not-supported", errDiag: `organizeOutputBy=Patient is supported at Patient and Group level`},
		{name: "organizeOutputBy other type", level: LevelGroup, params: ps("organizeOutputBy", "Encounter"),
			errParam: "organizeOutputBy", errCode: "not-supported", errDiag: `organizeOutputBy "Encounter" is not supported; the supported value is Patient`},
		{name: "organizeOutputBy wrong case", level: LevelGroup, params: ps("organizeOutputBy", "patient"),
			errParam: "organizeOutputBy", errCode: "not-supported", errDiag: `did you mean Patient?`},
		{name: "organizeOutputBy empty", level: LevelPatient, params: ps("organizeOutputBy", ""),
			errParam: "organizeOutputBy", errCode: "value", errDiag: `organizeOutputBy is empty`},
		{name: "organizeOutputBy repeated, same, lenient", lenient: true, level: LevelPatient,
			params:   ps("organizeOutputBy", "Patient", "organizeOutputBy", "Patient"),
			errParam: "organizeOutputBy", errCode: "invalid", errDiag: `organizeOutputBy may be given at most once`},
		{name: "lenient organizeOutputBy other ignored", lenient: true, level: LevelGroup, params: ps("organizeOutputBy", "Encounter"),
			ignored: []string{`organizeOutputBy "Encounter" is not supported`}},
		{name: "lenient organizeOutputBy empty ignored", lenient: true, level: LevelGroup, params: ps("organizeOutputBy", ""),
			ignored: []string{`organizeOutputBy is empty`}},

		// Unsupported and unknown parameters.
		{name: "patient at system level", params: ps("patient", "Patient/1"),
			errParam: "patient", errCode: "not-supported", errDiag: `patient is for [base]/Patient/$export and [base]/Group/[id]/$export, not the system-level [base]/$export (got patient="Patient/1")`},
		{name: "typeFilter unknown search parameter", params: ps("_type", "Patient", "_typeFilter", "Patient?status=active"),
			errParam: "_typeFilter", errCode: "not-supported", errDiag: `Patient has no search parameter status`},
		{name: "typeFilter result parameter", params: ps("_typeFilter", "Observation?category=laboratory&_sort=date"),
			errParam: "_typeFilter", errCode: "not-supported", errDiag: `_sort`},
		{name: "typeFilter chain", params: ps("_typeFilter", "Observation?subject.name=peter"),
			errParam: "_typeFilter", errCode: "not-supported", errDiag: `subject.name`},
		{name: "typeFilter quantity", params: ps("_typeFilter", "Observation?value-quantity=5.4"),
			errParam: "_typeFilter", errCode: "not-supported", errDiag: `value-quantity`},
		{name: "typeFilter bad modifier", params: ps("_typeFilter", "Observation?category:below=laboratory"),
			errParam: "_typeFilter", errCode: "not-supported", errDiag: `category:below`},
		{name: "typeFilter bad date", params: ps("_typeFilter", "Observation?date=ge2020-13"),
			errParam: "_typeFilter", errCode: "not-supported", errDiag: `date`},
		{name: "typeFilter not a query", params: ps("_typeFilter", "laboratory"),
			errParam: "_typeFilter", errCode: "not-supported", errDiag: `laboratory`},
		{name: "typeFilter empty", params: ps("_typeFilter", ""),
			errParam: "_typeFilter", errCode: "value", errDiag: `_typeFilter is empty`},
		{name: "typeFilter too many", params: func() []Param {
			var out []Param
			for i := range MaxTypeFilters + 1 {
				out = append(out, Param{Name: "_typeFilter", Value: fmt.Sprintf("Observation?code=%d", i)})
			}
			return out
		}(), errParam: "_typeFilter", errCode: "too-costly", errDiag: fmt.Sprintf("more than %d queries", MaxTypeFilters)},
		{name: "allowPartialManifests", params: ps("allowPartialManifests", "true"),
			errParam: "allowPartialManifests", errCode: "not-supported", errDiag: `allowPartialManifests is not supported yet`},
		{name: "unknown param", params: ps("_count", "10"),
			errParam: "_count", errCode: "not-supported", errDiag: `unknown parameter "_count" (value "10")`},
		{name: "param names are case-sensitive", params: ps("_Type", "Patient"),
			errParam: "_Type", errCode: "not-supported", errDiag: `(parameter names are case-sensitive: did you mean _type?)`},
		{name: "first error in order wins", params: ps("_type", "Foo", "_since", "x"),
			errParam: "_type", errCode: "not-supported", errDiag: `"Foo"`},
		{name: "long value cut in diagnostics", params: ps("_outputFormat", strings.Repeat("x", 500)),
			errParam: "_outputFormat", errCode: "not-supported", errDiag: `"` + strings.Repeat("x", 80) + `"…`},
	}
}

func TestParseRequest(t *testing.T) {
	for _, tc := range requestCases(t) {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseRequest(tc.params, ParseOptions{Now: testNow, Lenient: tc.lenient, Level: tc.level})
			if tc.errCode != "" {
				var re *RequestError
				if !errors.As(err, &re) {
					t.Fatalf("got %+v, %v; want a *RequestError", got, err)
				}
				if re.Param != tc.errParam || re.Code != tc.errCode || !strings.Contains(re.Diagnostics, tc.errDiag) {
					t.Fatalf("got error {%s %s %q}, want {%s %s …%q…}", re.Param, re.Code, re.Diagnostics, tc.errParam, tc.errCode, tc.errDiag)
				}
				if re.Error() != "export: "+re.Diagnostics {
					t.Errorf("Error() = %q", re.Error())
				}
				return
			}
			if err != nil {
				t.Fatalf("got error %v, want success", err)
			}
			wantUntil := tc.until
			if wantUntil == 0 {
				wantUntil = index.Unbounded
			}
			if !slices.Equal(got.Types, tc.types) {
				t.Errorf("Types = %q, want %q", got.Types, tc.types)
			}
			if got.Since != tc.since {
				t.Errorf("Since = %d (%s), want %d (%s)", got.Since, index.FormatInstant(got.Since), tc.since, index.FormatInstant(tc.since))
			}
			if hasSince := slices.ContainsFunc(tc.params, func(p Param) bool { return p.Name == "_since" }); got.HasSince != hasSince {
				t.Errorf("HasSince = %v, want %v", got.HasSince, hasSince)
			}
			if got.Until != wantUntil {
				t.Errorf("Until = %d, want %d", got.Until, wantUntil)
			}
			if !slices.Equal(got.Elements, tc.elements) {
				t.Errorf("Elements = %+v, want %+v", got.Elements, tc.elements)
			}
			if got.OutputFormat != "application/fhir+ndjson" {
				t.Errorf("OutputFormat = %q", got.OutputFormat)
			}
			if !slices.Equal(got.Patients, tc.patients) {
				t.Errorf("Patients = %q, want %q", got.Patients, tc.patients)
			}
			if got.OrganizeBy != tc.organizeBy || got.Provenance != tc.provenance {
				t.Errorf("OrganizeBy %q Provenance %q, want %q %q", got.OrganizeBy, got.Provenance, tc.organizeBy, tc.provenance)
			}
			if got.Lenient != tc.lenient {
				t.Errorf("Lenient = %v, want %v", got.Lenient, tc.lenient)
			}
			if !slices.Equal(got.TypeFilters, tc.filters) {
				t.Errorf("TypeFilters = %q, want %q", got.TypeFilters, tc.filters)
			}
			if len(got.Ignored) != len(tc.ignored) {
				t.Fatalf("Ignored = %q, want %d entries like %q", got.Ignored, len(tc.ignored), tc.ignored)
			}
			for i, want := range tc.ignored {
				if !strings.Contains(got.Ignored[i], want) || !strings.HasPrefix(got.Ignored[i], "ignored (lenient handling): ") {
					t.Errorf("Ignored[%d] = %q, want it to contain %q", i, got.Ignored[i], want)
				}
			}
		})
	}
}

// TestSinceUntilBoundary pins the boundary semantics against the commit clock:
// a resource is exported iff _since < lastUpdated < _until, and
// Request says Since < t <= Until.
func TestSinceUntilBoundary(t *testing.T) {
	base := us(t, "2026-01-02T03:04:05Z")
	for _, tc := range []struct {
		since, until string
		// commit times (offsets from base, µs) that must be in, and out
		in, out []int64
	}{
		{since: "2026-01-02T03:04:05Z", in: []int64{1, 2}, out: []int64{0, -1}},
		{since: "2026-01-02T03:04:05.0000005Z", in: []int64{1}, out: []int64{0}},
		{since: "2026-01-02T03:04:04.9999995Z", in: []int64{0, 1}, out: []int64{-1}},
		{until: "2026-01-02T03:04:05Z", in: []int64{-1, -2}, out: []int64{0, 1}},
		{until: "2026-01-02T03:04:05.0000005Z", in: []int64{0, -1}, out: []int64{1}},
		{since: "2026-01-02T03:04:05Z", until: "2026-01-02T03:04:05.000003Z", in: []int64{1, 2}, out: []int64{0, 3}},
	} {
		var params []Param
		if tc.since != "" {
			params = append(params, Param{"_since", tc.since})
		}
		if tc.until != "" {
			params = append(params, Param{"_until", tc.until})
		}
		req, err := ParseRequest(params, ParseOptions{Now: testNow})
		if err != nil {
			t.Fatalf("%v: %v", params, err)
		}
		for _, d := range tc.in {
			if c := uint64(int64(base) + d); !(req.Since < c && c <= req.Until) {
				t.Errorf("%v: commit time %s excluded, want included", params, index.FormatInstant(c))
			}
		}
		for _, d := range tc.out {
			if c := uint64(int64(base) + d); req.Since < c && c <= req.Until {
				t.Errorf("%v: commit time %s included, want excluded", params, index.FormatInstant(c))
			}
		}
	}
}

// TestSinceTransactionTimeRoundTrip: a transactionTime echoed back as
// _since selects exactly the later commit times.
func TestSinceTransactionTimeRoundTrip(t *testing.T) {
	for _, c := range []uint64{1, 999_999, 1_767_323_045_123_456, testNow} {
		req, err := ParseRequest(ps("_since", index.FormatInstant(c)), ParseOptions{Now: testNow})
		if err != nil {
			t.Fatal(err)
		}
		if req.Since != c {
			t.Errorf("_since=%s: Since = %d, want %d", index.FormatInstant(c), req.Since, c)
		}
	}
}

// TestPatientEntriesLimit: patient entries past MaxPatientEntries (all
// patient parameters together, duplicates included) are refused with
// too-costly, lenient or not; at the limit they are accepted.
func TestPatientEntriesLimit(t *testing.T) {
	refs := func(n int) string {
		parts := make([]string, n)
		for i := range parts {
			parts[i] = fmt.Sprint("Patient/p", i)
		}
		return strings.Join(parts, ",")
	}
	for _, level := range []Level{LevelPatient, LevelGroup} {
		req, err := ParseRequest(ps("patient", refs(MaxPatientEntries)), ParseOptions{Now: testNow, Level: level})
		if err != nil || len(req.Patients) != MaxPatientEntries {
			t.Fatalf("%s: at the limit: %d patients, %v", level, len(req.Patients), err)
		}
		for _, lenient := range []bool{false, true} {
			_, err := ParseRequest(ps("patient", refs(MaxPatientEntries), "patient", "Patient/p0"),
				ParseOptions{Now: testNow, Level: level, Lenient: lenient})
			var re *RequestError
			if !errors.As(err, &re) || re.Param != "patient" || re.Code != codeTooCostly ||
				!strings.Contains(re.Diagnostics, fmt.Sprint(MaxPatientEntries)) {
				t.Errorf("%s lenient %v: past the limit: %v, want too-costly naming %d", level, lenient, err, MaxPatientEntries)
			}
		}
	}
}
