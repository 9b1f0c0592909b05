package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/bulkstream/bulkstream/internal/synth"
)

// runExportCmd runs `bulkstream fetch args…` (the Bulk Data client) and
// returns its stdout.
func runExportCmd(t *testing.T, args ...string) (string, error) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	err := run(t.Context(), append([]string{"fetch"}, args...), nil, &stdout, &stderr)
	t.Logf("fetch %s:\n%s%s", strings.Join(args, " "), stderr.String(), stdout.String())
	return stdout.String(), err
}

// readNDJSONDir reads every *.ndjson file in dir into Type/id → resource
// without meta. Blank lines and duplicates fail the test.
func readNDJSONDir(t *testing.T, dir, pattern string) map[string]string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(dir, pattern))
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for l := range bytes.SplitSeq(bytes.TrimSuffix(b, []byte("\n")), []byte("\n")) {
			if len(l) == 0 {
				continue
			}
			var r struct{ ResourceType, ID string }
			if err := json.Unmarshal(l, &r); err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			key := r.ResourceType + "/" + r.ID
			if _, dup := got[key]; dup {
				t.Fatalf("%s twice in %s", key, dir)
			}
			got[key] = withoutMeta(t, l)
		}
	}
	return got
}

func sameState(t *testing.T, what string, got, want map[string]string) {
	t.Helper()
	if len(got) != len(want) {
		t.Errorf("%s: %d resources, want %d", what, len(got), len(want))
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s: %s is %.100q, want %.100q", what, k, got[k], v)
			return
		}
	}
	for k := range got {
		if _, ok := want[k]; !ok {
			t.Errorf("%s: %s should not be there", what, k)
			return
		}
	}
}

// TestExportCommandFull: `bulkstream fetch` against a real server
// downloads exactly the published data.
func TestExportCommandFull(t *testing.T) {
	s := startServer(t)
	want := withoutMetas(t, s.publishSample(t))
	out := t.TempDir()
	stdout, err := runExportCmd(t, "--url", s.base, "--out", out, "--parallel", "3")
	if err != nil {
		t.Fatal(err)
	}
	sameState(t, "export", readNDJSONDir(t, out, "*.ndjson"), want)
	var m struct {
		TransactionTime string
		Output          []struct{ Type string }
	}
	b, err := os.ReadFile(filepath.Join(out, "manifest.json"))
	if err != nil || json.Unmarshal(b, &m) != nil || m.TransactionTime == "" || len(m.Output) == 0 {
		t.Errorf("manifest.json: %v %s", err, b)
	}
	if parts, _ := filepath.Glob(filepath.Join(out, "*.part")); len(parts) > 0 {
		t.Errorf(".part files left: %v", parts)
	}
	nPatients := 0
	for k := range want {
		if strings.HasPrefix(k, "Patient/") {
			nPatients++
		}
	}
	for _, w := range []string{"resources/s", "transactionTime " + m.TransactionTime} {
		if !strings.Contains(stdout, w) {
			t.Errorf("summary lacks %q:\n%s", w, stdout)
		}
	}
	if !regexp.MustCompile(`(?m)^  Patient +` + strconv.Itoa(nPatients) + `$`).MatchString(stdout) {
		t.Errorf("summary lacks the Patient count %d:\n%s", nPatients, stdout)
	}

	// POST kick-off with _type.
	out2 := t.TempDir()
	if _, err := runExportCmd(t, "--url", s.base, "--out", out2, "--post", "--type", "Patient"); err != nil {
		t.Fatal(err)
	}
	if got := readNDJSONDir(t, out2, "*.ndjson"); len(got) != nPatients {
		t.Errorf("--post --type Patient: %d resources, want %d", len(got), nPatients)
	}

	// An OperationOutcome is shown as its diagnostics.
	_, err = runExportCmd(t, "--url", s.base, "--out", t.TempDir(), "--type", "NoSuchType")
	if err == nil || strings.Contains(err.Error(), "resourceType") || !strings.Contains(err.Error(), "400 Bad Request: ") || !strings.Contains(err.Error(), "NoSuchType") {
		t.Errorf("unknown type: %v", err)
	}
}

// TestExportCommandIncremental: --state and --apply over several runs
// with creates, updates and deletes in between keep the mirror equal to
// what was published.
func TestExportCommandIncremental(t *testing.T) {
	s := startServer(t)
	sample, err := synth.OpenSample("../../testdata/synthea-r4-100-patients.ndjson.gz")
	if err != nil {
		t.Fatal(err)
	}
	var lines [][]byte
	sample.Each(func(_, _ string, line []byte) error {
		if len(lines) < 3000 {
			lines = append(lines, bytes.Clone(line))
		}
		return nil
	})
	truth := map[string]string{}
	upsert := func(line []byte) {
		t.Helper()
		var r struct{ ResourceType, ID string }
		json.Unmarshal(line, &r)
		if err := s.pub.Upsert(t.Context(), line); err != nil {
			t.Fatal(err)
		}
		truth[r.ResourceType+"/"+r.ID] = withoutMeta(t, line)
	}
	del := func(line []byte) {
		t.Helper()
		var r struct{ ResourceType, ID string }
		json.Unmarshal(line, &r)
		if err := s.pub.Delete(t.Context(), r.ResourceType, r.ID); err != nil {
			t.Fatal(err)
		}
		delete(truth, r.ResourceType+"/"+r.ID)
	}
	flush := func() {
		t.Helper()
		if err := s.pub.Flush(t.Context()); err != nil {
			t.Fatal(err)
		}
	}
	for _, l := range lines[:2000] {
		upsert(l)
	}
	flush()

	dir := t.TempDir()
	state, mirror, out := filepath.Join(dir, "state.json"), filepath.Join(dir, "mirror"), filepath.Join(dir, "out")
	args := []string{"--url", s.base, "--state", state, "--apply", mirror, "--out", out}
	sync := func(round string) string {
		t.Helper()
		stdout, err := runExportCmd(t, args...)
		if err != nil {
			t.Fatalf("%s: %v", round, err)
		}
		sameState(t, round, readNDJSONDir(t, mirror, "*.ndjson"), truth)
		return stdout
	}
	sync("first run")
	st1, _ := os.ReadFile(state)

	// Updates, deletes and creates, then sync again.
	for i, l := range lines[:600] {
		switch i % 3 {
		case 0:
			upsert(bytes.Replace(l, []byte(`"id":"`), []byte(`"extension":[{"url":"urn:rev","valueInteger":2}],"id":"`), 1))
		case 1:
			del(l)
		}
	}
	for _, l := range lines[2000:2500] {
		upsert(l)
	}
	flush()
	stdout := sync("second run")
	if !strings.Contains(stdout, "(incremental)") || !strings.Contains(stdout, " 200 deleted") {
		t.Errorf("second run was not incremental with 200 deletions:\n%s", stdout)
	}
	st2, _ := os.ReadFile(state)
	if bytes.Equal(st1, st2) {
		t.Errorf("the state did not advance: %s", st2)
	}

	// Delete the rest of a type, recreate some deleted ones, one more run.
	for i, l := range lines[:600] {
		if i%3 == 1 && i < 300 {
			// Changed content: the publisher's Nats-Msg-Id would drop
			// an identical republish as a duplicate.
			upsert(bytes.Replace(l, []byte(`"id":"`), []byte(`"extension":[{"url":"urn:rev","valueInteger":3}],"id":"`), 1))
		}
	}
	for _, l := range lines[2500:3000] {
		upsert(l)
		del(l)
	}
	flush()
	sync("third run")

	// Nothing changed: the mirror stays.
	stdout = sync("fourth run")
	if !strings.Contains(stdout, "exported 0 files") {
		t.Errorf("fourth run exported something:\n%s", stdout)
	}

	// A failed run does not advance the state: the server refuses _until
	// before _since.
	st4, _ := os.ReadFile(state)
	if _, err := runExportCmd(t, append(args, "--until", "2000-01-01T00:00:00Z")...); err == nil {
		t.Errorf("an export with _until before _since succeeded")
	}
	if st5, _ := os.ReadFile(state); !bytes.Equal(st4, st5) {
		t.Errorf("a failed run changed the state:\n%s\n%s", st4, st5)
	}
}

// TestExportCommandAuth: --client-id/--key against a server with a
// clients file; without them the 401 is reported by its diagnostics.
func TestExportCommandAuth(t *testing.T) {
	dir := t.TempDir()
	app, entry := newClientEntry(t, "exporter", "ES384", []string{"system/*.rs"}, 2)
	rsApp, rsEntry := newClientEntry(t, "rs-exporter", "RS384", []string{"system/Patient.rs"}, 2)
	clientsFile := filepath.Join(dir, "clients.json")
	writeClientsFile(t, clientsFile, entry, rsEntry)
	s := startServerWith(t, serverOpts{args: []string{"--clients", clientsFile}})
	want := withoutMetas(t, s.publishSample(t, "Patient", "Condition"))
	keyFile := filepath.Join(dir, "exporter.jwk")
	rsKeyFile := filepath.Join(dir, "rs.jwk")
	os.WriteFile(keyFile, app.key, 0o600)
	os.WriteFile(rsKeyFile, rsApp.key, 0o600)

	out := t.TempDir()
	if _, err := runExportCmd(t, "--url", s.base, "--out", out, "--client-id", app.id, "--key", keyFile); err != nil {
		t.Fatal(err)
	}
	sameState(t, "authorized export", readNDJSONDir(t, out, "*.ndjson"), want)

	// --token-url instead of discovery, RS384, a Patient-only scope.
	out2 := t.TempDir()
	if _, err := runExportCmd(t, "--url", s.base, "--out", out2, "--type", "Patient", "--client-id", rsApp.id, "--key", rsKeyFile, "--token-url", s.base+"/auth/token"); err != nil {
		t.Fatal(err)
	}
	if got := readNDJSONDir(t, out2, "*.ndjson"); len(got) == 0 {
		t.Errorf("RS384 client exported nothing")
	}
	// Beyond its scope: 403, shown as the server's diagnostics.
	_, err := runExportCmd(t, "--url", s.base, "--out", t.TempDir(), "--type", "Condition", "--client-id", rsApp.id, "--key", rsKeyFile)
	if err == nil || !strings.Contains(err.Error(), "403 Forbidden: ") || strings.Contains(err.Error(), "{") {
		t.Errorf("export beyond the scope: %v", err)
	}

	_, err = runExportCmd(t, "--url", s.base, "--out", t.TempDir())
	if err == nil || !strings.Contains(err.Error(), "401 Unauthorized: ") || strings.Contains(err.Error(), "{") {
		t.Errorf("export without a token: %v", err)
	}
}

// TestExportCommandCancel: Ctrl-C (the run's context ending) while the job
// runs sends DELETE to the status URL, unless --keep-job.
func TestExportCommandCancel(t *testing.T) {
	for _, keep := range []bool{false, true} {
		t.Run(map[bool]string{false: "delete", true: "keep-job"}[keep], func(t *testing.T) {
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			deleted := make(chan struct{}, 1)
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				switch {
				case strings.HasSuffix(r.URL.Path, "/$export"):
					w.Header().Set("Content-Location", "http://"+r.Host+"/fhir/status/1")
					w.WriteHeader(http.StatusAccepted)
				case r.Method == http.MethodDelete:
					deleted <- struct{}{}
					w.WriteHeader(http.StatusAccepted)
				default:
					cancel() // Ctrl-C while the job runs
					w.Header().Set("X-Progress", "10%")
					w.Header().Set("Retry-After", "5")
					w.WriteHeader(http.StatusAccepted)
				}
			}))
			defer srv.Close()
			args := []string{"fetch", "--url", srv.URL + "/fhir", "--out", t.TempDir()}
			if keep {
				args = append(args, "--keep-job")
			}
			var stdout, stderr bytes.Buffer
			err := run(ctx, args, nil, &stdout, &stderr)
			if err == nil || !strings.Contains(err.Error(), "cancelled") {
				t.Errorf("err = %v, want cancelled", err)
			}
			select {
			case <-deleted:
				if keep {
					t.Errorf("--keep-job sent DELETE")
				}
			default:
				if !keep {
					t.Errorf("no DELETE after Ctrl-C; stderr:\n%s", stderr.String())
				}
			}
			if keep && !strings.Contains(stderr.String(), "job kept: "+srv.URL+"/fhir/status/1") {
				t.Errorf("stderr does not name the kept job:\n%s", stderr.String())
			}
		})
	}
}

// faultyProxy sits between `bulkstream fetch` and a real bulkstream and
// misbehaves once per kind: the first kick-off gets 429 + Retry-After, the
// first status poll a 503, and the first GET of every file is cut off
// after half its body. It records the Range header of every file request.
type faultyProxy struct {
	target atomic.Pointer[url.URL]
	rp     *httputil.ReverseProxy

	mu         sync.Mutex
	kickoffs   int
	polls      int
	cut        map[string]bool     // file path → already cut once
	fileRanges map[string][]string // file path → Range of each request
}

func newFaultyProxy() *faultyProxy {
	p := &faultyProxy{cut: map[string]bool{}, fileRanges: map[string][]string{}}
	p.rp = &httputil.ReverseProxy{Rewrite: func(r *httputil.ProxyRequest) {
		r.SetURL(p.target.Load())
		r.Out.Host = r.In.Host // the server builds no URL from Host anyway
	}}
	return p
}

func (p *faultyProxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p.mu.Lock()
	var fault string
	switch {
	case strings.HasSuffix(r.URL.Path, "/$export"):
		p.kickoffs++
		if p.kickoffs == 1 {
			fault = "429"
		}
	case strings.Contains(r.URL.Path, "/bulkstatus/") && r.Method == http.MethodGet:
		p.polls++
		if p.polls == 1 {
			fault = "503"
		}
	case strings.Contains(r.URL.Path, "/bulkfiles/"):
		p.fileRanges[r.URL.Path] = append(p.fileRanges[r.URL.Path], r.Header.Get("Range"))
		if !p.cut[r.URL.Path] {
			p.cut[r.URL.Path] = true
			fault = "cut"
		}
	}
	p.mu.Unlock()
	switch fault {
	case "429":
		w.Header().Set("Retry-After", "1")
		http.Error(w, "slow down", http.StatusTooManyRequests)
	case "503":
		http.Error(w, "upstream unavailable", http.StatusServiceUnavailable)
	case "cut":
		// Fetch the whole file, send its headers and half of it, then drop
		// the connection.
		rec := httptest.NewRecorder()
		p.rp.ServeHTTP(rec, r)
		for k, v := range rec.Header() {
			w.Header()[k] = v
		}
		body := rec.Body.Bytes()
		w.WriteHeader(rec.Code)
		w.Write(body[:len(body)/2])
		w.(http.Flusher).Flush()
		panic(http.ErrAbortHandler)
	default:
		p.rp.ServeHTTP(w, r)
	}
}

// TestExportCommandThroughFaults: against a real bulkstream behind a proxy
// that answers 429 and 503 once and cuts every file's first download in
// half, `bulkstream fetch` retries, resumes each file with Range, and
// ends with exactly the published data.
func TestExportCommandThroughFaults(t *testing.T) {
	p := newFaultyProxy()
	front := httptest.NewServer(p)
	t.Cleanup(front.Close)
	s := startServerWith(t, serverOpts{args: []string{"--public-url", front.URL}})
	back, err := url.Parse(strings.TrimSuffix(s.base, "/fhir"))
	if err != nil {
		t.Fatal(err)
	}
	p.target.Store(back)

	want := withoutMetas(t, s.publishSample(t, "Patient", "Condition", "Encounter"))
	out := t.TempDir()
	if _, err := runExportCmd(t, "--url", front.URL+"/fhir", "--out", out, "--parallel", "2"); err != nil {
		t.Fatal(err)
	}
	sameState(t, "export through faults", readNDJSONDir(t, out, "*.ndjson"), want)

	p.mu.Lock()
	defer p.mu.Unlock()
	if p.kickoffs < 2 || p.polls < 2 {
		t.Errorf("kick-offs %d, polls %d: the 429 and the 503 were not retried", p.kickoffs, p.polls)
	}
	if len(p.fileRanges) != 3 {
		t.Errorf("files requested %v, want the 3 types' files", p.fileRanges)
	}
	for path, ranges := range p.fileRanges {
		if len(ranges) < 2 || ranges[0] != "" || !strings.HasPrefix(ranges[1], "bytes=") || ranges[1] == "bytes=0-" {
			t.Errorf("%s: Range headers %q: want none, then a resume from the bytes already received", path, ranges)
		}
	}
}
