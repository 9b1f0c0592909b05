package httpapi

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	requests    *prometheus.CounterVec
	duration    *prometheus.HistogramVec
	filesServed prometheus.Counter
	fileBytes   prometheus.Counter
	tokens      *prometheus.CounterVec
}

// newMetrics builds the HTTP metrics and registers them on reg (nil: not
// registered). A second handler on the same registry shares the first's
// collectors instead of panicking.
func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bulkstream_http_requests_total",
			Help: "HTTP requests served, by route pattern, method and status code.",
		}, []string{"route", "method", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "bulkstream_http_request_duration_seconds",
			Help:    "Time to serve an HTTP request, by route pattern (downloads included).",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300, 900},
		}, []string{"route"}),
		filesServed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "bulkstream_export_files_served_total",
			Help: "Export file downloads answered with 200 or 206 (GET only).",
		}),
		fileBytes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "bulkstream_export_file_bytes_served_total",
			Help: "Response body bytes of export file downloads, after gzip when compressed.",
		}),
		tokens: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bulkstream_auth_token_requests_total",
			Help: "Token endpoint requests, by result: issued, an OAuth error code, or server_error.",
		}, []string{"result"}),
	}
	if reg == nil {
		return m
	}
	m.requests = register(reg, m.requests)
	m.duration = register(reg, m.duration)
	m.filesServed = register(reg, m.filesServed)
	m.fileBytes = register(reg, m.fileBytes)
	m.tokens = register(reg, m.tokens)
	return m
}

func register[C prometheus.Collector](reg prometheus.Registerer, c C) C {
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(C); ok {
				return existing
			}
		}
		panic(err)
	}
	return c
}
