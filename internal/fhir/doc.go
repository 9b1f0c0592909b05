// Package fhir holds the FHIR R4 facts that more than one bulkstream package
// needs: the resource type list and the instant format. It is a pure leaf
// (stdlib only).
package fhir
