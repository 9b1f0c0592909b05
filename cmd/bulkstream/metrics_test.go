package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"

	"github.com/bulkstream/bulkstream/export"
	"github.com/bulkstream/bulkstream/httpapi"
	"github.com/bulkstream/bulkstream/index"
	"github.com/bulkstream/bulkstream/ingest"
	"github.com/bulkstream/bulkstream/metrics"
)

// opsStack is serve's wiring in-process: one registry that the index,
// ingest, export and HTTP register on, over an embedded JetStream.
type opsStack struct {
	reg   *prometheus.Registry
	names map[string]bool // every metric name registered, children or not
	srv   *httptest.Server
	js    jetstream.JetStream
	cons  *ingest.Consumer
	pub   *ingest.Publisher
	// extraHead is added to the stream head a kick-off records, so a job
	// waits for events not yet published (the catch-up wait).
	extraHead atomic.Uint64
	// draining is serve's shutdown flag.
	draining atomic.Bool
}

// namingRegisterer records the fully-qualified name of every metric a
// collector describes, so a check sees the vectors that have no children
// yet.
type namingRegisterer struct {
	prometheus.Registerer
	names map[string]bool
}

var fqName = regexp.MustCompile(`fqName: "([^"]+)"`)

func (r namingRegisterer) Register(c prometheus.Collector) error {
	ch := make(chan *prometheus.Desc, 16)
	go func() { c.Describe(ch); close(ch) }()
	for d := range ch {
		if m := fqName.FindStringSubmatch(d.String()); m != nil {
			r.names[m[1]] = true
		}
	}
	return r.Registerer.Register(c)
}

type headFunc func(ctx context.Context) (uint64, error)

func (f headFunc) Head(ctx context.Context) (uint64, error) { return f(ctx) }

func newOpsStack(t *testing.T) *opsStack {
	t.Helper()
	s := &opsStack{reg: metrics.NewRegistry("test", ""), names: map[string]bool{}}
	reg := namingRegisterer{Registerer: s.reg, names: s.names}
	// The Go, process and build_info collectors are registered by
	// NewRegistry itself.
	for _, mf := range gather(t, s.reg) {
		s.names[mf.GetName()] = true
	}

	var nc *nats.Conn
	ns := runNATS(t)
	nc, s.js = connectJS(t, ns.ClientURL())
	// The embedded server's disk guard, as serve registers it (its loop
	// is not started: plenty of room).
	if _, err := newNATSDiskGuard(ns, t.TempDir(), 1<<20, func(string) (int64, error) { return 1 << 40, nil },
		reg, slog.New(slog.DiscardHandler)); err != nil {
		t.Fatal(err)
	}
	idx, err := index.Open(t.TempDir(), &index.Options{Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { idx.Close() })
	s.cons, err = ingest.New(ingest.Config{Registerer: reg, FetchWait: 100 * time.Millisecond,
		PendingRefresh: 50 * time.Millisecond}, s.js, idx)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.cons.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.cons.Close(context.Background()) })
	head := headFunc(func(ctx context.Context) (uint64, error) {
		h, err := s.cons.Head(ctx)
		return h + s.extraHead.Load(), err
	})
	jobs, err := export.NewManager(export.Config{Dir: t.TempDir(), Registerer: reg, MaxActiveJobs: 1, MinFreeBytes: -1},
		export.IndexSource(idx), head, idx)
	if err != nil {
		t.Fatal(err)
	}
	if err := jobs.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { jobs.Close(context.Background()) })
	if s.pub, err = ingest.NewPublisher(s.js, ingest.PublisherConfig{}); err != nil {
		t.Fatal(err)
	}

	var h http.Handler
	s.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { h.ServeHTTP(w, r) }))
	t.Cleanup(s.srv.Close)
	h = httpapi.New(httpapi.Config{
		Metrics:    metrics.Handler(s.reg),
		Registerer: reg,
		Jobs:       drainingJobs{Jobs: jobs, draining: &s.draining},
		PublicURL:  s.srv.URL,
		Checks:     readinessChecks(idx, nc, s.cons, time.Minute, &s.draining),
	})
	return s
}

func gather(t testing.TB, g prometheus.Gatherer) []*dto.MetricFamily {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	return mfs
}

// value sums the samples of name whose labels include want ("k=v" pairs);
// for a histogram it is the sample count.
func (s *opsStack) value(t testing.TB, name string, want ...string) float64 {
	t.Helper()
	var sum float64
	for _, mf := range gather(t, s.reg) {
		if mf.GetName() != name {
			continue
		}
	metric:
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, lp := range m.GetLabel() {
				labels[lp.GetName()] = lp.GetValue()
			}
			for _, kv := range want {
				k, v, _ := strings.Cut(kv, "=")
				if labels[k] != v {
					continue metric
				}
			}
			switch {
			case m.Counter != nil:
				sum += m.Counter.GetValue()
			case m.Gauge != nil:
				sum += m.Gauge.GetValue()
			case m.Histogram != nil:
				sum += float64(m.Histogram.GetSampleCount())
			}
		}
	}
	return sum
}

func (s *opsStack) publish(t testing.TB, lines ...string) {
	t.Helper()
	for _, l := range lines {
		if err := s.pub.Upsert(t.Context(), []byte(l)); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.pub.Flush(t.Context()); err != nil {
		t.Fatal(err)
	}
}

// waitApplied waits until ingest has applied the stream's head.
func (s *opsStack) waitApplied(t testing.TB) {
	t.Helper()
	checkFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		head, err := s.cons.Head(t.Context())
		if err != nil {
			return err
		}
		if got := s.value(t, "bulkstream_ingest_applied_sequence"); got != float64(head) {
			return fmt.Errorf("applied sequence %v, want %d", got, head)
		}
		return nil
	})
}

func (s *opsStack) do(t testing.TB, method, path string) *http.Response {
	t.Helper()
	u := path
	if !strings.HasPrefix(u, "http") {
		u = s.srv.URL + path
	}
	resp := get(t, u, method)
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

func patient(id string) string {
	return fmt.Sprintf(`{"resourceType":"Patient","id":%q,"gender":"unknown"}`, id)
}

// TestMetricsMove checks, for each documented metric, that it moves by
// the expected amount when its event happens, on a registry populated the
// way serve populates it; then lints every metric.
func TestMetricsMove(t *testing.T) {
	s := newOpsStack(t)
	var status string // the running job's status URL, shared by the steps
	type sample struct {
		name    string
		labels  []string
		delta   float64 // expected change; minDelta when at least
		atLeast bool
	}
	steps := []struct {
		action string
		do     func(t *testing.T)
		want   []sample
	}{
		{
			action: "publish three patients",
			do: func(t *testing.T) {
				s.publish(t, patient("a"), patient("b"), patient("c"))
				s.waitApplied(t)
			},
			want: []sample{
				{name: "bulkstream_ingest_events_applied_total", labels: []string{"type=Patient", "op=upsert"}, delta: 3},
				{name: "bulkstream_ingest_applied_sequence", delta: 3},
				{name: "bulkstream_index_applied_sequence", delta: 3},
				{name: "bulkstream_index_resources", labels: []string{"type=Patient"}, delta: 3},
				{name: "bulkstream_ingest_batch_messages", delta: 1, atLeast: true},
				{name: "bulkstream_ingest_commit_duration_seconds", delta: 1, atLeast: true},
				{name: "bulkstream_index_commit_clock_seconds", delta: 1e-6, atLeast: true},
			},
		},
		{
			action: "delete a patient",
			do: func(t *testing.T) {
				if err := s.pub.Delete(t.Context(), "Patient", "c"); err != nil {
					t.Fatal(err)
				}
				if err := s.pub.Flush(t.Context()); err != nil {
					t.Fatal(err)
				}
				s.waitApplied(t)
			},
			want: []sample{
				{name: "bulkstream_ingest_events_applied_total", labels: []string{"type=Patient", "op=delete"}, delta: 1},
				{name: "bulkstream_index_resources", labels: []string{"type=Patient"}, delta: -1},
				{name: "bulkstream_index_tombstones", labels: []string{"type=Patient"}, delta: 1},
			},
		},
		{
			action: "publish an event that is not JSON",
			do: func(t *testing.T) {
				if _, err := s.js.Publish(t.Context(), "fhir.Patient.bad", []byte("{not json")); err != nil {
					t.Fatal(err)
				}
				s.waitApplied(t)
			},
			want: []sample{
				{name: "bulkstream_ingest_events_dead_lettered_total", labels: []string{"reason=not_json"}, delta: 1},
				{name: "bulkstream_ingest_events_applied_total", delta: 0},
			},
		},
		{
			action: "kick off an export while ingest is behind",
			do: func(t *testing.T) {
				s.extraHead.Store(1) // the job waits for one more event
				resp := s.do(t, http.MethodGet, "/fhir/$export?_type=Patient")
				if resp.StatusCode != http.StatusAccepted {
					t.Fatalf("kick-off: %d, want 202", resp.StatusCode)
				}
				status = resp.Header.Get("Content-Location")
				checkFor(t, 10*time.Second, 10*time.Millisecond, func() error {
					if s.value(t, "bulkstream_export_jobs", "state=running") != 1 {
						return fmt.Errorf("job not running")
					}
					return nil
				})
			},
			want: []sample{
				{name: "bulkstream_export_jobs", labels: []string{"state=running"}, delta: 1},
				{name: "bulkstream_http_requests_total", labels: []string{"route=/fhir/$export", "method=GET", "code=202"}, delta: 1},
				{name: "bulkstream_http_request_duration_seconds", labels: []string{"route=/fhir/$export"}, delta: 1},
			},
		},
		{
			action: "kick off a second export past --max-export-jobs",
			do: func(t *testing.T) {
				if got := s.do(t, http.MethodGet, "/fhir/$export").StatusCode; got != http.StatusTooManyRequests {
					t.Fatalf("second kick-off: %d, want 429", got)
				}
			},
			want: []sample{
				{name: "bulkstream_export_kickoffs_throttled_total", labels: []string{"reason=server_limit"}, delta: 1},
				{name: "bulkstream_http_requests_total", labels: []string{"code=429"}, delta: 1},
			},
		},
		{
			action: "publish the event the job waits for; the job completes",
			do: func(t *testing.T) {
				s.publish(t, patient("d"))
				s.waitApplied(t)
				awaitManifest(t, status, 10*time.Second)
			},
			want: []sample{
				{name: "bulkstream_export_catch_up_wait_seconds", delta: 1},
				{name: "bulkstream_export_jobs_finished_total", labels: []string{"result=completed"}, delta: 1},
				{name: "bulkstream_export_jobs", labels: []string{"state=running"}, delta: -1},
				{name: "bulkstream_export_jobs", labels: []string{"state=completed"}, delta: 1},
				{name: "bulkstream_export_job_duration_seconds", labels: []string{"result=completed"}, delta: 1},
				{name: "bulkstream_export_time_to_manifest_seconds", delta: 1},
				{name: "bulkstream_export_resources_written_total", labels: []string{"type=Patient"}, delta: 3},
				{name: "bulkstream_export_written_bytes_total", labels: []string{"type=Patient"}, delta: 100, atLeast: true},
				{name: "bulkstream_export_deletions_written_total", delta: 0},
			},
		},
		{
			action: "download the file",
			do: func(t *testing.T) {
				urls := awaitManifest(t, status, 10*time.Second)
				if len(urls) != 1 {
					t.Fatalf("manifest has %d files, want 1", len(urls))
				}
				resp := s.do(t, http.MethodGet, urls[0])
				if _, err := io.Copy(io.Discard, resp.Body); err != nil || resp.StatusCode != 200 {
					t.Fatalf("download: %d %v", resp.StatusCode, err)
				}
			},
			want: []sample{
				{name: "bulkstream_export_files_served_total", delta: 1},
				{name: "bulkstream_export_file_bytes_served_total", delta: 100, atLeast: true},
			},
		},
		{
			action: "cancel the job",
			do: func(t *testing.T) {
				if got := s.do(t, http.MethodDelete, status).StatusCode; got != http.StatusAccepted {
					t.Fatalf("cancel: %d, want 202", got)
				}
			},
			want: []sample{
				{name: "bulkstream_export_jobs", labels: []string{"state=completed"}, delta: -1},
			},
		},
	}
	for _, st := range steps {
		t.Run(st.action, func(t *testing.T) {
			before := make([]float64, len(st.want))
			for i, w := range st.want {
				before[i] = s.value(t, w.name, w.labels...)
			}
			st.do(t)
			for i, w := range st.want {
				got := s.value(t, w.name, w.labels...) - before[i]
				if w.atLeast && got < w.delta || !w.atLeast && got != w.delta {
					t.Errorf("%s%v moved by %v, want %s%v", w.name, w.labels, got, map[bool]string{true: "≥ "}[w.atLeast], w.delta)
				}
			}
		})
	}

	// Gauges with a fixed value in this setup.
	for _, g := range []struct {
		name string
		want float64
	}{
		{"bulkstream_ingest_nats_connected", 1},
		{"bulkstream_ingest_nats_reconnects_total", 0},
		{"bulkstream_ingest_pending_messages", 0},
		{"bulkstream_ingest_lag_seconds", 0},
		{"bulkstream_nats_disk_refusing", 0},
		{"bulkstream_build_info", 1},
	} {
		if got := s.value(t, g.name); got != g.want {
			t.Errorf("%s = %v, want %v", g.name, got, g.want)
		}
	}
	for _, name := range []string{"bulkstream_index_pebble_disk_usage_bytes", "bulkstream_index_pebble_memtable_size_bytes"} {
		if got := s.value(t, name); got <= 0 {
			t.Errorf("%s = %v, want > 0", name, got)
		}
	}

	problems, err := testutil.GatherAndLint(s.reg)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("lint %s: %s", p.Metric, p.Text)
	}
	// Every registered bulkstream metric is in the README's table.
	readme := readFile(t, "../../README.md")
	for name := range s.names {
		if strings.HasPrefix(name, "bulkstream_") && !strings.Contains(readme, "`"+name+"`") && !strings.Contains(readme, "`"+name+"{") {
			t.Errorf("%s is not documented in README.md", name)
		}
	}
}

func readFile(t testing.TB, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
