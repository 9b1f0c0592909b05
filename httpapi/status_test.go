package httpapi

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/bulkstream/bulkstream/export"
)

func TestStatusInProgress(t *testing.T) {
	jobs := newFakeJobs()
	jobs.statuses["j1"] = export.Status{State: export.Queued, RetryAfter: 0}
	jobs.statuses["j2"] = export.Status{State: export.Running, Progress: "\"scanning\r\nObservation " + strings.Repeat("x", 200), RetryAfter: 1500 * time.Millisecond}
	h := newTestHandler(t, jobs, nil)
	for id, want := range map[string]struct{ progress, retry string }{
		"j1": {"", "1"},
		"j2": {"scanning  Observation " + strings.Repeat("x", 99-len("scanning  Observation ")), "2"},
	} {
		rec := serve(h, request{method: "GET", target: "/fhir/bulkstatus/" + id})
		if rec.Code != http.StatusAccepted {
			t.Fatalf("%s: status = %d, want 202", id, rec.Code)
		}
		if got := rec.Header().Get("X-Progress"); got != want.progress || len(got) >= 100 {
			t.Errorf("%s: X-Progress = %q (len %d), want %q", id, got, len(got), want.progress)
		}
		if got := rec.Header().Get("Retry-After"); got != want.retry {
			t.Errorf("%s: Retry-After = %q, want %q", id, got, want.retry)
		}
	}
}

// TestStatusCompletedManifest: the manifest has only the IG's fields, and
// an item's count is left out when 0 (BDT wants it > 0 when present).
func TestStatusCompletedManifest(t *testing.T) {
	jobs := newFakeJobs()
	expires := time.Date(2026, 11, 28, 12, 0, 0, 0, time.FixedZone("X", 3600))
	jobs.statuses["job 1"] = export.Status{State: export.Completed, Expires: expires, Manifest: &export.Manifest{
		TransactionTime:     "2026-11-26T17:58:41.120000Z",
		Request:             testPublicURL + "/fhir/$export?_type=Patient,Observation&_since=2025-05-01T00%3A00%3A00Z",
		RequiresAccessToken: true,
		Output: []export.FileInfo{
			{Type: "Patient", Name: "Patient-1.ndjson", Count: 1200, Bytes: 99},
			{Type: "Observation", Name: "Observation-1.ndjson", Count: 50000, Bytes: 99},
		},
		Deleted: []export.FileInfo{{Type: "Bundle", Name: "deleted-1.ndjson", Count: 3}},
	}}
	jobs.statuses["empty"] = export.Status{State: export.Completed, Manifest: &export.Manifest{
		TransactionTime: "2026-11-26T17:58:41.120000Z", Request: testPublicURL + "/fhir/$export",
	}}
	h := newTestHandler(t, jobs, nil)

	rec := serve(h, request{method: "GET", target: "/fhir/bulkstatus/job%201"})
	if rec.Code != http.StatusOK {
		t.Fatalf("status = %d, want 200 (%s)", rec.Code, rec.Body)
	}
	if got := rec.Header().Get("Content-Type"); got != "application/json" {
		t.Errorf("Content-Type = %q, want application/json", got)
	}
	if got, want := rec.Header().Get("Expires"), "Sat, 28 Nov 2026 11:00:00 GMT"; got != want {
		t.Errorf("Expires = %q, want %q", got, want)
	}
	golden(t, "manifest", rec.Body.Bytes())

	rec = serve(h, request{method: "GET", target: "/fhir/bulkstatus/empty"})
	golden(t, "manifest-empty", rec.Body.Bytes())
	if rec.Header().Get("Expires") != "" {
		t.Errorf("Expires = %q for a zero time, want none", rec.Header().Get("Expires"))
	}
}

func TestCancel(t *testing.T) {
	jobs := newFakeJobs()
	jobs.statuses["j1"] = export.Status{State: export.Running}
	h := newTestHandler(t, jobs, nil)
	rec := serve(h, request{method: "DELETE", target: "/fhir/bulkstatus/j1", header: http.Header{"Accept": {"application/json"}}})
	if rec.Code != http.StatusAccepted {
		t.Fatalf("DELETE = %d, want 202", rec.Code)
	}
	oo := checkOutcomeAs(t, rec, contentTypeJSON, http.StatusAccepted, "cancelled")
	if oo.Issue[0].Severity != "information" {
		t.Errorf("severity = %q, want information", oo.Issue[0].Severity)
	}
	checkOutcome(t, serve(h, request{method: "GET", target: "/fhir/bulkstatus/j1"}), http.StatusNotFound, "no such export job")
	checkOutcome(t, serve(h, request{method: "DELETE", target: "/fhir/bulkstatus/j1"}), http.StatusNotFound, "no such export job")
}
