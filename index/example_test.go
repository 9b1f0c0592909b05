package index_test

import (
	"context"
	"fmt"
	"log"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/bulkstream/bulkstream/index"
)

// Example opens an index in memory, applies two batches of changes as
// the ingest consumer would, and reads it the way an export does: a full
// scan of a snapshot, then an incremental one with _since set to the
// first snapshot's transactionTime, which sees exactly the later changes
// (an update, and a delete as a tombstone). meta.versionId is the stream
// sequence of the change and meta.lastUpdated its commit time.
func Example() {
	x, err := index.Open("index", &index.Options{FS: vfs.NewMem()})
	if err != nil {
		log.Fatal(err)
	}
	defer x.Close()
	ctx := context.Background()

	// The commit clock starts at the stream's creation time.
	origin := time.Date(2026, 11, 26, 17, 0, 0, 0, time.UTC)
	if err := x.SetOrigin(origin); err != nil {
		log.Fatal(err)
	}
	// Seq and Time are the JetStream sequence and timestamp of each event.
	at := func(seq uint64) time.Time { return origin.Add(time.Duration(seq) * time.Second) }
	_, err = x.Apply(ctx, []index.Change{
		{Seq: 1, Time: at(1), Type: "Patient", ID: "p1", Body: []byte(`{"resourceType":"Patient","id":"p1","active":true}`)},
		{Seq: 2, Time: at(2), Type: "Patient", ID: "p2", Body: []byte(`{"resourceType":"Patient","id":"p2"}`)},
		{Seq: 3, Time: at(3), Type: "Observation", ID: "o1", Body: []byte(`{"resourceType":"Observation","id":"o1","status":"final"}`)},
	}, 0)
	if err != nil {
		log.Fatal(err)
	}

	show := func(e index.Entry) error {
		if e.Deleted {
			fmt.Printf("  deleted %s/%s at %s\n", e.Type, e.ID, index.FormatInstant(e.CommitTime))
			return nil
		}
		fmt.Printf("  %s\n", e.Resource)
		return nil
	}

	// A full export: every Patient up to the snapshot's transactionTime.
	full, err := x.Snapshot()
	if err != nil {
		log.Fatal(err)
	}
	since := full.TransactionTime
	fmt.Println("full export, transactionTime", index.FormatInstant(full.TransactionTime), full.Counts())
	err = full.Scan(ctx, "Patient", 0, full.TransactionTime, show)
	full.Close() // as soon as the scan is done: a snapshot pins old versions
	if err != nil {
		log.Fatal(err)
	}

	// An update of p1 and a delete of p2, in the next batch.
	_, err = x.Apply(ctx, []index.Change{
		{Seq: 4, Time: at(4), Type: "Patient", ID: "p1", Body: []byte(`{"resourceType":"Patient","id":"p1","active":false}`)},
		{Seq: 5, Time: at(5), Type: "Patient", ID: "p2", Delete: true},
	}, 0)
	if err != nil {
		log.Fatal(err)
	}

	// An incremental export with _since = the previous transactionTime.
	incr, err := x.Snapshot()
	if err != nil {
		log.Fatal(err)
	}
	defer incr.Close()
	fmt.Println("export _since", index.FormatInstant(since), "applied seq", incr.AppliedSeq)
	if err := incr.Scan(ctx, "Patient", since, index.Unbounded, show); err != nil {
		log.Fatal(err)
	}
	// Output:
	// full export, transactionTime 2026-11-26T17:00:03.000000Z [{Observation 1 0} {Patient 2 0}]
	//   {"resourceType":"Patient","id":"p1","meta":{"versionId":"1","lastUpdated":"2026-11-26T17:00:01.000000Z"},"active":true}
	//   {"resourceType":"Patient","id":"p2","meta":{"versionId":"2","lastUpdated":"2026-11-26T17:00:02.000000Z"}}
	// export _since 2026-11-26T17:00:03.000000Z applied seq 5
	//   {"resourceType":"Patient","id":"p1","meta":{"versionId":"4","lastUpdated":"2026-11-26T17:00:04.000000Z"},"active":false}
	//   deleted Patient/p2 at 2026-11-26T17:00:05.000000Z
}
