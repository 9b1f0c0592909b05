package index_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/cockroachdb/pebble/v2/vfs/errorfs"

	"github.com/bulkstream/bulkstream/index"
	"github.com/bulkstream/bulkstream/index/indextest"
)

// TestWALFailureDoesNotPanic: a WAL write failing (ENOSPC on a full disk)
// makes Pebble call Logger.Fatalf, which must not panic the process (it
// would take the HTTP API down with the store). The failed Apply returns
// an error and its sequence does not count as applied, Ready reports the
// failure, every later write is refused, reads still work, and Close
// returns.
func TestWALFailureDoesNotPanic(t *testing.T) {
	var full atomic.Bool
	enospc := errorfs.InjectorFunc(func(op errorfs.Op) error {
		if full.Load() && strings.HasSuffix(op.Path, ".log") &&
			(op.Kind == errorfs.OpFileWrite || op.Kind == errorfs.OpFileWriteAt || op.Kind == errorfs.OpFileSync ||
				op.Kind == errorfs.OpFileSyncData || op.Kind == errorfs.OpFileFlush) {
			return syscall.ENOSPC
		}
		return nil
	})
	x := indextest.OpenOptions(t, &index.Options{FS: errorfs.Wrap(vfs.NewMem(), enospc)})
	ctx := context.Background()
	put := func(seq uint64) index.Change {
		return index.Change{Seq: seq, Time: t0.Add(time.Duration(seq) * time.Second), Type: "Patient", ID: "p1",
			Body: fmt.Appendf(nil, `{"resourceType":"Patient","id":"p1","n":%d}`, seq)}
	}
	mustApply(t, x, []index.Change{put(1)}, 0)
	if err := x.Ready(); err != nil {
		t.Fatalf("Ready before the failure: %v", err)
	}

	full.Store(true)
	if _, err := x.Apply(ctx, []index.Change{put(2)}, 0); !errors.Is(err, index.ErrFailed) {
		t.Fatalf("Apply on a full disk: %v, want ErrFailed", err)
	}
	if got := x.AppliedSeq(); got != 1 {
		t.Errorf("AppliedSeq after the failed commit = %d, want 1", got)
	}
	if err := x.Ready(); !errors.Is(err, index.ErrFailed) || !strings.Contains(err.Error(), "no space") {
		t.Errorf("Ready after the failure = %v, want ErrFailed naming the cause", err)
	}
	// The disk has room again, but the store stays failed until a restart:
	// Pebble's commit pipeline does not recover.
	full.Store(false)
	if _, err := x.Apply(ctx, []index.Change{put(3)}, 0); !errors.Is(err, index.ErrFailed) {
		t.Errorf("Apply after the failure: %v, want ErrFailed", err)
	}
	if err := x.PutJob("j1", []byte("rec")); !errors.Is(err, index.ErrFailed) {
		t.Errorf("PutJob after the failure: %v, want ErrFailed", err)
	}
	s, err := x.Snapshot()
	if err != nil {
		t.Fatalf("Snapshot after the failure: %v", err)
	}
	if n := len(scanAll(t, s, "Patient", 0, index.Unbounded)); n != 1 {
		t.Errorf("scan after the failure: %d entries, want 1", n)
	}
	s.Close()
	closed := make(chan error, 1)
	go func() { closed <- x.Close() }()
	select {
	case err := <-closed:
		if err != nil {
			t.Errorf("Close after the failure: %v, want nil (the failure was reported)", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Close hangs after the failure")
	}
}

// TestOpenOnFullDisk: opening read-write flushes the WAL left by the last
// run, which Pebble retries forever on a full disk, so the process never
// served. With less free space than that flush needs, Open opens the store
// read-only instead: reads and job records work, Ready reports why, and
// writes are refused. With room again, it opens read-write.
func TestOpenOnFullDisk(t *testing.T) {
	fs := vfs.NewMem()
	x := indextest.OpenOptions(t, &index.Options{FS: fs})
	mustApply(t, x, genChanges(3, 50), 0)
	if err := x.PutJob("j1", []byte("rec")); err != nil {
		t.Fatal(err)
	}
	want := dump(t, x)
	if err := x.Close(); err != nil {
		t.Fatal(err)
	}

	fs.TestingSetDiskUsage(vfs.DiskUsage{AvailBytes: 4096, TotalBytes: 64 << 20, UsedBytes: 64<<20 - 4096})
	x = indextest.OpenOptions(t, &index.Options{FS: fs})
	if err := x.Ready(); !errors.Is(err, index.ErrFailed) || !strings.Contains(err.Error(), "read-only") {
		t.Errorf("Ready on a full disk = %v, want ErrFailed saying read-only", err)
	}
	if got := dump(t, x); got != want {
		t.Errorf("read-only index differs from the one closed")
	}
	if rec, err := x.GetJob("j1"); err != nil || string(rec) != "rec" {
		t.Errorf("GetJob read-only = %q, %v", rec, err)
	}
	if _, err := x.Apply(context.Background(), genChanges(4, 60)[50:], 0); !errors.Is(err, index.ErrFailed) {
		t.Errorf("Apply read-only: %v, want ErrFailed", err)
	}
	if err := x.DeleteJob("j1"); !errors.Is(err, index.ErrFailed) {
		t.Errorf("DeleteJob read-only: %v, want ErrFailed", err)
	}
	if err := x.Close(); err != nil {
		t.Fatal(err)
	}

	fs.TestingSetDiskUsage(vfs.DiskUsage{AvailBytes: 1 << 30, TotalBytes: 2 << 30, UsedBytes: 1 << 30})
	x = indextest.OpenOptions(t, &index.Options{FS: fs})
	if err := x.Ready(); err != nil {
		t.Errorf("Ready with room again: %v", err)
	}
	mustApply(t, x, genChanges(4, 60)[50:], 0)
}
