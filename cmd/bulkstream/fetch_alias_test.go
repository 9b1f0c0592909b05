package main

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// fakeBulkServer answers a kick-off with a job that is complete at the
// first poll, whose manifest lists one Patient file of two lines.
func fakeBulkServer(t *testing.T) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		base := "http://" + r.Host + "/fhir"
		switch {
		case strings.HasSuffix(r.URL.Path, "/$export"):
			w.Header().Set("Content-Location", base+"/status/1")
			w.WriteHeader(http.StatusAccepted)
		case r.URL.Path == "/fhir/status/1" && r.Method == http.MethodGet:
			w.Header().Set("Content-Type", "application/json")
			w.Write([]byte(`{"transactionTime":"2026-01-02T03:04:05Z","request":"` + base + `/$export","requiresAccessToken":false,` +
				`"output":[{"type":"Patient","url":"` + base + `/files/p.ndjson","count":2}],"deleted":[],"error":[]}`))
		case r.URL.Path == "/fhir/status/1" && r.Method == http.MethodDelete:
			w.WriteHeader(http.StatusAccepted)
		case r.URL.Path == "/fhir/files/p.ndjson":
			w.Header().Set("Content-Type", "application/fhir+ndjson")
			w.Write([]byte(`{"resourceType":"Patient","id":"a"}` + "\n" + `{"resourceType":"Patient","id":"b"}` + "\n"))
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(srv.Close)
	return srv
}

// TestExportAliasWarns: the old name of fetch, export, still runs the
// whole command (same flags, same files and summary) and prints a
// one-line deprecation note naming fetch to stderr; fetch prints none.
func TestExportAliasWarns(t *testing.T) {
	srv := fakeBulkServer(t)
	for _, name := range []string{"fetch", "export"} {
		t.Run(name, func(t *testing.T) {
			out := t.TempDir()
			var stdout, stderr bytes.Buffer
			err := run(t.Context(), []string{name, "--url", srv.URL + "/fhir", "--out", out}, nil, &stdout, &stderr)
			t.Logf("stderr:\n%s", stderr.String())
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(stdout.String(), "transactionTime 2026-01-02T03:04:05Z") {
				t.Errorf("summary lacks the transactionTime:\n%s", stdout.String())
			}
			if b, err := os.ReadFile(filepath.Join(out, "Patient.1.ndjson")); err != nil || bytes.Count(b, []byte("\n")) != 2 {
				t.Errorf("Patient.1.ndjson in --out: %v, %q; want the 2 lines served", err, b)
			}
			var notes []string
			for l := range strings.Lines(stderr.String()) {
				if strings.Contains(l, "deprecated") {
					notes = append(notes, l)
				}
			}
			switch {
			case name == "fetch" && len(notes) > 0:
				t.Errorf("fetch warns: %q", notes)
			case name == "export" && (len(notes) != 1 || !strings.Contains(notes[0], `"bulkstream fetch"`)):
				t.Errorf("export: deprecation lines %q, want one naming bulkstream fetch", notes)
			}
		})
	}
}

// TestFetchConfigPollMin: the poll floor is a field of the command's
// configuration, checked before anything runs.
func TestFetchConfigPollMin(t *testing.T) {
	srv := fakeBulkServer(t)
	args := []string{"--url", srv.URL + "/fhir", "--out", t.TempDir()}
	err := runFetch(t.Context(), args, &bytes.Buffer{}, &bytes.Buffer{}, fetchConfig{})
	if err == nil || !strings.Contains(err.Error(), "PollMin") {
		t.Errorf("PollMin 0: err = %v, want one naming PollMin", err)
	}
	if err := runFetch(t.Context(), args, &bytes.Buffer{}, &bytes.Buffer{}, fetchConfig{PollMin: 10 * time.Millisecond}); err != nil {
		t.Errorf("PollMin 10ms: %v", err)
	}
}
