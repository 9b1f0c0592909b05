package ingest_test

import (
	"bytes"
	"testing"
	"time"

	"github.com/bulkstream/bulkstream/ingest"
	"github.com/bulkstream/bulkstream/ingest/ingesttest"
)

// TestPublisherRevert: v1, v2 and v1 again of one resource within the
// duplicate window are three changes; the index ends with v1's content.
// (With a message id from the body's hash the third was dropped as a
// duplicate of the first, and v2 stayed for good.)
func TestPublisherRevert(t *testing.T) {
	_, _, js := ingesttest.RunJetStream(t)
	idx := openIndex(t)
	c := startConsumer(t, js, idx, ingest.Config{FetchWait: 100 * time.Millisecond})
	v1 := []byte(`{"resourceType":"Patient","id":"r","gender":"female"}`)
	v2 := []byte(`{"resourceType":"Patient","id":"r","gender":"male"}`)
	for _, body := range [][]byte{v1, v2, v1} {
		// A publisher per change, as separate `bulkstream publish` runs.
		p := newPublisher(t, js)
		if err := p.Upsert(t.Context(), body); err != nil {
			t.Fatal(err)
		}
		if err := p.Flush(t.Context()); err != nil {
			t.Fatal(err)
		}
		if st := p.Stats(); st.Duplicates != 0 {
			t.Fatalf("publish of %s dropped as a duplicate", body)
		}
	}
	if head := waitCaughtUp(t, c, idx); head != 3 {
		t.Fatalf("stream head %d, want 3 changes", head)
	}
	got := scanAll(t, idx, "Patient")
	if len(got) != 1 || !bytes.Contains(got[0].Resource, []byte(`"gender":"female"`)) {
		t.Fatalf("after v1, v2, v1: %s", got[0].Resource)
	}
}
