package ingest

import (
	"errors"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the consumer's Prometheus metrics. Labels are bounded: type
// is one of the 146 R4 types (Decode rejects others), op is upsert or
// delete, reason one of Reasons, stage one of fetch, dlq, apply, resync.
type metrics struct {
	applied      *prometheus.CounterVec // type, op
	noop         *prometheus.CounterVec // type
	deadLettered *prometheus.CounterVec // reason
	redelivered  prometheus.Counter     // already applied, acked only
	errors       *prometheus.CounterVec // stage
	batchSize    prometheus.Histogram   // messages
	commit       prometheus.Histogram   // seconds
	collectors   []prometheus.Collector // for registration
}

// gauges read live state of a Consumer. Lag and pending compare the
// applied sequence with the stream's head, never with what the durable
// consumer says it delivered: a consumer that is gone, stuck or
// redelivering a failing batch has delivered everything it counts.
type gauges struct {
	lastSeq     atomic.Uint64 // applied sequence
	lastTimeUS  atomic.Int64  // JetStream timestamp of the last applied message, µs
	head        atomic.Uint64 // the stream's last sequence, as last seen
	diskPaused  atomic.Bool
	conn        func() *nats.Conn
	nowForTests func() time.Time
}

// pending is the number of stream sequences after the applied one.
func (g *gauges) pending() uint64 {
	if h, a := g.head.Load(), g.lastSeq.Load(); h > a {
		return h - a
	}
	return 0
}

// sawHead records that the stream reaches at least seq.
func (g *gauges) sawHead(seq uint64) {
	for {
		h := g.head.Load()
		if seq <= h || g.head.CompareAndSwap(h, seq) {
			return
		}
	}
}

func (g *gauges) lag() float64 {
	if g.pending() == 0 {
		return 0
	}
	t := g.lastTimeUS.Load()
	if t == 0 {
		return 0
	}
	now := time.Now
	if g.nowForTests != nil {
		now = g.nowForTests
	}
	return max(0, now().Sub(time.UnixMicro(t)).Seconds())
}

func newMetrics(g *gauges) *metrics {
	const ns, sub = "bulkstream", "ingest"
	m := &metrics{
		applied: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "events_applied_total",
			Help: "Change events committed to the index, by resource type and operation.",
		}, []string{"type", "op"}),
		noop: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "events_noop_total",
			Help: "Changes that wrote nothing: upserts equal to the stored version (but for versionId and lastUpdated) and deletes of resources that do not exist. Acked, no new version, no tombstone.",
		}, []string{"type"}),
		deadLettered: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "events_dead_lettered_total",
			Help: "Change events republished to the dead-letter stream, by reason.",
		}, []string{"reason"}),
		redelivered: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "events_redelivered_total",
			Help: "Messages delivered again after their batch was committed; acked without applying.",
		}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "errors_total",
			Help: "Failed fetch-loop steps, by stage (fetch, dlq, apply, resync); the batch is retried.",
		}, []string{"stage"}),
		batchSize: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: ns, Subsystem: sub, Name: "batch_messages",
			Help:    "Messages per committed batch.",
			Buckets: prometheus.ExponentialBuckets(1, 4, 7), // 1 … 4096
		}),
		commit: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: ns, Subsystem: sub, Name: "commit_duration_seconds",
			Help:    "Time to apply and fsync one batch.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14), // 0.5ms … 4s
		}),
	}
	for _, r := range Reasons {
		m.deadLettered.WithLabelValues(r)
	}
	for _, s := range []string{"fetch", "dlq", "apply", "resync"} {
		m.errors.WithLabelValues(s)
	}
	m.collectors = []prometheus.Collector{
		m.applied, m.noop, m.deadLettered, m.redelivered, m.errors, m.batchSize, m.commit,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Namespace: ns, Subsystem: sub, Name: "lag_seconds",
			Help: "Now minus the JetStream timestamp of the last applied message while the applied sequence is below the stream head; 0 when caught up.",
		}, g.lag),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Namespace: ns, Subsystem: sub, Name: "applied_sequence",
			Help: "Last stream sequence committed to the index.",
		}, func() float64 { return float64(g.lastSeq.Load()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Namespace: ns, Subsystem: sub, Name: "pending_messages",
			Help: "Stream head (last sequence) minus the applied sequence.",
		}, func() float64 { return float64(g.pending()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Namespace: ns, Subsystem: sub, Name: "disk_paused",
			Help: "1 while ingest is paused because the index disk has less free space than --ingest-min-free-bytes.",
		}, func() float64 {
			if g.diskPaused.Load() {
				return 1
			}
			return 0
		}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Namespace: ns, Subsystem: sub, Name: "nats_connected",
			Help: "1 when the NATS connection is up.",
		}, func() float64 {
			if nc := g.conn(); nc != nil && nc.IsConnected() {
				return 1
			}
			return 0
		}),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "nats_reconnects_total",
			Help: "Reconnections of the NATS connection.",
		}, func() float64 {
			if nc := g.conn(); nc != nil {
				return float64(nc.Stats().Reconnects)
			}
			return 0
		}),
	}
	return m
}

func (m *metrics) register(reg prometheus.Registerer) error {
	if reg == nil {
		return nil
	}
	var errs []error
	for _, c := range m.collectors {
		if err := reg.Register(c); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		m.unregister(reg)
		return err
	}
	return nil
}

func (m *metrics) unregister(reg prometheus.Registerer) {
	if reg == nil {
		return
	}
	for _, c := range m.collectors {
		reg.Unregister(c)
	}
}
