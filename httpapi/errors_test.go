package httpapi

import (
	"errors"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/bulkstream/bulkstream/export"
)

// TestErrorResponses walks every refusal: each is an OperationOutcome
// with the right status, checked against testdata/<name>.golden.
//
// Where the IG leaves room the more precise 4xx is chosen: a POST body
// with the wrong Content-Type is 415 and one over the cap 413, not 400,
// since every conformance suite accepts any 4xx with an OperationOutcome.
// The IG lets a server either refuse a kick-off without Accept or without
// Prefer: respond-async, or assume them; BDT
// (github.com/smart-on-fhir/bulk-data-tests) wants a 4xx, so both are
// refused.
func TestErrorResponses(t *testing.T) {
	with := func(h http.Header, kv ...string) http.Header {
		h = h.Clone()
		for i := 0; i < len(kv); i += 2 {
			if kv[i+1] == "" {
				h.Del(kv[i])
			} else {
				h.Set(kv[i], kv[i+1])
			}
		}
		return h
	}
	tests := []struct {
		name       string
		req        request
		kickoffErr error
		failed     bool  // job "failed" exists
		statusErr  error // Status fails with it
		status     int
		diag       string
		code       string
		expression string
		header     map[string]string
	}{
		{name: "accept-missing", req: request{method: "GET", target: "/fhir/$export", header: with(kickoffHeaders(), "Accept", "")},
			status: 400, code: "required", diag: "Accept header is required"},
		{name: "accept-unacceptable", req: request{method: "GET", target: "/fhir/$export", header: with(kickoffHeaders(), "Accept", "text/html, application/xml")},
			status: 400, code: "not-supported", diag: "text/html, application/xml is not supported: a kick-off answers only in application/fhir+json"},
		{name: "accept-q0", req: request{method: "GET", target: "/fhir/$export", header: with(kickoffHeaders(), "Accept", "application/fhir+json;q=0")},
			status: 400, diag: "send Accept: application/fhir+json"},
		{name: "prefer-missing", req: request{method: "GET", target: "/fhir/$export", header: with(kickoffHeaders(), "Prefer", "")},
			status: 400, code: "required", diag: "respond-async"},
		{name: "prefer-without-async", req: request{method: "GET", target: "/fhir/$export", header: with(kickoffHeaders(), "Prefer", "handling=lenient")},
			status: 400, diag: "respond-async"},
		{name: "query-bad-escape", req: request{method: "GET", target: "/fhir/$export?_type=%zz", header: kickoffHeaders()},
			status: 400, diag: "bad escape", expression: "_type"},
		{name: "post-wrong-content-type", req: request{method: "POST", target: "/fhir/$export", header: with(postHeaders(), "Content-Type", "text/plain"), body: `{"resourceType":"Parameters"}`},
			status: 415, code: "not-supported", diag: `Content-Type "text/plain"`},
		{name: "post-no-content-type", req: request{method: "POST", target: "/fhir/$export", header: with(postHeaders(), "Content-Type", ""), body: `{"resourceType":"Parameters"}`},
			status: 415, diag: "Content-Type"},
		{name: "post-not-json", req: request{method: "POST", target: "/fhir/$export", header: postHeaders(), body: `resourceType=Parameters`},
			status: 400, code: "structure", diag: "must be a JSON FHIR Parameters resource"},
		{name: "post-not-parameters", req: request{method: "POST", target: "/fhir/$export", header: postHeaders(), body: `{"resourceType":"Patient","id":"p1"}`},
			status: 400, code: "invalid", diag: `resourceType "Parameters"`},
		{name: "post-parameter-not-array", req: request{method: "POST", target: "/fhir/$export", header: postHeaders(), body: `{"resourceType":"Parameters","parameter":{"name":"_type"}}`},
			status: 400, diag: "must be an array"},
		{name: "post-too-large", req: request{method: "POST", target: "/fhir/$export", header: postHeaders(),
			body: `{"resourceType":"Parameters","parameter":[{"name":"_type","valueString":"` + strings.Repeat("A", DefaultMaxBodyBytes) + `"}]}`},
			status: 413, code: "too-long", diag: "larger than the limit of 262144 bytes"},
		{name: "post-bad-value-type", req: request{method: "POST", target: "/fhir/$export", header: postHeaders(),
			body: `{"resourceType":"Parameters","parameter":[{"name":"_since","valueQuantity":{"value":1}}]}`},
			status: 400, diag: "valueQuantity is not a supported value type", expression: "_since"},
		{name: "post-value-wrong-json-type", req: request{method: "POST", target: "/fhir/$export", header: postHeaders(),
			body: `{"resourceType":"Parameters","parameter":[{"name":"_type","valueString":"Patient"},{"name":"_since","valueInstant":20250101}]}`},
			status: 400, diag: "parameter[1] (_since): valueInstant must be a JSON string", expression: "_since"},
		{name: "post-two-values", req: request{method: "POST", target: "/fhir/$export", header: postHeaders(),
			body: `{"resourceType":"Parameters","parameter":[{"name":"_type","valueString":"Patient","valueCode":"Patient"}]}`},
			status: 400, diag: "more than one value[x]", expression: "_type"},
		{name: "post-part", req: request{method: "POST", target: "/fhir/$export", header: postHeaders(),
			body: `{"resourceType":"Parameters","parameter":[{"name":"patient","part":[]}]}`},
			status: 400, code: "not-supported", diag: "part is not supported", expression: "patient"},
		{name: "post-no-name", req: request{method: "POST", target: "/fhir/$export", header: postHeaders(),
			body: `{"resourceType":"Parameters","parameter":[{"valueString":"Patient"}]}`},
			status: 400, code: "required", diag: "non-empty string name"},
		{name: "post-null-value", req: request{method: "POST", target: "/fhir/$export", header: postHeaders(),
			body: `{"resourceType":"Parameters","parameter":[{"name":"_type","valueString":null}]}`},
			status: 400, diag: "must not be null", expression: "_type"},
		{name: "post-query-string", req: request{method: "POST", target: "/fhir/$export?_since=2025-01-01T00:00:00Z", header: postHeaders(), body: `{"resourceType":"Parameters"}`},
			status: 400, diag: "Parameters body only"},
		{name: "request-error", req: request{method: "GET", target: "/fhir/$export?_outputFormat=text/html", header: kickoffHeaders()},
			kickoffErr: &export.RequestError{Param: "_outputFormat", Code: "not-supported", Diagnostics: "_outputFormat 'text/html' is not supported"},
			status:     400, code: "not-supported", diag: "text/html", expression: "_outputFormat"},
		{name: "too-many-jobs", req: request{method: "GET", target: "/fhir/$export", header: kickoffHeaders()},
			kickoffErr: &export.TooManyJobsError{RetryAfter: 2500 * time.Millisecond},
			status:     429, code: "throttled", diag: "too many", header: map[string]string{"Retry-After": "3"}},
		{name: "unavailable", req: request{method: "GET", target: "/fhir/$export", header: kickoffHeaders()},
			kickoffErr: &export.UnavailableError{Reason: "low disk", RetryAfter: 0},
			status:     503, code: "transient", diag: "low disk", header: map[string]string{"Retry-After": "1"}},
		{name: "manager-closed", req: request{method: "GET", target: "/fhir/$export", header: kickoffHeaders()},
			kickoffErr: export.ErrClosed, status: 503, code: "transient", diag: "shutting down", header: map[string]string{"Retry-After": "5"}},
		{name: "internal-error", req: request{method: "GET", target: "/fhir/$export", header: kickoffHeaders()},
			kickoffErr: errors.New("pebble: disk on fire"), status: 500, code: "exception", diag: "internal server error"},
		{name: "status-unknown", req: request{method: "GET", target: "/fhir/bulkstatus/nope"},
			status: 404, code: "not-found", diag: "no such export job"},
		{name: "status-failed", req: request{method: "GET", target: "/fhir/bulkstatus/failed"}, failed: true,
			status: 500, code: "processing", diag: "scan Observation: disk full"},
		// A poll that fails (not the job) is transient: the client retries it
		// (the IG asks for a transient-family code then).
		{name: "status-poll-error", req: request{method: "GET", target: "/fhir/bulkstatus/failed"}, failed: true,
			statusErr: errors.New("pebble: read job record: i/o error"), status: 500, code: "exception", diag: "internal server error"},
		{name: "cancel-unknown", req: request{method: "DELETE", target: "/fhir/bulkstatus/nope"},
			status: 404, code: "not-found", diag: "no such export job"},
		{name: "file-unknown", req: request{method: "GET", target: "/fhir/bulkfiles/job-1/Patient-9.ndjson"},
			status: 404, code: "not-found", diag: "no such export job or file"},
		{name: "file-dotdot", req: request{method: "GET", target: "/fhir/bulkfiles/job-1/.."},
			status: 404, code: "not-found", diag: "no such export job or file"},
		{name: "file-dotdot-escaped", req: request{method: "GET", target: "/fhir/bulkfiles/job-1/%2e%2e%5cetc"},
			status: 404, code: "not-found", diag: "no such export job or file"},
		{name: "route-unknown", req: request{method: "GET", target: "/fhir/Patient/123"},
			status: 404, code: "not-found", diag: "no route for GET /fhir/Patient/123"},
		{name: "method-not-allowed", req: request{method: "PUT", target: "/fhir/$export", header: kickoffHeaders()},
			status: 405, code: "not-supported", diag: "method PUT is not allowed", header: map[string]string{"Allow": "GET, OPTIONS, POST"}},
		// HEAD must not start a job.
		{name: "head-kickoff", req: request{method: "HEAD", target: "/fhir/$export", header: kickoffHeaders()},
			status: 405, code: "not-supported", diag: "method HEAD is not allowed", header: map[string]string{"Allow": "GET, OPTIONS, POST"}},
		{name: "post-status", req: request{method: "POST", target: "/fhir/bulkstatus/job-1"},
			status: 405, code: "not-supported", diag: "method POST is not allowed", header: map[string]string{"Allow": "DELETE, GET, HEAD, OPTIONS"}},
		// FHIR paths are case-sensitive, and a cleaned path is another URL:
		// 404, not a redirect to a route the client did not name.
		{name: "route-wrong-case", req: request{method: "GET", target: "/fhir/$Export", header: kickoffHeaders()},
			status: 404, code: "not-found", diag: "no route for GET /fhir/$Export"},
		{name: "route-double-slash", req: request{method: "GET", target: "/fhir//metadata"},
			status: 404, code: "not-found", diag: "no route for GET /fhir//metadata"},
		{name: "metadata-xml", req: request{method: "GET", target: "/fhir/metadata?_format=xml"},
			status: 406, code: "not-supported", diag: "JSON only"},
		{name: "file-range-unsatisfiable", req: request{method: "GET", target: "/fhir/bulkfiles/job-1/Patient-1.ndjson", header: http.Header{"Range": {"bytes=9999-"}}},
			status: 416, code: "value", diag: "invalid range", header: map[string]string{"Content-Range": "bytes */3"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			jobs := newFakeJobs()
			jobs.kickoffErr = tt.kickoffErr
			jobs.statusErr = tt.statusErr
			jobs.files["job-1/Patient-1.ndjson"] = []byte("{}\n")
			if tt.failed {
				jobs.statuses["failed"] = export.Status{State: export.Failed, Error: "scan Observation: disk full"}
			}
			rec := serve(newTestHandler(t, jobs, nil), tt.req)
			if tt.req.method == "HEAD" {
				// net/http drops a HEAD body; the recorder keeps it.
				if rec.Code != tt.status || rec.Header().Get("Allow") != tt.header["Allow"] {
					t.Errorf("HEAD: %d Allow %q, want %d %q", rec.Code, rec.Header().Get("Allow"), tt.status, tt.header["Allow"])
				}
			}
			oo := checkOutcome(t, rec, tt.status, tt.diag)
			iss := oo.Issue[0]
			if iss.Severity != "error" {
				t.Errorf("severity = %q, want error", iss.Severity)
			}
			if tt.code != "" && iss.Code != tt.code {
				t.Errorf("code = %q, want %q", iss.Code, tt.code)
			}
			if want := []string(nil); tt.expression != "" {
				want = []string{tt.expression}
				if !slices.Equal(iss.Expression, want) {
					t.Errorf("expression = %q, want %q", iss.Expression, want)
				}
			} else if iss.Expression != nil {
				t.Errorf("expression = %q, want none", iss.Expression)
			}
			for k, v := range tt.header {
				if got := rec.Header().Get(k); got != v {
					t.Errorf("%s = %q, want %q", k, got, v)
				}
			}
			if strings.HasPrefix(tt.name, "file-dotdot") && len(jobs.opened) > 0 {
				t.Errorf("OpenFile called with %q; a name with .. must be refused first", jobs.opened)
			}
			if tt.name != "post-too-large" {
				golden(t, "outcome-"+tt.name, rec.Body.Bytes())
			}
		})
	}
}
