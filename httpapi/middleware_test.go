package httpapi

import (
	"bytes"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/bulkstream/bulkstream/export"
)

func TestMetricsByRoutePattern(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	jobs := newFakeJobs()
	jobs.statuses["secret-job-id"] = export.Status{State: export.Running}
	jobs.files["secret-job-id/Patient-1.ndjson"] = []byte("{\"resourceType\":\"Patient\"}\n")
	h := newTestHandler(t, jobs, reg)
	for _, req := range []request{
		{method: "GET", target: "/fhir/$export", header: kickoffHeaders()},
		{method: "GET", target: "/fhir/bulkstatus/secret-job-id"},
		{method: "GET", target: "/fhir/bulkstatus/other-id"},
		{method: "GET", target: "/fhir/bulkfiles/secret-job-id/Patient-1.ndjson"},
		{method: "GET", target: "/fhir/bulkfiles/secret-job-id/Patient-1.ndjson", header: http.Header{"Accept-Encoding": {"gzip"}}},
		{method: "HEAD", target: "/fhir/bulkfiles/secret-job-id/Patient-1.ndjson"},
		{method: "DELETE", target: "/fhir/bulkstatus/secret-job-id"},
		{method: "GET", target: "/fhir/no/such/secret-path"},
		{method: "BREW", target: "/fhir/$export"},
		{method: "OPTIONS", target: "/fhir/$export"},
		{method: "GET", target: "/fhir/metadata/"}, // trailing-slash redirect
	} {
		serve(h, req)
	}
	var out bytes.Buffer
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				out.WriteString(l.GetName() + "=" + l.GetValue() + "\n")
			}
		}
	}
	labels := out.String()
	if strings.Contains(labels, "secret") || strings.Contains(labels, "other-id") || strings.Contains(labels, "BREW") {
		t.Errorf("raw ids, paths or methods leaked into labels:\n%s", labels)
	}
	for _, want := range []string{
		`route="/fhir/$export",method="GET",code="202"`,
		`route="/fhir/bulkstatus/:id",method="GET",code="202"`,
		`route="/fhir/bulkstatus/:id",method="GET",code="404"`,
		`route="/fhir/bulkstatus/:id",method="DELETE",code="202"`,
		`route="/fhir/bulkfiles/:id/:name",method="GET",code="200"`,
		`route="/fhir/bulkfiles/:id/:name",method="HEAD",code="200"`,
		`route="unmatched",method="GET",code="404"`,
		`route="unmatched",method="other",code="405"`,
		`route="unmatched",method="OPTIONS",code="204"`,
		`route="unmatched",method="GET",code="301"`,
	} {
		if n := testutil.ToFloat64(counterWith(t, reg, want)); n < 1 {
			t.Errorf("bulkstream_http_requests_total{%s} = %v, want ≥ 1", want, n)
		}
	}
	m := newMetrics(reg) // shares the registered collectors
	if got := testutil.ToFloat64(m.filesServed); got != 2 {
		t.Errorf("files served = %v, want 2 (GETs only)", got)
	}
	if got := testutil.ToFloat64(m.fileBytes); got <= 27 {
		t.Errorf("file bytes served = %v, want the plain 27 plus the gzip stream", got)
	}
	if n := testutil.CollectAndCount(m.duration); n == 0 {
		t.Error("no duration observations")
	}
	for _, c := range []prometheus.Collector{m.requests, m.duration, m.filesServed, m.fileBytes} {
		problems, err := testutil.CollectAndLint(c)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range problems {
			t.Errorf("lint %s: %s", p.Metric, p.Text)
		}
	}
}

// counterWith finds bulkstream_http_requests_total with the given labels
// (route="…",method="…",code="…").
func counterWith(t *testing.T, reg *prometheus.Registry, labels string) prometheus.Collector {
	t.Helper()
	vals := map[string]string{}
	for _, kv := range strings.Split(labels, `",`) {
		k, v, _ := strings.Cut(kv, "=")
		vals[k] = strings.Trim(v, `"`)
	}
	m := newMetrics(reg)
	return m.requests.WithLabelValues(vals["route"], vals["method"], vals["code"])
}

func TestPanicRecovery(t *testing.T) {
	var logs bytes.Buffer
	jobs := newFakeJobs()
	h := New(Config{Jobs: &panicJobs{jobs}, PublicURL: testPublicURL,
		Logger: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	rec := serve(h, request{method: "GET", target: "/fhir/bulkstatus/x"})
	checkOutcome(t, rec, http.StatusInternalServerError, "internal server error")
	if !strings.Contains(logs.String(), "panic serving request") || !strings.Contains(logs.String(), "boom") {
		t.Errorf("panic not logged:\n%s", logs.String())
	}
	if !strings.Contains(logs.String(), `route=/fhir/bulkstatus/:id method=GET status=500`) {
		t.Errorf("no request line for the panicking request:\n%s", logs.String())
	}
}

type panicJobs struct{ *fakeJobs }

func (panicJobs) Status(string, string) (export.Status, error) { panic("boom") }

func TestRequestLog(t *testing.T) {
	var logs bytes.Buffer
	jobs := newFakeJobs()
	h := New(Config{Jobs: jobs, PublicURL: testPublicURL,
		Logger: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelInfo}))})
	serve(h, request{method: "GET", target: "/fhir/bulkstatus/abc"})
	serve(h, request{method: "GET", target: "/healthz"}) // debug level: not shown
	lines := strings.Split(strings.TrimSpace(logs.String()), "\n")
	if len(lines) != 1 {
		t.Fatalf("got %d log lines, want 1:\n%s", len(lines), logs.String())
	}
	for _, want := range []string{"msg=\"http request\"", "component=http", "route=/fhir/bulkstatus/:id", "method=GET", "status=404", "bytes=", "duration="} {
		if !strings.Contains(lines[0], want) {
			t.Errorf("log line %q lacks %q", lines[0], want)
		}
	}
	if strings.Contains(lines[0], "abc") {
		t.Errorf("log line %q names the raw path", lines[0])
	}
}

func TestAbortHandlerPanicPropagates(t *testing.T) {
	a := &api{log: slog.New(slog.DiscardHandler), metrics: newMetrics(nil)}
	defer func() {
		if v := recover(); v != http.ErrAbortHandler {
			t.Errorf("recovered %v, want http.ErrAbortHandler re-panicked", v)
		}
	}()
	a.instrument(httptest.NewRecorder(), httptest.NewRequest("GET", "/", nil),
		http.HandlerFunc(func(http.ResponseWriter, *http.Request) { panic(http.ErrAbortHandler) }))
}
