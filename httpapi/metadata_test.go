package httpapi

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/bulkstream/bulkstream/export"
	"github.com/bulkstream/bulkstream/internal/fhirdefs"
)

func getJSON(t *testing.T, h http.Handler, target string, v any) {
	t.Helper()
	rec := serve(h, request{method: "GET", target: target,
		header: http.Header{"Accept": {"application/fhir+json,application/json+fhir,application/json"}}})
	if rec.Code != http.StatusOK {
		t.Fatalf("GET %s = %d (%s)", target, rec.Code, rec.Body)
	}
	if ct := rec.Header().Get("Content-Type"); ct != contentTypeFHIR {
		t.Errorf("GET %s: Content-Type = %q, want %q", target, ct, contentTypeFHIR)
	}
	if err := json.Unmarshal(rec.Body.Bytes(), v); err != nil {
		t.Fatalf("GET %s: %v", target, err)
	}
}

func TestCapabilityStatement(t *testing.T) {
	h := newTestHandler(t, newFakeJobs(), nil)
	for _, target := range []string{"/fhir/metadata", "/fhir/metadata?_format=json", "/fhir/metadata?_format=application/fhir%2Bjson"} {
		var cs struct {
			ResourceType, Status, Kind, FhirVersion string
			Instantiates                            []string
			Format                                  []string
			Software                                struct{ Name, Version string }
			Implementation                          struct{ URL string }
			Rest                                    []struct {
				Mode     string
				Resource []struct {
					Type      string
					Operation []struct{ Name, Definition string }
				}
				Operation []struct{ Name, Definition string }
			}
		}
		getJSON(t, h, target, &cs)
		if cs.ResourceType != "CapabilityStatement" || cs.Status != "active" || cs.Kind != "instance" || cs.FhirVersion != "4.0.1" {
			t.Errorf("%s: header fields = %q %q %q %q", target, cs.ResourceType, cs.Status, cs.Kind, cs.FhirVersion)
		}
		if !slices.Contains(cs.Instantiates, "http://hl7.org/fhir/uv/bulkdata/CapabilityStatement/bulk-data") {
			t.Errorf("instantiates = %q", cs.Instantiates)
		}
		if !slices.Contains(cs.Format, "json") {
			t.Errorf("format = %q, want json", cs.Format)
		}
		if cs.Software.Name != "bulkstream" || cs.Software.Version != "1.2.3-test" {
			t.Errorf("software = %+v", cs.Software)
		}
		if cs.Implementation.URL != testPublicURL+"/fhir" {
			t.Errorf("implementation.url = %q", cs.Implementation.URL)
		}
		// BDT reads rest[0], Inferno the last rest: keep exactly one.
		if len(cs.Rest) != 1 || cs.Rest[0].Mode != "server" {
			t.Fatalf("rest = %+v, want one server entry", cs.Rest)
		}
		ops := map[string]string{}
		for _, op := range cs.Rest[0].Operation {
			ops[op.Name] = op.Definition
		}
		want := map[string]string{
			"export":      "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/export",
			"bulk-export": "http://fhir.infoway-inforoute.ca/io/CA-CSD/OperationDefinition/bulk-export",
		}
		if len(ops) != len(want) || ops["export"] != want["export"] || ops["bulk-export"] != want["bulk-export"] {
			t.Errorf("rest.operation = %v, want %v", ops, want)
		}
		if len(cs.Rest[0].Resource) != 146 || cs.Rest[0].Resource[0].Type != "Account" {
			t.Errorf("rest.resource has %d entries, want the 146 R4 types", len(cs.Rest[0].Resource))
		}
		// The Patient- and Group-level exports are declared on their
		// resources, under the names the Bulk Data test suite looks for.
		wantOps := map[string]string{
			"Patient": "patient-export http://hl7.org/fhir/uv/bulkdata/OperationDefinition/patient-export",
			"Group":   "group-export http://hl7.org/fhir/uv/bulkdata/OperationDefinition/group-export",
		}
		for _, res := range cs.Rest[0].Resource {
			var got []string
			for _, op := range res.Operation {
				got = append(got, op.Name+" "+op.Definition)
			}
			if want := wantOps[res.Type]; strings.Join(got, ",") != want {
				t.Errorf("rest.resource %s operations %q, want %q", res.Type, got, want)
			}
		}
	}
}

type operationDefinition struct {
	ResourceType, URL, Code, Kind, Status string
	System, Type, Instance                *bool
	Resource                              []string
	Parameter                             []struct {
		Name, Use, Max, Type, Documentation string
		Min                                 *int
	}
}

func TestOperationDefinitions(t *testing.T) {
	h := newTestHandler(t, newFakeJobs(), nil)
	levelParams := map[string]string{
		"_outputFormat": "string 0..1", "_since": "instant 0..1", "_until": "instant 0..1", "_type": "string 0..*",
		"_elements": "string 0..*", "patient": "Reference 0..*", "includeAssociatedData": "code 0..*", "_typeFilter": "string 0..*",
		"organizeOutputBy": "string 0..1", "allowPartialManifests": "boolean 0..1",
	}
	tests := []struct {
		target, url           string
		system, typ, instance bool
		resource              string
		params                map[string]string // name → "type min..max"
	}{
		{"/fhir/OperationDefinition/export", "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/export", true, false, false, "", map[string]string{
			"_outputFormat": "string 0..1", "_since": "instant 0..1", "_until": "instant 0..1", "_type": "string 0..*",
			"_elements": "string 0..*", "includeAssociatedData": "code 0..*", "_typeFilter": "string 0..*",
			"organizeOutputBy": "string 0..1", "allowPartialManifests": "boolean 0..1",
		}},
		{"/fhir/OperationDefinition/bulk-export", "http://fhir.infoway-inforoute.ca/io/CA-CSD/OperationDefinition/bulk-export", true, false, false, "", map[string]string{
			"_outputFormat": "string 0..1", "_since": "instant 0..1", "_type": "string 0..*",
		}},
		{"/fhir/OperationDefinition/patient-export", "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/patient-export",
			false, true, false, "Patient", levelParams},
		{"/fhir/OperationDefinition/group-export", "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/group-export",
			false, true, true, "Group", levelParams},
	}
	for _, tt := range tests {
		var od operationDefinition
		getJSON(t, h, tt.target, &od)
		if od.ResourceType != "OperationDefinition" || od.URL != tt.url || od.Code != "export" || od.Kind != "operation" || od.Status != "active" {
			t.Errorf("%s: %q %q %q %q %q", tt.target, od.ResourceType, od.URL, od.Code, od.Kind, od.Status)
		}
		if od.System == nil || *od.System != tt.system || od.Type == nil || *od.Type != tt.typ || od.Instance == nil || *od.Instance != tt.instance {
			t.Errorf("%s: want system %v, type %v, instance %v", tt.target, tt.system, tt.typ, tt.instance)
		}
		if tt.resource != "" && !slices.Equal(od.Resource, []string{tt.resource}) {
			t.Errorf("%s: resource %q, want [%s]", tt.target, od.Resource, tt.resource)
		}
		got := map[string]string{}
		for _, p := range od.Parameter {
			if p.Use != "in" || p.Min == nil {
				t.Errorf("%s: parameter %s use %q min %v", tt.target, p.Name, p.Use, p.Min)
				continue
			}
			got[p.Name] = p.Type + " " + strconv.Itoa(*p.Min) + ".." + p.Max
			// _typeFilter is supported: its documentation says what of FHIR
			// search it takes and what happens to the rest.
			if p.Name == "_typeFilter" {
				for _, w := range []string{"ORed", "ANDed", "token, date, reference, string and uri", "rest.resource.searchParam",
					":missing", ":not", ":exact", ":contains", "400", "Prefer: handling=lenient", "exported unfiltered", "error file",
					fmt.Sprintf("at most %d queries", export.MaxTypeFilters)} {
					if !strings.Contains(p.Documentation, w) {
						t.Errorf("%s: _typeFilter documentation lacks %q: %s", tt.target, w, p.Documentation)
					}
				}
				if strings.Contains(strings.ToLower(p.Documentation), "not supported by bulkstream") || strings.Contains(p.Documentation, "{{") {
					t.Errorf("%s: _typeFilter documentation %q", tt.target, p.Documentation)
				}
			}
			// _until is exclusive ("changed before", as the IG defines it), as
			// ParseRequest reads it.
			if p.Name == "_until" && !strings.Contains(p.Documentation, "before this instant") {
				t.Errorf("%s: _until documentation %q, want it exclusive (before this instant)", tt.target, p.Documentation)
			}
		}
		if len(got) != len(tt.params) {
			t.Errorf("%s: parameters %v, want %v", tt.target, got, tt.params)
		}
		for name, want := range tt.params {
			if got[name] != want {
				t.Errorf("%s: %s = %q, want %q", tt.target, name, got[name], want)
			}
		}
	}
	checkOutcome(t, serve(h, request{method: "GET", target: "/fhir/OperationDefinition/system-export"}), http.StatusNotFound, "no route")
}

// TestCapabilityStatementSearchParams: every rest.resource entry lists, in
// searchParam, exactly the search parameters of its type that _typeFilter
// can use (the generated table's, unsupported ones left out), with their
// type; the common ones (_id, _lastUpdated, ...) on every type.
func TestCapabilityStatementSearchParams(t *testing.T) {
	h := newTestHandler(t, newFakeJobs(), nil)
	rec := serve(h, request{method: "GET", target: "/fhir/metadata", header: http.Header{"Accept": {"application/fhir+json"}}})
	if rec.Code != http.StatusOK {
		t.Fatalf("GET /metadata = %d", rec.Code)
	}
	var cs struct {
		Rest []struct {
			Resource []struct {
				Type        string
				SearchParam []map[string]string
			}
		}
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &cs); err != nil || len(cs.Rest) != 1 {
		t.Fatalf("metadata: %v", err)
	}
	if ce := rec.Header().Get("Content-Encoding"); ce != "" {
		t.Errorf("Content-Encoding %q without Accept-Encoding", ce)
	}
	// Gzipped when accepted: the same document, compressed once in New.
	zrec := serve(h, request{method: "GET", target: "/fhir/metadata",
		header: http.Header{"Accept": {"application/fhir+json"}, "Accept-Encoding": {"br;q=1, gzip;q=0.5"}}})
	if zrec.Code != http.StatusOK || zrec.Header().Get("Content-Encoding") != "gzip" ||
		!slices.Contains(zrec.Header().Values("Vary"), "Accept-Encoding") ||
		zrec.Header().Get("Content-Length") != strconv.Itoa(zrec.Body.Len()) {
		t.Errorf("gzip accepted: %d %v", zrec.Code, zrec.Header())
	}
	zlen := zrec.Body.Len()
	zr, err := gzip.NewReader(zrec.Body)
	if err != nil {
		t.Fatal(err)
	}
	plain, err := io.ReadAll(zr)
	if err != nil || !bytes.Equal(plain, rec.Body.Bytes()) {
		t.Errorf("gzipped CapabilityStatement (%v) differs from the plain one", err)
	}
	t.Logf("CapabilityStatement: %d bytes, %d gzipped", rec.Body.Len(), zlen)
	if rec.Body.Len() > 400<<10 || zlen > 40<<10 {
		t.Errorf("CapabilityStatement: %d bytes, %d gzipped; want at most 400 KiB, 40 KiB", rec.Body.Len(), zlen)
	}
	seen := map[string]map[string]string{} // type → name → type
	for _, res := range cs.Rest[0].Resource {
		var want []string
		for _, p := range fhirdefs.SearchParams(res.Type) {
			if p.Unsupported == "" {
				want = append(want, p.Code+" "+p.Type)
			}
		}
		var got []string
		seen[res.Type] = map[string]string{}
		for _, sp := range res.SearchParam {
			got = append(got, sp["name"]+" "+sp["type"])
			seen[res.Type][sp["name"]] = sp["type"]
			if sp["documentation"] != "usable in _typeFilter" {
				t.Errorf("%s.%s: documentation %q", res.Type, sp["name"], sp["documentation"])
			}
			if d, ok := sp["definition"]; ok && !strings.HasPrefix(d, "http://hl7.org/fhir/SearchParameter/") {
				t.Errorf("%s.%s: definition %q", res.Type, sp["name"], d)
			}
			for k := range sp {
				if k != "name" && k != "type" && k != "documentation" && k != "definition" {
					t.Errorf("%s.%s: member %q", res.Type, sp["name"], k)
				}
			}
		}
		if !slices.Equal(got, want) {
			t.Errorf("%s: searchParam %q, want %q", res.Type, got, want)
		}
	}
	// Spot checks against the R4 registry, whatever the table says.
	for typ, params := range map[string]map[string]string{
		"Observation":       {"category": "token", "code": "token", "date": "date", "subject": "reference", "status": "token", "_lastUpdated": "date"},
		"Patient":           {"_id": "token", "birthdate": "date", "gender": "token", "family": "string", "active": "token"},
		"Condition":         {"clinical-status": "token", "onset-date": "date"},
		"MedicationRequest": {"status": "token", "_profile": "uri", "_tag": "token", "_security": "token"},
		"Account":           {"_id": "token", "_lastUpdated": "date"},
	} {
		for name, typ2 := range params {
			if got := seen[typ][name]; got != typ2 {
				t.Errorf("%s searchParam %s: type %q, want %q", typ, name, got, typ2)
			}
		}
	}
	for _, name := range []string{"combo-code-value-quantity", "value-quantity", "code-value-concept"} {
		if _, ok := seen["Observation"][name]; ok {
			t.Errorf("Observation lists %s (quantity or composite), which _typeFilter refuses", name)
		}
	}
}
