package main

import (
	"bytes"
	"compress/gzip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bulkstream/bulkstream/ingest"
	"github.com/bulkstream/bulkstream/ingest/ingesttest"
)

func TestPublishCommand(t *testing.T) {
	s, _, js := ingesttest.RunJetStream(t)
	ctx := t.Context()
	if err := ingest.EnsureStreams(ctx, js, ingest.Config{}); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	plain := filepath.Join(dir, "a.ndjson")
	if err := os.WriteFile(plain, []byte(`{"resourceType":"Patient","id":"p1"}
{"resourceType":"Patient","id":"p2"
{"resourceType":"Observation","id":"o1","status":"final"}

`), 0o644); err != nil {
		t.Fatal(err)
	}
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write([]byte(`{"resourceType":"Patient","id":"p3"}` + "\n" + `{"resourceType":"Patient","id":"p4"}`))
	zw.Close()
	gzPath := filepath.Join(dir, "b.ndjson.gz")
	if err := os.WriteFile(gzPath, gz.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	stdin := strings.NewReader(`{"resourceType":"Patient","id":"p5"}` + "\n")

	var stdout, stderr bytes.Buffer
	err := runPublish(ctx, []string{"--nats-url", s.ClientURL(), plain, gzPath, "-"}, stdin, &stdout, &stderr)
	if err == nil || !strings.Contains(err.Error(), "1 lines rejected") {
		t.Errorf("got error %v, want 1 line rejected", err)
	}
	out := stdout.String()
	for _, want := range []string{"published 5 events", "0 failed", "1 lines rejected", "a.ndjson:2: not_json"} {
		if !strings.Contains(out, want) {
			t.Errorf("summary %q does not contain %q", out, want)
		}
	}
	st, err := js.Stream(ctx, ingest.DefaultStream)
	if err != nil {
		t.Fatal(err)
	}
	if n := st.CachedInfo().State.Msgs; n != 5 {
		t.Errorf("stream holds %d messages, want 5", n)
	}

	// Deletes.
	stdout.Reset()
	stdin = strings.NewReader("Patient/p1\nPatient/p.2\nnot-a-delete\n")
	err = runPublish(ctx, []string{"--nats-url", s.ClientURL(), "--delete"}, stdin, &stdout, &stderr)
	if err == nil || !strings.Contains(stdout.String(), "published 2 events") || !strings.Contains(stdout.String(), "stdin:3: bad_line") {
		t.Errorf("deletes: got %v, summary %q", err, stdout.String())
	}
	st, err = js.Stream(ctx, ingest.DefaultStream)
	if err != nil {
		t.Fatal(err)
	}
	if n := st.CachedInfo().State.Msgs; n != 7 {
		t.Errorf("stream holds %d messages, want 7", n)
	}
	m, err := st.GetMsg(ctx, 7)
	if err != nil {
		t.Fatal(err)
	}
	if m.Subject != "fhir.Patient.p%2E2" || m.Header.Get(ingest.HeaderOp) != ingest.OpDelete {
		t.Errorf("delete published as %s %v", m.Subject, m.Header)
	}

	// A clean run exits without error.
	stdout.Reset()
	stdin = strings.NewReader(`{"resourceType":"Patient","id":"p9"}`)
	if err := runPublish(ctx, []string{"--nats-url", s.ClientURL()}, stdin, &stdout, &stderr); err != nil {
		t.Errorf("clean run: %v (%s)", err, stdout.String())
	}
	if err := runPublish(ctx, []string{"--nats-url", s.ClientURL(), filepath.Join(dir, "missing")}, stdin, &stdout, &stderr); err == nil {
		t.Error("a missing file was accepted")
	}
}
