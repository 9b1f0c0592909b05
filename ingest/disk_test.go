package ingest_test

import (
	"sync/atomic"
	"testing"
	"time"

	"github.com/bulkstream/bulkstream/ingest"
	"github.com/bulkstream/bulkstream/ingest/ingesttest"
	"github.com/prometheus/client_golang/prometheus"
)

// TestDiskPause drives the free-space floor with an injected measurement:
// below it nothing is applied or acked (the events wait in the stream),
// the consumer says it is paused, and it resumes by itself once the space
// is back.
func TestDiskPause(t *testing.T) {
	_, _, js := ingesttest.RunJetStream(t)
	var free atomic.Int64
	free.Store(1 << 30)
	dir := t.TempDir()
	reg := prometheus.NewRegistry()
	idx := openIndex(t)
	c := startConsumer(t, js, idx, ingest.Config{
		FetchWait:    50 * time.Millisecond,
		MinFreeBytes: 1 << 20,
		DiskDir:      dir,
		DiskPoll:     20 * time.Millisecond,
		FreeBytes: func(d string) (int64, bool, error) {
			if d != dir {
				t.Errorf("free space measured under %q, want %q", d, dir)
			}
			return free.Load(), true, nil
		},
		Registerer: reg,
	})
	p := newPublisher(t, js)
	publish := func(from, to int) { t.Helper(); publishRange(t, p, from, to) }
	publish(0, 10)
	waitCaughtUp(t, c, idx)
	applied := idx.AppliedSeq()

	// Just above the floor, but not with room for the batch: paused.
	free.Store(1<<20 + 10)
	publish(10, 50)
	checkFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if !c.DiskPaused() {
			return errorf("not paused")
		}
		return nil
	})
	if v := gauge(t, reg, "bulkstream_ingest_disk_paused"); v != 1 {
		t.Errorf("disk_paused gauge %v while paused, want 1", v)
	}
	time.Sleep(200 * time.Millisecond) // ten polls: still paused, nothing applied
	if got := idx.AppliedSeq(); got != applied {
		t.Fatalf("applied seq moved from %d to %d while paused", applied, got)
	}
	info, err := js.Consumer(t.Context(), ingest.DefaultStream, ingest.DefaultDurable)
	if err != nil {
		t.Fatal(err)
	}
	if ack := info.CachedInfo().AckFloor.Stream; ack > applied {
		t.Fatalf("ack floor %d past the applied seq %d while paused", ack, applied)
	}

	free.Store(1 << 30)
	waitCaughtUp(t, c, idx)
	if res, _ := countOf(idx, "Patient"); res != 50 {
		t.Errorf("%d patients applied after the pause, want 50", res)
	}
	if c.DiskPaused() || gauge(t, reg, "bulkstream_ingest_disk_paused") != 0 {
		t.Error("still paused after the space came back")
	}
}

// TestDiskPauseOff: a negative floor never measures.
func TestDiskPauseOff(t *testing.T) {
	_, _, js := ingesttest.RunJetStream(t)
	idx := openIndex(t)
	c := startConsumer(t, js, idx, ingest.Config{
		FetchWait:    50 * time.Millisecond,
		MinFreeBytes: -1,
		DiskDir:      t.TempDir(),
		FreeBytes: func(string) (int64, bool, error) {
			t.Error("free space measured with the check off")
			return 0, true, nil
		},
	})
	p := newPublisher(t, js)
	if err := p.Upsert(t.Context(), []byte(`{"resourceType":"Patient","id":"p"}`)); err != nil {
		t.Fatal(err)
	}
	if err := p.Flush(t.Context()); err != nil {
		t.Fatal(err)
	}
	waitCaughtUp(t, c, idx)
}
