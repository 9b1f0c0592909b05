package bulkclient

import (
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bulkstream/bulkstream/internal/smart"
)

func newTestClient(t *testing.T, base string, mod ...func(*Config)) *Client {
	t.Helper()
	cfg := Config{BaseURL: base, PollMin: time.Millisecond, PollMax: 50 * time.Millisecond,
		BackoffMin: time.Millisecond, BackoffMax: 5 * time.Millisecond, MaxAttempts: 5}
	for _, m := range mod {
		m(&cfg)
	}
	c, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// ndjson returns n lines of Patient NDJSON.
func ndjson(n int) []byte {
	var b bytes.Buffer
	for i := range n {
		fmt.Fprintf(&b, `{"resourceType":"Patient","id":"p%d","name":[{"family":"%s"}]}`+"\n", i, strings.Repeat("x", i%50))
	}
	return b.Bytes()
}

func count(n int64) *int64 { return &n }

func manifestFor(urls ...string) *Manifest {
	m := &Manifest{TransactionTime: "2026-01-01T00:00:00Z"}
	for _, u := range urls {
		m.Output = append(m.Output, File{Type: "Patient", URL: u, Count: count(200)})
	}
	return m
}

// TestDownloadRetries: 429 with Retry-After and 503 are retried, the
// Retry-After wait is honoured, and the file arrives whole.
func TestDownloadRetries(t *testing.T) {
	body := ndjson(200)
	var calls atomic.Int32
	var times []time.Time
	var mu sync.Mutex
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		times = append(times, time.Now())
		mu.Unlock()
		switch calls.Add(1) {
		case 1:
			w.Header().Set("Retry-After", "1")
			w.Header().Set("Content-Type", "application/fhir+json")
			w.WriteHeader(http.StatusTooManyRequests)
			io.WriteString(w, `{"resourceType":"OperationOutcome","issue":[{"severity":"error","code":"throttled","diagnostics":"slow down"}]}`)
		case 2:
			w.WriteHeader(http.StatusServiceUnavailable) // a proxy: no OperationOutcome
		default:
			if r.Header.Get("Accept-Encoding") != "gzip" {
				t.Errorf("Accept-Encoding %q, want gzip", r.Header.Get("Accept-Encoding"))
			}
			w.Header().Set("Content-Encoding", "gzip")
			zw := gzip.NewWriter(w)
			zw.Write(body)
			zw.Close()
		}
	}))
	defer srv.Close()
	c := newTestClient(t, srv.URL)
	dir := t.TempDir()
	res, err := c.Download(t.Context(), manifestFor(srv.URL+"/f1"), dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	if calls.Load() != 3 {
		t.Errorf("%d requests, want 3", calls.Load())
	}
	if gap := times[1].Sub(times[0]); gap < 900*time.Millisecond {
		t.Errorf("retried after %v; Retry-After said 1s", gap)
	}
	got, _ := os.ReadFile(filepath.Join(dir, "Patient.1.ndjson"))
	if !bytes.Equal(got, body) || res[0].Lines != 200 || res[0].Bytes != int64(len(body)) {
		t.Errorf("got %d bytes, %d lines; want %d bytes, 200 lines", len(got), res[0].Lines, len(body))
	}
}

// TestDownloadResume: a connection dropped mid-body is resumed with
// Range from the bytes already on disk, for an identity and a gzip body.
func TestDownloadResume(t *testing.T) {
	body := ndjson(200)
	for _, gz := range []bool{false, true} {
		t.Run(map[bool]string{false: "identity", true: "gzip"}[gz], func(t *testing.T) {
			var ranges []string
			var mu sync.Mutex
			var calls atomic.Int32
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				mu.Lock()
				ranges = append(ranges, r.Header.Get("Range"))
				mu.Unlock()
				if calls.Add(1) == 1 {
					// Promise the whole file, send a part, drop the connection.
					var payload []byte
					hdr := "HTTP/1.1 200 OK\r\nContent-Type: application/fhir+ndjson\r\n"
					if gz {
						var zb bytes.Buffer
						zw := gzip.NewWriter(&zb)
						zw.Write(body)
						zw.Close()
						payload = zb.Bytes()[:zb.Len()/2]
						hdr += "Content-Encoding: gzip\r\n"
						hdr += fmt.Sprintf("Content-Length: %d\r\n\r\n", zb.Len())
					} else {
						payload = body[:len(body)/3]
						hdr += fmt.Sprintf("Content-Length: %d\r\n\r\n", len(body))
					}
					conn, bw, err := http.NewResponseController(w).Hijack()
					if err != nil {
						t.Error(err)
						return
					}
					bw.WriteString(hdr)
					bw.Write(payload)
					bw.Flush()
					conn.Close()
					return
				}
				if r.Header.Get("Range") != "" && r.Header.Get("Accept-Encoding") != "identity" {
					t.Errorf("Range request with Accept-Encoding %q", r.Header.Get("Accept-Encoding"))
				}
				http.ServeContent(w, r, "f.ndjson", time.Time{}, bytes.NewReader(body))
			}))
			defer srv.Close()
			c := newTestClient(t, srv.URL)
			dir := t.TempDir()
			res, err := c.Download(t.Context(), manifestFor(srv.URL+"/f1"), dir, nil)
			if err != nil {
				t.Fatal(err)
			}
			got, _ := os.ReadFile(filepath.Join(dir, "Patient.1.ndjson"))
			if !bytes.Equal(got, body) {
				t.Fatalf("file differs: %d bytes, want %d", len(got), len(body))
			}
			if len(ranges) != 2 || ranges[0] != "" {
				t.Fatalf("Range headers %q, want none then one", ranges)
			}
			var from int
			if _, err := fmt.Sscanf(ranges[1], "bytes=%d-", &from); err != nil || from <= 0 || from >= len(body) {
				t.Fatalf("second request Range %q", ranges[1])
			}
			if !gz && from != len(body)/3 {
				t.Errorf("resumed from %d, want %d (the bytes sent)", from, len(body)/3)
			}
			if res[0].Resumes != 1 {
				t.Errorf("Resumes = %d, want 1", res[0].Resumes)
			}
			if _, err := os.Stat(filepath.Join(dir, "Patient.1.ndjson.part")); !errors.Is(err, os.ErrNotExist) {
				t.Errorf(".part file left: %v", err)
			}
		})
	}
}

// TestDownloadRestartsWhenRangeIgnored: a server that answers a Range
// request with 200 gets the file written from zero, not appended.
func TestDownloadRestartsWhenRangeIgnored(t *testing.T) {
	body := ndjson(200)
	var calls atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if calls.Add(1) == 1 {
			conn, bw, _ := http.NewResponseController(w).Hijack()
			fmt.Fprintf(bw, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n", len(body))
			bw.Write(body[:100])
			bw.Flush()
			conn.Close()
			return
		}
		w.Write(body) // ignores Range
	}))
	defer srv.Close()
	dir := t.TempDir()
	if _, err := newTestClient(t, srv.URL).Download(t.Context(), manifestFor(srv.URL+"/f"), dir, nil); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(filepath.Join(dir, "Patient.1.ndjson")); !bytes.Equal(got, body) {
		t.Errorf("file differs: %d bytes, want %d", len(got), len(body))
	}
}

func TestDownloadCountMismatch(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write(ndjson(199))
	}))
	defer srv.Close()
	dir := t.TempDir()
	_, err := newTestClient(t, srv.URL).Download(t.Context(), manifestFor(srv.URL+"/f"), dir, nil)
	var ce *CountError
	if !errors.As(err, &ce) || ce.Lines != 199 || ce.Want != 200 {
		t.Fatalf("err = %v, want a CountError 199 vs 200", err)
	}
	if want := "199 lines, the manifest says 200"; !strings.Contains(err.Error(), want) {
		t.Errorf("error %q does not say %q", err, want)
	}
	if _, err := os.Stat(filepath.Join(dir, "Patient.1.ndjson")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("an unverified file was published: %v", err)
	}
}

func TestCountLines(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int64
	}{
		{"", 0}, {"{}", 1}, {"{}\n", 1}, {"{}\n{}", 2}, {"{}\n\n{}\n", 2}, {"{}\r\n{}\r\n", 2}, {"  \n", 0},
	} {
		// Split at every point: a resumed download writes in pieces.
		for i := range len(tc.in) + 1 {
			var c lineCounter
			c.Write([]byte(tc.in[:i]))
			c.Write([]byte(tc.in[i:]))
			if got := c.count(); got != tc.want {
				t.Errorf("lines of %q written as %q+%q = %d, want %d", tc.in, tc.in[:i], tc.in[i:], got, tc.want)
			}
		}
	}
}

// TestOperationOutcomeError: an error answer is reported as its
// diagnostics, not as JSON, and a 4xx is not retried.
func TestOperationOutcomeError(t *testing.T) {
	var calls atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		w.Header().Set("Content-Type", "application/fhir+json")
		w.WriteHeader(http.StatusBadRequest)
		io.WriteString(w, `{"resourceType":"OperationOutcome","issue":[{"severity":"error","code":"not-supported","diagnostics":"_type: unknown resource type \"Foo\""}]}`)
	}))
	defer srv.Close()
	_, err := newTestClient(t, srv.URL).Kickoff(t.Context(), Request{Types: []string{"Foo"}})
	if err == nil {
		t.Fatal("no error")
	}
	want := `kick-off: GET ` + srv.URL + `/$export?_type=Foo: 400 Bad Request: _type: unknown resource type "Foo"`
	if err.Error() != want {
		t.Errorf("error\n got %s\nwant %s", err, want)
	}
	var oe *OutcomeError
	if !errors.As(err, &oe) || oe.StatusCode != 400 {
		t.Errorf("not an OutcomeError: %T", err)
	}
	if calls.Load() != 1 {
		t.Errorf("%d requests; a 400 must not be retried", calls.Load())
	}
}

// TestKickoffPollCancel runs kick-off (GET and POST), polling with
// X-Progress and a failed job, and DELETE.
func TestKickoffPollCancel(t *testing.T) {
	var polls atomic.Int32
	var mu sync.Mutex
	var seen []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen = append(seen, r.Method+" "+r.URL.Path)
		mu.Unlock()
		switch {
		case r.URL.Path == "/fhir/$export":
			if r.Header.Get("Prefer") != "respond-async" || r.Header.Get("Accept") != "application/fhir+json" {
				t.Errorf("kick-off headers %v", r.Header)
			}
			if r.Method == http.MethodPost {
				b, _ := io.ReadAll(r.Body)
				want := `{"parameter":[{"name":"_type","valueString":"Patient"},{"name":"_type","valueString":"Observation"},{"name":"_since","valueInstant":"2026-01-01T00:00:00Z"}],"resourceType":"Parameters"}`
				if string(b) != want {
					t.Errorf("POST body\n got %s\nwant %s", b, want)
				}
			} else if got := r.URL.RawQuery; got != "_since=2026-01-01T00%3A00%3A00Z&_type=Patient%2CObservation" {
				t.Errorf("query %q", got)
			}
			w.Header().Set("Content-Location", "/fhir/status/1")
			w.WriteHeader(http.StatusAccepted)
		case r.URL.Path == "/fhir/status/1" && r.Method == http.MethodGet:
			if got := r.Header.Get("Prefer"); got != "wait=10" {
				t.Errorf("status poll Prefer %q, want wait=10", got)
			}
			if polls.Add(1) < 3 {
				w.Header().Set("X-Progress", fmt.Sprintf("step %d", polls.Load()))
				w.Header().Set("Retry-After", "0")
				w.WriteHeader(http.StatusAccepted)
				return
			}
			w.Header().Set("Content-Type", "application/json")
			io.WriteString(w, `{"transactionTime":"2026-02-01T00:00:00Z","requiresAccessToken":false,"output":[{"type":"Patient","url":"http://x/f","count":3}],"error":[]}`)
		case r.URL.Path == "/fhir/status/2":
			w.Header().Set("Content-Type", "application/fhir+json")
			w.WriteHeader(http.StatusInternalServerError)
			io.WriteString(w, `{"resourceType":"OperationOutcome","issue":[{"severity":"error","code":"processing","diagnostics":"disk full; start a new export"}]}`)
		case r.Method == http.MethodDelete:
			w.WriteHeader(http.StatusAccepted)
		default:
			http.NotFound(w, r)
		}
	}))
	defer srv.Close()
	var progress []string
	c := newTestClient(t, srv.URL+"/fhir", func(cfg *Config) {
		cfg.OnProgress = func(p string, _ time.Duration) { progress = append(progress, p) }
	})
	for _, post := range []bool{false, true} {
		polls.Store(0)
		progress = nil
		job, err := c.Kickoff(t.Context(), Request{Types: []string{"Patient", "Observation"}, Since: "2026-01-01T00:00:00Z", Post: post})
		if err != nil {
			t.Fatal(err)
		}
		if job.StatusURL != srv.URL+"/fhir/status/1" {
			t.Errorf("status URL %q", job.StatusURL)
		}
		m, err := job.Wait(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		if m.TransactionTime != "2026-02-01T00:00:00Z" || len(m.Output) != 1 || *m.Output[0].Count != 3 || len(m.Raw) == 0 {
			t.Errorf("manifest %+v", m)
		}
		if strings.Join(progress, ",") != "step 1,step 2" {
			t.Errorf("progress %q", progress)
		}
		if err := job.Cancel(t.Context()); err != nil {
			t.Fatal(err)
		}
	}
	// A failed job is final, reported by its diagnostics.
	n := len(seen)
	_, err := c.Resume(srv.URL + "/fhir/status/2").Wait(t.Context())
	if err == nil || !strings.HasSuffix(err.Error(), "500 Internal Server Error: disk full; start a new export") {
		t.Errorf("failed job: %v", err)
	}
	if len(seen)-n != 1 {
		t.Errorf("failed job polled %d times, want 1", len(seen)-n)
	}
	if !strings.Contains(strings.Join(seen, ","), "DELETE /fhir/status/1") {
		t.Errorf("no DELETE in %v", seen)
	}
}

// TestSMARTTokenSource: the token is cached, refreshed a minute before
// it expires, dropped on Invalidate, and sent on requests.
func TestSMARTTokenSource(t *testing.T) {
	key, _, err := smart.GenerateClientKey("c1", "ES384")
	if err != nil {
		t.Fatal(err)
	}
	var issued atomic.Int32
	var srv *httptest.Server
	srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/fhir/.well-known/smart-configuration":
			fmt.Fprintf(w, `{"token_endpoint":%q}`, srv.URL+"/token")
		case "/token":
			r.ParseForm()
			if r.Form.Get("client_assertion") == "" || r.Form.Get("grant_type") != "client_credentials" {
				t.Errorf("token form %v", r.Form)
			}
			fmt.Fprintf(w, `{"access_token":"tok%d","token_type":"bearer","expires_in":300,"scope":"system/*.rs"}`, issued.Add(1))
		default:
			if got := r.Header.Get("Authorization"); got != "Bearer tok1" {
				t.Errorf("Authorization %q", got)
			}
			w.Header().Set("Content-Location", srv.URL+"/s")
			w.WriteHeader(http.StatusAccepted)
		}
	}))
	defer srv.Close()
	now := time.Now()
	ts := &SMARTTokenSource{BaseURL: srv.URL + "/fhir", ClientID: "c1", Key: key, Now: func() time.Time { return now }}
	c := newTestClient(t, srv.URL+"/fhir", func(cfg *Config) { cfg.Token = ts })
	if _, err := c.Kickoff(t.Context(), Request{}); err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	for _, step := range []struct {
		advance time.Duration
		want    string
	}{{0, "tok1"}, {230 * time.Second, "tok1"}, {15 * time.Second, "tok2"}, {time.Second, "tok2"}} {
		now = now.Add(step.advance)
		if got, err := ts.Token(ctx); err != nil || got != step.want {
			t.Errorf("after +%v: %q %v, want %s", step.advance, got, err, step.want)
		}
	}
	ts.Invalidate()
	if got, _ := ts.Token(ctx); got != "tok3" {
		t.Errorf("after Invalidate: %q, want tok3", got)
	}
}
