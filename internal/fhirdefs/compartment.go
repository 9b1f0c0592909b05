package fhirdefs

// InPatientCompartment reports whether resources of type typ can be in a
// patient's compartment: typ has an entry in PatientCompartment (Patient
// has one, for Patient.link.other, besides being in its own compartment).
func InPatientCompartment(typ string) bool {
	_, ok := PatientCompartment[typ]
	return ok
}
