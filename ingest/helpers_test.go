package ingest_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/bulkstream/bulkstream/index"
	"github.com/bulkstream/bulkstream/ingest"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// checkFor polls fn until it returns nil or timeout passes.
func checkFor(t testing.TB, timeout, interval time.Duration, fn func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var err error
	for {
		if err = fn(); err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %v", timeout, err)
		}
		time.Sleep(interval)
	}
}

func openIndex(t testing.TB) *index.Index {
	t.Helper()
	idx, err := index.Open(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { idx.Close() })
	return idx
}

func startConsumer(t testing.TB, js jetstream.JetStream, dst ingest.Applier, cfg ingest.Config) *ingest.Consumer {
	t.Helper()
	c, err := ingest.New(cfg, js, dst)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := c.Close(ctx); err != nil {
			t.Error(err)
		}
	})
	return c
}

func newPublisher(t testing.TB, js jetstream.JetStream) *ingest.Publisher {
	t.Helper()
	p, err := ingest.NewPublisher(js, ingest.PublisherConfig{})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// waitCaughtUp waits until idx has applied the stream's head.
func waitCaughtUp(t testing.TB, c *ingest.Consumer, idx *index.Index) uint64 {
	t.Helper()
	head, err := c.Head(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	if err := idx.WaitApplied(ctx, head); err != nil {
		t.Fatalf("waiting for applied seq %d (at %d): %v", head, idx.AppliedSeq(), err)
	}
	return head
}

// scanAll returns every entry of typ, resources copied.
func scanAll(t testing.TB, idx *index.Index, typ string) []index.Entry {
	t.Helper()
	snap, err := idx.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	defer snap.Close()
	var out []index.Entry
	err = snap.Scan(t.Context(), typ, 0, index.Unbounded, func(e index.Entry) error {
		e.Resource = append([]byte(nil), e.Resource...)
		out = append(out, e)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func countOf(idx *index.Index, typ string) (resources, tombstones int64) {
	for _, c := range idx.Counts() {
		if c.Type == typ {
			return c.Resources, c.Tombstones
		}
	}
	return 0, 0
}

func errorf(format string, args ...any) error { return fmt.Errorf(format, args...) }
