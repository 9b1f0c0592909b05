package fhir

import (
	"bytes"
	"strings"
)

// ParseReference returns the type and id of a literal reference
// (https://hl7.org/fhir/R4/references.html#literal), the string value of
// a Reference's "reference" member; they alias ref. It accepts:
//
//   - a relative reference Type/id or Type/id/_history/version;
//   - an absolute URL, http:// or https:// then a non-empty rest, whose
//     last segments are Type/id, optionally followed by /_history/version.
//
// Type must be an R4 resource type (IsResourceType), id and version FHIR
// ids (IsID). Anything else is not ok: contained references (#x), urn:
// references, conditional and malformed references.
func ParseReference(ref []byte) (typ, id []byte, ok bool) {
	rest := ref
	// Type/id/_history/v: drop the version.
	if j := bytes.LastIndexByte(rest, '/'); j >= 0 && IsID(rest[j+1:]) {
		if k := bytes.LastIndexByte(rest[:j], '/'); k >= 0 && string(rest[k+1:j]) == "_history" {
			rest = rest[:k]
		}
	}
	j := bytes.LastIndexByte(rest, '/')
	if j < 0 {
		return nil, nil, false
	}
	id = rest[j+1:]
	k := bytes.LastIndexByte(rest[:j], '/')
	typ = rest[k+1 : j]
	if !IsID(id) || string(typ) != "Patient" && !IsResourceType(string(typ)) {
		return nil, nil, false
	}
	if k >= 0 { // an absolute URL: http(s)://, a non-empty rest, /Type/id
		prefix := string(rest[:k+1])
		scheme, ok := strings.CutPrefix(prefix, "https://")
		if !ok {
			scheme, ok = strings.CutPrefix(prefix, "http://")
		}
		if !ok || len(scheme) < 2 { // at least one byte before the '/'
			return nil, nil, false
		}
	}
	return typ, id, true
}
