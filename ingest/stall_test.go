package ingest_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bulkstream/bulkstream/index"
	"github.com/bulkstream/bulkstream/ingest"
	"github.com/bulkstream/bulkstream/ingest/ingesttest"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
)

// logBuffer collects log lines from several goroutines.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) count(s string) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return strings.Count(b.buf.String(), s)
}

func publishRange(t testing.TB, p *ingest.Publisher, from, to int) {
	t.Helper()
	for i := from; i < to; i++ {
		if err := p.Upsert(t.Context(), []byte(`{"resourceType":"Patient","id":"p`+jsonNumber(uint64(i))+`"}`)); err != nil {
			t.Fatal(err)
		}
	}
	if err := p.Flush(t.Context()); err != nil {
		t.Fatal(err)
	}
}

func waitPatients(t testing.TB, idx *index.Index, n int64) {
	t.Helper()
	checkFor(t, 30*time.Second, 20*time.Millisecond, func() error {
		if res, _ := countOf(idx, "Patient"); res != n {
			return errorf("%d patients applied, want %d", res, n)
		}
		return nil
	})
}

// TestConsumerDeletedAtRuntime: the durable consumer deleted under a
// running ingest (`nats consumer rm FHIR bulkstream`) is created again
// after the applied sequence, and everything published is applied.
func TestConsumerDeletedAtRuntime(t *testing.T) {
	_, _, js := ingesttest.RunJetStream(t)
	var logs logBuffer
	idx := openIndex(t)
	c := startConsumer(t, js, idx, ingest.Config{
		FetchWait: 100 * time.Millisecond,
		Logger:    slog.New(slog.NewTextHandler(&logs, nil)),
	})
	p := newPublisher(t, js)
	publishRange(t, p, 0, 20)
	waitCaughtUp(t, c, idx)

	if err := js.DeleteConsumer(t.Context(), ingest.DefaultStream, ingest.DefaultDurable); err != nil {
		t.Fatal(err)
	}
	publishRange(t, p, 20, 50)
	t.Cleanup(func() {
		if t.Failed() {
			t.Log(logs.buf.String())
		}
	})
	waitPatients(t, idx, 50)
	waitCaughtUp(t, c, idx)
	cons, err := js.Consumer(t.Context(), ingest.DefaultStream, ingest.DefaultDurable)
	if err != nil {
		t.Fatalf("durable consumer not created again: %v", err)
	}
	if cfg := cons.CachedInfo().Config; cfg.AckPolicy != jetstream.AckAllPolicy || cfg.MaxDeliver != -1 {
		t.Errorf("recreated consumer config %+v", cfg)
	}
	if logs.count("durable consumer was missing") == 0 {
		t.Errorf("the recreation was not logged:\n%s", logs.buf.String())
	}
	// And it keeps working.
	publishRange(t, p, 50, 60)
	waitPatients(t, idx, 60)
}

// TestDLQDeletedAtRuntime: with the dead-letter stream deleted, a bad
// event is not stuck forever: the stream is created again, the bad event
// is in it and the good ones around it are applied.
func TestDLQDeletedAtRuntime(t *testing.T) {
	_, _, js := ingesttest.RunJetStream(t)
	idx := openIndex(t)
	c := startConsumer(t, js, idx, ingest.Config{FetchWait: 100 * time.Millisecond})
	p := newPublisher(t, js)
	publishRange(t, p, 0, 5)
	waitCaughtUp(t, c, idx)

	if err := js.DeleteStream(t.Context(), ingest.DefaultDLQStream); err != nil {
		t.Fatal(err)
	}
	publishRange(t, p, 5, 10)
	if _, err := js.PublishMsg(t.Context(), &nats.Msg{Subject: "fhir.Patient.bad", Data: []byte(`{"resourceType":"Patient","id":"bad","meta":{"tag":"not-an-array"}}`)}); err != nil {
		t.Fatal(err)
	}
	publishRange(t, p, 10, 15)
	waitCaughtUp(t, c, idx)
	waitPatients(t, idx, 15)
	dlq, err := js.Stream(t.Context(), ingest.DefaultDLQStream)
	if err != nil {
		t.Fatalf("dead-letter stream not created again: %v", err)
	}
	if n := dlq.CachedInfo().State.Msgs; n != 1 {
		t.Fatalf("dead-letter stream holds %d messages, want 1", n)
	}
	m, err := dlq.GetMsg(t.Context(), dlq.CachedInfo().State.FirstSeq)
	if err != nil {
		t.Fatal(err)
	}
	if m.Subject != "bulkstream.dlq."+ingest.ReasonBadMeta || m.Header.Get(ingest.HeaderDLQSubject) != "fhir.Patient.bad" {
		t.Errorf("dead letter on %s with headers %v", m.Subject, m.Header)
	}
}

// stuckApplier fails every Apply while stuck is set.
type stuckApplier struct {
	*index.Index
	stuck atomic.Bool
}

func (a *stuckApplier) Apply(ctx context.Context, changes []index.Change, lastSeq uint64) ([]index.Result, error) {
	if a.stuck.Load() {
		return nil, errors.New("simulated failing commit")
	}
	return a.Index.Apply(ctx, changes, lastSeq)
}

// TestStallIsVisible: while nothing can be applied, pending and lag are
// measured against the stream head (the consumer has delivered the
// stuck messages, so its own counters say 0), and ingest never claims to
// have recovered; once commits work again, both go back to 0.
func TestStallIsVisible(t *testing.T) {
	_, _, js := ingesttest.RunJetStream(t)
	var logs logBuffer
	reg := prometheus.NewRegistry()
	idx := openIndex(t)
	app := &stuckApplier{Index: idx}
	app.stuck.Store(true)
	cfg := ingest.Config{
		FetchWait:      100 * time.Millisecond,
		PendingRefresh: 50 * time.Millisecond,
		Registerer:     reg,
		Logger:         slog.New(slog.NewTextHandler(&logs, nil)),
	}
	c := startConsumer(t, js, app, cfg)
	p := newPublisher(t, js)
	publishRange(t, p, 0, 7)

	checkFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if gauge(t, reg, "bulkstream_ingest_pending_messages") != 7 {
			return errorf("pending gauge %v, want 7", gauge(t, reg, "bulkstream_ingest_pending_messages"))
		}
		if c.Lag() <= 0 || gauge(t, reg, "bulkstream_ingest_lag_seconds") <= 0 {
			return errorf("lag %v while stuck, want > 0", c.Lag())
		}
		if logs.count("ingest step failed") == 0 {
			return errorf("no failed step yet")
		}
		return nil
	})
	// Let the failing commits repeat a few times (the backoff doubles).
	checkFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		if v := counter(t, reg, "bulkstream_ingest_errors_total", "stage", "apply"); v < 4 {
			return errorf("%v failed commits", v)
		}
		return nil
	})
	if n := logs.count("ingest recovered"); n != 0 {
		t.Fatalf("%d 'ingest recovered' lines while nothing was committed:\n%s", n, logs.buf.String())
	}
	if idx.AppliedSeq() != 0 {
		t.Fatal("applied while stuck")
	}

	app.stuck.Store(false)
	waitCaughtUp(t, c, idx)
	checkFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if v := gauge(t, reg, "bulkstream_ingest_pending_messages"); v != 0 || c.Lag() != 0 {
			return errorf("pending %v, lag %v after catching up", v, c.Lag())
		}
		if logs.count("ingest recovered") != 1 {
			return errorf("%d 'ingest recovered' lines after the recovery, want 1", logs.count("ingest recovered"))
		}
		return nil
	})
}

// counter returns the sum of the counters name{label=value,...}.
func counter(t testing.TB, g prometheus.Gatherer, name, label, value string) float64 {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == label && l.GetValue() == value {
					sum += m.GetCounter().GetValue()
				}
			}
		}
	}
	return sum
}

// TestNoopCounted: an upsert equal to the stored version, a delete of a
// resource that never existed and a second delete are counted as no-ops,
// not as applied, and leave no tombstone behind.
func TestNoopCounted(t *testing.T) {
	_, _, js := ingesttest.RunJetStream(t)
	reg := prometheus.NewRegistry()
	idx := openIndex(t)
	c := startConsumer(t, js, idx, ingest.Config{FetchWait: 100 * time.Millisecond, Registerer: reg})
	for i, ev := range []struct{ id, body string }{
		{"a", `{"resourceType":"Patient","id":"a","active":true}`},
		{"a", `{"resourceType":"Patient","id":"a","active":true}`}, // the same again: a no-op
		{"a", `{"resourceType":"Patient","id":"a","active":false}`},
		{"ghost", ""}, // a delete of what never existed: a no-op
		{"a", ""},
		{"a", ""}, // deleted already: a no-op
	} {
		m := nats.NewMsg("fhir.Patient." + ev.id)
		m.Data = []byte(ev.body)
		if ev.body == "" {
			m.Header.Set("Fhir-Op", "delete")
		}
		m.Header.Set(jetstream.MsgIDHeader, "change-"+jsonNumber(uint64(i)))
		if _, err := js.PublishMsg(t.Context(), m); err != nil {
			t.Fatal(err)
		}
	}
	waitCaughtUp(t, c, idx)
	// The consumer counts a batch after Apply returns, which is after
	// WaitApplied is woken: wait until all six events are counted.
	checkFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if n := counter(t, reg, "bulkstream_ingest_events_noop_total", "type", "Patient") +
			counter(t, reg, "bulkstream_ingest_events_applied_total", "type", "Patient"); n != 6 {
			return errorf("%v of 6 events counted", n)
		}
		return nil
	})
	if v := counter(t, reg, "bulkstream_ingest_events_noop_total", "type", "Patient"); v != 3 {
		t.Errorf("events_noop_total{type=Patient} %v, want 3", v)
	}
	if v := counter(t, reg, "bulkstream_ingest_events_applied_total", "type", "Patient"); v != 3 {
		t.Errorf("events_applied_total{type=Patient} %v, want 3 (the no-ops not counted)", v)
	}
	if got, want := idx.Counts(), []index.TypeCount{{Type: "Patient", Resources: 0, Tombstones: 1}}; !slices.Equal(got, want) {
		t.Errorf("counts %+v, want %+v (one tombstone, for a)", got, want)
	}
}
