package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bulkstream/bulkstream/index"
	"github.com/bulkstream/bulkstream/ingest"
	"github.com/bulkstream/bulkstream/ingest/ingesttest"
)

// TestPublishRevert: `bulkstream publish` of v1, v2 and v1 again of one
// resource, three runs within seconds (inside JetStream's 2-minute
// duplicate window), leaves v1's content in the index: the message id
// names the change, not the body, so the revert is not dropped as a
// duplicate of the first run.
func TestPublishRevert(t *testing.T) {
	s, _, js := ingesttest.RunJetStream(t)
	ctx := t.Context()
	idx, err := index.Open(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer idx.Close()
	cons, err := ingest.New(ingest.Config{FetchWait: 100 * time.Millisecond}, js, idx)
	if err != nil {
		t.Fatal(err)
	}
	if err := cons.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer cons.Close(context.Background())

	dir := t.TempDir()
	v1 := `{"resourceType":"Patient","id":"rev","gender":"female"}`
	v2 := `{"resourceType":"Patient","id":"rev","gender":"male"}`
	for i, body := range []string{v1, v2, v1} {
		f := filepath.Join(dir, "v.ndjson")
		if err := os.WriteFile(f, []byte(body+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		var stdout, stderr bytes.Buffer
		if err := runPublish(ctx, []string{"--nats-url", s.ClientURL(), f}, nil, &stdout, &stderr); err != nil {
			t.Fatalf("run %d: %v\n%s", i+1, err, stderr.String())
		}
		if !strings.Contains(stdout.String(), "published 1 events (0 duplicates)") {
			t.Fatalf("run %d: %s", i+1, stdout.String())
		}
	}
	head, err := cons.Head(ctx)
	if err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := idx.WaitApplied(wctx, head); err != nil {
		t.Fatal(err)
	}
	if head != 3 {
		t.Fatalf("the stream holds %d changes, want 3", head)
	}
	snap, err := idx.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	defer snap.Close()
	var got []byte
	if err := snap.Scan(ctx, "Patient", 0, index.Unbounded, func(e index.Entry) error {
		got = append([]byte(nil), e.Resource...)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(got, []byte(`"gender":"female"`)) {
		t.Fatalf("after publishing v1, v2, v1 the index holds %s", got)
	}
}
