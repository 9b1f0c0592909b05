package fhirdefs

import "slices"

// MandatoryElements returns the top-level elements of the FHIR R4 resource
// type typ whose minimum cardinality is at least 1 in the type's base
// definition (its StructureDefinition), as JSON member names in definition
// order: Observation gives status and code, Patient none. A required
// choice element is listed as each of its typed names, of which a valid
// resource has exactly one: MedicationRequest.medication[x] gives
// medicationCodeableConcept and medicationReference.
//
// ok is false when typ is not in the table (not an R4 resource type). The
// returned slice is shared: callers must not modify it. It does not
// allocate.
func MandatoryElements(typ string) (names []string, ok bool) {
	names, ok = mandatoryElements[typ]
	return names[:len(names):len(names)], ok
}

// ResourceTypes returns the resource types the tables cover, sorted; the
// slice is a copy.
func ResourceTypes() []string {
	out := make([]string, 0, len(mandatoryElements))
	for t := range mandatoryElements {
		out = append(out, t)
	}
	slices.Sort(out)
	return out
}
