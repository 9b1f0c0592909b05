package export

import (
	"cmp"
	"maps"
	"slices"
	"time"
)

// expiryLoop removes expired jobs, and the oldest finished ones past
// MaxFinishedJobs.
func (m *Manager) expiryLoop() {
	t := time.NewTicker(clamp(m.cfg.TTL/4, time.Second, time.Minute))
	defer t.Stop()
	for {
		select {
		case <-m.ctx.Done():
			return
		case <-t.C:
		case <-m.sweep:
		}
		m.expire()
	}
}

// expire removes every finished job past its expiry, then each client's
// oldest finished jobs beyond its own cap, then, while more than
// MaxFinishedJobs are left, the oldest finished job of the client holding
// the most (so a client holding fewer than another never loses a job to
// the global cap while the other still has more). Under m.mu it only
// collects the finished jobs; sorting, picking and removing happen after.
func (m *Manager) expire() {
	m.retryDeletes()
	now := m.cfg.Now()
	var old []*job
	byClient := map[string][]finishedJob{}
	m.mu.Lock()
	m.sinceSweep = 0
	for _, j := range m.all {
		if j.expired(now) {
			old = append(old, j)
		} else if s := j.rec.State; s == Completed || s == Failed {
			c := j.rec.Request.Client
			byClient[c] = append(byClient[c], finishedJob{j, j.rec.Finished, j.rec.Request.MaxFinished})
		}
	}
	m.mu.Unlock()
	for _, j := range old {
		m.remove(j, "expired")
	}
	for _, v := range evictions(byClient, m.cfg.MaxFinishedJobsPerClient, m.cfg.MaxFinishedJobs) {
		m.remove(v.j, v.why)
	}
}

// retryDeletes deletes again the records of removed jobs whose deletion
// failed (see remove), outside m.mu.
func (m *Manager) retryDeletes() {
	m.mu.Lock()
	ids := slices.Collect(maps.Keys(m.undeleted))
	m.mu.Unlock()
	for _, id := range ids {
		if err := m.jobs.DeleteJob(id); err != nil {
			m.log.Error("cannot delete export job record; retrying later", "job", id, "error", err)
			continue
		}
		m.mu.Lock()
		delete(m.undeleted, id)
		m.mu.Unlock()
	}
}

// clientCap is client's cap on its own finished jobs: keep (its
// Request.MaxFinished), 0 there meaning perClient; 0 or negative, none.
// The anonymous client "" has none: without authorization every job is
// its, so only the global cap applies (--max-finished-exports keeps its
// meaning when --clients is not given).
func clientCap(client string, keep, perClient int) int {
	if client == "" {
		return 0
	}
	return cmp.Or(keep, perClient)
}

// finishedJob is a finished job as the eviction sweep sees it: when it
// finished and its client's cap at kick-off (Request.MaxFinished).
type finishedJob struct {
	j        *job
	at       time.Time
	keepMine int
}

type eviction struct {
	j   *job
	why string
}

// evictions picks the finished jobs to remove: per client, the oldest
// beyond its own cap (the cap of its most recently finished job, 0 there
// meaning perClient; negative: none), then, while more than global (> 0)
// are left, the oldest of the client holding the most (ties: the client
// whose oldest job is oldest). byClient's slices are sorted in place.
func evictions(byClient map[string][]finishedJob, perClient, global int) []eviction {
	var out []eviction
	total := 0
	clients := make([]string, 0, len(byClient))
	for c, fs := range byClient {
		slices.SortFunc(fs, func(a, b finishedJob) int { return a.at.Compare(b.at) })
		limit := clientCap(c, fs[len(fs)-1].keepMine, perClient)
		if limit > 0 && len(fs) > limit {
			for _, f := range fs[:len(fs)-limit] {
				out = append(out, eviction{f.j, "evicted: past the client's cap on finished jobs"})
			}
			fs = fs[len(fs)-limit:]
		}
		byClient[c] = fs
		total += len(fs)
		clients = append(clients, c)
	}
	if global <= 0 || total <= global {
		return out
	}
	// A max-heap would be O(excess · log clients); the excess is at most
	// a tenth of the cap between sweeps and clients are few, so a scan
	// per eviction is enough.
	for ; total > global; total-- {
		var most string
		for _, c := range clients {
			fs, best := byClient[c], byClient[most]
			if len(fs) > len(best) || len(fs) == len(best) && len(fs) > 0 && fs[0].at.Before(best[0].at) {
				most = c
			}
		}
		fs := byClient[most]
		out = append(out, eviction{fs[0].j, "evicted: past the cap on finished jobs, from the client holding the most"})
		byClient[most] = fs[1:]
	}
	return out
}

// stateCounts counts jobs by state, for the jobs gauge: a copy of the
// counts transition keeps, O(1) under m.mu.
func (m *Manager) stateCounts() map[State]int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return map[State]int{
		Queued:    m.byState[Queued],
		Running:   m.byState[Running],
		Completed: m.byState[Completed],
		Failed:    m.byState[Failed],
	}
}
