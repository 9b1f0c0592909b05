package export

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/bulkstream/bulkstream/index"
)

var errInjected = errors.New("injected job store fault")

// faultStore is a JobStore in memory that fails chosen writes: the next
// n PutJob calls of a record in a given state, and the next n DeleteJob
// calls.
type faultStore struct {
	*memJobStore
	mu       sync.Mutex
	putFails map[State]int
	delFails int
}

func newFaultStore() *faultStore {
	return &faultStore{memJobStore: newMemJobStore(), putFails: map[State]int{}}
}

// failPut makes the next n writes of a record in state s fail.
func (s *faultStore) failPut(st State, n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.putFails[st] = n
}

// failDelete makes the next n deletions fail.
func (s *faultStore) failDelete(n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.delFails = n
}

func (s *faultStore) PutJob(id string, rec []byte) error {
	r, err := decodeRecord(rec)
	if err != nil {
		return err
	}
	s.mu.Lock()
	fail := s.putFails[r.State] > 0
	if fail {
		s.putFails[r.State]--
	}
	s.mu.Unlock()
	if fail {
		return errInjected
	}
	return s.memJobStore.PutJob(id, rec)
}

func (s *faultStore) DeleteJob(id string) error {
	s.mu.Lock()
	fail := s.delFails > 0
	if fail {
		s.delFails--
	}
	s.mu.Unlock()
	if fail {
		return errInjected
	}
	return s.memJobStore.DeleteJob(id)
}

// waitStored waits until job id's stored record is in state want: a
// transition is visible before the persister has written its record.
func (s *faultStore) waitStored(t testing.TB, id string, want State) {
	t.Helper()
	checkFor(t, 10*time.Second, func() error {
		if got := s.storedState(t, id); got != want {
			return fmt.Errorf("stored state %q, want %q", got, want)
		}
		return nil
	})
}

// storedState is the state of job id's record in the store; "" when
// there is none.
func (s *faultStore) storedState(t testing.TB, id string) State {
	t.Helper()
	b, err := s.GetJob(id)
	if errors.Is(err, index.ErrNotFound) {
		return ""
	}
	if err != nil {
		t.Fatal(err)
	}
	r, err := decodeRecord(b)
	if err != nil {
		t.Fatal(err)
	}
	return r.State
}

// faultManager starts a Manager over e's index and directory keeping its
// records in store; setup may adjust it before Start. The returned stop
// closes it (also run when the test ends).
func faultManager(t *testing.T, e *testEnv, store JobStore, setup func(*Manager)) (*Manager, func()) {
	t.Helper()
	m := startManager(t, Config{Dir: e.dir}, IndexSource(e.x), e.head, store, setup)
	var once sync.Once
	stop := func() {
		once.Do(func() {
			if err := m.Close(context.Background()); err != nil {
				t.Error(err)
			}
		})
	}
	t.Cleanup(stop)
	return m, stop
}

// noFiles checks that job id has no files left.
func noFiles(t *testing.T, m *Manager, id string) {
	t.Helper()
	if _, err := os.Stat(m.jobDir(id)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("job %s still has files: %v", id, dirFiles(t, m, id))
	}
}

// notServed checks that a failed job serves no manifest and no file.
func notServed(t *testing.T, m *Manager, id string, st Status) {
	t.Helper()
	if st.State != Failed || st.Manifest != nil || st.Error == "" {
		t.Fatalf("status %+v, want failed with a message and no manifest", st)
	}
	if _, err := m.OpenFile("", id, "Patient-1.ndjson"); !errors.Is(err, ErrNotFound) {
		t.Errorf("OpenFile of a failed job = %v, want ErrNotFound", err)
	}
	noFiles(t, m, id)
}

// TestJobStoreFaults: whichever job record write fails, the job's outcome
// and what is served agree with what is durable: a manifest is served
// only once its completed record is stored, a failure the store did not
// take is retried after a restart (the stored record is still queued or
// running), and a removed job is gone at once even when its record's
// deletion fails, which the expiry loop then retries.
func TestJobStoreFaults(t *testing.T) {
	patients := []resource{
		{"Patient", "p1", []byte(`{"resourceType":"Patient","id":"p1"}`)},
		{"Patient", "p2", []byte(`{"resourceType":"Patient","id":"p2"}`)},
	}

	t.Run("kick-off", func(t *testing.T) {
		e := newEnv(t)
		e.f.apply(t, patients...)
		store := newFaultStore()
		m, _ := faultManager(t, e, store, nil)
		store.failPut(Queued, 1)
		if _, err := m.submit(t.Context(), fullRequest(), 0, time.Now()); !errors.Is(err, errInjected) {
			t.Fatalf("submit = %v, want the store's error", err)
		}
		if n := len(store.recs); n != 0 {
			t.Errorf("%d records stored, want none", n)
		}
		if c := m.stateCounts(); c[Queued]+c[Running]+c[Completed]+c[Failed] != 0 {
			t.Errorf("counts %v after a refused kick-off, want none", c)
		}
		// The slot is free: the next kick-off runs.
		waitManifest(t, m, submit(t, m, fullRequest()))
	})

	t.Run("start", func(t *testing.T) {
		e := newEnv(t)
		e.f.apply(t, patients...)
		store := newFaultStore()
		m, _ := faultManager(t, e, store, nil)
		store.failPut(Running, 1)
		id := submit(t, m, fullRequest())
		notServed(t, m, id, wait(t, m, id))
		store.waitStored(t, id, Failed)
	})

	t.Run("start, failure not stored either: rerun after restart", func(t *testing.T) {
		e := newEnv(t)
		e.f.apply(t, patients...)
		store := newFaultStore()
		m, stop := faultManager(t, e, store, nil)
		store.failPut(Running, 1)
		store.failPut(Failed, 1)
		id := submit(t, m, fullRequest())
		notServed(t, m, id, wait(t, m, id))
		if got := store.storedState(t, id); got != Queued {
			t.Errorf("stored state %q, want queued (the kick-off's record)", got)
		}
		stop()
		m2, _ := faultManager(t, e, store, nil)
		if mf := waitManifest(t, m2, id); len(mf.Output) != 1 || mf.Output[0].Count != 2 {
			t.Errorf("rerun manifest output %+v, want the 2 Patients", mf.Output)
		}
	})

	t.Run("completion", func(t *testing.T) {
		e := newEnv(t)
		e.f.apply(t, patients...)
		store := newFaultStore()
		m, stop := faultManager(t, e, store, nil)
		store.failPut(Completed, 1)
		id := submit(t, m, fullRequest())
		notServed(t, m, id, wait(t, m, id))
		store.waitStored(t, id, Failed)
		// A restart agrees.
		stop()
		m2, _ := faultManager(t, e, store, nil)
		wait(t, m2, id) // the first poll's extra "running"
		st, err := m2.Status("", id)
		if err != nil {
			t.Fatal(err)
		}
		notServed(t, m2, id, st)
	})

	t.Run("failure", func(t *testing.T) {
		e := newEnv(t)
		e.f.apply(t, patients...)
		store := newFaultStore()
		var once sync.Once
		m, stop := faultManager(t, e, store, func(m *Manager) {
			m.hookScan = func(context.Context) error {
				err := error(nil)
				once.Do(func() { err = errors.New("scan broke") })
				return err
			}
		})
		store.failPut(Failed, 1)
		id := submit(t, m, fullRequest())
		notServed(t, m, id, wait(t, m, id))
		if got := store.storedState(t, id); got != Running {
			t.Errorf("stored state %q, want running (the failed record was refused)", got)
		}
		// The failure was never durable: the next start runs the job again.
		stop()
		m2, _ := faultManager(t, e, store, nil)
		if mf := waitManifest(t, m2, id); len(mf.Output) != 1 || mf.Output[0].Count != 2 {
			t.Errorf("rerun manifest output %+v, want the 2 Patients", mf.Output)
		}
	})

	t.Run("interrupt", func(t *testing.T) {
		e := newEnv(t)
		e.f.apply(t, patients...)
		store := newFaultStore()
		scanning := make(chan struct{})
		var once sync.Once
		m, stop := faultManager(t, e, store, func(m *Manager) {
			m.hookScan = func(ctx context.Context) error {
				once.Do(func() { close(scanning) })
				<-ctx.Done()
				return ctx.Err()
			}
		})
		id := submit(t, m, fullRequest())
		<-scanning
		store.failPut(Queued, 1)
		stop()
		if got := store.storedState(t, id); got != Running {
			t.Errorf("stored state %q, want running (the queued record was refused)", got)
		}
		noFiles(t, m, id)
		// A running record restarts like a queued one.
		m2, _ := faultManager(t, e, store, nil)
		if mf := waitManifest(t, m2, id); len(mf.Output) != 1 || mf.Output[0].Count != 2 {
			t.Errorf("rerun manifest output %+v, want the 2 Patients", mf.Output)
		}
	})

	for _, tc := range []struct {
		name   string
		remove func(t *testing.T, m *Manager, clock *fakeClock, id string)
	}{
		{"cancel", func(t *testing.T, m *Manager, _ *fakeClock, id string) {
			if err := m.Cancel("", id); err != nil {
				t.Errorf("Cancel = %v, want nil", err)
			}
		}},
		{"expiry", func(_ *testing.T, m *Manager, clock *fakeClock, id string) {
			clock.Add(DefaultTTL + time.Minute)
			m.expire()
		}},
	} {
		t.Run(tc.name+", deletion fails", func(t *testing.T) {
			e := newEnv(t)
			e.f.apply(t, patients...)
			store := newFaultStore()
			clock := &fakeClock{t: time.Now()}
			m := startManager(t, Config{Dir: e.dir, Now: clock.Now}, IndexSource(e.x), e.head, store, nil)
			t.Cleanup(func() { m.Close(context.Background()) })
			id := submit(t, m, fullRequest())
			waitManifest(t, m, id)
			store.failDelete(1)
			tc.remove(t, m, clock, id)
			if _, err := m.Status("", id); !errors.Is(err, ErrNotFound) {
				t.Errorf("Status after removal = %v, want ErrNotFound", err)
			}
			if _, err := m.OpenFile("", id, "Patient-1.ndjson"); !errors.Is(err, ErrNotFound) {
				t.Errorf("OpenFile after removal = %v, want ErrNotFound", err)
			}
			noFiles(t, m, id)
			if c := m.stateCounts(); c[Completed] != 0 {
				t.Errorf("counts %v, want no completed job", c)
			}
			if got := store.storedState(t, id); got != Completed {
				t.Fatalf("stored state %q right after the failed deletion, want completed", got)
			}
			m.expire() // the expiry loop retries the deletion
			if got := store.storedState(t, id); got != "" {
				t.Errorf("stored state %q after the retry, want no record", got)
			}
		})
	}
}
