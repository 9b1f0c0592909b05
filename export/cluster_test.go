package export

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/bulkstream/bulkstream/index"
)

// The cluster protocol itself is tested against real JetStream in
// jsstore (TestCluster*). This file covers what a real server cannot be
// made to do on demand: a watch that fails and starts again after
// records were deleted in between.

// sharedStore is an in-memory SharedJobStore whose watch can be broken.
type sharedStore struct {
	mu    sync.Mutex
	recs  map[string][]byte
	revs  map[string]uint64
	rev   uint64
	subs  map[chan struct{}]bool // a send breaks the watch
	quiet bool                   // changes are not delivered (the watch is "down")
	down  error                  // Update's answer while set (no leader)
	lost  error                  // Lookup's answer while set (no leader)
	// beforeUpdate, if set, runs at the start of every Update, s.mu held.
	beforeUpdate func(id string, rec []byte)
	// outcome, if set, decides whether an Update that passed its revision
	// check is applied, and what error it answers all the same (a timeout
	// after the write). s.mu is held.
	outcome func(rec []byte) (apply bool, err error)
	fns     []func(string, []byte, uint64)
}

func newSharedStore() *sharedStore {
	return &sharedStore{recs: map[string][]byte{}, revs: map[string]uint64{}, subs: map[chan struct{}]bool{}}
}

func (s *sharedStore) PutJob(id string, rec []byte) error {
	_, err := s.Update(id, rec, s.revOf(id))
	return err
}

func (s *sharedStore) revOf(id string) uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.revs[id]
}

func (s *sharedStore) GetJob(id string) ([]byte, error) {
	b, _, err := s.Lookup(id)
	return b, err
}

func (s *sharedStore) Lookup(id string) ([]byte, uint64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.lost != nil {
		return nil, 0, s.lost
	}
	b, ok := s.recs[id]
	if !ok {
		return nil, 0, index.ErrNotFound
	}
	return b, s.revs[id], nil
}

func (s *sharedStore) DeleteJob(id string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.recs[id]; !ok {
		return nil
	}
	delete(s.recs, id)
	delete(s.revs, id)
	s.rev++
	s.notify(id, nil, s.rev)
	return nil
}

func (s *sharedStore) Jobs(fn func(string, []byte) error) error {
	s.mu.Lock()
	recs := maps.Clone(s.recs)
	s.mu.Unlock()
	for id, b := range recs {
		if err := fn(id, b); err != nil {
			return err
		}
	}
	return nil
}

func (s *sharedStore) Update(id string, rec []byte, rev uint64) (uint64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.down != nil {
		return 0, s.down
	}
	if s.beforeUpdate != nil {
		s.beforeUpdate(id, rec)
	}
	if s.revs[id] != rev {
		return 0, ErrConflict
	}
	var err error
	if s.outcome != nil {
		var apply bool
		if apply, err = s.outcome(rec); !apply {
			return 0, err
		}
	}
	s.rev++
	s.recs[id], s.revs[id] = rec, s.rev
	s.notify(id, rec, s.rev)
	if err != nil {
		return 0, err
	}
	return s.rev, nil
}

// notify delivers a change to the watchers unless the watch is down.
// s.mu is held.
func (s *sharedStore) notify(id string, rec []byte, rev uint64) {
	if s.quiet {
		return
	}
	for _, fn := range s.fns {
		fn(id, rec, rev)
	}
}

func (s *sharedStore) Watch(ctx context.Context, fn func(string, []byte, uint64)) error {
	broken := make(chan struct{}, 1)
	s.mu.Lock()
	for id, b := range s.recs {
		fn(id, b, s.revs[id])
	}
	fn("", nil, 0)
	s.subs[broken] = true
	s.fns = append(s.fns, fn)
	s.mu.Unlock()
	select {
	case <-ctx.Done():
	case <-broken:
	}
	s.mu.Lock()
	delete(s.subs, broken)
	s.fns = nil
	s.mu.Unlock()
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return errors.New("watch broken")
}

// breakWatch ends the current watch; deletions are not delivered until
// the next one starts.
func (s *sharedStore) breakWatch() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.quiet = true
	for c := range s.subs {
		c <- struct{}{}
	}
}

// TestClusterWatchRestartForgetsDeleted: jobs deleted while the watch was
// down are forgotten once a new watch has caught up; the others stay.
func TestClusterWatchRestartForgetsDeleted(t *testing.T) {
	e := newEnv(t)
	store := newSharedStore()
	now := time.Now()
	ids := []string{newJobID(), newJobID()}
	for _, id := range ids {
		rec := jobRecord{Version: recordVersion, State: Failed, Created: now, Finished: now,
			Expires: now.Add(time.Hour), Error: "x", Polled: true}
		if _, err := store.Update(id, mustJSON(rec), 0); err != nil {
			t.Fatal(err)
		}
	}
	m, err := NewManager(Config{Dir: t.TempDir(), Replica: "a"}, IndexSource(e.x), nil, store)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close(context.Background()) })
	for _, id := range ids {
		if st, err := m.Status("", id); err != nil || st.State != Failed {
			t.Fatalf("job %s: %+v %v", id, st, err)
		}
	}

	store.breakWatch()
	if err := store.DeleteJob(ids[0]); err != nil { // not delivered
		t.Fatal(err)
	}
	store.mu.Lock()
	store.quiet = false
	store.mu.Unlock()
	checkFor(t, 10*time.Second, func() error {
		m.mu.Lock()
		defer m.mu.Unlock()
		if m.all[ids[0]] != nil {
			return errors.New("the job deleted while the watch was down is still known")
		}
		return nil
	})
	if st, err := m.Status("", ids[1]); err != nil || st.State != Failed {
		t.Errorf("the other job: %+v %v", st, err)
	}
}

// TestClusterOpenFileBeforeWatch: a client that got a manifest from one
// replica downloads from another whose watch has not delivered the
// completion yet (it still holds the job running): the file is served,
// read from the shared record, not a 404.
func TestClusterOpenFileBeforeWatch(t *testing.T) {
	e := newEnv(t)
	store := newSharedStore()
	dir := t.TempDir()
	now := time.Now()
	id := newJobID()
	running := jobRecord{Version: recordVersion, State: Running, Created: now, Owner: "a", Lease: now.Add(time.Hour), Runs: 1}
	rev, err := store.Update(id, mustJSON(running), 0)
	if err != nil {
		t.Fatal(err)
	}
	m, err := NewManager(Config{Dir: dir, Replica: "b"}, IndexSource(e.x), nil, store)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close(context.Background()) })
	if st, err := m.Status("", id); err != nil || st.Progress != "running on replica a" {
		t.Fatalf("status %+v %v, want running on a", st, err)
	}

	// Replica a writes the file and completes the job; b's watch is slow.
	data := []byte(`{"resourceType":"Patient","id":"p1"}` + "\n")
	files := NewDirStore(dir)
	if err := files.NewJob(id); err != nil {
		t.Fatal(err)
	}
	w, err := files.Create(id, "Patient-1.ndjson")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := w.Commit(); err != nil {
		t.Fatal(err)
	}
	done := running
	done.State, done.Finished, done.Expires = Completed, now, now.Add(time.Hour)
	done.Manifest = &Manifest{TransactionTime: "2026-01-01T00:00:00Z", Output: []FileInfo{{Type: "Patient", Name: "Patient-1.ndjson",
		Count: 1, Bytes: int64(len(data)), SHA256: sha256.Sum256(data)}}, Error: []FileInfo{}}
	store.mu.Lock()
	store.quiet = true
	store.mu.Unlock()
	if _, err := store.Update(id, mustJSON(done), rev); err != nil {
		t.Fatal(err)
	}

	f, err := m.OpenFile("", id, "Patient-1.ndjson")
	if err != nil {
		t.Fatalf("OpenFile on the replica whose watch lags: %v", err)
	}
	got, err := io.ReadAll(f)
	f.Close()
	if err != nil || !bytes.Equal(got, data) {
		t.Errorf("read %q (%v), want %q", got, err, data)
	}
	if st, err := m.Status("", id); err != nil || st.State != Completed {
		t.Errorf("status after the download: %+v %v, want completed", st, err)
	}
}

// flakyFiles is a FileStore whose first Create fails, as a put does while
// the Object Store bucket elects a leader.
type flakyFiles struct {
	FileStore
	failed  atomic.Bool
	openErr error // Open's answer while set
}

func (f *flakyFiles) Open(job, name string) (StoredFile, error) {
	if f.openErr != nil {
		return nil, f.openErr
	}
	return f.FileStore.Open(job, name)
}

func (f *flakyFiles) Create(job, name string) (FileWriter, error) {
	if f.failed.CompareAndSwap(false, true) {
		return nil, errors.New("nats: no responders available for request")
	}
	return f.FileStore.Create(job, name)
}

// TestClusterRetriesInternalFailure: in cluster mode a run that fails with
// an internal error (the shared stores unreachable for a moment) is
// queued again and completes in its second run; the same failure fails a
// single-node job.
func TestClusterRetriesInternalFailure(t *testing.T) {
	e := newEnv(t)
	e.f.apply(t, syntheaResources(t, 50)...)
	store := newSharedStore()
	files := &flakyFiles{FileStore: NewDirStore(e.dir)}
	m := startManager(t, Config{Dir: e.dir, Files: files, Replica: "a"}, IndexSource(e.x), e.head, store, nil)
	t.Cleanup(func() { m.Close(context.Background()) })
	id := submit(t, m, fullRequest())
	mf := waitManifest(t, m, id)
	if len(mf.Output) == 0 || !files.failed.Load() {
		t.Fatalf("manifest %+v, failure injected %v", mf, files.failed.Load())
	}
	b, _, err := store.Lookup(id)
	if err != nil {
		t.Fatal(err)
	}
	if rec, err := decodeRecord(b); err != nil || rec.State != Completed || rec.Runs != 2 {
		t.Errorf("record %+v (%v), want completed in run 2", rec, err)
	}

	single := &flakyFiles{FileStore: NewDirStore(t.TempDir())}
	m1 := e.manager(t, Config{Files: single}, nil)
	if st := wait(t, m1, submit(t, m1, fullRequest())); st.State != Failed {
		t.Errorf("single node: %+v, want failed", st)
	}
}

// TestClusterKickoffStoreDown: a kick-off while the shared job store
// cannot be written (no leader) is a 503 with Retry-After, not a 500.
func TestClusterKickoffStoreDown(t *testing.T) {
	e := newEnv(t)
	store := newSharedStore()
	m := startManager(t, Config{Dir: e.dir, Replica: "a"}, IndexSource(e.x), e.head, store, nil)
	t.Cleanup(func() { m.Close(context.Background()) })
	store.mu.Lock()
	store.down = errors.New("nats: no response from stream")
	store.mu.Unlock()
	var ue *UnavailableError
	if _, err := m.Kickoff(t.Context(), Kickoff{RequestURL: "http://x/$export"}); !errors.As(err, &ue) || ue.RetryAfter <= 0 {
		t.Errorf("kick-off with the store down: %v, want UnavailableError with Retry-After", err)
	}
}

// TestClusterLostClaimRefreshes: a replica whose claim loses the race
// reads who won from the store at once, rather than wait for a watch that
// may be held up (here: delivering nothing).
func TestClusterLostClaimRefreshes(t *testing.T) {
	e := newEnv(t)
	store := newSharedStore()
	var once sync.Once
	store.beforeUpdate = func(id string, rec []byte) {
		if !bytes.Contains(rec, []byte(`"owner":"a"`)) {
			return
		}
		once.Do(func() {
			// Replica z claims the job first; a's watch is silent.
			store.quiet = true
			var r jobRecord
			if err := json.Unmarshal(store.recs[id], &r); err != nil {
				t.Error(err)
			}
			r.State, r.Owner, r.Lease, r.Runs = Running, "z", time.Now().Add(time.Hour), 1
			store.rev++
			store.recs[id], store.revs[id] = mustJSON(r), store.rev
		})
	}
	m := startManager(t, Config{Dir: e.dir, Replica: "a"}, IndexSource(e.x), e.head, store, nil)
	t.Cleanup(func() { m.Close(context.Background()) })
	id := submit(t, m, fullRequest())
	checkFor(t, 10*time.Second, func() error {
		st, err := m.Status("", id)
		if err != nil || st.Progress != "running on replica z" {
			return fmt.Errorf("status %+v %v, want running on replica z", st, err)
		}
		return nil
	})
}

// TestClusterCompletionWriteUncertain: the completed record's write
// fails (a timeout during a leader election), once without being applied
// and once applied all the same; either way the job completes with its
// files, which a client may already be downloading from another replica
// that read the record.
func TestClusterCompletionWriteUncertain(t *testing.T) {
	for _, applied := range []bool{false, true} {
		e := newEnv(t)
		e.f.apply(t, syntheaResources(t, 30)...)
		store := newSharedStore()
		var failed atomic.Bool
		store.outcome = func(rec []byte) (bool, error) {
			if bytes.Contains(rec, []byte(`"state":"completed"`)) && failed.CompareAndSwap(false, true) {
				return applied, context.DeadlineExceeded
			}
			return true, nil
		}
		m := startManager(t, Config{Dir: e.dir, Replica: "a"}, IndexSource(e.x), e.head, store, nil)
		t.Cleanup(func() { m.Close(context.Background()) })
		id := submit(t, m, fullRequest())
		mf := waitManifest(t, m, id)
		if !failed.Load() {
			t.Fatal("the completion write was not made to fail")
		}
		for _, fi := range mf.Output {
			if lines := readLines(t, m, id, fi.Name); int64(len(lines)) != fi.Count {
				t.Errorf("applied %v: %s: %d lines, manifest %d", applied, fi.Name, len(lines), fi.Count)
			}
		}
		b, _, _ := store.Lookup(id)
		if rec, err := decodeRecord(b); err != nil || rec.State != Completed || rec.Runs != 1 {
			t.Errorf("applied %v: record %+v (%v), want completed in one run", applied, rec, err)
		}
		// This replica completed it (rather than lose it and learn the
		// completion from its watch).
		if n := testutil.ToFloat64(m.met.finished.WithLabelValues(resultCompleted)); n != 1 {
			t.Errorf("applied %v: %v jobs counted completed, want 1", applied, n)
		}
	}
}

// TestClusterOpenFileUnavailable: in cluster mode a file the store cannot
// open for a moment is a 503 with Retry-After, not a 500.
func TestClusterOpenFileUnavailable(t *testing.T) {
	e := newEnv(t)
	e.f.apply(t, syntheaResources(t, 10)...)
	files := &flakyFiles{FileStore: NewDirStore(e.dir)}
	files.failed.Store(true) // no Create failure
	m := startManager(t, Config{Dir: e.dir, Files: files, Replica: "a"}, IndexSource(e.x), e.head, newSharedStore(), nil)
	t.Cleanup(func() { m.Close(context.Background()) })
	id := submit(t, m, fullRequest())
	mf := waitManifest(t, m, id)
	files.openErr = errors.New("nats: timeout")
	var ue *UnavailableError
	if _, err := m.OpenFile("", id, mf.Output[0].Name); !errors.As(err, &ue) || ue.RetryAfter <= 0 {
		t.Errorf("OpenFile with the store timing out: %v, want UnavailableError with Retry-After", err)
	}
	if st, err := m.Status("", id); err != nil || st.State != Completed {
		t.Errorf("status after the failed open: %+v %v, want still completed", st, err)
	}
}

// TestClusterRequeuedRunEndsAfterNextStarts: a run that failed and
// requeued its job (retryShared) may end after the job's next run, on
// the same replica, began. It must leave the job to that run: had it
// marked the job not running here, the lease loop would take over this
// replica's own running job, another run would start, and the first,
// still writing, would overwrite the files of whichever completed.
func TestClusterRequeuedRunEndsAfterNextStarts(t *testing.T) {
	e := newEnv(t)
	e.f.apply(t, syntheaResources(t, 50)...)
	store := newSharedStore()
	files := &flakyFiles{FileStore: NewDirStore(e.dir)}
	secondStarted, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	m := startManager(t, Config{Dir: e.dir, Files: files, Replica: "a", Workers: 2, Lease: 300 * time.Millisecond,
		LeaseGrace: 100 * time.Millisecond}, IndexSource(e.x), e.head, store, func(m *Manager) {
		ends := 0
		m.hookRunEnd = func(string) {
			if ends++; ends == 1 {
				<-secondStarted // the first run ends once the second is scanning
			}
		}
		m.hookScan = func(ctx context.Context) error {
			if !files.failed.Load() {
				return nil // the first run: it fails at its first file
			}
			once.Do(func() { close(secondStarted) })
			select {
			case <-release:
			case <-ctx.Done():
			}
			return nil
		}
	})
	t.Cleanup(func() { m.Close(context.Background()) })
	id := submit(t, m, fullRequest())
	<-secondStarted
	// Several leases pass while the second run holds the job: it must
	// stay this replica's running job, in its second run.
	time.Sleep(5 * 300 * time.Millisecond)
	b, _, err := store.Lookup(id)
	if err != nil {
		t.Fatal(err)
	}
	if rec, err := decodeRecord(b); err != nil || rec.State != Running || rec.Owner != "a" || rec.Runs != 2 {
		t.Errorf("while the second run scans: record %s %q run %d (%v), want running, owner a, run 2", rec.State, rec.Owner, rec.Runs, err)
	}
	close(release)
	waitManifest(t, m, id)
	b, _, _ = store.Lookup(id)
	if rec, err := decodeRecord(b); err != nil || rec.State != Completed || rec.Runs != 2 {
		t.Errorf("record %s run %d (%v), want completed in run 2", rec.State, rec.Runs, err)
	}
}

// TestClusterLookupStoreDown: a poll, wait, cancel or download of a job
// this replica does not know yet, while the shared store cannot be read
// (a leader election), is a 503 with Retry-After: the job may exist, so
// a 404, which a client takes as final, would be wrong. A job known here
// is answered as usual, and one the store says it does not hold is 404.
func TestClusterLookupStoreDown(t *testing.T) {
	e := newEnv(t)
	store := newSharedStore()
	m := startManager(t, Config{Dir: e.dir, Replica: "a"}, IndexSource(e.x), e.head, store, nil)
	t.Cleanup(func() { m.Close(context.Background()) })
	known := submit(t, m, fullRequest())
	waitManifest(t, m, known)
	unknown := newJobID()
	if _, err := m.Status("", unknown); !errors.Is(err, ErrNotFound) {
		t.Errorf("status of a job the store does not hold: %v, want ErrNotFound", err)
	}
	store.mu.Lock()
	store.lost = errors.New("nats: timeout")
	store.mu.Unlock()
	var ue *UnavailableError
	for name, call := range map[string]func() error{
		"status": func() error { _, err := m.Status("", unknown); return err },
		"wait":   func() error { _, err := m.Wait(t.Context(), "", unknown, time.Second); return err },
		"cancel": func() error { return m.Cancel("", unknown) },
		"file":   func() error { _, err := m.OpenFile("", unknown, "Patient-1.ndjson"); return err },
	} {
		if err := call(); !errors.As(err, &ue) || ue.RetryAfter <= 0 {
			t.Errorf("%s of an unknown job with the store down: %v, want UnavailableError with Retry-After", name, err)
		}
	}
	if st, err := m.Status("", known); err != nil || st.State != Completed {
		t.Errorf("status of a known job with the store down: %+v %v", st, err)
	}
}
