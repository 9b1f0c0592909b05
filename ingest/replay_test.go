package ingest_test

import (
	"bytes"
	"fmt"
	"testing"

	"github.com/bulkstream/bulkstream/index"
	"github.com/bulkstream/bulkstream/ingest"
	"github.com/bulkstream/bulkstream/ingest/ingesttest"
)

// TestReplay: replaying the stream into a fresh index, in batches smaller
// than the stream, gives the index the live consumer built (every entry,
// commit time and stored byte, tombstones included, and the applied
// sequence), counts the event that was dead-lettered, and creates no
// durable consumer. An empty stream replays to nothing.
func TestReplay(t *testing.T) {
	_, _, js := ingesttest.RunJetStream(t)
	ctx := t.Context()
	live := openIndex(t)
	cfg := ingest.Config{BatchSize: 7}
	c := startConsumer(t, js, live, cfg)

	empty := openIndex(t)
	st, err := ingest.Replay(ctx, js, cfg, empty, nil)
	if err != nil || st != (ingest.ReplayStats{}) {
		t.Fatalf("empty stream: %+v, %v; want nothing", st, err)
	}

	p := newPublisher(t, js)
	for i := range 30 {
		body := fmt.Sprintf(`{"resourceType":"Patient","id":"p%d","n":%d}`, i%12, i)
		if err := p.Upsert(ctx, []byte(body)); err != nil {
			t.Fatal(err)
		}
	}
	for _, id := range []string{"p3", "p4"} {
		if err := p.Delete(ctx, "Patient", id); err != nil {
			t.Fatal(err)
		}
	}
	if err := p.Upsert(ctx, []byte(`{"resourceType":"Observation","id":"o1","status":"final"}`)); err != nil {
		t.Fatal(err)
	}
	if err := p.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	// Not an event: dead-lettered by the consumer, counted by Replay.
	if _, err := js.Publish(ctx, "fhir.Patient.bad", []byte("not json")); err != nil {
		t.Fatal(err)
	}
	if err := p.Upsert(ctx, []byte(`{"resourceType":"Patient","id":"p0","n":99}`)); err != nil {
		t.Fatal(err)
	}
	if err := p.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	head := waitCaughtUp(t, c, live)

	fresh := openIndex(t)
	st, err = ingest.Replay(ctx, js, cfg, fresh, nil)
	if err != nil {
		t.Fatal(err)
	}
	if want := (ingest.ReplayStats{Messages: int(head), Applied: int(head) - 1, Rejected: 1, LastSeq: head}); st != want {
		t.Errorf("stats %+v, want %+v", st, want)
	}
	if fresh.AppliedSeq() != live.AppliedSeq() {
		t.Errorf("applied seq %d, want the live index's %d", fresh.AppliedSeq(), live.AppliedSeq())
	}
	for _, typ := range []string{"Patient", "Observation"} {
		got, want := scanAll(t, fresh, typ), scanAll(t, live, typ)
		if len(want) == 0 {
			t.Fatalf("the live index holds no %s", typ)
		}
		if !sameEntries(got, want) {
			t.Errorf("%s: replayed %+v\nwant %+v", typ, got, want)
		}
	}
	if _, tomb := countOf(fresh, "Patient"); tomb != 2 {
		t.Errorf("replayed Patient tombstones %d, want 2", tomb)
	}

	stream, err := js.Stream(ctx, ingest.DefaultStream)
	if err != nil {
		t.Fatal(err)
	}
	var durables []string
	consumers := stream.ListConsumers(ctx)
	for ci := range consumers.Info() {
		if ci.Config.Durable != "" {
			durables = append(durables, ci.Config.Durable)
		}
	}
	if err := consumers.Err(); err != nil {
		t.Fatal(err)
	}
	if len(durables) != 1 || durables[0] != ingest.DefaultDurable {
		t.Errorf("durable consumers on the stream %q, want only the live one (replay reads with an ordered consumer)", durables)
	}
}

func sameEntries(a, b []index.Entry) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].Type != b[i].Type || a[i].ID != b[i].ID || a[i].CommitTime != b[i].CommitTime ||
			a[i].Deleted != b[i].Deleted || !bytes.Equal(a[i].Resource, b[i].Resource) {
			return false
		}
	}
	return true
}
