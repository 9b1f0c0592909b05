package main

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
)

// spSD is a StructureDefinition entry: elems are "path:type,type" or
// "path:#ref" (a contentReference), separated by spaces; a type
// "System.String=id" is a FHIRPath system type with its FHIR type.
func spSD(typ, kind string, abstract bool, base string, elems string) string {
	var els []string
	els = append(els, fmt.Sprintf(`{"path":%q}`, typ))
	for e := range strings.FieldsSeq(elems) {
		path, types, _ := strings.Cut(e, ":")
		if ref, ok := strings.CutPrefix(types, "#"); ok {
			els = append(els, fmt.Sprintf(`{"path":%q,"contentReference":"#%s"}`, typ+"."+path, ref))
			continue
		}
		var ts []string
		for t := range strings.SplitSeq(types, ",") {
			if sys, fhirType, ok := strings.Cut(t, "="); ok {
				ts = append(ts, fmt.Sprintf(`{"code":"http://hl7.org/fhirpath/%s","extension":[{"url":%q,"valueUrl":%q}]}`, sys, fhirTypeExt, fhirType))
			} else {
				ts = append(ts, fmt.Sprintf(`{"code":%q}`, t))
			}
		}
		els = append(els, fmt.Sprintf(`{"path":%q,"type":[%s]}`, typ+"."+path, strings.Join(ts, ",")))
	}
	baseDef := ""
	deriv := ""
	if base != "" {
		baseDef = fmt.Sprintf(`,"baseDefinition":"http://hl7.org/fhir/StructureDefinition/%s"`, base)
		deriv = `,"derivation":"specialization"`
	}
	return fmt.Sprintf(`{"resource":{"resourceType":"StructureDefinition","url":"http://hl7.org/fhir/StructureDefinition/%s","type":%q,`+
		`"kind":%q,"abstract":%v%s%s,"fhirVersion":"4.0.1","snapshot":{"element":[%s]}}}`,
		typ, typ, kind, abstract, baseDef, deriv, strings.Join(els, ","))
}

func spBundle(entries ...string) []byte {
	return []byte(`{"resourceType":"Bundle","entry":[` + strings.Join(entries, ",") + `]}`)
}

// spResources is a profiles-resources.json: Resource, DomainResource,
// Obs, a Binary that is not a DomainResource, and 100 fillers.
func spResources(extra ...string) []byte {
	common := "id:System.String=string meta:Meta "
	entries := []string{
		`{"resource":{"resourceType":"OperationDefinition","id":"x","type":true}}`,
		spSD("Resource", "resource", true, "", common),
		spSD("DomainResource", "resource", true, "Resource", common+"text:Narrative"),
		spSD("Obs", "resource", false, "DomainResource", common+
			"status:code effective[x]:dateTime,Period subject:Reference focus[x]:Reference,canonical "+
			"component:BackboneElement component.code:CodeableConcept component.value[x]:Quantity,string,Reference "+
			"telecom:ContactPoint item:BackboneElement item.code:Coding item.item:#Obs.item related:BackboneElement related.type:code related.resource:canonical"),
		spSD("Bin", "resource", false, "Resource", common+"contentType:code"),
		spSD("Later", "resource", false, "DomainResource", common),
	}
	entries[5] = strings.Replace(entries[5], `"fhirVersion":"4.0.1"`, `"fhirVersion":"4.3.0"`, 1)
	for i := range 100 {
		entries = append(entries, spSD("Filler"+filler(i), "resource", false, "DomainResource", common))
	}
	return spBundle(append(entries, extra...)...)
}

// spTypes is a profiles-types.json.
var spTypes = spBundle(
	spSD("Meta", "complex-type", false, "Element", "lastUpdated:instant tag:Coding profile:canonical"),
	spSD("CodeableConcept", "complex-type", false, "Element", "coding:Coding text:string"),
	spSD("Coding", "complex-type", false, "Element", "system:uri code:code"),
	spSD("Reference", "complex-type", false, "Element", "reference:string"),
	spSD("ContactPoint", "complex-type", false, "Element", "system:code value:string"),
	spSD("Period", "complex-type", false, "Element", "start:dateTime end:dateTime"),
	spSD("Quantity", "complex-type", false, "Element", "value:decimal"),
	// A constraint profile on Quantity: not a type of its own.
	strings.Replace(spSD("SimpleQuantity", "complex-type", false, "Quantity", "value:decimal"), `"derivation":"specialization"`, `"derivation":"constraint"`, 1),
)

// spParams is a search-parameters.json of "id|code|type|base,base|expression".
func spParams(params ...string) []byte {
	var entries []string
	for _, p := range params {
		f := strings.SplitN(p, "|", 5)
		expr := ""
		if f[4] != "" {
			expr = fmt.Sprintf(`,"expression":%q`, f[4])
		}
		entries = append(entries, fmt.Sprintf(`{"resource":{"resourceType":"SearchParameter","id":%q,"code":%q,"type":%q,"base":["%s"]%s}}`,
			f[0], f[1], f[2], strings.Join(strings.Split(f[3], ","), `","`), expr))
	}
	return spBundle(entries...)
}

var testParams = spParams(
	"Resource-id|_id|token|Resource|Resource.id",
	"Resource-lastUpdated|_lastUpdated|date|Resource|Resource.meta.lastUpdated",
	"DomainResource-text|_text|string|DomainResource|",
	"Obs-date|date|date|Obs|Obs.effective",
	"Obs-start|start|date|Obs|Obs.effective.ofType(Period).start",
	"Obs-patient|patient|reference|Obs,Other|Other.subject | Obs.subject.where(resolve() is Patient)",
	"Obs-actor|actor|reference|Obs|Obs.subject.where(resolve() is Patient or resolve() is Group) | Obs.focus",
	"Obs-focus-ref|focus-ref|reference|Obs|Obs.focus.where(resolve() is Patient)",
	"Obs-code|code|token|Obs|Obs.component.code | Obs.item.item.code",
	"Obs-value|value|string|Obs|(Obs.component.value.ofType(string)) | (Obs.component.value as Reference).reference | Obs.component.value.as(Quantity).value",
	"Obs-email|email|token|Obs|Obs.telecom.where(system='email')",
	"Obs-composed|composed-of|reference|Obs|Obs.related.where(type='composed-of').resource",
	"Obs-status|status|token|Obs|status",
	"Obs-quantity|value-quantity|quantity|Obs|Obs.component.value.ofType(Quantity)",
	"Obs-first|first|reference|Obs|Obs.component.first().code",
	"Obs-missing|nonesuch|token|Obs|Obs.nonesuch",
	"Obs-deceased|deceased|token|Obs|Obs.status.exists() and Obs.status != 'x'",
	"Obs-wrongtype|wrong|token|Obs|Obs.status.ofType(Period)",
)

func TestSearchParamsCompile(t *testing.T) {
	tab, err := searchParams(testParams, spResources(), spTypes)
	if err != nil {
		t.Fatal(err)
	}
	if len(tab) != 102 {
		t.Errorf("%d types, want 102 (Obs, Bin and the fillers; not the abstract ones nor the 4.3.0 one)", len(tab))
	}
	got := map[string]string{}
	var codes []string
	for _, p := range tab["Obs"] {
		codes = append(codes, p.Code)
		got[p.Code] = showParam(p)
	}
	if want := "_has _id _lastUpdated _list _text _type actor code composed-of date deceased email first focus-ref nonesuch patient start status value value-quantity wrong"; strings.Join(codes, " ") != want {
		t.Errorf("Obs codes:\n%s\nwant\n%s", strings.Join(codes, " "), want)
	}
	for code, want := range map[string]string{
		"_id":            "id:string",
		"_lastUpdated":   "meta.lastUpdated:instant",
		"_text":          "unsupported: no FHIRPath expression",
		"_has":           "unsupported: reverse chaining is not supported",
		"date":           "effectiveDateTime:dateTime | effectivePeriod:Period",
		"start":          "effectivePeriod.start:dateTime",
		"patient":        "subject:Reference>Patient",
		"actor":          "subject:Reference>Patient,Group | focusReference:Reference | focusCanonical:canonical",
		"focus-ref":      "focusReference:Reference>Patient",
		"code":           "component.code:CodeableConcept | item.item.code:Coding",
		"value":          "component.valueString:string | component.valueReference.reference:string | component.valueQuantity.value:decimal",
		"email":          "telecom[system=email]:ContactPoint",
		"composed-of":    "related[type=composed-of].resource:canonical",
		"status":         "status:code",
		"value-quantity": "unsupported: quantity parameters are not supported",
		"first":          "unsupported: branch Obs.component.first().code: first() is not compiled",
		"nonesuch":       "unsupported: branch Obs.nonesuch: Obs has no element nonesuch",
		"deceased":       "unsupported: branch Obs.status.exists() and Obs.status != 'x': an operator expression, not a path",
		"wrong":          "unsupported: branch Obs.status.ofType(Period): ofType(Period): no element of that type",
	} {
		if got[code] != want {
			t.Errorf("Obs %s: %s\nwant %s", code, got[code], want)
		}
	}
	// Bin is not a DomainResource: no _text.
	for _, p := range tab["Bin"] {
		if p.Code == "_text" {
			t.Error("Bin has _text")
		}
	}
	if len(tab["FillerAA"]) == 0 && len(tab["Filleraa"]) == 0 {
		t.Errorf("a filler type has no parameters")
	}

	src, err := genSearchParams([][]byte{testParams, spResources(), spTypes})
	if err != nil {
		t.Fatal(err)
	}
	again, _ := genSearchParams([][]byte{testParams, spResources(), spTypes})
	if !bytes.Equal(src, again) {
		t.Error("two generations differ")
	}
	for _, w := range []string{
		"//\tObs.deceased, Obs.first, Obs.nonesuch, Obs.wrong\n",
		`{Code: "email", Type: "token", Expression: "Obs.telecom.where(system='email')", Paths: []SearchPath{{Steps: []PathStep{{Name: "telecom", Where: &WhereEq{Field: "system", Value: "email"}}}, Type: "ContactPoint"}}},`,
		`{Code: "patient", Type: "reference", Expression: "Other.subject | Obs.subject.where(resolve() is Patient)", Paths: []SearchPath{{Steps: []PathStep{{Name: "subject"}}, Type: "Reference", Targets: []string{"Patient"}}}},`,
		`{Code: "value-quantity", Type: "quantity", Expression: "Obs.component.value.ofType(Quantity)", Unsupported: "quantity parameters are not supported"},`,
	} {
		if !bytes.Contains(src, []byte(w)) {
			t.Errorf("generated source lacks %s", w)
		}
	}
}

// showParam renders a parameter as fhirdefs' TestSearchParamsKnown does.
func showParam(p spParam) string {
	if p.unsupported != "" {
		return "unsupported: " + p.unsupported
	}
	var out []string
	for _, sp := range p.paths {
		var steps []string
		for _, st := range sp.steps {
			s := st.name
			if st.field != "" {
				s += "[" + st.field + "=" + st.value + "]"
			}
			steps = append(steps, s)
		}
		s := strings.Join(steps, ".") + ":" + sp.typ
		if len(sp.targets) > 0 {
			s += ">" + strings.Join(sp.targets, ",")
		}
		out = append(out, s)
	}
	return strings.Join(out, " | ")
}

// TestSearchParamsRefuses: files of another kind, a parameter defined
// twice for a type, and definitions too small to be the R4 ones fail the
// generation.
func TestSearchParamsRefuses(t *testing.T) {
	for name, c := range map[string]struct {
		params, resources, types []byte
		want                     string
	}{
		"params not a bundle":    {[]byte(`{"resourceType":"Patient"}`), spResources(), spTypes, "want Bundle"},
		"params not JSON":        {[]byte(`{`), spResources(), spTypes, "search-parameters.json"},
		"resources not a bundle": {testParams, []byte(`{"resourceType":"Patient"}`), spTypes, "want Bundle"},
		"duplicate": {spParams("Obs-a|status|token|Obs|Obs.status", "Obs-b|status|token|Obs|Obs.status"), spResources(), spTypes,
			"Obs has parameter status twice (Obs-a and Obs-b)"},
		"clash with all types": {spParams("Obs-a|_has|token|Obs|Obs.status"), spResources(), spTypes, "parameter _has twice"},
		"bad code":             {spParams("Obs-a|a b|token|Obs|Obs.status"), spResources(), spTypes, `code "a b"`},
		"too few types": {testParams, spBundle(spSD("Resource", "resource", true, "", "id:System.String=string"),
			spSD("Obs", "resource", false, "DomainResource", "status:code")), spTypes, "only 1 resource types"},
		"no Reference": {testParams, spResources(), spBundle(spSD("Coding", "complex-type", false, "Element", "code:code")), "no StructureDefinition of Reference"},
		"duplicate type": {testParams, spResources(spSD("Obs", "resource", false, "DomainResource", "status:code")), spTypes,
			"StructureDefinition Obs is there twice"},
	} {
		_, err := searchParams(c.params, c.resources, c.types)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want an error with %s", name, err, c.want)
		}
	}
}
