// Package metrics builds bulkstream's one Prometheus registry. Only
// cmd/bulkstream imports it; every other package takes the registry as a
// prometheus.Registerer, so tests can pass their own or nil.
package metrics

import (
	"net/http"
	"runtime"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Namespace prefixes every bulkstream metric.
const Namespace = "bulkstream"

// NewRegistry returns a registry with the Go and process collectors and
// bulkstream_build_info{version,goversion} = 1, labelled replica too
// when replica is not "" (a cluster member: the dashboard's replica
// selector lists the values of that label).
func NewRegistry(version, replica string) *prometheus.Registry {
	reg := prometheus.NewRegistry()
	labels := prometheus.Labels{"version": version, "goversion": runtime.Version()}
	if replica != "" {
		labels["replica"] = replica
	}
	buildInfo := prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace:   Namespace,
		Name:        "build_info",
		Help:        "A metric with a constant '1' value labelled by the bulkstream version, the Go version it was built with and, in a cluster, the replica.",
		ConstLabels: labels,
	})
	buildInfo.Set(1)
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		buildInfo,
	)
	return reg
}

// Handler serves reg in the Prometheus text format, or OpenMetrics when the
// scraper asks for it.
func Handler(reg *prometheus.Registry) http.Handler {
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{
		Registry:          reg,
		EnableOpenMetrics: true,
	})
}
