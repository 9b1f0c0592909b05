package main

import (
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/bulkstream/bulkstream/httpapi"
	"github.com/bulkstream/bulkstream/internal/fhir"
)

// TestOversizedRequests sends oversized headers, URLs and bodies to a real
// serve: each is refused with its 4xx (an OperationOutcome wherever the
// handler, not net/http, answers), and the server keeps serving.
func TestOversizedRequests(t *testing.T) {
	s := startServer(t)
	kick := func(method, target, body string, hdr map[string]string) *http.Request {
		var r io.Reader
		if body != "" {
			r = strings.NewReader(body)
		}
		req, err := http.NewRequest(method, s.base+target, r)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Accept", "application/fhir+json")
		req.Header.Set("Prefer", "respond-async")
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		return req
	}
	manyHeaders := func(n int) map[string]string {
		h := map[string]string{}
		for i := range n {
			h["X-H"+strings.Repeat("a", i%50)+string(rune('a'+i%26))+strings.Repeat("b", i/1300)] = strings.Repeat("v", 100)
		}
		return h
	}
	params := func(n int) string { // a Parameters body of about n bytes
		return `{"resourceType":"Parameters","parameter":[{"name":"_type","valueString":"Patient` + strings.Repeat(",Patient", n/8) + `"}]}`
	}
	for _, tc := range []struct {
		name    string
		req     *http.Request
		status  int
		outcome bool // the body must be an OperationOutcome
	}{
		{"1 MiB header", kick("GET", "/$export", "", map[string]string{"X-Big": strings.Repeat("x", 1<<20)}), 431, false},
		// net/http allows 4 KiB over MaxHeaderBytes.
		{"header past MaxHeaderBytes", kick("GET", "/$export", "", map[string]string{"X-Big": strings.Repeat("x", maxHeaderBytes+4096)}), 431, false},
		{"many headers", kick("GET", "/$export", "", manyHeaders(5000)), 431, false},
		{"1 MiB token", kick("GET", "/$export", "", map[string]string{"Authorization": "Bearer " + strings.Repeat("t", 1<<20)}), 431, false},
		{"100 KB URL", kick("GET", "/$export?_type="+strings.Repeat("Patient,", 100<<10/8), "", nil), 414, true},
		{"URL just past MaxURLBytes", kick("GET", "/bulkstatus/"+strings.Repeat("a", httpapi.MaxURLBytes), "", nil), 414, true},
		{"100 KB status path", kick("GET", "/bulkstatus/"+strings.Repeat("a", 100<<10), "", nil), 414, true},
		{"100 KB file path", kick("GET", "/bulkfiles/x/"+strings.Repeat("a", 100<<10), "", nil), 414, true},
		{"16 MiB POST body", kick("POST", "/$export", params(16<<20), map[string]string{"Content-Type": "application/fhir+json"}), 413, true},
		{"2 MiB POST body", kick("POST", "/$export", params(2<<20), map[string]string{"Content-Type": "application/fhir+json"}), 413, true},
		{"300 KB POST body", kick("POST", "/$export", params(300<<10), map[string]string{"Content-Type": "application/fhir+json"}), 413, true},
		{"9 KB URL", kick("GET", "/$export?_type="+strings.Repeat("Patient,", 9<<10/8)+"Patient", "", nil), 414, true},
		// Long but legitimate: the limits are not hit.
		// The longest real requests: every R4 type, in the URL and in a
		// POST body padded to 200 KB.
		{"every type in the URL", kick("GET", "/$export?_type="+strings.Join(fhir.ResourceTypes(), ","), "", nil), 202, false},
		{"200 KB POST body", kick("POST", "/$export", `{"resourceType":"Parameters","parameter":[{"name":"_type","valueString":"`+
			strings.Join(fhir.ResourceTypes(), ",")+`"}]}`+strings.Repeat(" ", 200<<10), map[string]string{"Content-Type": "application/fhir+json"}), 202, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, err := http.DefaultClient.Do(tc.req)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d: %.300s", resp.StatusCode, tc.status, b)
			}
			if !tc.outcome {
				return
			}
			if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/fhir+json") {
				t.Errorf("Content-Type %q", ct)
			}
			if _, diag := outcomeIssue(t, tc.name, b); diag == "" {
				t.Errorf("an OperationOutcome without diagnostics: %.300s", b)
			}
		})
	}
	// Still serving.
	getOK(t, s.base+"/metadata")
}
