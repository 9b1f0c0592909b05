package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
)

// patientCompartmentURL is the canonical URL of the CompartmentDefinition
// read by genCompartment.
const patientCompartmentURL = "http://hl7.org/fhir/CompartmentDefinition/patient"

// wherePatient is the FHIRPath filter that ends many search parameter
// branches: it only narrows the reference to one whose target is a
// Patient, which the extractor checks of every reference anyway.
const wherePatient = ".where(resolve() is Patient)"

// compartmentRule is the derivation of one resource type's entry.
type compartmentRule struct {
	paths []string // element paths, sorted and deduplicated
	doc   []string // each param with the branches it contributed
}

// genCompartment writes the PatientCompartment table from
// compartmentdefinition-patient.json and search-parameters.json (a Bundle
// of SearchParameters): for each resource of the CompartmentDefinition
// with params, each param's SearchParameter (base holding the type, code
// the param), its FHIRPath expression split on " | ", the branches on the
// type, less a trailing .where(resolve() is Patient), as dotted element
// paths. A branch of any other form is an error, so that a new version of
// the definitions cannot silently drop a rule.
func genCompartment(src [][]byte) ([]byte, error) {
	rules, err := patientCompartment(src[0], src[1])
	if err != nil {
		return nil, err
	}
	var b bytes.Buffer
	b.WriteString(`// PatientCompartment is the FHIR R4 Patient compartment
// (https://hl7.org/fhir/R4/compartmentdefinition-patient.html): for each
// resource type that can be in a patient's compartment, the element paths
// (dotted JSON member names from the resource's root, each step possibly
// an array) of the references that put it there. A resource is in the
// compartment of every Patient that a reference at one of its type's
// paths points to; types not in the map are in no compartment.
//
// It is generated from the CompartmentDefinition's params and the
// FHIRPath expressions of those search parameters
// (compartmentdefinition-patient.json and search-parameters.json of the
// pinned definitions package), keeping the branches on the type itself
// and dropping their ".where(resolve() is Patient)" filter, which only
// says the reference must be to a Patient. The comment above each entry
// gives each param and the paths it contributed.
//
// A Patient is also in its own compartment, which the definition states
// in prose rather than as a param: the table lists only Patient.link.other,
// and the extractor adds the Patient itself.
//
// The slices are shared: callers must not modify them.
var PatientCompartment = map[string][]string{
`)
	types := make([]string, 0, len(rules))
	for t := range rules {
		types = append(types, t)
	}
	slices.Sort(types)
	for _, t := range types {
		r := rules[t]
		fmt.Fprintf(&b, "\t// %s\n", strings.Join(r.doc, "; "))
		q := make([]string, len(r.paths))
		for i, p := range r.paths {
			q[i] = fmt.Sprintf("%q", p)
		}
		fmt.Fprintf(&b, "\t%q: {%s},\n", t, strings.Join(q, ", "))
	}
	b.WriteString("}\n")
	return b.Bytes(), nil
}

// patientCompartment reads the CompartmentDefinition and the Bundle of
// SearchParameters.
func patientCompartment(compartment, params []byte) (map[string]compartmentRule, error) {
	var cd struct {
		ResourceType string `json:"resourceType"`
		URL          string `json:"url"`
		Code         string `json:"code"`
		Resource     []struct {
			Code  string   `json:"code"`
			Param []string `json:"param"`
		} `json:"resource"`
	}
	if err := json.Unmarshal(compartment, &cd); err != nil {
		return nil, fmt.Errorf("compartmentdefinition-patient.json: %w", err)
	}
	if cd.ResourceType != "CompartmentDefinition" || cd.Code != "Patient" || cd.URL != patientCompartmentURL {
		return nil, fmt.Errorf("compartmentdefinition-patient.json: %s %q of code %q, want the CompartmentDefinition %s of code Patient",
			cd.ResourceType, cd.URL, cd.Code, patientCompartmentURL)
	}
	defs, err := searchParameters(params)
	if err != nil {
		return nil, err
	}
	type key struct{ base, code string }
	type param struct{ id, expression string }
	byKey := map[key][]param{}
	for _, sp := range defs {
		for _, base := range sp.Base {
			k := key{base, sp.Code}
			byKey[k] = append(byKey[k], param{sp.ID, sp.Expression})
		}
	}
	out := map[string]compartmentRule{}
	for _, res := range cd.Resource {
		typ := res.Code
		if len(res.Param) == 0 {
			continue // not in the compartment
		}
		if !isLetters(typ) {
			return nil, fmt.Errorf("compartmentdefinition-patient.json: resource %q is not a type name", typ)
		}
		if _, dup := out[typ]; dup {
			return nil, fmt.Errorf("compartmentdefinition-patient.json: resource %s is there twice", typ)
		}
		var r compartmentRule
		for _, code := range res.Param {
			sps := byKey[key{typ, code}]
			if len(sps) != 1 {
				return nil, fmt.Errorf("%s param %q: %d SearchParameters of base %s and code %s in search-parameters.json, want 1",
					typ, code, len(sps), typ, code)
			}
			sp := sps[0]
			var paths []string
			for _, branch := range strings.Split(sp.expression, " | ") {
				rest, ok := strings.CutPrefix(strings.TrimSpace(branch), typ+".")
				if !ok {
					continue // a branch on another base type
				}
				rest = strings.TrimSuffix(rest, wherePatient)
				if !isPath(rest) {
					return nil, fmt.Errorf("%s param %q: SearchParameter %s: branch %q is not %s.<element path>[%s]",
						typ, code, sp.id, branch, typ, wherePatient)
				}
				paths = append(paths, rest)
			}
			if len(paths) == 0 {
				return nil, fmt.Errorf("%s param %q: SearchParameter %s: no branch on %s in %q", typ, code, sp.id, typ, sp.expression)
			}
			r.doc = append(r.doc, code+": "+strings.Join(paths, ", "))
			r.paths = append(r.paths, paths...)
		}
		slices.Sort(r.paths)
		r.paths = slices.Compact(r.paths)
		out[typ] = r
	}
	// A format change upstream must not quietly empty the table.
	if len(out) < 50 {
		return nil, fmt.Errorf("compartmentdefinition-patient.json: only %d resource types with params", len(out))
	}
	if _, ok := out["Patient"]; !ok {
		return nil, fmt.Errorf("compartmentdefinition-patient.json: no Patient entry")
	}
	return out, nil
}

// isPath reports whether s is a dotted path of element names (name, or
// name.name...), without FHIRPath functions, indexes or choice suffixes.
func isPath(s string) bool {
	for step := range strings.SplitSeq(s, ".") {
		if !isLetters(step) || !('a' <= step[0] && step[0] <= 'z') {
			return false
		}
	}
	return true
}
