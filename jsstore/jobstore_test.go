package jsstore

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/goleak"

	"github.com/bulkstream/bulkstream/export"
	"github.com/bulkstream/bulkstream/index"
	"github.com/bulkstream/bulkstream/ingest/ingesttest"
)

// replicaStore opens a JobStore on bucket "jobs" of srv through a
// connection of its own, as a replica would; opts are the connection's.
func replicaStore(t *testing.T, srv *server.Server, opts ...nats.Option) *JobStore {
	t.Helper()
	nc, err := nats.Connect(srv.ClientURL(), opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	s, err := NewJobStore(t.Context(), js, JobOptions{Bucket: "jobs", Timeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// twoReplicas starts a JetStream server and opens two JobStores on the
// same bucket through two connections.
func twoReplicas(t *testing.T) (a, b *JobStore, srv *server.Server) {
	t.Helper()
	srv = ingesttest.RunServer(t, ingesttest.Options(t))
	return replicaStore(t, srv), replicaStore(t, srv), srv
}

// event is one call of a Watch callback: "id rec @rev", "id - @rev" for a
// deletion, "caught up" for the marker.
func event(id string, rec []byte, rev uint64) string {
	switch {
	case id == "" && rec == nil && rev == 0:
		return "caught up"
	case rec == nil:
		return fmt.Sprintf("%s - @%d", id, rev)
	}
	return fmt.Sprintf("%s %s @%d", id, rec, rev)
}

// watching is a Watch running on its own goroutine.
type watching struct {
	events chan string
	done   chan error
	cancel context.CancelFunc
}

// watch starts s.Watch; it is cancelled at cleanup, and must then return.
func watch(t *testing.T, s *JobStore) *watching {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	w := &watching{events: make(chan string, 10000), done: make(chan error, 1), cancel: cancel}
	go func() {
		w.done <- s.Watch(ctx, func(id string, rec []byte, rev uint64) { w.events <- event(id, rec, rev) })
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-w.done:
		case <-time.After(10 * time.Second):
			t.Error("Watch did not return 10 s after its context was cancelled")
		}
	})
	return w
}

// next returns the watch's next event.
func (w *watching) next(t *testing.T) string {
	t.Helper()
	select {
	case e := <-w.events:
		return e
	case err := <-w.done:
		t.Fatalf("Watch returned %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("no watch event in 10 s")
	}
	return ""
}

// expect checks that the watch's next events are want, in order.
func (w *watching) expect(t *testing.T, want ...string) {
	t.Helper()
	for _, e := range want {
		if got := w.next(t); got != e {
			t.Fatalf("watch event %q, want %q", got, e)
		}
	}
}

// returned waits for the watch to return and gives its error.
func (w *watching) returned(t *testing.T) error {
	t.Helper()
	select {
	case err := <-w.done:
		w.done <- err // for the cleanup
		return err
	case <-time.After(10 * time.Second):
		t.Fatal("Watch did not return in 10 s")
	}
	return nil
}

func update(t *testing.T, s *JobStore, id, rec string, rev uint64) uint64 {
	t.Helper()
	n, err := s.Update(id, []byte(rec), rev)
	if err != nil {
		t.Fatalf("Update(%s, %s, %d): %v", id, rec, rev, err)
	}
	return n
}

func wantRecord(t *testing.T, s *JobStore, id, want string) {
	t.Helper()
	rec, err := s.GetJob(id)
	switch {
	case want == "" && !errors.Is(err, index.ErrNotFound):
		t.Errorf("GetJob(%s) = %s, %v; want index.ErrNotFound", id, rec, err)
	case want != "" && (err != nil || string(rec) != want):
		t.Errorf("GetJob(%s) = %s, %v; want %s", id, rec, err, want)
	}
}

// TestJobStoreCreate: of two replicas creating the same job (rev 0), the
// first wins and the second gets ErrConflict, writing nothing.
func TestJobStoreCreate(t *testing.T) {
	a, b, _ := twoReplicas(t)
	rev := update(t, a, "j1", `{"owner":"a"}`, 0)
	if rev == 0 {
		t.Error("Update returned revision 0")
	}
	if n, err := b.Update("j1", []byte(`{"owner":"b"}`), 0); !errors.Is(err, export.ErrConflict) {
		t.Errorf("second create = %d, %v; want ErrConflict", n, err)
	}
	wantRecord(t, b, "j1", `{"owner":"a"}`)
	if n, err := b.Update("j1", []byte(`{"owner":"b"}`), rev); err != nil || n <= rev {
		t.Errorf("Update at the current revision %d = %d, %v", rev, n, err)
	}
	wantRecord(t, a, "j1", `{"owner":"b"}`)
}

// TestJobStoreUpdateStale: an Update at a revision another replica has
// since overwritten is ErrConflict and writes nothing, and so is one at
// a revision of another job.
func TestJobStoreUpdateStale(t *testing.T) {
	a, b, _ := twoReplicas(t)
	rev1 := update(t, a, "j1", `{"v":1}`, 0)
	rev2 := update(t, b, "j1", `{"v":2}`, rev1)
	if n, err := a.Update("j1", []byte(`{"v":3}`), rev1); !errors.Is(err, export.ErrConflict) {
		t.Errorf("Update at stale revision %d = %d, %v; want ErrConflict", rev1, n, err)
	}
	wantRecord(t, a, "j1", `{"v":2}`)
	other := update(t, a, "j2", `{}`, 0)
	if n, err := a.Update("j1", []byte(`{"v":3}`), other); !errors.Is(err, export.ErrConflict) {
		t.Errorf("Update at another job's revision = %d, %v; want ErrConflict", n, err)
	}
	if n, err := a.Update("j1", []byte(`{"v":3}`), rev2+100); !errors.Is(err, export.ErrConflict) {
		t.Errorf("Update at a future revision = %d, %v; want ErrConflict", n, err)
	}
	wantRecord(t, b, "j1", `{"v":2}`)
	update(t, a, "j1", `{"v":3}`, rev2)
	wantRecord(t, b, "j1", `{"v":3}`)
}

// TestJobStoreUpdateRace: of many Updates at the same revision sent at
// once through two connections, exactly one succeeds, and the record is
// its; the same for creates.
func TestJobStoreUpdateRace(t *testing.T) {
	a, b, _ := twoReplicas(t)
	for round := range 20 {
		id := fmt.Sprintf("j%d", round)
		var rev uint64
		if round%2 == 1 {
			rev = update(t, a, id, `{}`, 0)
		}
		type result struct {
			rec string
			rev uint64
			err error
		}
		results := make(chan result)
		for i := range 8 {
			s := []*JobStore{a, b}[i%2]
			go func() {
				rec := fmt.Sprintf(`{"by":%d}`, i)
				n, err := s.Update(id, []byte(rec), rev)
				results <- result{rec, n, err}
			}()
		}
		var won []result
		for range 8 {
			r := <-results
			switch {
			case r.err == nil:
				won = append(won, r)
			case !errors.Is(r.err, export.ErrConflict):
				t.Errorf("Update: %v", r.err)
			}
		}
		if len(won) != 1 {
			t.Fatalf("round %d (from revision %d): %d Updates succeeded: %v", round, rev, len(won), won)
		}
		if rec, n, err := b.Lookup(id); err != nil || string(rec) != won[0].rec || n != won[0].rev {
			t.Errorf("round %d: Lookup = %s @%d, %v; the winner wrote %s @%d", round, rec, n, err, won[0].rec, won[0].rev)
		}
	}
}

// TestJobStoreUpdateDeleted: after another replica deleted a job, an
// Update at the revision seen before is ErrConflict, so is one at the
// revision of the deletion itself (as Watch reports it), and neither
// brings the job back; a create (rev 0) does.
func TestJobStoreUpdateDeleted(t *testing.T) {
	a, b, _ := twoReplicas(t)
	rev := update(t, a, "j1", `{"v":1}`, 0)
	w := watch(t, a)
	w.expect(t, fmt.Sprintf(`j1 {"v":1} @%d`, rev), "caught up")
	if err := b.DeleteJob("j1"); err != nil {
		t.Fatal(err)
	}
	if n, err := a.Update("j1", []byte(`{"v":2}`), rev); !errors.Is(err, export.ErrConflict) {
		t.Errorf("Update of a deleted job at its last revision = %d, %v; want ErrConflict", n, err)
	}
	var del uint64
	if e := w.next(t); !strings.HasPrefix(e, "j1 - @") {
		t.Fatalf("watch event %q, want j1's deletion", e)
	} else if _, err := fmt.Sscanf(e, "j1 - @%d", &del); err != nil {
		t.Fatal(err)
	}
	if n, err := a.Update("j1", []byte(`{"v":2}`), del); !errors.Is(err, export.ErrConflict) {
		t.Errorf("Update at the deletion's revision %d = %d, %v; want ErrConflict", del, n, err)
	}
	wantRecord(t, b, "j1", "")
	n := update(t, b, "j1", `{"v":3}`, 0)
	wantRecord(t, a, "j1", `{"v":3}`)
	w.expect(t, fmt.Sprintf(`j1 {"v":3} @%d`, n))
}

// TestJobStoreLookup: Lookup gives another replica's latest record and
// the revision Update returned; a missing or deleted job, or an id that
// is no key (a wildcard would match other jobs' records), is
// index.ErrNotFound.
func TestJobStoreLookup(t *testing.T) {
	a, b, _ := twoReplicas(t)
	lookup := func(id, want string, wantRev uint64) {
		t.Helper()
		rec, rev, err := b.Lookup(id)
		switch {
		case want == "" && !errors.Is(err, index.ErrNotFound):
			t.Errorf("Lookup(%q) = %s @%d, %v; want index.ErrNotFound", id, rec, rev, err)
		case want != "" && (err != nil || string(rec) != want || rev != wantRev):
			t.Errorf("Lookup(%q) = %s @%d, %v; want %s @%d", id, rec, rev, err, want, wantRev)
		}
	}
	lookup("j1", "", 0)
	rev := update(t, a, "j1", `{"v":1}`, 0)
	update(t, a, "j2", `{"v":1}`, 0)
	lookup("j1", `{"v":1}`, rev)
	rev = update(t, a, "j1", `{"v":2}`, rev)
	lookup("j1", `{"v":2}`, rev)
	for _, id := range []string{"*", ">", "j*", "", ".j1", "j1.", "j 1"} {
		lookup(id, "", 0)
	}
	if err := a.DeleteJob("j1"); err != nil {
		t.Fatal(err)
	}
	lookup("j1", "", 0)
}

// TestJobStoreWatch: replica B's watch sees the records A wrote before
// (not the deleted one), the caught-up marker once, then A's puts and
// deletes in order, with the revisions Update returned; an empty record
// is not a deletion. Watch returns context.Canceled when cancelled.
func TestJobStoreWatch(t *testing.T) {
	a, b, _ := twoReplicas(t)
	r1 := update(t, a, "j1", `{"v":1}`, 0)
	r2 := update(t, a, "j2", `{"v":1}`, 0)
	update(t, a, "gone", `{}`, 0)
	if err := a.DeleteJob("gone"); err != nil {
		t.Fatal(err)
	}
	r1 = update(t, a, "j1", `{"v":2}`, r1)

	w := watch(t, b)
	w.expect(t, fmt.Sprintf(`j2 {"v":1} @%d`, r2), fmt.Sprintf(`j1 {"v":2} @%d`, r1), "caught up")

	var want []string
	r3 := update(t, a, "j3", `{"v":1}`, 0)
	want = append(want, fmt.Sprintf(`j3 {"v":1} @%d`, r3))
	r1 = update(t, a, "j1", `{"v":3}`, r1)
	want = append(want, fmt.Sprintf(`j1 {"v":3} @%d`, r1))
	if err := a.DeleteJob("j2"); err != nil {
		t.Fatal(err)
	}
	want = append(want, fmt.Sprintf("j2 - @%d", r1+1))
	// Changes of one key the watch has not delivered yet may be skipped
	// (the bucket keeps one revision per key): see the deletion before
	// writing j2 again.
	w.expect(t, want...)
	want = want[:0]
	r2 = update(t, a, "j2", ``, 0)
	want = append(want, fmt.Sprintf("j2  @%d", r2))
	if err := a.PutJob("j4", []byte(`{"v":1}`)); err != nil {
		t.Fatal(err)
	}
	want = append(want, fmt.Sprintf(`j4 {"v":1} @%d`, r2+1))
	for i := range 50 {
		n := update(t, a, fmt.Sprintf("k%d", i), fmt.Sprintf(`{"v":%d}`, i), 0)
		want = append(want, fmt.Sprintf(`k%d {"v":%d} @%d`, i, i, n))
	}
	r3 = update(t, a, "j3", `{"v":2}`, r3)
	want = append(want, fmt.Sprintf(`j3 {"v":2} @%d`, r3))
	w.expect(t, want...)

	w.cancel()
	if err := w.returned(t); !errors.Is(err, context.Canceled) {
		t.Errorf("Watch returned %v, want context.Canceled", err)
	}
	close(w.events)
	for e := range w.events {
		t.Errorf("event after the last change: %q", e)
	}
}

// TestJobStoreWatchCancel: a cancelled Watch returns context.Canceled and
// leaves no goroutine behind, even when it stops while the watcher has
// more to deliver than its channel holds.
func TestJobStoreWatchCancel(t *testing.T) {
	a, b, _ := twoReplicas(t)
	for i := range 1000 {
		if err := a.PutJob(fmt.Sprintf("j%d", i), []byte(`{}`)); err != nil {
			t.Fatal(err)
		}
	}
	// The first call blocks until the watcher is blocked on its full
	// channel, then cancels.
	opt := goleak.IgnoreCurrent()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	calls := 0
	err := b.Watch(ctx, func(string, []byte, uint64) {
		if calls++; calls == 1 {
			deadline := time.Now().Add(10 * time.Second)
			for !watcherBlocked() {
				if time.Now().After(deadline) {
					t.Error("the watcher did not block on its channel in 10 s")
					break
				}
				time.Sleep(time.Millisecond)
			}
			cancel()
		}
	})
	if !errors.Is(err, context.Canceled) {
		t.Errorf("Watch returned %v, want context.Canceled", err)
	}
	if calls >= 1000 {
		t.Errorf("Watch went on for %d calls after its context was cancelled", calls)
	}
	goleak.VerifyNone(t, opt)
}

// watcherBlocked says whether a KV watcher's callback is blocked sending
// on its channel.
func watcherBlocked() bool {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	for g := range strings.SplitSeq(string(buf), "\n\n") {
		if strings.Contains(g, "[chan send") && strings.Contains(g, "jetstream.(*kvs).WatchFiltered") {
			return true
		}
	}
	return false
}

// TestJobStoreWatchServerGone: a Watch whose connection closes because
// its server went away returns an error saying so.
func TestJobStoreWatchServerGone(t *testing.T) {
	srv := ingesttest.RunServer(t, ingesttest.Options(t))
	a := replicaStore(t, srv, nats.NoReconnect())
	update(t, a, "j1", `{}`, 0)
	w := watch(t, a)
	w.expect(t, "j1 {} @1", "caught up")
	srv.Shutdown()
	err := w.returned(t)
	if err == nil || errors.Is(err, context.Canceled) {
		t.Fatalf("Watch returned %v, want the watch's failure", err)
	}
	t.Logf("Watch returned: %v", err)
}

// TestJobStoreWatchRestart: a Watch whose connection reconnects after
// its server restarted goes on, and delivers the changes made since.
func TestJobStoreWatchRestart(t *testing.T) {
	opts := ingesttest.Options(t)
	srv := ingesttest.RunServer(t, opts)
	reconnect := []nats.Option{nats.MaxReconnects(-1), nats.ReconnectWait(25 * time.Millisecond), nats.ReconnectJitter(0, 0)}
	a := replicaStore(t, srv, reconnect...)
	b := replicaStore(t, srv, reconnect...)
	r1 := update(t, a, "j1", `{}`, 0)
	w := watch(t, b)
	w.expect(t, fmt.Sprintf("j1 {} @%d", r1), "caught up")
	ingesttest.Restart(t, srv, opts)
	start := time.Now()
	// A publish sent while the client reconnects may get no answer: try
	// again until one is written.
	var r2 uint64
	deadline := time.Now().Add(30 * time.Second)
	for {
		var err error
		if r2, err = a.Update("j2", []byte(`{}`), 0); err == nil {
			break
		}
		if errors.Is(err, export.ErrConflict) { // an earlier try wrote it
			if _, r2, err = a.Lookup("j2"); err != nil {
				t.Fatal(err)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("Update 30 s after the restart: %v", err)
		}
		time.Sleep(25 * time.Millisecond)
	}
	r1 = update(t, a, "j1", `{"v":2}`, r1)
	w.expect(t, fmt.Sprintf("j2 {} @%d", r2), fmt.Sprintf(`j1 {"v":2} @%d`, r1))
	t.Logf("changes after the restart delivered %v after it", time.Since(start))
}

// TestJobStoreWatchEmpty: on an empty bucket the marker comes first, and
// changes follow it.
func TestJobStoreWatchEmpty(t *testing.T) {
	a, b, _ := twoReplicas(t)
	w := watch(t, b)
	w.expect(t, "caught up")
	rev := update(t, a, "j1", `{}`, 0)
	w.expect(t, fmt.Sprintf("j1 {} @%d", rev))
}

func TestJobOptions(t *testing.T) {
	for _, c := range []struct {
		o     JobOptions
		field string
	}{
		{JobOptions{}, "Bucket"},
		{JobOptions{Bucket: "b", Replicas: -1}, "Replicas"},
		{JobOptions{Bucket: "b", Replicas: 6}, "Replicas"},
		{JobOptions{Bucket: "b", Timeout: -1}, "Timeout"},
	} {
		if err := c.o.validate(); err == nil || !strings.Contains(err.Error(), "JobOptions."+c.field) {
			t.Errorf("%+v: %v, want an error naming JobOptions.%s", c.o, err, c.field)
		}
	}
	o := JobOptions{Bucket: "b", Replicas: 5}
	if err := o.validate(); err != nil || o.Replicas != 5 || o.Timeout != 10*time.Second {
		t.Errorf("%+v: %v", o, err)
	}
}
