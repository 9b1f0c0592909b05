package ingest_test

import (
	"context"
	"fmt"
	"log"
	"os"
	"regexp"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/bulkstream/bulkstream/index"
	"github.com/bulkstream/bulkstream/ingest"
)

// runJetStream starts an embedded single-node JetStream server on a free
// port with its store in a temporary directory, and connects to it. stop
// closes the connection, shuts the server down and removes the store.
func runJetStream() (js jetstream.JetStream, stop func()) {
	dir, err := os.MkdirTemp("", "ingest-example")
	if err != nil {
		log.Fatal(err)
	}
	s, err := server.NewServer(&server.Options{
		Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: dir, NoLog: true, NoSigs: true,
	})
	if err != nil {
		log.Fatal(err)
	}
	s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		log.Fatal("nats server not ready")
	}
	nc, err := nats.Connect(s.ClientURL())
	if err != nil {
		log.Fatal(err)
	}
	js, err = jetstream.New(nc)
	if err != nil {
		log.Fatal(err)
	}
	return js, func() {
		nc.Close()
		s.Shutdown()
		s.WaitForShutdown()
		os.RemoveAll(dir)
	}
}

// ExamplePublisher publishes an upsert and a delete with a Publisher and
// reads back what the stream stored: the subject fhir.<Type>.<id> (a '.'
// in the id escaped as %2E), the Fhir-Op header of the delete, and the
// Nats-Msg-Id naming each change (its random per-Publisher run shown as
// <run>).
func ExamplePublisher() {
	js, stop := runJetStream()
	defer stop()
	ctx := context.Background()
	if err := ingest.EnsureStreams(ctx, js, ingest.Config{}); err != nil {
		log.Fatal(err)
	}

	p, err := ingest.NewPublisher(js, ingest.PublisherConfig{})
	if err != nil {
		log.Fatal(err)
	}
	if err := p.Upsert(ctx, []byte(`{"resourceType":"Patient","id":"p.1","active":true}`)); err != nil {
		log.Fatal(err)
	}
	if err := p.Delete(ctx, "Patient", "p.1"); err != nil {
		log.Fatal(err)
	}
	// Publishes are asynchronous: Flush waits for every ack.
	if err := p.Flush(ctx); err != nil {
		log.Fatal(err)
	}
	fmt.Println("published:", p.Stats().Published)

	stream, err := js.Stream(ctx, ingest.DefaultStream)
	if err != nil {
		log.Fatal(err)
	}
	run := regexp.MustCompile(`[0-9a-f]{16}-`)
	for seq := uint64(1); seq <= 2; seq++ {
		m, err := stream.GetMsg(ctx, seq)
		if err != nil {
			log.Fatal(err)
		}
		fmt.Printf("%d %s op=%q id=%s body=%s\n", m.Sequence, m.Subject, m.Header.Get(ingest.HeaderOp),
			run.ReplaceAllString(m.Header.Get(jetstream.MsgIDHeader), "<run>-"), m.Data)
	}
	// Output:
	// published: 2
	// 1 fhir.Patient.p%2E1 op="" id=Patient/p.1/<run>-1 body={"resourceType":"Patient","id":"p.1","active":true}
	// 2 fhir.Patient.p%2E1 op="delete" id=Patient/p.1/delete/<run>-2 body=
}

// Example_natsGo publishes change events with nats.go alone, as any
// upstream system can, and runs a Consumer that applies them to an index
// on an in-memory filesystem. The subject comes from EncodeSubject,
// Nats-Msg-Id names the change (here a source version), and a delete
// carries the header Fhir-Op: delete.
func Example_natsGo() {
	js, stop := runJetStream()
	defer stop()
	ctx := context.Background()

	x, err := index.Open("index", &index.Options{FS: vfs.NewMem()})
	if err != nil {
		log.Fatal(err)
	}
	defer x.Close()
	c, err := ingest.New(ingest.Config{}, js, x)
	if err != nil {
		log.Fatal(err)
	}
	// Start creates the streams and the durable consumer when missing.
	if err := c.Start(ctx); err != nil {
		log.Fatal(err)
	}
	defer c.Close(ctx)

	publish := func(typ, id, msgID string, body []byte, del bool) uint64 {
		m := nats.NewMsg(ingest.EncodeSubject(ingest.DefaultSubjectPrefix, typ, id))
		m.Header.Set(jetstream.MsgIDHeader, msgID)
		if del {
			m.Header.Set(ingest.HeaderOp, ingest.OpDelete)
		}
		m.Data = body
		ack, err := js.PublishMsg(ctx, m)
		if err != nil {
			log.Fatal(err)
		}
		return ack.Sequence
	}
	publish("Patient", "p.1", "Patient/p.1/v1", []byte(`{"resourceType":"Patient","id":"p.1"}`), false)
	publish("Patient", "p2", "Patient/p2/v1", []byte(`{"resourceType":"Patient","id":"p2"}`), false)
	publish("Patient", "p2", "Patient/p2/v1", []byte(`{"resourceType":"Patient","id":"p2"}`), false) // a retry: dropped by the stream
	last := publish("Patient", "p2", "Patient/p2/v2-delete", nil, true)

	// The consumer applies in the background; wait until the last event
	// is committed.
	if err := x.WaitApplied(ctx, last); err != nil {
		log.Fatal(err)
	}
	snap, err := x.Snapshot()
	if err != nil {
		log.Fatal(err)
	}
	defer snap.Close()
	fmt.Println("applied sequence:", snap.AppliedSeq)
	err = snap.Scan(ctx, "Patient", 0, snap.TransactionTime, func(e index.Entry) error {
		fmt.Printf("%s/%s deleted=%t\n", e.Type, e.ID, e.Deleted)
		return nil
	})
	if err != nil {
		log.Fatal(err)
	}
	// Output:
	// applied sequence: 3
	// Patient/p.1 deleted=false
	// Patient/p2 deleted=true
}

// ExampleReplay rebuilds an index from the stream alone, as bulkstream
// rebuild does: every event from the stream's first message is applied
// to a fresh index, and an event that fails Decode (dead-lettered when the
// live Consumer first saw it) is only counted.
func ExampleReplay() {
	js, stop := runJetStream()
	defer stop()
	ctx := context.Background()
	// Replay commits BatchSize events per batch: here the four events
	// published below go in two.
	cfg := ingest.Config{BatchSize: 2}
	if err := ingest.EnsureStreams(ctx, js, cfg); err != nil {
		log.Fatal(err)
	}
	p, err := ingest.NewPublisher(js, ingest.PublisherConfig{})
	if err != nil {
		log.Fatal(err)
	}
	for _, body := range []string{
		`{"resourceType":"Patient","id":"p1"}`,
		`{"resourceType":"Patient","id":"p2"}`,
		`{"resourceType":"Observation","id":"o1","status":"final"}`,
	} {
		if err := p.Upsert(ctx, []byte(body)); err != nil {
			log.Fatal(err)
		}
	}
	if err := p.Flush(ctx); err != nil {
		log.Fatal(err)
	}
	// Not JSON: the stream keeps it, the index never applies it.
	if _, err := js.Publish(ctx, "fhir.Patient.p3", []byte("not json")); err != nil {
		log.Fatal(err)
	}

	x, err := index.Open("index", &index.Options{FS: vfs.NewMem()})
	if err != nil {
		log.Fatal(err)
	}
	defer x.Close()
	st, err := ingest.Replay(ctx, js, cfg, x, nil)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("read %d, applied %d, rejected %d, last sequence %d\n", st.Messages, st.Applied, st.Rejected, st.LastSeq)
	fmt.Println("index applied sequence:", x.AppliedSeq())
	for _, c := range x.Counts() {
		fmt.Printf("%s: %d\n", c.Type, c.Resources)
	}
	// Output:
	// read 4, applied 3, rejected 1, last sequence 4
	// index applied sequence: 4
	// Observation: 1
	// Patient: 2
}
