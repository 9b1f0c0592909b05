package ingest_test

// Ingest benchmarks (run by `make bench`, see scripts/bench.sh and
// BENCHMARKS.md). They all work on the same messages: Scale copies of the
// Synthea sample from internal/synth (BULKSTREAM_BENCH_SCALE, default 3:
// about 115k resources, 150 MB), and report a rate per second next to the
// byte rate of the message bodies:
//
//   - BenchmarkIngest: JetStream → ingest.Consumer → index (synced
//     batches), the whole stream from the start into a fresh index per op;
//   - BenchmarkIngestNoSync: the same with index.Options.NoSync, to show
//     what the fsync costs;
//   - BenchmarkRawConsume (limit 1): the same stream consumed with the same
//     fetch pattern and AckAll durable, acking the last message of each
//     batch, without decoding or storing anything;
//   - BenchmarkRawPebble (limit 2): the same bodies written to a plain
//     Pebble DB in synced batches of the same size, one ~60-byte key of
//     the index's c/ layout per message, without NATS.
//
// One op is one pass over all messages; run them with -benchtime 1x..3x.
// Setup (JetStream server, publishing, opening stores) is outside the
// timer.

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/bulkstream/bulkstream/index"
	"github.com/bulkstream/bulkstream/ingest"
	"github.com/bulkstream/bulkstream/ingest/ingesttest"
	"github.com/bulkstream/bulkstream/internal/synth"
	"github.com/cockroachdb/pebble/v2"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
)

// benchScaleEnv overrides the number of copies of the sample.
const benchScaleEnv = "BULKSTREAM_BENCH_SCALE"

const benchDefaultScale = 3

// benchMsg is one generated resource: its type, id and body (a slice of
// benchData.arena).
type benchMsg struct {
	typ, id string
	body    []byte
}

type benchData struct {
	scale int
	msgs  []benchMsg
	bytes int64 // sum of len(body)
	arena []byte
}

var (
	benchOnce sync.Once
	benchSet  *benchData
	benchErr  error
)

// benchMessages generates the benchmark messages once per process (memory
// only: no goroutines outlive it, so goleak stays happy).
func benchMessages(b *testing.B) *benchData {
	b.Helper()
	benchOnce.Do(func() {
		scale := benchDefaultScale
		if v := os.Getenv(benchScaleEnv); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil || n < 1 {
				benchErr = fmt.Errorf("%s=%q: want a positive integer", benchScaleEnv, v)
				return
			}
			scale = n
		}
		s, err := synth.OpenSample(synthea)
		if err != nil {
			benchErr = err
			return
		}
		g := &synth.Generator{Sample: s, Seed: 1, Scale: scale}
		d := &benchData{scale: scale, arena: make([]byte, 0, g.Size()), msgs: make([]benchMsg, 0, g.Len())}
		benchErr = g.Each(func(typ, id string, line []byte) error {
			start := len(d.arena)
			d.arena = append(d.arena, line...)
			d.msgs = append(d.msgs, benchMsg{typ: typ, id: id, body: d.arena[start:len(d.arena):len(d.arena)]})
			d.bytes += int64(len(line))
			return nil
		})
		benchSet = d
	})
	if benchErr != nil {
		b.Fatal(benchErr)
	}
	return benchSet
}

// benchStream starts a JetStream server (file storage in a temp dir),
// creates the streams with the default config and publishes every message
// with ingest.Publisher. It returns the JetStream context, the stream and
// its last sequence. Everything is shut down when b ends.
func benchStream(b *testing.B, d *benchData) (jetstream.JetStream, jetstream.Stream, uint64) {
	b.Helper()
	_, _, js := ingesttest.RunJetStream(b)
	ctx := context.Background()
	if err := ingest.EnsureStreams(ctx, js, ingest.Config{}); err != nil {
		b.Fatal(err)
	}
	p, err := ingest.NewPublisher(js, ingest.PublisherConfig{})
	if err != nil {
		b.Fatal(err)
	}
	start := time.Now()
	// Labelled so that CPU profiles (-cpuprofile; pprof -tagignore
	// bench=publish) can leave the setup out.
	pprof.Do(ctx, pprof.Labels("bench", "publish"), func(ctx context.Context) {
		for _, m := range d.msgs {
			if err := p.Upsert(ctx, m.body); err != nil {
				b.Fatal(err)
			}
		}
		if err := p.Flush(ctx); err != nil {
			b.Fatal(err)
		}
	})
	// The durable made by EnsureStreams above is not used; drop it.
	s, err := js.Stream(ctx, ingest.DefaultStream)
	if err != nil {
		b.Fatal(err)
	}
	if err := s.DeleteConsumer(ctx, ingest.DefaultDurable); err != nil {
		b.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		b.Fatal(err)
	}
	if st := p.Stats(); info.State.Msgs != uint64(len(d.msgs)) || st.Duplicates != 0 || st.Failed != 0 {
		b.Fatalf("stream holds %d messages after publishing %d (publisher %+v)", info.State.Msgs, len(d.msgs), st)
	}
	b.Logf("scale %d: %d messages, %.1f MB of bodies (%.1f MB stored), published in %v",
		d.scale, len(d.msgs), float64(d.bytes)/1e6, float64(info.State.Bytes)/1e6, time.Since(start).Round(time.Millisecond))
	return js, s, info.State.LastSeq
}

// reportRate reports n messages per op as unit (events/s, msgs/s, keys/s)
// over the timed duration; b.SetBytes gives the MB/s of the bodies.
func reportRate(b *testing.B, n int, unit string) {
	b.ReportMetric(float64(n)*float64(b.N)/b.Elapsed().Seconds(), unit)
}

// cpuClock sums the process's CPU time, user and system over every thread
// (the in-process NATS server and Pebble's goroutines included), over the
// timed parts of a benchmark. Two cores give at most 2 s of it per second,
// so CPU per event bounds the rate whatever the code's parallelism.
type cpuClock struct{ total, mark time.Duration }

func processCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func (c *cpuClock) start(b *testing.B) { c.mark = processCPU(b) }
func (c *cpuClock) stop(b *testing.B)  { c.total += processCPU(b) - c.mark }

// report reports the CPU microseconds per message, n messages per op.
func (c *cpuClock) report(b *testing.B, n int, unit string) {
	b.ReportMetric(float64(c.total.Microseconds())/float64(n*b.N), "cpu-us/"+unit)
}

func BenchmarkIngest(b *testing.B) { benchIngest(b, nil) }

// BenchmarkIngestNoSync is BenchmarkIngest with unsynced commits: the
// difference is the cost of the fsyncs.
func BenchmarkIngestNoSync(b *testing.B) { benchIngest(b, &index.Options{NoSync: true}) }

// BenchmarkIngestRefs is what the index's reference index (patient
// compartments, Group members, Provenance targets: the product always
// keeps it) costs ingest: each op consumes the whole stream twice, into a
// fresh index with it and into one without (index.Options
// NoReferenceIndex), alternating which goes first, each pass timed on its
// own with its CPU time, so both see the same machine. It reports both
// rates and slower-% = 100 × (1 − with/without).
func BenchmarkIngestRefs(b *testing.B) {
	d := benchMessages(b)
	js, stream, last := benchStream(b, d)
	root := b.TempDir()
	var wall, cpu [2]time.Duration // [0] with the reference index, [1] without
	i, op := 0, 0
	for b.Loop() { // ns/op: both passes with their setup; the metrics below time each pass
		op++
		for k := range 2 {
			side := (k + op) % 2
			i++
			opts := &index.Options{NoReferenceIndex: side == 1}
			w, c := ingestPass(b, d, js, stream, last, filepath.Join(root, fmt.Sprint("index-", i)), opts, fmt.Sprint("bench-refs-", i), false)
			wall[side] += w
			cpu[side] += c
		}
	}
	n := float64(len(d.msgs) * b.N)
	b.ReportMetric(n/wall[0].Seconds(), "events/s")
	b.ReportMetric(n/wall[1].Seconds(), "norefs-events/s")
	b.ReportMetric(float64(cpu[0].Microseconds())/n, "cpu-us/event")
	b.ReportMetric(float64(cpu[1].Microseconds())/n, "norefs-cpu-us/event")
	b.ReportMetric(100*(1-wall[1].Seconds()/wall[0].Seconds()), "slower-%")
}

// ingestPass consumes the whole stream (to sequence last) with a fresh
// ingest.Consumer (durable) into a fresh index in dir, and returns the
// wall and process CPU time from the consumer's start until the index
// has applied last; setup and teardown are outside them. With timed, the
// benchmark timer (stopped by the caller) runs for that part only.
func ingestPass(b *testing.B, d *benchData, js jetstream.JetStream, stream jetstream.Stream, last uint64, dir string, opts *index.Options, durable string, timed bool) (wall, cpu time.Duration) {
	ctx := context.Background()
	// A registry of its own per pass, to log Pebble's compaction count.
	reg := prometheus.NewPedanticRegistry()
	var o index.Options
	if opts != nil {
		o = *opts
	}
	o.Registerer = reg
	idx, err := index.Open(dir, &o)
	if err != nil {
		b.Fatal(err)
	}
	c, err := ingest.New(ingest.Config{Durable: durable}, js, idx)
	if err != nil {
		b.Fatal(err)
	}
	if timed {
		b.StartTimer()
	}
	t0, c0 := time.Now(), processCPU(b)
	// The consumer's goroutine, and Pebble's flushes and compactions
	// started from it, inherit the label.
	pprof.Do(ctx, pprof.Labels("bench", "ingest"), func(ctx context.Context) {
		if err := c.Start(ctx); err != nil {
			b.Fatal(err)
		}
	})
	wctx, cancel := context.WithTimeout(ctx, 15*time.Minute)
	err = idx.WaitApplied(wctx, last)
	cancel()
	if err != nil {
		b.Fatalf("waiting for sequence %d (applied %d): %v", last, idx.AppliedSeq(), err)
	}
	wall, cpu = time.Since(t0), processCPU(b)-c0
	if timed {
		b.StopTimer()
	}
	cctx, cancel := context.WithTimeout(ctx, time.Minute)
	if err := c.Close(cctx); err != nil {
		b.Error(err)
	}
	cancel()
	b.Logf("%s: Pebble at the end: %s", durable, benchPebbleGauges(reg))
	var n int64
	for _, tc := range idx.Counts() {
		n += tc.Resources
	}
	if n != int64(len(d.msgs)) {
		b.Errorf("index holds %d resources, want %d", n, len(d.msgs))
	}
	if err := idx.Close(); err != nil {
		b.Error(err)
	}
	if err := stream.DeleteConsumer(ctx, durable); err != nil {
		b.Error(err)
	}
	if err := os.RemoveAll(dir); err != nil {
		b.Error(err)
	}
	return wall, cpu
}

// benchIngest consumes the whole stream with the real ingest.Consumer into
// a fresh index per op, until the index has applied the last sequence.
func benchIngest(b *testing.B, opts *index.Options) {
	d := benchMessages(b)
	js, stream, last := benchStream(b, d)
	root := b.TempDir()
	b.SetBytes(d.bytes)
	b.ReportAllocs()
	var cpu cpuClock
	i := 0
	for b.Loop() {
		b.StopTimer()
		i++
		_, c := ingestPass(b, d, js, stream, last, filepath.Join(root, fmt.Sprint("index-", i)), opts,
			fmt.Sprint("bench-ingest-", i), true)
		cpu.total += c
		b.StartTimer()
	}
	reportRate(b, len(d.msgs), "events/s")
	cpu.report(b, len(d.msgs), "event")
}

// BenchmarkRawConsume is limit 1: the stream consumed through a durable
// pull consumer of the same configuration (made by ingest.EnsureStreams),
// with the same fetch pattern as ingest.Consumer (FetchNoWait of a batch,
// falling back to one waiting Fetch when none is available), acking the
// last message of each batch (AckAll). Nothing is decoded or stored; only
// the last message's metadata is parsed, to know the position.
func BenchmarkRawConsume(b *testing.B) {
	d := benchMessages(b)
	js, stream, last := benchStream(b, d)
	ctx := context.Background()
	const batchSize = ingest.DefaultBatchSize
	b.SetBytes(d.bytes)
	b.ReportAllocs()
	var cpu cpuClock
	i := 0
	for b.Loop() {
		b.StopTimer()
		i++
		durable := fmt.Sprint("bench-raw-", i)
		if err := ingest.EnsureStreams(ctx, js, ingest.Config{Durable: durable}); err != nil {
			b.Fatal(err)
		}
		cons, err := stream.Consumer(ctx, durable)
		if err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		cpu.start(b)

		var (
			n     int
			bytes int64
			seq   uint64
		)
		for seq < last {
			msgs, err := rawFetch(ctx, cons, batchSize)
			if err != nil {
				b.Fatal(err)
			}
			if len(msgs) == 0 {
				continue
			}
			n += len(msgs)
			for _, m := range msgs {
				bytes += int64(len(m.Data()))
			}
			lm := msgs[len(msgs)-1]
			md, err := lm.Metadata()
			if err != nil {
				b.Fatal(err)
			}
			seq = md.Sequence.Stream
			if err := lm.Ack(); err != nil {
				b.Fatal(err)
			}
		}

		cpu.stop(b)
		b.StopTimer()
		if n != len(d.msgs) || bytes != d.bytes {
			b.Fatalf("consumed %d messages of %d bytes, want %d of %d", n, bytes, len(d.msgs), d.bytes)
		}
		if err := stream.DeleteConsumer(ctx, durable); err != nil {
			b.Error(err)
		}
		b.StartTimer()
	}
	reportRate(b, len(d.msgs), "msgs/s")
	cpu.report(b, len(d.msgs), "msg")
}

// rawFetch is ingest.Consumer's fetch: every message available up to
// batch, or the first to arrive within the fetch wait and whatever came
// with it.
func rawFetch(ctx context.Context, cons jetstream.Consumer, batch int) ([]jetstream.Msg, error) {
	collect := func(dst []jetstream.Msg, mb jetstream.MessageBatch, err error) ([]jetstream.Msg, error) {
		if err != nil {
			return nil, err
		}
		for m := range mb.Messages() {
			dst = append(dst, m)
		}
		return dst, mb.Error()
	}
	mb, err := cons.FetchNoWait(batch)
	msgs, err := collect(nil, mb, err)
	if err != nil || len(msgs) > 0 {
		return msgs, err
	}
	wctx, cancel := context.WithTimeout(ctx, ingest.DefaultFetchWait)
	mb, err = cons.Fetch(1, jetstream.FetchContext(wctx))
	msgs, err = collect(nil, mb, err)
	cancel()
	if errors.Is(err, context.DeadlineExceeded) {
		err = nil
	}
	if err != nil || len(msgs) == 0 {
		return msgs, err
	}
	mb, err = cons.FetchNoWait(batch - len(msgs))
	return collect(msgs, mb, err)
}

// BenchmarkRawPebble is limit 2: the same message bodies written to a
// plain Pebble DB (the index's format version, Pebble's defaults
// otherwise) in batches of ingest.DefaultBatchSize committed with
// pebble.Sync, one key per message in the index's change-key layout
// c/<type>\x00<8-byte µs time>/<id> (about 60 bytes for Synthea's UUID
// ids). No NATS, no decoding, no reads, no second (r/) key per message.
func BenchmarkRawPebble(b *testing.B) {
	d := benchMessages(b)
	root := b.TempDir()
	const batchSize = ingest.DefaultBatchSize
	var keyBytes int64
	for _, m := range d.msgs {
		keyBytes += int64(len("c/") + len(m.typ) + 1 + 8 + 1 + len(m.id))
	}
	b.Logf("%d messages, %.1f MB of bodies, average key %.1f bytes", len(d.msgs), float64(d.bytes)/1e6, float64(keyBytes)/float64(len(d.msgs)))
	b.SetBytes(d.bytes)
	b.ReportAllocs()
	var cpu cpuClock
	i := 0
	for b.Loop() {
		b.StopTimer()
		i++
		dir := filepath.Join(root, fmt.Sprint("pebble-", i))
		db, err := pebble.Open(dir, &pebble.Options{
			FormatMajorVersion: pebble.FormatValueSeparation, // index.formatVersion
			Logger:             benchQuietLogger{},
		})
		if err != nil {
			b.Fatal(err)
		}
		ts := uint64(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).UnixMicro())
		var key []byte
		b.StartTimer()
		cpu.start(b)

		for start := 0; start < len(d.msgs); start += batchSize {
			wb := db.NewBatch()
			for _, m := range d.msgs[start:min(start+batchSize, len(d.msgs))] {
				ts++
				key = append(key[:0], "c/"...)
				key = append(key, m.typ...)
				key = append(key, 0)
				key = binary.BigEndian.AppendUint64(key, ts)
				key = append(key, '/')
				key = append(key, m.id...)
				if err := wb.Set(key, m.body, nil); err != nil {
					b.Fatal(err)
				}
			}
			if err := wb.Commit(pebble.Sync); err != nil {
				b.Fatal(err)
			}
			if err := wb.Close(); err != nil {
				b.Fatal(err)
			}
		}

		cpu.stop(b)
		b.StopTimer()
		// The timed writes leave compaction work behind (Ingest, running
		// longer, pays part of its own); log how much.
		m := db.Metrics()
		b.Logf("op %d: at the end of the writes: %d compactions done, read amp %d, estimated compaction debt %.1f MB",
			i, m.Compact.Count, m.ReadAmp(), float64(m.Compact.EstimatedDebt)/1e6)
		if err := db.Close(); err != nil {
			b.Error(err)
		}
		if err := os.RemoveAll(dir); err != nil {
			b.Error(err)
		}
		b.StartTimer()
	}
	reportRate(b, len(d.msgs), "keys/s")
	cpu.report(b, len(d.msgs), "key")
}

// benchPebbleGauges formats the index's Pebble metrics in reg.
func benchPebbleGauges(reg *prometheus.Registry) string {
	mfs, err := reg.Gather()
	if err != nil {
		return err.Error()
	}
	var out []string
	for _, mf := range mfs {
		name, ok := strings.CutPrefix(mf.GetName(), "bulkstream_index_pebble_")
		if !ok || len(mf.GetMetric()) != 1 {
			continue
		}
		m := mf.GetMetric()[0]
		v := m.GetGauge().GetValue() + m.GetCounter().GetValue()
		out = append(out, fmt.Sprintf("%s %.0f", name, v))
	}
	return strings.Join(out, ", ")
}

type benchQuietLogger struct{}

func (benchQuietLogger) Infof(string, ...any)  {}
func (benchQuietLogger) Errorf(string, ...any) {}
func (benchQuietLogger) Fatalf(format string, args ...any) {
	panic(fmt.Sprintf(format, args...))
}
