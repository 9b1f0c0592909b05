package export

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
)

// TestAdmissionLooksAtLiveJobsOnly: finished jobs stay for download until
// they expire (a day by default), so a busy server keeps thousands; a
// kick-off must count the queued and running ones without walking them
// all under m.mu. After many finished jobs, the counts admission reads and
// the active set a 429's Retry-After looks at hold only the live jobs, and
// the limits count exactly those.
func TestAdmissionLooksAtLiveJobsOnly(t *testing.T) {
	e := newEnv(t)
	e.f.apply(t, resource{"Patient", "p1", []byte(`{"resourceType":"Patient","id":"p1"}`)})
	// The hook holds the workers once hold is set, so the last jobs stay
	// queued or running.
	var hold atomic.Bool
	release := make(chan struct{})
	m := e.manager(t, Config{MaxActiveJobs: 3}, func(m *Manager) {
		m.hookScan = func(ctx context.Context) error {
			if hold.Load() {
				select {
				case <-release:
				case <-ctx.Done():
				}
			}
			return nil
		}
	})
	const finished = 200
	for range finished {
		wait(t, m, kickoffAs(t, m, Kickoff{Client: "a", MaxJobs: 1}))
	}
	hold.Store(true)
	live := []string{
		kickoffAs(t, m, Kickoff{Client: "a", MaxJobs: 1}),
		kickoffAs(t, m, Kickoff{Client: "b", MaxJobs: 2}),
	}
	m.mu.Lock()
	walked, all, counted := len(m.active), len(m.all), m.byState[Queued]+m.byState[Running]
	m.mu.Unlock()
	if walked != len(live) || counted != len(live) || all != finished+len(live) {
		t.Errorf("after %d finished jobs and %d live ones: admission counts %d and walks %d jobs of %d kept, want %d",
			finished, len(live), counted, walked, all, len(live))
	}
	// The limits count the live jobs: a's quota of 1 is used, the server
	// has one slot left of 3.
	var tm *TooManyJobsError
	if _, err := m.Kickoff(t.Context(), Kickoff{Client: "a", MaxJobs: 1, RequestURL: "http://x/$export"}); !errors.As(err, &tm) || tm.Reason != ReasonClientQuota {
		t.Errorf("second live job of a: %v, want a client_quota 429", err)
	}
	live = append(live, kickoffAs(t, m, Kickoff{Client: "c"}))
	if _, err := m.Kickoff(t.Context(), Kickoff{Client: "d", RequestURL: "http://x/$export"}); !errors.As(err, &tm) || tm.Reason != ReasonServerLimit {
		t.Errorf("fourth live job: %v, want a server_limit 429", err)
	}
	close(release)
	for _, id := range live {
		if st := wait(t, m, id); st.State != Completed {
			t.Errorf("job %s: %s %s", id, st.State, st.Error)
		}
	}
}
