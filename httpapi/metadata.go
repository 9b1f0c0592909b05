package httpapi

import (
	"bytes"
	"compress/gzip"
	"embed"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"

	"github.com/bulkstream/bulkstream/internal/fhir"
	"github.com/bulkstream/bulkstream/internal/fhirdefs"
)

// The conformance resources are JSON files so they can be reviewed as
// such. The CapabilityStatement has four placeholders, filled once in
// New: "{{BASE}}" (PublicURL + BasePath), "{{VERSION}}", the
// "{{RESOURCES}}" array element (one entry per FHIR R4 resource type,
// Patient and Group with their export operations) and
// the "security" member, which is the SMART security section when auth is
// on and removed when it is off. Each rest.resource entry lists the
// search parameters _typeFilter can use (searchParamSection). The
// OperationDefinitions' "{{TYPEFILTER}}" is typeFilterDoc.
//
//go:embed fhir/*.json
var fhirFiles embed.FS

// typeFilterDoc documents _typeFilter in the export, patient-export and
// group-export OperationDefinitions (their "{{TYPEFILTER}}"), one text for
// the three levels. The semantics are the IG's
// (https://hl7.org/fhir/uv/bulkdata/export.html#_typefilter-query-parameter)
// over FHIR R4 search (https://hl7.org/fhir/R4/search.html). The limits
// it states are search.MaxQueryBytes, search.MaxQueryValues and
// export.MaxTypeFilters (TestOperationDefinitions checks the last).
const typeFilterDoc = "FHIR search queries, [type]?[parameter]=[value]&..., that narrow the resources of their type; " +
	"repeated, or comma-delimited where the next query starts with [type]? (a comma inside a value is a value OR); one valueString each in a POST body. " +
	"Queries for the same type are ORed, the parameters of one query ANDed; a type without a query is exported unfiltered, " +
	"a query for a type outside _type has no effect. Evaluated during the export's scan, at system, Patient and Group level, " +
	"together with _since, _until, _elements and organizeOutputBy. " +
	"Supported: the token, date, reference, string and uri search parameters of FHIR R4 that the CapabilityStatement lists " +
	"per type in rest.resource.searchParam, including _id, _lastUpdated, _tag, _profile, _security and _source on every type. " +
	"token: code, system|code, |code, system| (booleans as true/false); date: the prefixes eq, ne, gt, lt, ge, le, sa, eb and ap, " +
	"partial dates (a time without zone is UTC), against date, dateTime, instant, Period and Timing values; " +
	"reference: id, Type/id or an absolute URL; string: starts-with, case- and accent-insensitive; uri: exact. " +
	"Modifiers: :missing (true or false, any type), :not (token), :exact and :contains (string). " +
	"Not supported: result parameters (_sort, _include, _revinclude, _elements, _count, _summary, ...), chains (subject.name), " +
	"type-restricted references (subject:Patient), _has, _filter, number, quantity, composite and special parameters, " +
	"parameters not listed for the type and other modifiers. A query is at most 8 KiB with 64 values, a kick-off at most 64 queries. " +
	"A query using one is refused with 400 and an OperationOutcome naming the parameter, or, with Prefer: handling=lenient, " +
	"its type is exported unfiltered (a superset, never a subset) and a warning OperationOutcome is added to the manifest's error files."

// conformance holds the documents ready to serve.
type conformance struct {
	capability, exportOp, bulkExportOp []byte
	// capabilityGzip is capability gzipped, for clients that accept it:
	// its searchParam lists make it ~200 KB, mostly repetition.
	capabilityGzip                 []byte
	patientExportOp, groupExportOp []byte
}

// resourceOperations are the operations of CapabilityStatement.rest.resource
// entries (the names the SMART Bulk Data test suite looks for): the Patient-
// and Group-level exports.
var resourceOperations = map[string]string{
	"Patient": `{"name":"patient-export","definition":"http://hl7.org/fhir/uv/bulkdata/OperationDefinition/patient-export",` +
		`"documentation":"HL7 Bulk Data Access Patient-level export, [base]/Patient/$export: every Patient and its compartment, ` +
		`or those named in patient. See [base]/OperationDefinition/patient-export."}`,
	"Group": `{"name":"group-export","definition":"http://hl7.org/fhir/uv/bulkdata/OperationDefinition/group-export",` +
		`"documentation":"HL7 Bulk Data Access Group-level export, [base]/Group/[id]/$export: the Group's member Patients and their ` +
		`compartments. See [base]/OperationDefinition/group-export."}`,
}

// loadConformance reads the documents; tokenURL is "" when auth is off.
func loadConformance(base, version, tokenURL string) (conformance, error) {
	read := func(name string) ([]byte, error) {
		b, err := fhirFiles.ReadFile("fhir/" + name)
		if err != nil {
			return nil, err
		}
		var out bytes.Buffer
		if err := json.Compact(&out, b); err != nil {
			return nil, fmt.Errorf("httpapi: embedded %s: %w", name, err)
		}
		return bytes.ReplaceAll(out.Bytes(), []byte(`"{{TYPEFILTER}}"`), []byte(jsonString(typeFilterDoc))), nil
	}
	var c conformance
	var err error
	if c.exportOp, err = read("operationdefinition-export.json"); err != nil {
		return c, err
	}
	if c.bulkExportOp, err = read("operationdefinition-bulk-export.json"); err != nil {
		return c, err
	}
	if c.patientExportOp, err = read("operationdefinition-patient-export.json"); err != nil {
		return c, err
	}
	if c.groupExportOp, err = read("operationdefinition-group-export.json"); err != nil {
		return c, err
	}
	cs, err := read("capabilitystatement.json")
	if err != nil {
		return c, err
	}
	var resources []string
	for _, t := range fhir.ResourceTypes() {
		entry := `{"type":` + strconv.Quote(t)
		if sp := searchParamSection(t); sp != "" {
			entry += `,"searchParam":[` + sp + `]`
		}
		if op, ok := resourceOperations[t]; ok {
			entry += `,"operation":[` + op + `]`
		}
		resources = append(resources, entry+`}`)
	}
	s := strings.NewReplacer(
		`"security":"{{SECURITY}}",`, securitySection(tokenURL),
		`"{{BASE}}"`, jsonString(base),
		`"{{VERSION}}"`, jsonString(version),
		`"{{RESOURCES}}"`, strings.Join(resources, ","),
	).Replace(string(cs))
	if !json.Valid([]byte(s)) {
		return c, fmt.Errorf("httpapi: CapabilityStatement is not valid JSON after filling it in")
	}
	c.capability = []byte(s)
	var zb bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&zb, gzip.BestCompression) // a valid level: no error
	_, _ = zw.Write(c.capability)                           // a bytes.Buffer does not fail
	if err := zw.Close(); err != nil {
		return c, fmt.Errorf("httpapi: gzip of the CapabilityStatement: %w", err)
	}
	c.capabilityGzip = zb.Bytes()
	return c, nil
}

// searchParamSection is the comma-separated searchParam entries of a
// CapabilityStatement.rest.resource (https://hl7.org/fhir/R4/capabilitystatement-definitions.html#CapabilityStatement.rest.resource.searchParam):
// the search parameters of typ that a _typeFilter query can use, the
// unsupported ones left out (they are refused by name at kick-off).
// bulkstream has no search interaction, so the documentation says where
// they apply.
func searchParamSection(typ string) string {
	var b strings.Builder
	for _, p := range fhirdefs.SearchParams(typ) {
		if p.Unsupported != "" {
			continue
		}
		if b.Len() > 0 {
			b.WriteByte(',')
		}
		b.WriteString(`{"name":` + jsonString(p.Code))
		if def := searchParamDefinition(p); def != "" {
			b.WriteString(`,"definition":` + jsonString(def))
		}
		b.WriteString(`,"type":` + jsonString(p.Type) + `,"documentation":"usable in _typeFilter"}`)
	}
	return b.String()
}

// securitySection is CapabilityStatement.rest.security
// (https://hl7.org/fhir/R4/capabilitystatement.html) with a trailing comma,
// or "" without auth: the SMART-on-FHIR service coding and the OAuth URIs
// extension with the token endpoint, which the SMART Bulk Data test suite
// (BDT, github.com/smart-on-fhir/bulk-data-tests) and older clients look
// for (SMART 2.x prefers .well-known/smart-configuration,
// https://hl7.org/fhir/smart-app-launch/conformance.html).
func securitySection(tokenURL string) string {
	if tokenURL == "" {
		return ""
	}
	return `"security":{"extension":[{"url":"http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris",` +
		`"extension":[{"url":"token","valueUri":` + jsonString(tokenURL) + `}]}],` +
		`"service":[{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/restful-security-service",` +
		`"code":"SMART-on-FHIR","display":"SMART-on-FHIR"}],"text":"OAuth2 using SMART Backend Services ` +
		`(client_credentials with a private_key_jwt assertion)"}],` +
		`"description":"Every $export, status, cancel and file request needs a bearer access token from the token endpoint; ` +
		`jobs are visible only to the client that started them."},`
}

func jsonString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

// metadata serves GET [base]/metadata, readable without a token (clients
// and BDT read it before they have one), gzipped when Accept-Encoding
// allows it (compressed once, in New).
// _format may ask for JSON under any of its names; anything else is 406.
func (a *api) metadata(w http.ResponseWriter, r *http.Request) {
	if f := r.URL.Query().Get("_format"); f != "" {
		switch strings.ToLower(strings.TrimSpace(f)) {
		case "json", "application/json", "application/fhir+json", "application/json+fhir":
		default:
			a.respondError(w, r, &httpError{status: http.StatusNotAcceptable, code: "not-supported",
				diag: "_format " + strconv.Quote(truncate(f, 100)) + " is not supported; this server speaks JSON only"})
			return
		}
	}
	w.Header().Add("Vary", "Accept-Encoding")
	if acceptsGzip(r.Header.Values("Accept-Encoding")) {
		w.Header().Set("Content-Encoding", "gzip")
		a.serveDoc(func() []byte { return a.docs.capabilityGzip })(w, r)
		return
	}
	a.serveDoc(func() []byte { return a.docs.capability })(w, r)
}

// serveDoc serves a precomputed FHIR resource, its Content-Type
// negotiated as every FHIR resource's (fhirContentType).
func (a *api) serveDoc(doc func() []byte) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		b := doc()
		h := w.Header()
		setFHIRContentType(h, r)
		h.Set("Content-Length", strconv.Itoa(len(b)))
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write(b)
	}
}

// searchParamDefinition is the canonical URL of a search parameter's
// SearchParameter resource (http://hl7.org/fhir/SearchParameter/<id>),
// or "" when the table does not know its id.
func searchParamDefinition(p fhirdefs.SearchParam) string {
	return ""
}
