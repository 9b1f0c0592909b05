package export

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

// Results of a finished job, the values of the result label.
const (
	resultCompleted = "completed"
	resultFailed    = "failed"
	resultCancelled = "cancelled"
)

// metrics are the manager's Prometheus metrics. Labels are bounded: state
// is one of the four States, result one of completed, failed, cancelled,
// reason one of the TooManyJobsError reasons, type a resource type (ingest admits only the R4 types).
type metrics struct {
	finished   *prometheus.CounterVec // result
	failed     *prometheus.CounterVec // reason
	skipped    *prometheus.CounterVec // type
	damaged    prometheus.Counter
	throttled  *prometheus.CounterVec   // reason
	resources  *prometheus.CounterVec   // type
	deleted    *prometheus.CounterVec   // type
	bytes      *prometheus.CounterVec   // type
	duration   *prometheus.HistogramVec // result
	toManifest prometheus.Histogram
	catchUp    prometheus.Histogram
	collectors []prometheus.Collector
}

func newMetrics(m *Manager) *metrics {
	const ns, sub = "bulkstream", "export"
	durations := prometheus.ExponentialBuckets(0.01, 3, 12) // 10ms … ~30min
	mt := &metrics{
		finished: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "jobs_finished_total",
			Help: "Export jobs that left the queued/running states, by result (completed, failed, cancelled).",
		}, []string{"result"}),
		failed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "jobs_failed_total",
			Help: "Export jobs that failed, by reason (disk_reserve: stopped before the disk fell below --export-reserve-bytes; disk_full; not_writable; catch_up; internal).",
		}, []string{"reason"}),
		skipped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "resources_skipped_total",
			Help: "Stored resources left out of an export because _elements could not be applied to them (each is an OperationOutcome in the job's error file), by resource type.",
		}, []string{"type"}),
		damaged: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "files_damaged_total",
			Help: "Export files found truncated or changed on disk at download; each turns its job failed.",
		}),
		throttled: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "kickoffs_throttled_total",
			Help: "Kick-offs refused with 429, by reason (server_limit: --max-export-jobs; client_quota: the client's max_jobs).",
		}, []string{"reason"}),
		resources: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "resources_written_total",
			Help: "Resources written to completed output files, by resource type.",
		}, []string{"type"}),
		deleted: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "deletions_written_total",
			Help: "Deletions written to completed deleted files, by resource type.",
		}, []string{"type"}),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "written_bytes_total",
			Help: "Bytes of completed output and deleted files, by resource type.",
		}, []string{"type"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: ns, Subsystem: sub, Name: "job_duration_seconds",
			Help:    "Time a worker spent on a job (catch-up wait included), by result.",
			Buckets: durations,
		}, []string{"result"}),
		toManifest: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: ns, Subsystem: sub, Name: "time_to_manifest_seconds",
			Help:    "Time from kick-off to a completed manifest (queueing included).",
			Buckets: durations,
		}),
		catchUp: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: ns, Subsystem: sub, Name: "catch_up_wait_seconds",
			Help:    "Time jobs waited for ingest to apply the stream head recorded at kick-off.",
			Buckets: prometheus.ExponentialBuckets(0.001, 4, 10), // 1ms … ~4min
		}),
	}
	// Every result and reason is exported from the start, at 0, so rates
	// and alerts see the first failure or refusal.
	for _, r := range []string{resultCompleted, resultFailed, resultCancelled} {
		mt.finished.WithLabelValues(r)
	}
	for _, r := range []string{ReasonServerLimit, ReasonClientQuota} {
		mt.throttled.WithLabelValues(r)
	}
	for _, r := range failReasons {
		mt.failed.WithLabelValues(r)
	}
	mt.collectors = []prometheus.Collector{mt.finished, mt.failed, mt.skipped, mt.damaged, mt.throttled, mt.resources, mt.deleted, mt.bytes,
		mt.duration, mt.toManifest, mt.catchUp, &stateCollector{m: m}}
	return mt
}

func (mt *metrics) register(reg prometheus.Registerer) error {
	for i, c := range mt.collectors {
		if err := reg.Register(c); err != nil {
			for _, done := range mt.collectors[:i] {
				reg.Unregister(done)
			}
			return err
		}
	}
	return nil
}

func (mt *metrics) unregister(reg prometheus.Registerer) error {
	var errs []error
	for _, c := range mt.collectors {
		if !reg.Unregister(c) {
			errs = append(errs, errors.New("export: metrics collector was not registered"))
		}
	}
	return errors.Join(errs...)
}

// stateCollector reports jobs by state at scrape time.
type stateCollector struct {
	m *Manager
}

var jobsDesc = prometheus.NewDesc("bulkstream_export_jobs",
	"Export jobs known to the manager, by state.", []string{"state"}, nil)

var (
	diskFreeDesc = prometheus.NewDesc("bulkstream_export_disk_free_bytes",
		"Bytes available on the filesystem of the export directory.", nil, nil)
	minFreeDesc = prometheus.NewDesc("bulkstream_export_disk_min_free_bytes",
		"Free space below which kick-offs answer 503 (--min-free-bytes; 0: no check).", nil, nil)
	reserveDesc = prometheus.NewDesc("bulkstream_export_disk_reserve_bytes",
		"Free space running exports never write below: they fail first (--export-reserve-bytes; 0: no check).", nil, nil)
)

func (c *stateCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- jobsDesc
	ch <- diskFreeDesc
	ch <- minFreeDesc
	ch <- reserveDesc
}

func (c *stateCollector) Collect(ch chan<- prometheus.Metric) {
	counts := c.m.stateCounts()
	for _, s := range []State{Queued, Running, Completed, Failed} {
		ch <- prometheus.MustNewConstMetric(jobsDesc, prometheus.GaugeValue, float64(counts[s]), string(s))
	}
	if free, ok, err := c.m.freeBytes(c.m.cfg.Dir); ok && err == nil {
		ch <- prometheus.MustNewConstMetric(diskFreeDesc, prometheus.GaugeValue, float64(free))
	}
	ch <- prometheus.MustNewConstMetric(minFreeDesc, prometheus.GaugeValue, float64(max(0, c.m.cfg.MinFreeBytes)))
	ch <- prometheus.MustNewConstMetric(reserveDesc, prometheus.GaugeValue, float64(max(0, c.m.cfg.ExportReserveBytes)))
}
