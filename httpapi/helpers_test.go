package httpapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/bulkstream/bulkstream/export"
	"github.com/bulkstream/bulkstream/index"
)

var update = flag.Bool("update", false, "update golden files in testdata/")

const testPublicURL = "http://127.0.0.1:8080"

// fakeJobs is a Jobs whose answers the test sets.
type fakeJobs struct {
	mu         sync.Mutex
	kickoffs   []export.Kickoff
	kickoffErr error
	// kickoff, when set, replaces the default (record, return "job-1").
	kickoff  func(ctx context.Context, k export.Kickoff) (string, error)
	statuses map[string]export.Status
	// statusErr, when set, is what Status returns for every id.
	statusErr error
	files     map[string][]byte // "id/name" → content
	digests   map[string]string // "id/name" → the file's Digest (none when absent)
	// openErr, when set, is what OpenFile returns for the owner's files.
	openErr error
	modTime time.Time
	opened  []string
	// owners maps a job id to the client that owns it ("" when absent):
	// Status, Cancel and OpenFile by anyone else are ErrNotFound.
	owners map[string]string
	// callers records the client of every Status, Cancel and OpenFile.
	callers []string
}

func newFakeJobs() *fakeJobs {
	return &fakeJobs{
		statuses: map[string]export.Status{},
		files:    map[string][]byte{},
		digests:  map[string]string{},
		owners:   map[string]string{},
		modTime:  time.Date(2026, 11, 26, 17, 58, 41, 0, time.UTC),
	}
}

func (f *fakeJobs) Kickoff(ctx context.Context, k export.Kickoff) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.kickoff != nil {
		return f.kickoff(ctx, k)
	}
	if f.kickoffErr != nil {
		return "", f.kickoffErr
	}
	f.kickoffs = append(f.kickoffs, k)
	return "job-1", nil
}

func (f *fakeJobs) Status(client, id string) (export.Status, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.callers = append(f.callers, client)
	if f.owners[id] != client {
		return export.Status{}, export.ErrNotFound
	}
	if f.statusErr != nil {
		return export.Status{}, f.statusErr
	}
	st, ok := f.statuses[id]
	if !ok {
		return export.Status{}, export.ErrNotFound
	}
	return st, nil
}

func (f *fakeJobs) Cancel(client, id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.callers = append(f.callers, client)
	if f.owners[id] != client {
		return export.ErrNotFound
	}
	if _, ok := f.statuses[id]; !ok {
		return export.ErrNotFound
	}
	delete(f.statuses, id)
	return nil
}

func (f *fakeJobs) OpenFile(client, id, name string) (export.File, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.callers = append(f.callers, client)
	if f.owners[id] != client {
		return nil, export.ErrNotFound
	}
	f.opened = append(f.opened, id+"/"+name)
	if f.openErr != nil {
		return nil, f.openErr
	}
	b, ok := f.files[id+"/"+name]
	if !ok {
		return nil, export.ErrNotFound
	}
	return &memFile{Reader: bytes.NewReader(b), mod: f.modTime, digest: f.digests[id+"/"+name]}, nil
}

func (f *fakeJobs) lastKickoff(t testing.TB) export.Kickoff {
	t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.kickoffs) == 0 {
		t.Fatal("Kickoff was not called")
	}
	return f.kickoffs[len(f.kickoffs)-1]
}

type memFile struct {
	*bytes.Reader
	mod    time.Time
	digest string
}

func (m *memFile) Close() error       { return nil }
func (m *memFile) ModTime() time.Time { return m.mod }
func (m *memFile) Digest() string     { return m.digest }

var _ export.File = (*memFile)(nil)
var _ Jobs = (*fakeJobs)(nil)

// The real manager must keep satisfying the interface this package needs.
var _ Jobs = (*export.Manager)(nil)

func newTestHandler(t testing.TB, jobs Jobs, reg prometheus.Registerer) http.Handler {
	t.Helper()
	return New(Config{Jobs: jobs, PublicURL: testPublicURL, Version: "1.2.3-test", Registerer: reg})
}

// request is one test request.
type request struct {
	method, target string
	header         http.Header
	body           string
}

// kickoffHeaders are the headers of a well-formed kick-off.
func kickoffHeaders() http.Header {
	return http.Header{"Accept": {"application/fhir+json"}, "Prefer": {"respond-async"}}
}

func postHeaders() http.Header {
	h := kickoffHeaders()
	h.Set("Content-Type", "application/fhir+json")
	return h
}

func serve(h http.Handler, req request) *httptest.ResponseRecorder {
	var body io.Reader
	if req.body != "" {
		body = strings.NewReader(req.body)
	}
	r := httptest.NewRequest(req.method, req.target, body)
	for k, vs := range req.header {
		for _, v := range vs {
			r.Header.Add(k, v)
		}
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, r)
	return rec
}

// checkOutcome asserts rec is an application/fhir+json OperationOutcome
// with one issue whose diagnostics contain diag.
func checkOutcome(t testing.TB, rec *httptest.ResponseRecorder, status int, diag string) outcome {
	t.Helper()
	return checkOutcomeAs(t, rec, contentTypeFHIR, status, diag)
}

// checkOutcomeAs is checkOutcome for an OperationOutcome served as
// contentType.
func checkOutcomeAs(t testing.TB, rec *httptest.ResponseRecorder, contentType string, status int, diag string) outcome {
	t.Helper()
	if rec.Code != status {
		t.Errorf("status = %d, want %d (body %s)", rec.Code, status, rec.Body)
	}
	if ct := rec.Header().Get("Content-Type"); ct != contentType {
		t.Errorf("Content-Type = %q, want %q", ct, contentType)
	}
	var oo outcome
	dec := json.NewDecoder(bytes.NewReader(rec.Body.Bytes()))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&oo); err != nil {
		t.Fatalf("body is not an OperationOutcome: %v\n%s", err, rec.Body)
	}
	if oo.ResourceType != "OperationOutcome" || len(oo.Issue) != 1 {
		t.Fatalf("body = %s, want an OperationOutcome with one issue", rec.Body)
	}
	iss := oo.Issue[0]
	if iss.Severity == "" || iss.Code == "" {
		t.Errorf("issue %+v lacks severity or code", iss)
	}
	if !strings.Contains(iss.Diagnostics, diag) {
		t.Errorf("diagnostics = %q, want it to contain %q", iss.Diagnostics, diag)
	}
	return oo
}

// golden compares got with testdata/name.golden, rewriting it under -update.
func golden(t testing.TB, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name+".golden")
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		t.Fatalf("%s missing: run go test -update", path)
	}
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs:\n got: %s\nwant: %s", path, got, want)
	}
}

// startManager starts a real export.Manager over x, with the stream head
// at head (so jobs need not wait), closed when the test ends.
func startManager(tb testing.TB, x *index.Index, head int) *export.Manager {
	tb.Helper()
	m, err := export.NewManager(export.Config{Dir: tb.TempDir(), MinFreeBytes: -1}, export.IndexSource(x), fixedHead(head), x)
	if err != nil {
		tb.Fatal(err)
	}
	if err := m.Start(tb.Context()); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if err := m.Close(context.Background()); err != nil {
			tb.Error(err)
		}
	})
	return m
}

// outcomeTypeOK reports whether an OperationOutcome answering a request
// with this Accept may have Content-Type ct: application/fhir+json, or
// application/json when the Accept names it, or names FHIR JSON (so that
// it can weigh FHIR JSON below what a wildcard gives plain JSON, as
// "application/fhir+json;q=0, */*" does; a malformed weight is 0).
func outcomeTypeOK(ct, accept string) bool {
	a := strings.ToLower(accept)
	return ct == contentTypeFHIR || (ct == contentTypeJSON &&
		(strings.Contains(a, "application/json") || strings.Contains(a, "fhir+json") || strings.Contains(a, "json+fhir")))
}
