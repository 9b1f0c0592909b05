package httpapi

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/bulkstream/bulkstream/export"
	"github.com/bulkstream/bulkstream/internal/fhir"
)

// padTarget returns target grown to exactly n bytes with a trailing
// query parameter (or path characters when pathPad).
func padTarget(t *testing.T, target string, n int) string {
	t.Helper()
	sep := "&"
	if !strings.Contains(target, "?") {
		sep = "?"
	}
	target += sep + "pad="
	if len(target) > n {
		t.Fatalf("target %q is already longer than %d", target, n)
	}
	return target + strings.Repeat("x", n-len(target))
}

// TestRequestSizeLimits: every route that reads a request URL or body
// refuses one past its limit with an OperationOutcome (the token
// endpoint: an OAuth error) that names the limit, and takes one at the
// limit. The limits are literal here (8 KiB URL, 256 KiB kick-off body,
// 64 KiB token body) so that changing them is a decision a test sees.
func TestRequestSizeLimits(t *testing.T) {
	const urlLimit, bodyLimit, tokenLimit = 8192, 262144, 65536
	if MaxURLBytes != urlLimit || DefaultMaxBodyBytes != bodyLimit || maxTokenRequestBytes != tokenLimit {
		t.Fatalf("limits are %d, %d, %d; the README states %d, %d, %d", MaxURLBytes, DefaultMaxBodyBytes, maxTokenRequestBytes, urlLimit, bodyLimit, tokenLimit)
	}
	e := newAuthEnv(t)
	e.jobs.statuses["job-a"] = export.Status{State: export.Running}
	e.jobs.owners["job-a"] = "app1"
	e.jobs.files["job-a/Patient-1.ndjson"] = []byte("{}\n")
	tok := e.token(t, "app1", "system/*.rs")
	bearer := func(h http.Header) http.Header {
		h = h.Clone()
		if h == nil {
			h = http.Header{}
		}
		h.Set("Authorization", "Bearer "+tok)
		return h
	}

	// URLs, on every route.
	for _, rt := range []struct {
		method, target string
		header         http.Header
		body           string
		ok             int
	}{
		{"GET", "/fhir/$export?_type=Patient", bearer(kickoffHeaders()), "", http.StatusAccepted},
		{"GET", "/fhir/bulkstatus/job-a", bearer(nil), "", http.StatusAccepted},
		{"GET", "/fhir/bulkfiles/job-a/Patient-1.ndjson", bearer(nil), "", http.StatusOK},
		{"POST", "/fhir/auth/token", http.Header{"Content-Type": {formContentType}}, "grant_type=client_credentials", http.StatusBadRequest},
		{"GET", "/fhir/metadata", nil, "", http.StatusOK},
	} {
		at := serve(e.h, request{method: rt.method, target: padTarget(t, rt.target, urlLimit), header: rt.header, body: rt.body})
		if at.Code != rt.ok {
			t.Errorf("%s %s with a URL of %d bytes = %d, want %d (%s)", rt.method, rt.target, urlLimit, at.Code, rt.ok, at.Body)
		}
		over := serve(e.h, request{method: rt.method, target: padTarget(t, rt.target, urlLimit+1), header: rt.header, body: rt.body})
		checkOutcome(t, over, http.StatusRequestURITooLong, "longer than 8192")
	}
	if n := len(e.jobs.kickoffs); n != 1 {
		t.Errorf("%d kick-offs reached Jobs, want 1 (the one at the limit)", n)
	}
	// The longest GET a real client sends: every R4 type in _type.
	all := "/fhir/$export?_type=" + strings.Join(fhir.ResourceTypes(), ",") + "&_outputFormat=application%2Ffhir%2Bndjson&_since=2026-01-01T00:00:00Z"
	if rec := serve(e.h, request{method: "GET", target: all, header: bearer(kickoffHeaders())}); rec.Code != http.StatusAccepted {
		t.Errorf("kick-off of every type (%d bytes) = %d %s", len(all), rec.Code, rec.Body)
	}

	// A POST kick-off body: at the limit accepted, one byte over 413,
	// with and without a Content-Length.
	body := func(n int) string {
		b := `{"resourceType":"Parameters","parameter":[{"name":"_type","valueString":"Patient"}]}`
		return b + strings.Repeat(" ", n-len(b))
	}
	post := func(b string, chunked bool) *httptest.ResponseRecorder {
		r := httptest.NewRequest("POST", "/fhir/$export", strings.NewReader(b))
		for k, v := range bearer(postHeaders()) {
			r.Header[k] = v
		}
		if chunked {
			r.ContentLength = -1
			r.Body = io.NopCloser(strings.NewReader(b))
		}
		rec := httptest.NewRecorder()
		e.h.ServeHTTP(rec, r)
		return rec
	}
	for _, chunked := range []bool{false, true} {
		if rec := post(body(bodyLimit), chunked); rec.Code != http.StatusAccepted {
			t.Errorf("POST kick-off of %d bytes (chunked %v) = %d %s", bodyLimit, chunked, rec.Code, rec.Body)
		}
		rec := post(body(bodyLimit+1), chunked)
		oo := checkOutcome(t, rec, http.StatusRequestEntityTooLarge, "larger than the limit of 262144 bytes")
		if oo.Issue[0].Code != "too-long" {
			t.Errorf("413 issue code %q, want too-long", oo.Issue[0].Code)
		}
	}

	// The token endpoint: past 64 KiB it is 413 with an OAuth error
	// naming the limit; at it, the form is read (and refused as the
	// nonsense it is).
	form := func(n int) string {
		f := tokenForm("x", "system/*.rs").Encode() + "&pad="
		return f + strings.Repeat("p", n-len(f))
	}
	at := serve(e.h, request{method: "POST", target: "/fhir/auth/token", header: http.Header{"Content-Type": {formContentType}}, body: form(tokenLimit)})
	if at.Code != http.StatusUnauthorized {
		t.Errorf("token request of %d bytes = %d %s, want 401 (read, then refused)", tokenLimit, at.Code, at.Body)
	}
	over := serve(e.h, request{method: "POST", target: "/fhir/auth/token", header: http.Header{"Content-Type": {formContentType}}, body: form(tokenLimit + 1)})
	checkOAuthAnswer(t, over)
	if over.Code != http.StatusRequestEntityTooLarge || !strings.Contains(over.Body.String(), `"error":"invalid_request"`) ||
		!strings.Contains(over.Body.String(), "larger than the limit of 65536 bytes") {
		t.Errorf("token request of %d bytes = %d %s, want 413 invalid_request naming the limit", tokenLimit+1, over.Code, over.Body)
	}
}

// TestLargestKickoffFitsBodyLimit: the largest POST kick-off export's
// limits admit, written indented, one parameter per entry with the
// longest names, fits within DefaultMaxBodyBytes, so the body limit never
// refuses a request export would take.
func TestLargestKickoffFitsBodyLimit(t *testing.T) {
	longest := ""
	for _, typ := range fhir.ResourceTypes() {
		if len(typ) > len(longest) {
			longest = typ
		}
	}
	type param struct {
		Name        string `json:"name"`
		ValueString string `json:"valueString"`
	}
	var params []param
	for range export.MaxTypeEntries {
		params = append(params, param{"_type", longest})
	}
	for range export.MaxElementsEntries {
		params = append(params, param{"_elements", longest + "." + strings.Repeat("e", 63)})
	}
	for i := range export.MaxIgnored {
		params = append(params, param{fmt.Sprintf("ignored-%03d", i), strings.Repeat("v", 64)})
	}
	body, err := json.MarshalIndent(map[string]any{"resourceType": "Parameters", "parameter": params}, "", "    ")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("largest admissible kick-off body: %d bytes (limit %d)", len(body), DefaultMaxBodyBytes)
	if len(body) > DefaultMaxBodyBytes {
		t.Errorf("the largest admissible kick-off body is %d bytes, over the %d-byte limit", len(body), DefaultMaxBodyBytes)
	}
	jobs := newFakeJobs()
	h := newTestHandler(t, jobs, nil)
	hd := postHeaders()
	hd.Add("Prefer", "handling=lenient")
	if rec := serve(h, request{method: "POST", target: "/fhir/$export", header: hd, body: string(body)}); rec.Code != http.StatusAccepted {
		t.Fatalf("largest kick-off = %d %s", rec.Code, rec.Body)
	}
	if n := len(jobs.lastKickoff(t).Params); n != len(params) {
		t.Errorf("Jobs got %d parameters, want %d", n, len(params))
	}
}
