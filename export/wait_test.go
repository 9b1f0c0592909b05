package export

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
)

// scanningJob is a job scanning entries at a constant rate, observed at
// now, for the estimate rule.
func scanningJob(t0 time.Time, full bool, entries, scanned int64) *job {
	types := make([]string, 19)
	types[0] = "Observation"
	j := &job{}
	j.prog.plan.Store(&scanPlan{types: types, start: t0, entries: entries, total: entries, full: full})
	j.prog.phase.Store(uint32(phaseScanning))
	j.prog.typeIdx.Store(1)
	j.prog.scanned.Store(scanned)
	j.prog.written.Store(scanned)
	return j
}

func TestRetryAfterEstimate(t *testing.T) {
	t0 := time.Date(2026, 12, 2, 6, 0, 0, 0, time.UTC)
	// A job whose first entry took 100 ms (a cold cache) and that then
	// finishes in milliseconds: too little work measured, so 1 s, never
	// the 10 s its first rate suggests.
	j := scanningJob(t0, false, 38483, 1)
	if _, retry := j.progress(t0.Add(100*time.Millisecond), 0); retry != time.Second {
		t.Errorf("after 1 entry in 100 ms: RetryAfter %v, want 1s", retry)
	}
	if _, ok := j.remaining(t0.Add(100 * time.Millisecond)); ok {
		t.Error("remaining after 1 entry: ok, want no estimate")
	}
	// Plenty of entries, too little time.
	j = scanningJob(t0, true, 1_000_000, 5000)
	if _, retry := j.progress(t0.Add(10*time.Millisecond), 0); retry != time.Second {
		t.Errorf("after 10 ms: RetryAfter %v, want 1s", retry)
	}
	// Fast and slow jobs at a constant rate: the suggestion is whole
	// seconds, at least 1 s, never more than the time actually left.
	for _, tc := range []struct {
		name    string
		full    bool
		entries int64
		rate    float64 // entries per second
	}{
		{"fast full", true, 38483, 300_000},
		{"fast since", false, 38483, 300_000},
		{"slow full", true, 1_000_000, 20_000},
		{"slow since", false, 1_000_000, 20_000},
		{"very slow", false, 100_000, 2_000},
	} {
		for el := 250 * time.Millisecond; ; el += 97 * time.Millisecond {
			scanned := int64(tc.rate * el.Seconds())
			if scanned >= tc.entries {
				break
			}
			j := scanningJob(t0, tc.full, tc.entries, scanned)
			_, retry := j.progress(t0.Add(el), 0)
			left := time.Duration(float64(tc.entries-scanned) / tc.rate * float64(time.Second))
			if retry < time.Second || retry%time.Second != 0 || retry > max(left, time.Second) || retry > maxPollInterval {
				t.Fatalf("%s at %v (%d of %d): RetryAfter %v, time left %v", tc.name, el, scanned, tc.entries, retry, left)
			}
			if d, ok := j.remaining(t0.Add(el)); scanned >= minEstimateEntries && (!ok || d > left+left/100) { // scanned is rounded down
				t.Fatalf("%s at %v: remaining %v, %v; time left %v", tc.name, el, d, ok, left)
			}
		}
	}
}

func TestProgressBeforeFirstType(t *testing.T) {
	// The scan has started, its first type not yet (a _since export).
	j := &job{}
	j.prog.plan.Store(&scanPlan{types: make([]string, 19), start: time.Now(), deletions: true})
	j.prog.phase.Store(uint32(phaseScanning))
	s, _ := j.progress(time.Now(), 0)
	if strings.Contains(s, "  ") || strings.Contains(s, "type 0") || !strings.Contains(s, "19 types") {
		t.Errorf("X-Progress %q", s)
	}
	j.prog.plan.Store(&scanPlan{types: make([]string, 19), start: time.Now(), deletions: true, full: true, total: 100})
	if s, _ := j.progress(time.Now(), 0); strings.Contains(s, " :") || strings.Contains(s, "  ") {
		t.Errorf("X-Progress (full) %q", s)
	}
}

// gate returns a scan hook that blocks from the (n+1)th entry until
// release is closed (or the job's context ends), and a channel closed
// when it first blocks.
func gate(n int, release <-chan struct{}) (func(context.Context) error, <-chan struct{}) {
	hook, blocked := blockAfter(n)
	return func(ctx context.Context) error {
		ctx2, cancel := context.WithCancelCause(ctx)
		defer cancel(nil)
		go func() {
			select {
			case <-release:
				cancel(nil)
			case <-ctx2.Done():
			}
		}()
		err := hook(ctx2)
		if ctx.Err() != nil {
			return context.Cause(ctx)
		}
		if errors.Is(err, context.Canceled) {
			return nil // released
		}
		return err
	}, blocked
}

type waitResult struct {
	st  Status
	err error
}

func startWait(ctx context.Context, m *Manager, id string, d time.Duration) <-chan waitResult {
	ch := make(chan waitResult, 1)
	go func() {
		st, err := m.Wait(ctx, "", id, d)
		ch <- waitResult{st, err}
	}()
	return ch
}

func waitingFor(t *testing.T, m *Manager, n int64) {
	t.Helper()
	checkFor(t, 10*time.Second, func() error {
		if got := m.waiters.Load(); got != n {
			return fmt.Errorf("%d waiters, want %d", got, n)
		}
		return nil
	})
}

func TestWaitReleasedOnCompletion(t *testing.T) {
	e := newEnv(t)
	e.f.apply(t, syntheaResources(t, 20)...)
	release := make(chan struct{})
	hook, blocked := gate(100, release)
	m := e.manager(t, Config{}, func(m *Manager) { m.hookScan = hook })
	id := submit(t, m, fullRequest())
	<-blocked
	res := startWait(t.Context(), m, id, MaxWait)
	waitingFor(t, m, 1)
	select {
	case r := <-res:
		t.Fatalf("Wait returned %+v before the job finished", r)
	default:
	}
	close(release)
	waitingFor(t, m, 0) // released well before the cap
	r := <-res
	// The first poll, yet completed: a caller that waited is exempt.
	if r.err != nil || r.st.State != Completed || r.st.Manifest == nil {
		t.Fatalf("Wait = %+v, %v; want completed with a manifest", r.st, r.err)
	}
}

// blockedJob starts a manager with cfg over 20 sample resources and a
// full export whose scan blocks after 100 entries until it is cancelled;
// it returns once the job is blocked there.
func blockedJob(t *testing.T, cfg Config) (*Manager, string) {
	t.Helper()
	e := newEnv(t)
	e.f.apply(t, syntheaResources(t, 20)...)
	hook, blocked := blockAfter(100)
	m := e.manager(t, cfg, func(m *Manager) { m.hookScan = hook })
	id := submit(t, m, fullRequest())
	<-blocked
	return m, id
}

func TestWaitCap(t *testing.T) {
	m, id := blockedJob(t, Config{})
	r := <-startWait(t.Context(), m, id, time.Second)
	if r.err != nil || r.st.State != Running {
		t.Fatalf("Wait = %+v, %v; want running after the wait", r.st, r.err)
	}
	waitingFor(t, m, 0)
	if err := m.Cancel("", id); err != nil {
		t.Fatal(err)
	}
}

func TestWaitReleasedOnCancelDisconnectClose(t *testing.T) {
	m, id := blockedJob(t, Config{MaxActiveJobs: 4, Workers: 2})

	// Cancel.
	res := startWait(t.Context(), m, id, MaxWait)
	waitingFor(t, m, 1)
	if err := m.Cancel("", id); err != nil {
		t.Fatal(err)
	}
	waitingFor(t, m, 0)
	if r := <-res; !errors.Is(r.err, ErrNotFound) {
		t.Errorf("Wait on a cancelled job = %+v, %v; want ErrNotFound", r.st, r.err)
	}

	// Client disconnect.
	hook2, blocked2 := blockAfter(100)
	m.hookScan = hook2
	id = submit(t, m, fullRequest())
	<-blocked2
	ctx, cancel := context.WithCancel(t.Context())
	res = startWait(ctx, m, id, MaxWait)
	waitingFor(t, m, 1)
	cancel()
	waitingFor(t, m, 0)
	if r := <-res; r.err != nil || r.st.State != Running {
		t.Errorf("Wait after disconnect = %+v, %v; want running", r.st, r.err)
	}

	// Manager shutdown.
	res = startWait(t.Context(), m, id, MaxWait)
	waitingFor(t, m, 1)
	if err := m.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	waitingFor(t, m, 0)
	if r := <-res; r.err != nil && !errors.Is(r.err, ErrClosed) {
		t.Errorf("Wait after Close = %+v, %v", r.st, r.err)
	}
}

func TestWaitNoWait(t *testing.T) {
	m, id := blockedJob(t, Config{})
	// Past MaxWaiters: answered at once.
	m.waiters.Store(MaxWaiters)
	if r := <-startWait(t.Context(), m, id, MaxWait); r.err != nil || r.st.State != Running {
		t.Errorf("Wait past MaxWaiters = %+v, %v", r.st, r.err)
	}
	m.waiters.Store(0)
	if _, err := m.Wait(t.Context(), "other", id, time.Second); !errors.Is(err, ErrNotFound) {
		t.Errorf("Wait by another client = %v", err)
	}
	if err := m.Cancel("", id); err != nil {
		t.Fatal(err)
	}
}
