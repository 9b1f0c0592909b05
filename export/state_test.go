package export

import (
	"errors"
	"slices"
	"testing"
)

// TestTransitions: transition makes exactly the moves of the state table
// and refuses every other one without changing anything, and the counts
// admission and the jobs gauge read follow each move.
func TestTransitions(t *testing.T) {
	all := []State{stateNew, Queued, Running, Completed, Failed, stateRemoved}
	legal := map[[2]State]bool{
		{stateNew, Queued}: true, {stateNew, Running}: true, {stateNew, Completed}: true, {stateNew, Failed}: true,
		{Queued, Running}: true, {Queued, stateRemoved}: true,
		{Running, Completed}: true, {Running, Failed}: true, {Running, Queued}: true, {Running, stateRemoved}: true,
		{Completed, Failed}: true, {Completed, stateRemoved}: true,
		{Failed, stateRemoved}: true,
	}
	// at returns a manager holding one job of client "c" in state s.
	at := func(t *testing.T, s State) (*Manager, *job) {
		m, err := NewManager(Config{Dir: t.TempDir()}, IndexSource(newEnv(t).x), nil, newMemJobStore())
		if err != nil {
			t.Fatal(err)
		}
		j := &job{id: newJobID(), rec: jobRecord{Request: Request{Client: "c"}}}
		path := map[State][]State{
			Queued: {Queued}, Running: {Queued, Running}, Completed: {Completed}, Failed: {Failed},
			stateRemoved: {Queued, stateRemoved},
		}[s]
		for _, to := range path {
			if _, err := m.transition(j, to, nil); err != nil {
				t.Fatalf("reaching %q: %v", s, err)
			}
		}
		return m, j
	}
	for _, from := range all {
		for _, to := range all {
			m, j := at(t, from)
			before := m.stateCounts()
			_, err := m.transition(j, to, nil)
			var ite *illegalTransitionError
			switch {
			case legal[[2]State{from, to}] && err != nil:
				t.Errorf("%q → %q refused: %v", from, to, err)
			case !legal[[2]State{from, to}] && !errors.As(err, &ite):
				t.Errorf("%q → %q = %v, want refused", from, to, err)
			case err != nil:
				if got := j.state(); got != from {
					t.Errorf("refused %q → %q left the job %q", from, to, got)
				}
				if after := m.stateCounts(); !equalCounts(before, after) {
					t.Errorf("refused %q → %q changed the counts %v to %v", from, to, before, after)
				}
				continue
			}
			// The counts match the jobs.
			want := map[State]int{}
			active := 0
			for _, j := range m.all {
				want[j.rec.State]++
				if j.rec.State == Queued || j.rec.State == Running {
					active++
				}
			}
			if got := m.stateCounts(); !equalCounts(got, want) {
				t.Errorf("after %q → %q: counts %v, jobs %v", from, to, got, want)
			}
			if c := m.clients["c"]; len(m.active) != active || (c == nil && active > 0) || (c != nil && c.active != active) {
				t.Errorf("after %q → %q: active %d, client %+v, want %d", from, to, len(m.active), c, active)
			}
			if inQueue := slices.Contains(m.queue, j); inQueue != (to == Queued) {
				t.Errorf("after %q → %q: in the queue %v", from, to, inQueue)
			}
		}
	}
}

func equalCounts(a, b map[State]int) bool {
	for _, s := range []State{Queued, Running, Completed, Failed} {
		if a[s] != b[s] {
			return false
		}
	}
	return true
}
