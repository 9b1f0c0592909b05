package export

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"runtime"
	"runtime/pprof"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestKickoffWhileJobsFinish is the regression test of the lock-order
// deadlock fixed in a527190: run() held a job's mu while observeJob took
// m.mu, and a kick-off holds m.mu while admitLocked takes every job's mu
// (and, on a 429, tooMany reads that average). A kick-off arriving as a job
// finished froze every kick-off, status poll and Close. Per-job mutexes are
// gone since (one manager lock, nothing blocking under it); the test stays
// as the guard against any lock-order cycle coming back.
//
// Several clients kick off tiny jobs and poll them without pause, against a
// client quota and a server limit they keep hitting, so kick-offs sit in
// admitLocked (most of them refused there) while workers finish jobs. A
// watchdog fails the test, with every goroutine's stack, when no Kickoff or
// Status call has returned for stallBound; the frozen manager is then left
// unclosed, since Close would block on m.mu too.
func TestKickoffWhileJobsFinish(t *testing.T) {
	const (
		clients    = 8
		perClient  = 40 // admitted jobs per client
		quota      = 2  // Kickoff.MaxJobs
		maxActive  = 6  // below clients*quota: server_limit 429s too
		stallBound = 10 * time.Second
		totalBound = 60 * time.Second
	)
	e := newEnv(t)
	want := map[string]int64{"Patient": 3, "Observation": 2, "Basic": 1}
	var rs []resource
	for typ, n := range want {
		for i := range n {
			id := fmt.Sprintf("%s-%d", strings.ToLower(typ), i)
			rs = append(rs, resource{typ, id, fmt.Appendf(nil, `{"resourceType":%q,"id":%q}`, typ, id)})
		}
	}
	e.f.apply(t, rs...)

	// e.manager's cleanup always calls Close, which would hang on a
	// deadlocked manager: start this one by hand.
	m := startManager(t, Config{Dir: e.dir, Workers: 4, MaxActiveJobs: maxActive, MinFreeBytes: -1}, IndexSource(e.x), e.head, e.x, nil)
	var frozen atomic.Bool
	t.Cleanup(func() {
		if frozen.Load() {
			t.Log("not closing the manager: it is deadlocked, and its goroutines are left blocked")
			return
		}
		if err := m.Close(context.Background()); err != nil {
			t.Error(err)
		}
	})

	// Each client records what it saw; the test goroutine checks it once
	// every client is done.
	type result struct {
		admitted, completed int
		refused             map[string]int // TooManyJobsError.Reason → count
		errs                []string
	}
	results := make([]result, clients)
	var progress atomic.Int64 // Kickoff and Status calls that returned
	var stop atomic.Bool      // the watchdog gave up: clients still running stop
	var wg sync.WaitGroup
	for c := range clients {
		wg.Go(func() {
			r := &results[c]
			r.refused = map[string]int{}
			fail := func(format string, args ...any) {
				r.errs = append(r.errs, fmt.Sprintf(format, args...))
			}
			client := fmt.Sprintf("client-%d", c)
			var pending []string
			for (r.admitted < perClient || len(pending) > 0) && len(r.errs) < 5 && !stop.Load() {
				if r.admitted < perClient {
					id, err := m.Kickoff(t.Context(), Kickoff{Client: client, MaxJobs: quota, RequestURL: "http://x/$export"})
					progress.Add(1)
					var tm *TooManyJobsError
					switch {
					case err == nil:
						r.admitted++
						pending = append(pending, id)
					case !errors.As(err, &tm):
						fail("kick-off refused with %v, want only *TooManyJobsError", err)
					case tm.RetryAfter < time.Second || tm.RetryAfter > time.Minute:
						fail("429 Retry-After %v, want within [1s, 1m]", tm.RetryAfter)
					case tm.Reason == ReasonClientQuota && tm.Limit == quota,
						tm.Reason == ReasonServerLimit && tm.Limit == maxActive:
						r.refused[tm.Reason]++
						runtime.Gosched() // retry at once, as a hostile client would, but let workers run
					default:
						fail("429 %q with limit %d", tm.Reason, tm.Limit)
					}
				}
				kept := pending[:0]
				for _, id := range pending {
					st, err := m.Status(client, id)
					progress.Add(1)
					switch {
					case err != nil:
						fail("Status(%s) = %v", id, err)
					case st.State == Queued || st.State == Running:
						kept = append(kept, id)
					case st.State != Completed || st.Manifest == nil:
						fail("job %s ended %s (%s), want completed", id, st.State, st.Error)
					default:
						got := map[string]int64{}
						for _, fi := range st.Manifest.Output {
							got[fi.Type] += fi.Count
						}
						if !maps.Equal(got, want) {
							fail("job %s exported %v, want %v", id, got, want)
						}
						r.completed++
					}
				}
				pending = kept
			}
		})
	}
	done := make(chan struct{})
	go func() {
		wg.Wait()
		close(done)
	}()

	// The watchdog: a healthy run takes well under a second, and never
	// goes long without a Kickoff or Status call returning.
	start := time.Now()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	last, lastAt := progress.Load(), start
	for running := true; running; {
		select {
		case <-done:
			running = false
		case now := <-tick.C:
			if p := progress.Load(); p != last {
				last, lastAt = p, now
			}
			var why string
			switch {
			case now.Sub(lastAt) > stallBound:
				frozen.Store(true)
				why = fmt.Sprintf("no Kickoff or Status call returned for %v (%d returned in the first %v): "+
					"lock-order deadlock between a finishing job (run holds j.mu, then wants m.mu) and a "+
					"kick-off (admitLocked holds m.mu, then wants every j.mu)",
					stallBound, last, lastAt.Sub(start).Round(time.Millisecond))
			case now.Sub(start) > totalBound:
				why = fmt.Sprintf("%d clients did not finish %d jobs each within %v", clients, perClient, totalBound)
			default:
				continue
			}
			stop.Store(true)
			if !frozen.Load() {
				// Slow, not frozen: let the clients see stop before Close.
				select {
				case <-done:
				case <-time.After(stallBound):
				}
			}
			var stacks strings.Builder
			if err := pprof.Lookup("goroutine").WriteTo(&stacks, 2); err != nil {
				t.Logf("cannot dump goroutines: %v", err)
			}
			t.Logf("all goroutines:\n%s", stacks.String())
			t.Fatal(why)
		}
	}
	elapsed := time.Since(start)

	var admitted, completed int
	refused := map[string]int{}
	for c, r := range results {
		for _, e := range r.errs {
			t.Errorf("client-%d: %s", c, e)
		}
		if r.admitted != perClient || r.completed != perClient {
			t.Errorf("client-%d: %d jobs admitted, %d completed; want %d of each", c, r.admitted, r.completed, perClient)
		}
		admitted += r.admitted
		completed += r.completed
		for reason, n := range r.refused {
			refused[reason] += n
		}
	}
	t.Logf("%d jobs admitted, %d completed, %d kick-offs refused %v, in %v", admitted, completed,
		refused[ReasonClientQuota]+refused[ReasonServerLimit], refused, elapsed.Round(time.Millisecond))
	// The run went through the 429 path (tooMany) for both limits, and the
	// metrics agree with what the clients saw.
	for _, reason := range []string{ReasonClientQuota, ReasonServerLimit} {
		if refused[reason] == 0 {
			t.Errorf("no %s 429: the test did not exercise that limit", reason)
		}
		if got := testutil.ToFloat64(m.met.throttled.WithLabelValues(reason)); got != float64(refused[reason]) {
			t.Errorf("throttled{%s} = %v, clients saw %d", reason, got, refused[reason])
		}
	}
	if got := testutil.ToFloat64(m.met.finished.WithLabelValues(resultCompleted)); got != float64(completed) {
		t.Errorf("finished{completed} = %v, clients saw %d", got, completed)
	}
}
