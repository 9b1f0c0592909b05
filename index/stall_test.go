package index_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/bulkstream/bulkstream/index"
	"github.com/bulkstream/bulkstream/index/indextest"
)

// TestReadersDoNotWaitForCommit: while a batch's WAL fsync hangs (a slow
// or stalled disk), AppliedSeq, Clock, Counts, Ready, a metrics scrape
// and a WaitApplied for what is committed already all answer: request
// paths and /metrics call them, and must not queue behind ingest's
// commit. Once the fsync returns, the new state is published.
func TestReadersDoNotWaitForCommit(t *testing.T) {
	stall := indextest.NewWALStall()
	t.Cleanup(stall.Release)
	reg := prometheus.NewRegistry()
	x := indextest.OpenOptions(t, &index.Options{FS: stall.FS(vfs.NewMem()), Registerer: reg})
	put := func(seq uint64, typ string) index.Change {
		return index.Change{Seq: seq, Time: t0.Add(time.Duration(seq) * time.Second), Type: typ, ID: "r1",
			Body: fmt.Appendf(nil, `{"resourceType":%q,"id":"r1","n":%d}`, typ, seq)}
	}
	mustApply(t, x, []index.Change{put(1, "Patient")}, 0)
	clock := x.Clock()

	stall.Arm()
	applied := make(chan error, 1)
	go func() {
		_, err := x.Apply(t.Context(), []index.Change{put(2, "Observation")}, 0)
		applied <- err
	}()
	select {
	case <-stall.Entered():
	case err := <-applied:
		t.Fatalf("Apply returned (%v) without syncing the WAL", err)
	case <-time.After(30 * time.Second):
		t.Fatal("Apply never synced its WAL")
	}

	// Each reader must answer while the commit hangs; a reader that
	// waits for it would wait forever (until release), so a generous
	// bound tells a hang from a slow machine.
	answers := func(name string, f func() error) {
		t.Helper()
		done := make(chan error, 1)
		go func() { done <- f() }()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("%s during a stalled commit: %v", name, err)
			}
		case <-time.After(10 * time.Second):
			t.Errorf("%s waits for the stalled commit", name)
		}
	}
	answers("AppliedSeq", func() error {
		if got := x.AppliedSeq(); got != 1 {
			return fmt.Errorf("AppliedSeq = %d, want 1 (the stalled batch is not committed)", got)
		}
		return nil
	})
	answers("Clock", func() error {
		if got := x.Clock(); got != clock {
			return fmt.Errorf("Clock = %d, want %d", got, clock)
		}
		return nil
	})
	answers("Counts", func() error {
		if got := x.Counts(); len(got) != 1 || got[0].Type != "Patient" {
			return fmt.Errorf("Counts = %+v, want Patient only", got)
		}
		return nil
	})
	answers("Ready", x.Ready)
	answers("WaitApplied(1)", func() error { return x.WaitApplied(t.Context(), 1) })
	answers("metrics scrape", func() error {
		_, err := reg.Gather()
		return err
	})

	stall.Release()
	if err := <-applied; err != nil {
		t.Fatalf("Apply after the stall: %v", err)
	}
	if got := x.AppliedSeq(); got != 2 {
		t.Errorf("AppliedSeq after the commit = %d, want 2", got)
	}
	if got := x.Counts(); len(got) != 2 {
		t.Errorf("Counts after the commit = %+v, want Observation and Patient", got)
	}
}
