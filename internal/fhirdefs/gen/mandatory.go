package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"strings"
)

// fhirVersion is the FHIR version whose definitions are read: the package
// also carries later ones (e.g. SubscriptionStatus, 4.3.0), which are not
// R4 resource types and are left out.
const fhirVersion = "4.0.1"

// coreURL is the canonical URL prefix of the core StructureDefinitions.
const coreURL = "http://hl7.org/fhir/StructureDefinition/"

type structureDefinition struct {
	URL         string `json:"url"`
	Type        string `json:"type"`
	Kind        string `json:"kind"`
	Abstract    bool   `json:"abstract"`
	Derivation  string `json:"derivation"`
	FHIRVersion string `json:"fhirVersion"`
	Snapshot    struct {
		Element []elementDefinition `json:"element"`
	} `json:"snapshot"`
}

type elementDefinition struct {
	Path string `json:"path"`
	Min  int    `json:"min"`
	Max  string `json:"max"`
	Type []struct {
		Code string `json:"code"`
	} `json:"type"`
}

// mandatory is one required element of a resource type.
type mandatory struct {
	def   string   // as defined, e.g. "medication[x]"
	card  string   // e.g. "1..1"
	names []string // its JSON member names, e.g. medicationCodeableConcept, medicationReference
}

// genMandatory writes the mandatoryElements table from
// profiles-resources.json (a Bundle of StructureDefinitions): for every
// concrete R4 resource type (kind resource, not abstract, a specialization
// of FHIR 4.0.1 with a core URL), the elements with a path Type.name (top
// level) and min >= 1, a choice name[x] expanded to name + each type code
// with its first letter upper-cased.
func genMandatory(src [][]byte) ([]byte, error) {
	defs, err := mandatoryElements(src[0])
	if err != nil {
		return nil, err
	}
	var b bytes.Buffer
	b.WriteString(`// mandatoryElements maps each R4 resource type to the JSON member names
// of its top-level elements with a minimum cardinality of at least 1 (see
// MandatoryElements). The comment above each entry gives the elements as
// defined.
var mandatoryElements = map[string][]string{
`)
	types := make([]string, 0, len(defs))
	for t := range defs {
		types = append(types, t)
	}
	slices.Sort(types)
	for _, t := range types {
		ms := defs[t]
		var names, doc []string
		for _, m := range ms {
			doc = append(doc, m.def+" ("+m.card+")")
			for _, n := range m.names {
				names = append(names, fmt.Sprintf("%q", n))
			}
		}
		if len(doc) > 0 {
			fmt.Fprintf(&b, "\t// %s\n", strings.Join(doc, ", "))
		}
		fmt.Fprintf(&b, "\t%q: {%s},\n", t, strings.Join(names, ", "))
	}
	b.WriteString("}\n")
	return b.Bytes(), nil
}

// mandatoryElements reads the Bundle of StructureDefinitions.
func mandatoryElements(bundle []byte) (map[string][]mandatory, error) {
	var bd struct {
		ResourceType string `json:"resourceType"`
		Entry        []struct {
			Resource json.RawMessage `json:"resource"`
		} `json:"entry"`
	}
	if err := json.Unmarshal(bundle, &bd); err != nil {
		return nil, fmt.Errorf("profiles-resources.json: %w", err)
	}
	if bd.ResourceType != "Bundle" {
		return nil, fmt.Errorf("profiles-resources.json: resourceType %q, want Bundle", bd.ResourceType)
	}
	out := map[string][]mandatory{}
	for i, e := range bd.Entry {
		var rt struct {
			ResourceType string `json:"resourceType"`
		}
		if err := json.Unmarshal(e.Resource, &rt); err != nil {
			return nil, fmt.Errorf("profiles-resources.json: entry %d: %w", i, err)
		}
		if rt.ResourceType != "StructureDefinition" {
			continue // OperationDefinitions, CompartmentDefinitions, ...
		}
		var sd structureDefinition
		if err := json.Unmarshal(e.Resource, &sd); err != nil {
			return nil, fmt.Errorf("profiles-resources.json: entry %d: %w", i, err)
		}
		if sd.Kind != "resource" || sd.Abstract || sd.Derivation != "specialization" {
			continue
		}
		if sd.FHIRVersion != fhirVersion {
			fmt.Fprintf(os.Stderr, "gen: left out %s: FHIR %s, not %s\n", sd.Type, sd.FHIRVersion, fhirVersion)
			continue
		}
		if sd.URL != coreURL+sd.Type || sd.Type == "" {
			return nil, fmt.Errorf("StructureDefinition %s: url %q is not the core definition of its type", sd.Type, sd.URL)
		}
		if _, dup := out[sd.Type]; dup {
			return nil, fmt.Errorf("StructureDefinition %s is there twice", sd.Type)
		}
		if len(sd.Snapshot.Element) == 0 || sd.Snapshot.Element[0].Path != sd.Type {
			return nil, fmt.Errorf("StructureDefinition %s: no snapshot rooted at %s", sd.Type, sd.Type)
		}
		ms := []mandatory{}
		for _, el := range sd.Snapshot.Element {
			name, ok := strings.CutPrefix(el.Path, sd.Type+".")
			if !ok || strings.Contains(name, ".") || el.Min < 1 {
				continue
			}
			m := mandatory{def: name, card: fmt.Sprintf("%d..%s", el.Min, el.Max)}
			if base, ok := strings.CutSuffix(name, "[x]"); ok {
				if len(el.Type) == 0 {
					return nil, fmt.Errorf("%s: a choice element without types", el.Path)
				}
				for _, t := range el.Type {
					if !isLetters(t.Code) {
						return nil, fmt.Errorf("%s: type code %q cannot name a choice", el.Path, t.Code)
					}
					m.names = append(m.names, base+strings.ToUpper(t.Code[:1])+t.Code[1:])
				}
			} else {
				if !isLetters(name) {
					return nil, fmt.Errorf("%s: %q is not an element name", el.Path, name)
				}
				m.names = []string{name}
			}
			ms = append(ms, m)
		}
		out[sd.Type] = ms
	}
	// A format change upstream must not quietly empty the table.
	if len(out) < 100 {
		return nil, fmt.Errorf("profiles-resources.json: only %d resource types", len(out))
	}
	return out, nil
}

func isLetters(s string) bool {
	if s == "" {
		return false
	}
	for _, c := range s {
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z') {
			return false
		}
	}
	return true
}
