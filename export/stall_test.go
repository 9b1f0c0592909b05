package export

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/bulkstream/bulkstream/index"
	"github.com/bulkstream/bulkstream/index/indextest"
)

// memJobStore is a JobStore in memory whose PutJob of a running job's
// record blocks, once armed, until released: a Pebble write stalled on a
// slow fsync.
type memJobStore struct {
	mu   sync.Mutex
	recs map[string][]byte

	armed   atomic.Bool
	once    sync.Once
	entered chan struct{} // closed when the stalled PutJob starts
	release chan struct{} // closed to let it return
}

func newMemJobStore() *memJobStore {
	return &memJobStore{recs: map[string][]byte{}, entered: make(chan struct{}), release: make(chan struct{})}
}

func (s *memJobStore) PutJob(id string, rec []byte) error {
	if s.armed.Load() && bytes.Contains(rec, []byte(`"state":"running"`)) {
		stalled := false
		s.once.Do(func() { stalled = true })
		if stalled {
			close(s.entered)
			<-s.release
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.recs[id] = bytes.Clone(rec)
	return nil
}

func (s *memJobStore) GetJob(id string) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	b, ok := s.recs[id]
	if !ok {
		return nil, index.ErrNotFound
	}
	return bytes.Clone(b), nil
}

func (s *memJobStore) DeleteJob(id string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.recs, id)
	return nil
}

func (s *memJobStore) Jobs(fn func(id string, rec []byte) error) error {
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

// TestStalledStorageDoesNotBlockOtherJobs: while one job's record write
// hangs (its PutJob blocks) and the index's commit hangs (a WAL fsync
// that does not return), every other job's Status, Wait and Cancel, a
// new Kickoff and a /metrics scrape still answer, and so does the stalled
// job's own Status. The manager's lock is
// never held across a JobStore or index call, so a slow disk delays only
// the job whose write it is.
func TestStalledStorageDoesNotBlockOtherJobs(t *testing.T) {
	wal := indextest.NewWALStall()
	reg := prometheus.NewRegistry()
	x := indextest.OpenOptions(t, &index.Options{FS: wal.FS(vfs.NewMem()), Registerer: reg})
	f := newFeeder(x)
	f.apply(t, resource{"Patient", "p1", []byte(`{"resourceType":"Patient","id":"p1"}`)},
		resource{"Observation", "o1", []byte(`{"resourceType":"Observation","id":"o1"}`)})
	store := newMemJobStore()
	head := &fakeHead{}
	m := startManager(t, Config{Dir: t.TempDir(), Workers: 2, Registerer: reg}, IndexSource(x), head, store, nil)
	// Released in this order at the end, whatever happened, so that a
	// manager that did block unblocks and closes.
	var releaseOnce sync.Once
	releaseAll := func() {
		releaseOnce.Do(func() {
			close(store.release)
			wal.Release()
		})
	}
	t.Cleanup(func() {
		releaseAll()
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := m.Close(ctx); err != nil {
			t.Error(err)
		}
	})
	kickoff := func(client string) (string, error) {
		return m.Kickoff(t.Context(), Kickoff{Client: client, RequestURL: "http://x/$export"})
	}

	// A finished job, polled past the first-poll rule.
	done, err := kickoff("c")
	if err != nil {
		t.Fatal(err)
	}
	if st := wait(t, m, done); st.State != Completed {
		t.Fatalf("job %s: %s %s", done, st.State, st.Error)
	}

	// Stall 1: the next running record's PutJob hangs, with its job.
	store.armed.Store(true)
	stalled, err := kickoff("c")
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-store.entered:
	case <-time.After(30 * time.Second):
		t.Fatal("the job never wrote its running record")
	}
	// Stall 2: ingest's next commit hangs in its WAL fsync.
	wal.Arm()
	applied := make(chan error, 1)
	change := f.change("Patient", "p2", []byte(`{"resourceType":"Patient","id":"p2"}`))
	go func() {
		_, err := x.Apply(context.Background(), []index.Change{change}, 0)
		applied <- err
	}()
	select {
	case <-wal.Entered():
	case err := <-applied:
		t.Fatalf("Apply returned (%v) without syncing its WAL", err)
	case <-time.After(30 * time.Second):
		t.Fatal("Apply never synced its WAL")
	}

	// Each call must answer while both stalls last. A call that waits for
	// either waits until releaseAll: the bound tells a hang from a slow
	// machine, and names the call.
	answers := func(name string, fn func() error) {
		t.Helper()
		res := make(chan error, 1)
		go func() { res <- fn() }()
		select {
		case err := <-res:
			if err != nil {
				t.Errorf("%s during the stalls: %v", name, err)
			}
		case <-time.After(5 * time.Second):
			t.Errorf("%s hangs behind a stalled job record write or index commit", name)
		}
	}
	// A job waiting for ingest: its worker sits in WaitApplied.
	head.seq.Store(f.seq + 100)
	// A call that hangs may still return later: results go through a
	// channel, read only when the call answered.
	var waiting string
	kicked := make(chan string, 1)
	answers("Kickoff", func() error {
		id, err := kickoff("d")
		kicked <- id
		return err
	})
	select {
	case waiting = <-kicked:
	default:
	}
	answers("Status of the job whose record write hangs", func() error {
		st, err := m.Status("c", stalled)
		if err == nil && st.State != Running {
			err = fmt.Errorf("state %s, want running", st.State)
		}
		return err
	})
	answers("Status of a completed job", func() error {
		st, err := m.Status("c", done)
		if err == nil && st.State != Completed {
			err = fmt.Errorf("state %s, want completed", st.State)
		}
		return err
	})
	answers("Status of a new job", func() error {
		if waiting == "" {
			return errors.New("no job")
		}
		st, err := m.Status("d", waiting)
		if err == nil && st.State != Queued && st.State != Running {
			err = fmt.Errorf("state %s, want queued or running", st.State)
		}
		return err
	})
	answers("Wait", func() error {
		if waiting == "" {
			return errors.New("no job")
		}
		_, err := m.Wait(t.Context(), "d", waiting, 10*time.Millisecond)
		return err
	})
	answers("metrics scrape", func() error {
		mfs, err := reg.Gather()
		if err != nil {
			return err
		}
		for _, mf := range mfs {
			if mf.GetName() == "bulkstream_export_jobs" {
				return nil
			}
		}
		return errors.New("no bulkstream_export_jobs")
	})
	answers("Cancel of a completed job", func() error { return m.Cancel("c", done) })
	answers("Cancel of a job waiting for ingest", func() error {
		if waiting == "" {
			return errors.New("no job")
		}
		return m.Cancel("d", waiting)
	})
	answers("Status of a cancelled job", func() error {
		if _, err := m.Status("c", done); !errors.Is(err, ErrNotFound) {
			return fmt.Errorf("%v, want ErrNotFound", err)
		}
		return nil
	})

	// Once the disk answers again, the stalled job and the commit finish.
	releaseAll()
	if err := <-applied; err != nil {
		t.Fatalf("Apply after the stall: %v", err)
	}
	head.seq.Store(0)
	if st := wait(t, m, stalled); st.State != Completed {
		t.Errorf("stalled job %s: %s %s", stalled, st.State, st.Error)
	}
}
