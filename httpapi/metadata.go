package httpapi

import (
	"bytes"
	"embed"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"

	"github.com/bulkstream/bulkstream/internal/fhir"
)

// The conformance resources are JSON files so they can be reviewed as
// such. The CapabilityStatement has four placeholders, filled once in
// New: "{{BASE}}" (PublicURL + BasePath), "{{VERSION}}", the
// "{{RESOURCES}}" array element (one entry per FHIR R4 resource type,
// Patient and Group with their export operations) and
// the "security" member, which is the SMART security section when auth is
// on and removed when it is off.
//
//go:embed fhir/*.json
var fhirFiles embed.FS

// conformance holds the documents ready to serve.
type conformance struct {
	capability, exportOp, bulkExportOp []byte
	patientExportOp, groupExportOp     []byte
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
		return out.Bytes(), nil
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
	return c, nil
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
// and BDT read it before they have one).
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
