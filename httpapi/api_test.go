package httpapi

import (
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/bulkstream/bulkstream/export"
)

func TestHealthAndReadiness(t *testing.T) {
	var natsErr error
	h := New(Config{
		Metrics: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("m 1\n")) }),
		Checks:  map[string]Readiness{"nats": ReadinessFunc(func() error { return natsErr })},
		ReadyInfo: func() map[string]any {
			return map[string]any{"replica": "a", "ingest_lag_seconds": 1.5}
		},
	})
	get := func(path string) (int, map[string]any) {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("GET", path, nil))
		var body map[string]any
		if rec.Header().Get("Content-Type") == "application/json" {
			if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
				t.Fatalf("%s: %v", path, err)
			}
		}
		return rec.Code, body
	}
	if code, body := get("/healthz"); code != 200 || body["status"] != "ok" {
		t.Errorf("/healthz = %d %v, want 200 ok", code, body)
	}
	if code, _ := get("/metrics"); code != 200 {
		t.Errorf("/metrics = %d, want 200", code)
	}
	if code, body := get("/readyz"); code != 200 || body["status"] != "ready" || body["replica"] != "a" || body["ingest_lag_seconds"] != 1.5 {
		t.Errorf("/readyz = %d %v, want 200 ready with ReadyInfo's members", code, body)
	}
	natsErr = errors.New("disconnected")
	code, body := get("/readyz")
	if code != 503 {
		t.Errorf("/readyz with nats down = %d, want 503", code)
	}
	if reasons, _ := body["reasons"].(map[string]any); reasons["nats"] != "disconnected" {
		t.Errorf("/readyz reasons = %v, want nats: disconnected", body["reasons"])
	}
	if body["replica"] != "a" || body["ingest_lag_seconds"] != 1.5 {
		t.Errorf("/readyz not ready = %v, want ReadyInfo's members too", body)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("POST", "/healthz", nil))
	if rec.Code != http.StatusMethodNotAllowed {
		t.Errorf("POST /healthz = %d, want 405", rec.Code)
	}
}

// TestHEAD: every safe GET route answers HEAD with the GET's status and
// headers (RFC 9110 9.1); the kick-off does not (a HEAD must not start a
// job; see TestErrorResponses/head-kickoff).
func TestHEAD(t *testing.T) {
	jobs := newFakeJobs()
	jobs.statuses["j1"] = export.Status{State: export.Running, Progress: "scanning Patient", RetryAfter: time.Second}
	h := New(Config{Jobs: jobs, PublicURL: testPublicURL,
		Metrics: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("m 1\n")) })})
	srv := httptest.NewServer(h)
	defer srv.Close()
	for _, tt := range []struct {
		path   string
		status int
		header string // a header the GET sets
	}{
		{"/fhir/metadata", 200, "Content-Type"},
		{"/fhir/OperationDefinition/export", 200, "Content-Type"},
		{"/fhir/OperationDefinition/bulk-export", 200, "Content-Type"},
		{"/fhir/bulkstatus/j1", 202, "X-Progress"},
		{"/healthz", 200, "Content-Type"},
		{"/readyz", 200, "Content-Type"},
		{"/metrics", 200, "Content-Type"},
	} {
		resp, err := http.Head(srv.URL + tt.path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tt.status || resp.Header.Get(tt.header) == "" {
			t.Errorf("HEAD %s = %d, %s %q; want %d with %s", tt.path, resp.StatusCode, tt.header, resp.Header.Get(tt.header), tt.status, tt.header)
		}
	}
}
