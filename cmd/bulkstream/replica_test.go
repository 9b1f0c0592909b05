package main

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
)

// TestServeReplicaID: with --replica-id, serve consumes through its own
// durable consumer (bulkstream-<id>) and every bulkstream metric carries a
// replica label (the dashboard's selector), build_info included.
func TestServeReplicaID(t *testing.T) {
	ns := runNATS(t)
	p := start(t, "serve", "--nats-url", ns.ClientURL(), "--data-dir", t.TempDir(), "--listen", anyPort,
		"--replica-id", "r1", "--job-store", "kv", "--file-store", "objectstore")
	addr := p.serving(t).HTTP
	waitHealthy(t, addr)

	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	unlabelled := 0
	for line := range strings.Lines(string(body)) {
		if !strings.HasPrefix(line, "bulkstream_") {
			continue
		}
		if !strings.Contains(line, `replica="r1"`) {
			unlabelled++
			t.Logf("no replica label: %s", strings.TrimSpace(line))
		}
	}
	if unlabelled > 0 || !strings.Contains(string(body), "bulkstream_build_info{") || !strings.Contains(string(body), "bulkstream_export_jobs{") {
		t.Errorf("%d bulkstream series without replica=\"r1\" (or build_info / export_jobs missing)", unlabelled)
	}

	resp, err = http.Get("http://" + addr + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	var ready map[string]any
	err = json.NewDecoder(resp.Body).Decode(&ready)
	resp.Body.Close()
	if _, ok := ready["ingest_lag_seconds"].(float64); err != nil || ready["replica"] != "r1" || !ok {
		t.Errorf("/readyz = %v (%v), want the replica and the ingest lag", ready, err)
	}

	_, js := connectJS(t, ns.ClientURL())
	if _, err := js.Consumer(t.Context(), "FHIR", "bulkstream-r1"); err != nil {
		t.Errorf("consumer bulkstream-r1: %v", err)
	}
	if _, err := js.KeyValue(t.Context(), "bulkstream_jobs"); err != nil {
		t.Errorf("KV bucket bulkstream_jobs: %v", err)
	}
	if _, err := js.ObjectStore(t.Context(), "bulkstream_files"); err != nil {
		t.Errorf("Object Store bucket bulkstream_files: %v", err)
	}
	p.stop(t)
}
