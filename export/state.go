package export

import (
	"fmt"
	"slices"
)

// The job state machine. Every change of a job's state goes through
// transition, under Manager.mu; the table in the package doc is
// transitions below.

// Pseudo-states of a job that transition knows but Status never returns.
const (
	// stateNew is a job not yet known to the manager: a kick-off being
	// admitted, or a record being loaded at Start.
	stateNew State = ""
	// stateRemoved is a job cancelled, expired or evicted: gone from the
	// manager, its record deleted and its files removed after the
	// transition. Nothing leaves it.
	stateRemoved State = "removed"
)

// transitions lists, for each state, the states a job may go to.
var transitions = map[State][]State{
	stateNew:  {Queued, Running, Completed, Failed}, // kick-off admitted; jobs loaded at Start; running: another replica's (cluster mode)
	Queued:    {Running, stateRemoved},
	Running:   {Completed, Failed, Queued, stateRemoved}, // queued: interrupted by Close
	Completed: {Failed, stateRemoved},                    // failed: a file damaged on disk
	Failed:    {stateRemoved},
}

// illegalTransitionError is a transition the state machine refuses.
type illegalTransitionError struct {
	id       string
	from, to State
}

func (e *illegalTransitionError) Error() string {
	from := e.from
	if from == stateNew {
		from = "new"
	}
	return fmt.Sprintf("export: job %s cannot go from %s to %s", e.id, from, e.to)
}

// clientJobs counts one client's jobs, for admission and the caps on
// finished jobs.
type clientJobs struct {
	active   int // queued or running
	finished int // completed or failed
}

// state is j's state for the machine. m.mu is held.
func (j *job) state() State {
	if j.removed {
		return stateRemoved
	}
	return j.rec.State
}

// transition moves j to state to, applying set (nil: nothing) to its
// record first, and keeps every count admission, the caps and the jobs
// gauge read in step, so they need no walk over the jobs. It refuses an
// illegal transition (nothing changes) with *illegalTransitionError.
//
// The record change is queued for the persister (see persist.go) and gen
// is its version: the caller writes it with flush once it has let go of
// m.mu. Two transitions are not queued: from stateNew (Kickoff and Start
// have written the record already) and to Completed (the worker writes
// the completed record with stage before the transition, so a manifest
// is served only once durable). A removal queues the record's deletion,
// the last write of a job.
//
// m.mu is held: transition never blocks (no I/O, no logging, no metrics,
// only non-blocking channel sends).
func (m *Manager) transition(j *job, to State, set func(*jobRecord)) (gen uint64, err error) {
	from := j.state()
	if !slices.Contains(transitions[from], to) {
		return 0, &illegalTransitionError{id: j.id, from: from, to: to}
	}
	if from != stateNew {
		m.count(j, -1)
	}
	if set != nil {
		set(&j.rec)
	}
	switch to {
	case stateRemoved:
		j.removed = true
		if m.all[j.id] == j {
			delete(m.all, j.id)
		}
	default:
		j.rec.State = to
		m.count(j, +1)
	}
	switch {
	case from == stateNew:
		m.all[j.id] = j
	case from == Queued:
		if i := slices.Index(m.queue, j); i >= 0 {
			m.queue = slices.Delete(m.queue, i, i+1)
		}
	}
	if to == Queued {
		// From running: a run interrupted by Close (no worker takes it
		// any more), or, in cluster mode, a job taken over.
		m.queue = append(m.queue, j)
		m.signal()
	}
	if (from == Queued || from == Running) && to != Running {
		j.signalWaiters()
	}
	if from == Running && (to == Completed || to == Failed) {
		m.finished(j)
	}
	switch {
	case to == stateRemoved:
		gen = m.queueWrite(j, nil)
	case from != stateNew && to != Completed:
		gen = m.queueWrite(j, &j.rec)
	}
	return gen, nil
}

// count adds d (+1 or -1) to the counts of j's state and client. m.mu is
// held.
func (m *Manager) count(j *job, d int) {
	s, client := j.rec.State, j.rec.Request.Client
	m.byState[s] += d
	c := m.clients[client]
	if c == nil {
		c = &clientJobs{}
		m.clients[client] = c
	}
	switch s {
	case Queued, Running:
		c.active += d
		if d > 0 {
			m.active[j] = struct{}{}
		} else {
			delete(m.active, j)
		}
	case Completed, Failed:
		c.finished += d
	}
	if *c == (clientJobs{}) {
		delete(m.clients, client)
	}
}

// finished wakes the expiry loop when j's client now holds more finished
// jobs than its cap keeps (none for the anonymous client "" of a server
// without authorization), or when a tenth of MaxFinishedJobs have finished
// since its last sweep. m.mu is held; the send does not block.
func (m *Manager) finished(j *job) {
	wake := false
	client := j.rec.Request.Client
	if limit := clientCap(client, j.rec.Request.MaxFinished, m.cfg.MaxFinishedJobsPerClient); limit > 0 &&
		m.clients[client].finished > limit {
		wake = true
	}
	if limit := m.cfg.MaxFinishedJobs; limit > 0 {
		if m.sinceSweep++; m.sinceSweep >= max(1, limit/10) {
			wake = true
		}
	}
	if wake {
		select {
		case m.sweep <- struct{}{}:
		default:
		}
	}
}

// signal wakes a worker. m.mu is held; the send does not block.
func (m *Manager) signal() {
	select {
	case m.wake <- struct{}{}:
	default:
	}
}
