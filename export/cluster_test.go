package export

import (
	"context"
	"errors"
	"maps"
	"sync"
	"testing"
	"time"

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
	quiet bool                   // deletions are not delivered (the watch is "down")
	fns   []func(string, []byte, uint64)
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
	if s.revs[id] != rev {
		return 0, ErrConflict
	}
	s.rev++
	s.recs[id], s.revs[id] = rec, s.rev
	s.notify(id, rec, s.rev)
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
