package httpapi

import (
	"bytes"
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/bulkstream/bulkstream/export"
)

// TestKickoffAccept: the IG's kick-off supports only application/fhir+json
// (https://hl7.org/fhir/uv/bulkdata/export.html, "Headers"). Every Accept
// that allows it (q > 0, directly or through a wildcard, RFC 9110 section
// 12.5.1) starts a job; every other one, application/json alone included,
// is a 400 OperationOutcome naming the fix, lenient or not.
func TestKickoffAccept(t *testing.T) {
	tests := []struct {
		accept []string // nil: no Accept header
		prefer string   // "" means respond-async
		post   bool
		want   int
		code   string // issue code of a refusal
		json   bool   // the refusal is application/json: Accept prefers it
	}{
		{accept: []string{"application/fhir+json"}, want: 202},
		{accept: []string{"application/fhir+json; fhirVersion=4.0"}, want: 202},
		{accept: []string{"application/fhir+json;q=0.9"}, want: 202},
		{accept: []string{"APPLICATION/FHIR+JSON"}, want: 202},
		{accept: []string{"*/*"}, want: 202},
		{accept: []string{"*/*;q=0.1"}, want: 202},
		{accept: []string{"application/*"}, want: 202},
		{accept: []string{"application/json, application/fhir+json;q=0.5"}, want: 202},
		{accept: []string{"text/html, application/fhir+json; charset=utf-8; q=0.8"}, want: 202},
		{accept: []string{"text/html", "application/fhir+json"}, want: 202},
		{accept: []string{"application/*;q=0, application/fhir+json"}, want: 202},
		{accept: []string{"application/json+fhir"}, want: 202}, // the DSTU2 spelling
		{accept: []string{"application/fhir+json"}, post: true, want: 202},

		{accept: nil, want: 400, code: "required"},
		{accept: []string{""}, want: 400, code: "required"},
		{accept: []string{" , "}, want: 400, code: "required"},
		{accept: []string{"application/json"}, want: 400, code: "not-supported"},
		{accept: []string{"application/json;q=1"}, want: 400, code: "not-supported"},
		{accept: []string{"application/json"}, post: true, want: 400, code: "not-supported"},
		{accept: []string{"application/json"}, prefer: "respond-async, handling=lenient", want: 400, code: "not-supported"},
		{accept: []string{"application/json", "text/html"}, want: 400, code: "not-supported"},
		{accept: []string{"text/html"}, want: 400, code: "not-supported"},
		{accept: []string{"application/fhir+json;q=0"}, want: 400, code: "not-supported"},
		{accept: []string{"application/fhir+json;q=0.000"}, want: 400, code: "not-supported"},
		{accept: []string{"application/fhir+json;q=abc"}, want: 400, code: "not-supported"},
		{accept: []string{"application/fhir+json;q=NaN"}, want: 400, code: "not-supported"},
		{accept: []string{"*/*, application/fhir+json;q=0"}, want: 400, code: "not-supported", json: true},
		{accept: []string{"application/*;q=0, */*"}, want: 400, code: "not-supported"},
		{accept: []string{"*/fhir+json"}, want: 400, code: "not-supported"},
		{accept: []string{"fhir+json"}, want: 400, code: "not-supported"},
	}
	for _, tt := range tests {
		name := strings.Join(tt.accept, " | ")
		if tt.accept == nil {
			name = "(none)"
		}
		if tt.post {
			name = "POST " + name
		}
		if tt.prefer != "" {
			name += " lenient"
		}
		t.Run(name, func(t *testing.T) {
			jobs := newFakeJobs()
			h := newTestHandler(t, jobs, nil)
			req := request{method: "GET", target: "/fhir/$export?_type=Patient", header: http.Header{"Prefer": {"respond-async"}}}
			if tt.post {
				req = request{method: "POST", target: "/fhir/$export", header: http.Header{"Prefer": {"respond-async"},
					"Content-Type": {"application/fhir+json"}}, body: `{"resourceType":"Parameters"}`}
			}
			if tt.prefer != "" {
				req.header.Set("Prefer", tt.prefer)
			}
			if tt.accept != nil {
				req.header["Accept"] = tt.accept
			}
			rec := serve(h, req)
			if tt.want == http.StatusAccepted {
				if rec.Code != http.StatusAccepted {
					t.Fatalf("status = %d, want 202 (%s)", rec.Code, rec.Body)
				}
				return
			}
			ct := contentTypeFHIR
			if tt.json || (tt.accept != nil && strings.HasPrefix(tt.accept[0], "application/json")) {
				ct = contentTypeJSON // the refusal itself is negotiated
			}
			oo := checkOutcomeAs(t, rec, ct, tt.want, "send Accept: application/fhir+json")
			if oo.Issue[0].Code != tt.code {
				t.Errorf("code = %q, want %q", oo.Issue[0].Code, tt.code)
			}
			if len(jobs.kickoffs) != 0 {
				t.Error("a job was started")
			}
		})
	}
}

// TestContentNegotiation: every FHIR resource served (OperationOutcomes
// of every kind, the CapabilityStatement, the OperationDefinitions) is
// application/json when Accept prefers application/json to
// application/fhir+json, and application/fhir+json otherwise, with the
// same body and Vary: Accept. The completion manifest is application/json
// whatever Accept says, as the IG specifies its complete status.
// Negotiating at all is for clients such as BDT's, which parse only
// bodies labelled application/json.
func TestContentNegotiation(t *testing.T) {
	jobs := newFakeJobs()
	jobs.statuses["running"] = export.Status{State: export.Running}
	jobs.statuses["failed"] = export.Status{State: export.Failed, Error: "disk full"}
	jobs.statuses["done"] = export.Status{State: export.Completed, Manifest: &export.Manifest{
		TransactionTime: "2026-11-26T17:58:41Z", Request: testPublicURL + "/fhir/$export"}}
	jobs.kickoffErr = &export.RequestError{Param: "_typeFilter", Code: "not-supported", Diagnostics: "_typeFilter is not supported yet"}
	h := newTestHandler(t, jobs, nil)

	routes := []struct {
		name   string
		req    request
		status int
	}{
		{"kick-off error", request{method: "GET", target: "/fhir/$export?_type=Patient"}, 400}, // no Prefer
		{"kick-off bad parameter", request{method: "GET", target: "/fhir/$export?_type=Patient&_typeFilter=x",
			header: http.Header{"Prefer": {"respond-async"}}}, 400},
		{"status 404", request{method: "GET", target: "/fhir/bulkstatus/nope"}, 404},
		{"status failed", request{method: "GET", target: "/fhir/bulkstatus/failed"}, 500},
		{"cancel 404", request{method: "DELETE", target: "/fhir/bulkstatus/nope"}, 404},
		{"file 404", request{method: "GET", target: "/fhir/bulkfiles/nope/Patient-1.ndjson"}, 404},
		{"unknown route", request{method: "GET", target: "/fhir/Patient/1"}, 404},
		{"method not allowed", request{method: "PUT", target: "/fhir/metadata"}, 405},
		{"metadata", request{method: "GET", target: "/fhir/metadata"}, 200},
		{"metadata _format=json", request{method: "GET", target: "/fhir/metadata?_format=json"}, 200},
		{"OperationDefinition", request{method: "GET", target: "/fhir/OperationDefinition/export"}, 200},
	}
	accepts := []struct {
		accept []string // nil: none
		want   string
	}{
		{[]string{"application/json"}, contentTypeJSON},
		{[]string{"application/fhir+json"}, contentTypeFHIR},
		{[]string{"application/json, application/fhir+json;q=0.5"}, contentTypeJSON},
		{[]string{"application/fhir+json;q=0.5", "application/json"}, contentTypeJSON},
		{[]string{"*/*"}, contentTypeFHIR},
		{nil, contentTypeFHIR},
		{[]string{"application/*"}, contentTypeFHIR},
		{[]string{"application/fhir+json, application/json"}, contentTypeFHIR}, // a tie
		{[]string{"application/json;q=0.5, application/fhir+json"}, contentTypeFHIR},
		{[]string{"Application/JSON"}, contentTypeJSON},
		{[]string{"application/json; charset=utf-8"}, contentTypeJSON},
		{[]string{"application/json, */*;q=0.1"}, contentTypeJSON},
		{[]string{"text/html"}, contentTypeFHIR}, // nothing JSON acceptable: the default
		{[]string{"application/json;q=0"}, contentTypeFHIR},
	}
	for _, rt := range routes {
		t.Run(rt.name, func(t *testing.T) {
			var bodies [][]byte
			for _, ac := range accepts {
				req := rt.req
				req.header = req.header.Clone()
				if req.header == nil {
					req.header = http.Header{}
				}
				if ac.accept != nil {
					req.header["Accept"] = ac.accept
				}
				rec := serve(h, req)
				// A kick-off whose Accept refuses application/fhir+json is
				// refused for that first (TestKickoffAccept); same status.
				if rec.Code != rt.status {
					t.Errorf("Accept %q: status %d, want %d (%s)", ac.accept, rec.Code, rt.status, rec.Body)
				}
				if ct := rec.Header().Get("Content-Type"); ct != ac.want {
					t.Errorf("Accept %q: Content-Type %q, want %q", ac.accept, ct, ac.want)
				}
				if !slices.Contains(rec.Header().Values("Vary"), "Accept") {
					t.Errorf("Accept %q: Vary %q, want Accept", ac.accept, rec.Header().Values("Vary"))
				}
				var doc struct{ ResourceType string }
				if err := json.Unmarshal(rec.Body.Bytes(), &doc); err != nil || doc.ResourceType == "" {
					t.Errorf("Accept %q: body is not a FHIR resource (%v): %s", ac.accept, err, rec.Body)
				}
				if !strings.HasPrefix(rt.name, "kick-off") { // there the Accept may change the refusal
					bodies = append(bodies, rec.Body.Bytes())
				}
			}
			for i, b := range bodies {
				if !bytes.Equal(b, bodies[0]) {
					t.Errorf("Accept %q: body differs from Accept %q's:\n%s\n%s", accepts[i].accept, accepts[0].accept, b, bodies[0])
				}
			}
		})
	}

	t.Run("manifest", func(t *testing.T) {
		for _, ac := range accepts {
			req := request{method: "GET", target: "/fhir/bulkstatus/done", header: http.Header{}}
			if ac.accept != nil {
				req.header["Accept"] = ac.accept
			}
			rec := serve(h, req)
			if rec.Code != http.StatusOK || rec.Header().Get("Content-Type") != contentTypeJSON {
				t.Errorf("Accept %q: %d %q, want 200 application/json", ac.accept, rec.Code, rec.Header().Get("Content-Type"))
			}
		}
	})
}
