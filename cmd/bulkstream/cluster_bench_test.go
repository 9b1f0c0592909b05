package main

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/bulkstream/bulkstream/ingest"
)

// BenchmarkReplicaBootstrap measures how fast a new serve replica applies
// an existing stream: a 3-node NATS cluster holds the Synthea sample in
// the FHIR stream (R3); each op starts a fresh replica (the real binary,
// empty data dir, its own durable consumer) and times it from process
// start until it reports the stream's last sequence applied (polled
// every 50 ms): its start (Pebble, NATS connection, consumer creation)
// is part of the bootstrap. Next to it, in the same op on the same
// cluster, two limits read the whole stream from this process with
// nothing applied: a durable consumer configured as serve's, pulled as
// serve pulls it (no-wait requests of two batches, the last message of
// each batch acked), and an ordered consumer (no acks, no replicated
// consumer state), the other way a replica could follow the stream. On a 2-core machine the
// cluster, the replica and the reader share the CPU, so the ratios say
// more than the figures.
func BenchmarkReplicaBootstrap(b *testing.B) {
	c := startNATSCluster(b, 3)
	urls := c.URLs()
	_, js := connectJS(b, urls)
	ctx := context.Background()
	setup := ingest.Config{Replicas: 3, Durable: "bench-setup"}
	if err := ingest.EnsureStreams(ctx, js, setup); err != nil {
		b.Fatal(err)
	}
	stream, err := js.Stream(ctx, ingest.DefaultStream)
	if err != nil {
		b.Fatal(err)
	}
	if err := stream.DeleteConsumer(ctx, setup.Durable); err != nil {
		b.Fatal(err)
	}
	pub, err := ingest.NewPublisher(js, ingest.PublisherConfig{})
	if err != nil {
		b.Fatal(err)
	}
	for _, r := range loadSample(b) {
		if err := pub.Upsert(ctx, r.body); err != nil {
			b.Fatal(err)
		}
	}
	if err := pub.Flush(ctx); err != nil {
		b.Fatal(err)
	}
	last, err := clusterLastSeq(js)
	if err != nil {
		b.Fatal(err)
	}
	if last != 38483 {
		b.Fatalf("stream last sequence %d after publishing the sample, want 38483", last)
	}

	var replicaTime, durableTime, orderedTime time.Duration
	i := 0
	for b.Loop() {
		i++
		d, err := durableConsume(ctx, js, stream, fmt.Sprint("bench-raw-", i), last)
		if err != nil {
			b.Fatal(err)
		}
		durableTime += d
		if d, err = orderedConsume(ctx, js, last); err != nil {
			b.Fatal(err)
		}
		orderedTime += d

		durable := fmt.Sprint("bench-replica-", i)
		began := time.Now()
		p := start(b, "serve", "--nats-url", urls, "--replicas", "3", "--durable", durable,
			"--data-dir", b.TempDir(), "--listen", anyPort)
		waitAppliedSeq(b, p.serving(b).HTTP, last, 5*time.Minute)
		replicaTime += time.Since(began)
		p.stop(b)
		if err := stream.DeleteConsumer(ctx, durable); err != nil {
			b.Fatal(err)
		}
	}
	rate := func(d time.Duration) float64 { return float64(last) * float64(i) / d.Seconds() }
	replica, durable, ordered := rate(replicaTime), rate(durableTime), rate(orderedTime)
	b.ReportMetric(replica, "replica-events/s")
	b.ReportMetric(durable, "raw-durable-events/s")
	b.ReportMetric(ordered, "raw-ordered-events/s")
	b.ReportMetric(100*replica/durable, "%-of-durable")
	b.ReportMetric(100*replica/ordered, "%-of-ordered")
}

// durableConsume creates durable as serve's ingest does, reads the stream
// up to last as serve's consumer pulls it (a no-wait request of two
// batches at a time, acking the last message of each batch), deletes the
// consumer and returns how long the reading took.
func durableConsume(ctx context.Context, js jetstream.JetStream, stream jetstream.Stream, durable string, last uint64) (time.Duration, error) {
	if err := ingest.EnsureStreams(ctx, js, ingest.Config{Replicas: 3, Durable: durable}); err != nil {
		return 0, err
	}
	cons, err := stream.Consumer(ctx, durable)
	if err != nil {
		return 0, err
	}
	const batch = ingest.DefaultBatchSize
	began := time.Now()
	var n, seq uint64
	for seq < last {
		mb, err := cons.FetchNoWait(2 * batch)
		if err != nil {
			return 0, err
		}
		k := 0
		for m := range mb.Messages() {
			n++
			if k++; k%batch != 0 && n != last {
				continue
			}
			md, err := m.Metadata()
			if err != nil {
				return 0, err
			}
			seq = md.Sequence.Stream
			if err := m.Ack(); err != nil {
				return 0, err
			}
		}
		if err := mb.Error(); err != nil && !errors.Is(err, jetstream.ErrNoMessages) {
			return 0, err
		}
	}
	took := time.Since(began)
	if n != last {
		return 0, fmt.Errorf("durable consumer read %d messages, want %d", n, last)
	}
	return took, stream.DeleteConsumer(ctx, durable)
}

// orderedConsume reads the stream up to last with an ordered consumer
// and returns how long it took.
func orderedConsume(ctx context.Context, js jetstream.JetStream, last uint64) (time.Duration, error) {
	began := time.Now()
	cons, err := js.OrderedConsumer(ctx, ingest.DefaultStream, jetstream.OrderedConsumerConfig{})
	if err != nil {
		return 0, err
	}
	it, err := cons.Messages()
	if err != nil {
		return 0, err
	}
	defer it.Stop()
	var n uint64
	for n < last {
		m, err := it.Next()
		if err != nil {
			return 0, err
		}
		n++
		if n == last {
			md, err := m.Metadata()
			if err != nil {
				return 0, err
			}
			if md.Sequence.Stream != last {
				return 0, fmt.Errorf("ordered consumer: message %d has stream sequence %d", n, md.Sequence.Stream)
			}
		}
	}
	return time.Since(began), nil
}
