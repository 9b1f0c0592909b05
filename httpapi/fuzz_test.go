package httpapi

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/bulkstream/bulkstream/export"
	"github.com/bulkstream/bulkstream/internal/fhir"
)

// parsingJobs runs the real export.ParseRequest on every kick-off.
type parsingJobs struct{ fakeJobs }

func (p *parsingJobs) Kickoff(ctx context.Context, k export.Kickoff) (string, error) {
	now := uint64(time.Date(2026, 11, 27, 0, 0, 0, 0, time.UTC).UnixMicro())
	if _, err := export.ParseRequest(k.Params, export.ParseOptions{Now: now, Lenient: k.Lenient, Level: k.Level}); err != nil {
		return "", err
	}
	return "job-1", nil
}

// FuzzKickoff throws query strings, bodies and header values at $export,
// Patient/$export and Group/[id]/$export (level picks one, group is the
// id): never a panic, never a 5xx, every refusal is an OperationOutcome,
// and a Group-level kick-off is accepted only for a FHIR id.
func FuzzKickoff(f *testing.F) {
	seeds := []struct {
		post                               bool
		query, body, accept, prefer, ctype string
	}{
		{false, "_type=Patient,Observation&_type=Condition", "", "application/fhir+json", "respond-async", ""},
		{false, "_since=2025-01-01T00:00:00+05:00&_outputFormat=ndjson", "", "*/*", "respond-async, handling=lenient", ""},
		{false, "_since=0000-60-01T30:70:80+05:00", "", "application/json", "respond-async", ""},
		{false, "_typeFilter=Patient%3Fstatus%3Dactive&includeAssociatedData=LatestProvenanceResources,RelevantProvenanceResources", "", "application/fhir+json", "respond-async,handling=lenient", ""},
		{false, "_elements=id&_elements=Patient.meta&%zz=1&=x&&a", "", "text/html", "", ""},
		{false, "", "", "", "respond-async", ""},
		{true, "", `{"resourceType":"Parameters","parameter":[{"name":"_type","valueString":"Patient"},{"name":"_since","valueInstant":"2025-01-01T00:00:00Z"},{"name":"patient","valueReference":{"reference":"Patient/1"}}]}`, "application/fhir+json", "respond-async", "application/fhir+json"},
		{true, "", `{"resourceType":"Parameters","parameter":[]}`, "application/fhir+json", "respond-async", "application/json"},
		{true, "", `{"resourceType":"Parameters","parameter":[{"name":"x","valueInteger":1e9},{"name":"y","valueBoolean":"true"}]}`, "*/*", "respond-async", "application/json; charset=utf-8"},
		{true, "", `{"resourceType":"Parameters","parameter":[null,1,"a",{"name":null}]}`, "*/*", "respond-async", "application/json"},
		{true, "a=b", `[]`, "*/*", "respond-async", "application/json"},
		{true, "", `{"resourceType":"Patient"}`, "*/*", "respond-async", "text/plain"},
		{true, "", "\xff\xfe{", "*/*", "respond-async", "application/fhir+json"},
		{false, "_type=" + strings.Repeat("A,", 100), "", `application/fhir+json; q="0,5", */*;q=0`, `handling="lenient, respond-async`, ""},
	}
	levelSeeds := []struct {
		post                               bool
		query, body, accept, prefer, ctype string
		level                              uint8
		group                              string
	}{
		{false, "patient=Patient%2Fp1,Patient%2Fp2&organizeOutputBy=Patient", "", "application/fhir+json", "respond-async", "", 1, ""},
		{true, "", `{"resourceType":"Parameters","parameter":[{"name":"patient","valueReference":{"reference":"Patient/1"}},{"name":"includeAssociatedData","valueCode":"_none"}]}`,
			"application/fhir+json", "respond-async", "application/fhir+json", 2, "g1"},
		{false, "includeAssociatedData=_none,RelevantProvenanceResources&patient=Group%2F1", "", "*/*", "respond-async,handling=lenient", "", 2, "a_b"},
		{false, "", "", "*/*", "respond-async", "", 2, "../x"},
		{false, "", "", "*/*", "respond-async", "", 2, ""},
	}
	for _, s := range seeds {
		f.Add(s.post, s.query, s.body, s.accept, s.prefer, s.ctype, uint8(0), "")
	}
	for _, s := range levelSeeds {
		f.Add(s.post, s.query, s.body, s.accept, s.prefer, s.ctype, s.level, s.group)
	}
	h := New(Config{Jobs: &parsingJobs{*newFakeJobs()}, PublicURL: testPublicURL, MaxBodyBytes: 64 << 10})
	f.Fuzz(func(t *testing.T, post bool, query, body, accept, prefer, ctype string, level uint8, group string) {
		method := http.MethodGet
		if post {
			method = http.MethodPost
		}
		path := []string{"/fhir/$export", "/fhir/Patient/$export", "/fhir/Group/" + group + "/$export"}[int(level)%3]
		r := httptest.NewRequest(method, "/fhir/$export", strings.NewReader(body))
		// The server unescapes the target: any bytes can reach Path.
		r.URL.Path, r.URL.RawPath = path, ""
		r.URL.RawQuery = query
		r.RequestURI = r.URL.EscapedPath() + "?" + query
		for k, v := range map[string]string{"Accept": accept, "Prefer": prefer, "Content-Type": ctype} {
			if v != "" {
				r.Header.Set(k, v)
			}
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, r)
		if rec.Code >= 500 {
			t.Fatalf("%s ?%q body %q: status %d: %s", method, query, body, rec.Code, rec.Body)
		}
		if rec.Code == http.StatusAccepted {
			if level%3 == 2 && !fhir.IsID(group) {
				t.Fatalf("Group/%q/$export accepted: not a FHIR id", group)
			}
			if !strings.HasPrefix(rec.Header().Get("Content-Location"), testPublicURL+"/fhir/bulkstatus/") {
				t.Fatalf("202 with Content-Location %q", rec.Header().Get("Content-Location"))
			}
			return
		}
		if ct := rec.Header().Get("Content-Type"); !outcomeTypeOK(ct, accept) {
			t.Fatalf("status %d with Content-Type %q for Accept %q", rec.Code, ct, accept)
		}
		var oo outcome
		dec := json.NewDecoder(bytes.NewReader(rec.Body.Bytes()))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&oo); err != nil || oo.ResourceType != "OperationOutcome" || len(oo.Issue) == 0 ||
			oo.Issue[0].Severity == "" || oo.Issue[0].Code == "" || oo.Issue[0].Diagnostics == "" {
			t.Fatalf("status %d body is not an OperationOutcome (%v): %s", rec.Code, err, rec.Body)
		}
	})
}
