package main

import (
	"io"
	"net/http"
	"testing"
	"time"
)

// TestPreferWaitThroughServe: serve's own wiring passes a status request's
// Prefer: wait (https://www.rfc-editor.org/rfc/rfc7240#section-4.3) on to
// the export manager, so the first poll is held until the job is done and
// answers 200 with the manifest (without the wait, the first poll always
// answers 202).
func TestPreferWaitThroughServe(t *testing.T) {
	s := startServer(t)
	if err := s.pub.Upsert(t.Context(), []byte(`{"resourceType":"Patient","id":"p1"}`)); err != nil {
		t.Fatal(err)
	}
	status := kickoffExport(t, http.DefaultClient, s.base, "")
	req, err := http.NewRequest("GET", status, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Prefer", "wait=20")
	start := time.Now()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("first poll with Prefer: wait=20 after %v: %d (Retry-After %q) %s; want 200 with the manifest",
			time.Since(start).Round(time.Millisecond), resp.StatusCode, resp.Header.Get("Retry-After"), body)
	}
}
