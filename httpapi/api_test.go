package httpapi

import (
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"
)

func TestHealthAndReadiness(t *testing.T) {
	var natsErr error
	h := New(Config{
		Metrics: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("m 1\n")) }),
		Checks:  map[string]Readiness{"nats": ReadinessFunc(func() error { return natsErr })},
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
	if code, body := get("/readyz"); code != 200 || body["status"] != "ready" {
		t.Errorf("/readyz = %d %v, want 200 ready", code, body)
	}
	natsErr = errors.New("disconnected")
	code, body := get("/readyz")
	if code != 503 {
		t.Errorf("/readyz with nats down = %d, want 503", code)
	}
	if reasons, _ := body["reasons"].(map[string]any); reasons["nats"] != "disconnected" {
		t.Errorf("/readyz reasons = %v, want nats: disconnected", body["reasons"])
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("POST", "/healthz", nil))
	if rec.Code != http.StatusMethodNotAllowed {
		t.Errorf("POST /healthz = %d, want 405", rec.Code)
	}
}
