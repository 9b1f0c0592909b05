package main

import (
	"encoding/json"
	"net/http"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/bulkstream/bulkstream/index"
)

// fakeIngest is an ingest with a given lag and disk pause.
type fakeIngest struct {
	lag    time.Duration
	paused bool
}

func (f fakeIngest) Lag() time.Duration { return f.lag }
func (f fakeIngest) DiskPaused() bool   { return f.paused }

// TestReadinessChecks: each check names its reason when it fails.
func TestReadinessChecks(t *testing.T) {
	ns := runNATS(t)
	nc, err := nats.Connect(ns.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	idx, err := index.Open(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer idx.Close()
	var draining, paused atomic.Bool

	failing := func(lag time.Duration, maxLag time.Duration) map[string]string {
		got := map[string]string{}
		for name, c := range readinessChecks(idx, nc, fakeIngest{lag, paused.Load()}, maxLag, &draining) {
			if err := c.Ready(); err != nil {
				got[name] = err.Error()
			}
		}
		return got
	}
	if got := failing(time.Second, time.Minute); len(got) != 0 {
		t.Fatalf("ready stack: failing checks %v", got)
	}
	if got := failing(2*time.Minute, time.Minute); !strings.Contains(got["ingest_lag"], "2m0s") || len(got) != 1 {
		t.Errorf("lag 2m over 1m: failing checks %v, want ingest_lag naming the lag", got)
	}
	if got := failing(time.Hour, 0); len(got) != 0 {
		t.Errorf("--ready-max-lag 0: failing checks %v, want none", got)
	}
	paused.Store(true)
	if got := failing(0, time.Minute); !strings.Contains(got["disk"], "--ingest-min-free-bytes") || len(got) != 1 {
		t.Errorf("ingest paused for a low disk: failing checks %v, want disk", got)
	}
	paused.Store(false)
	draining.Store(true)
	if got := failing(0, time.Minute); !strings.Contains(got["shutdown"], "shutting down") || len(got) != 1 {
		t.Errorf("draining: failing checks %v, want shutdown", got)
	}
	draining.Store(false)
	nc.Close()
	if got := failing(0, time.Minute); !strings.Contains(got["nats"], "CLOSED") {
		t.Errorf("closed connection: failing checks %v, want nats", got)
	}
	idx.Close()
	if got := failing(0, time.Minute); got["index"] != index.ErrClosed.Error() {
		t.Errorf("closed index: failing checks %v, want index", got)
	}
}

func TestCheckDiskFloors(t *testing.T) {
	for _, tc := range []struct {
		ingest, reserve int64
		ok              bool
	}{
		{64 << 20, 128 << 20, true},
		{128 << 20, 128 << 20, true},
		{129 << 20, 128 << 20, false},
		{-1, 0, true},
		{1 << 30, -1, true},
	} {
		err := checkDiskFloors(tc.ingest, tc.reserve)
		if (err == nil) != tc.ok || (err != nil && !strings.Contains(err.Error(), "--ingest-min-free-bytes")) {
			t.Errorf("ingest %d, reserve %d: %v, want ok=%v", tc.ingest, tc.reserve, err, tc.ok)
		}
	}
}

// TestReadyzAndDraining: /readyz is JSON with reasons; once shutdown has
// begun a kick-off answers 503 with an OperationOutcome and Retry-After
// while status requests still work.
func TestReadyzAndDraining(t *testing.T) {
	s := newOpsStack(t)
	resp := s.do(t, http.MethodGet, "/readyz")
	var body struct {
		Status  string
		Reasons map[string]string
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 || body.Status != "ready" {
		t.Fatalf("/readyz = %d %+v, want 200 ready", resp.StatusCode, body)
	}
	kick := s.do(t, http.MethodGet, "/fhir/$export")
	if kick.StatusCode != http.StatusAccepted {
		t.Fatalf("kick-off: %d, want 202", kick.StatusCode)
	}

	s.draining.Store(true)
	resp = s.do(t, http.MethodGet, "/readyz")
	body.Reasons = nil
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 503 || body.Reasons["shutdown"] == "" {
		t.Errorf("/readyz while draining = %d %+v, want 503 with a shutdown reason", resp.StatusCode, body)
	}
	resp = s.do(t, http.MethodGet, "/fhir/$export")
	var oo struct{ ResourceType string }
	if err := json.NewDecoder(resp.Body).Decode(&oo); err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 503 || oo.ResourceType != "OperationOutcome" || resp.Header.Get("Retry-After") == "" {
		t.Errorf("kick-off while draining = %d %s Retry-After %q, want 503 OperationOutcome with Retry-After",
			resp.StatusCode, oo.ResourceType, resp.Header.Get("Retry-After"))
	}
	awaitManifest(t, kick.Header.Get("Content-Location"), 10*time.Second) // status still answers
}

// metricRef matches the metric names a PromQL expression of ours can use.
var metricRef = regexp.MustCompile(`\b(?:bulkstream|go|process)_[a-zA-Z0-9_]+\b|\bup\{`)

// TestOpsFilesUseRegisteredMetrics: every metric the Grafana dashboard
// and the alert rules query is registered by serve's wiring, and every
// required panel is there. With promtool on the PATH (Debian package
// prometheus, installed by .ci/run) the scrape config and the rules are
// also checked by Prometheus itself, and the rules' unit tests
// (ops/prometheus/alerts_test.yml) run; under CI=true a missing promtool
// fails the test.
func TestOpsFilesUseRegisteredMetrics(t *testing.T) {
	s := newOpsStack(t)
	known := func(name string) bool {
		if name == "up{" || s.names[name] {
			return true
		}
		for _, suf := range []string{"_bucket", "_sum", "_count"} {
			if base, ok := strings.CutSuffix(name, suf); ok && s.names[base] {
				return true
			}
		}
		return false
	}

	var dash map[string]any
	if err := json.Unmarshal([]byte(readFile(t, "../../ops/grafana/bulkstream.json")), &dash); err != nil {
		t.Fatalf("ops/grafana/bulkstream.json: %v", err)
	}
	var exprs, titles []string
	var walk func(v any)
	walk = func(v any) {
		switch v := v.(type) {
		case map[string]any:
			for k, e := range v {
				switch s, _ := e.(string); {
				case k == "expr" || k == "definition":
					exprs = append(exprs, s)
				case k == "title":
					titles = append(titles, strings.ToLower(s))
				}
				walk(e)
			}
		case []any:
			for _, e := range v {
				walk(e)
			}
		}
	}
	walk(dash["panels"])
	for _, e := range exprs {
		// Every panel follows the instance and, in a cluster, the
		// replica selectors.
		if strings.Contains(e, `instance=~"$instance"`) != strings.Contains(e, `replica=~"$replica"`) {
			t.Errorf("dashboard expression selects by instance or replica but not both: %s", e)
		}
	}
	walk(dash["templating"])
	if !slices.Contains(exprs, `label_values(bulkstream_build_info{job=~"$job",instance=~"$instance"}, replica)`) {
		t.Error("dashboard has no replica selector")
	}
	for _, want := range []string{"ingest rate", "lag", "dead letters", "jobs", "export throughput", "p50", "p99", "read amplification", "cache"} {
		if !slices.ContainsFunc(titles, func(s string) bool { return strings.Contains(s, want) }) {
			t.Errorf("dashboard has no panel about %q", want)
		}
	}

	rules := readFile(t, "../../ops/prometheus/alerts.yml")
	nRules := 0
	for l := range strings.Lines(rules) {
		if e, ok := strings.CutPrefix(strings.TrimSpace(l), "expr:"); ok {
			exprs = append(exprs, e)
			nRules++
		}
	}
	for _, want := range []string{"bulkstream_ingest_lag_seconds", "bulkstream_ingest_events_dead_lettered_total",
		`bulkstream_export_jobs_finished_total{result="failed"}`, "bulkstream_export_disk_free_bytes"} {
		if !strings.Contains(rules, want) {
			t.Errorf("alerts.yml has no rule on %s", want)
		}
	}

	used := 0
	for _, e := range exprs {
		for _, name := range metricRef.FindAllString(e, -1) {
			used++
			if !known(name) {
				t.Errorf("%s is queried by the ops files but not registered by serve (in %q)", name, e)
			}
		}
	}
	if len(exprs) < 20 || nRules < 5 || used < 30 {
		t.Errorf("found %d expressions (%d rules) using %d metrics: the files were not parsed", len(exprs), nRules, used)
	}

	promtool, err := exec.LookPath("promtool")
	if err != nil {
		missing(t, "promtool not on the PATH: the scrape config and rules were checked by this test only")
		return
	}
	for _, args := range [][]string{
		{"check", "config", "../../ops/prometheus/prometheus.yml"},
		{"check", "rules", "../../ops/prometheus/alerts.yml"},
		// Each alert fires on its trouble and not on a healthy server.
		{"test", "rules", "../../ops/prometheus/alerts_test.yml"},
	} {
		if out, err := exec.Command(promtool, args...).CombinedOutput(); err != nil {
			t.Errorf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
}
