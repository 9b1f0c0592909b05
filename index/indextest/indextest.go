// Package indextest provides helpers for tests of code that uses the index:
// an index on an in-memory filesystem that is closed when the test ends.
package indextest

import (
	"bufio"
	"context"
	"io"
	"os"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/bulkstream/bulkstream/index"
)

// Open returns an empty index on a fresh vfs.NewMem() filesystem. It is
// closed by t.Cleanup, and the test fails if closing reports an error (for
// example a leaked iterator or snapshot).
func Open(t testing.TB) *index.Index {
	t.Helper()
	return OpenOptions(t, nil)
}

// OpenOptions is Open with options. A nil opts.FS is replaced by a fresh
// vfs.NewMem(); pass the same FS to two calls (closing the first index in
// between) to test reopening.
func OpenOptions(t testing.TB, opts *index.Options) *index.Index {
	t.Helper()
	var o index.Options
	if opts != nil {
		o = *opts
	}
	if o.FS == nil {
		o.FS = vfs.NewMem()
	}
	x, err := index.Open("index", &o)
	if err != nil {
		t.Fatalf("indextest: open index: %v", err)
	}
	t.Cleanup(func() {
		if err := x.Close(); err != nil {
			t.Errorf("indextest: close index: %v", err)
		}
	})
	return x
}

// WriteLive is the physical limit of an export, for benchmarks to compare
// against: one snapshot of x, every type scanned in order, each live
// resource written with '\n' to w through a 256 KiB bufio.Writer. It
// returns the resources and bytes written.
func WriteLive(x *index.Index, w io.Writer) (n, size int64, err error) {
	bw := bufio.NewWriterSize(w, 256<<10)
	snap, err := x.Snapshot()
	if err != nil {
		return 0, 0, err
	}
	defer snap.Close()
	for _, c := range snap.Counts() {
		err := snap.Scan(context.Background(), c.Type, 0, index.Unbounded, func(e index.Entry) error {
			if e.Deleted {
				return nil
			}
			n++
			size += int64(len(e.Resource)) + 1
			bw.Write(e.Resource)
			return bw.WriteByte('\n')
		})
		if err != nil {
			return n, size, err
		}
	}
	return n, size, bw.Flush()
}

// WriteLiveFile is WriteLive into the file at path, created or
// truncated, failing tb on any error.
func WriteLiveFile(tb testing.TB, x *index.Index, path string) (n, size int64) {
	tb.Helper()
	f, err := os.Create(path)
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	n, size, err = WriteLive(x, f)
	if err != nil {
		tb.Fatal(err)
	}
	return n, size
}
