package export

import "fmt"

// The persister: job records are written to the JobStore after Manager.mu
// is let go, never under it. Each transition queues the job's record as a
// new version (gen); the writes of one job run one at a time, the newest
// queued version replacing an older one not yet started, so the store
// ends with the newest record. Removing a job queues the deletion of its
// record as its last version: nothing is queued after it (stateRemoved is
// final), so a removed job is never written back. A write runs on the
// goroutine that asked for it (flush), or on one already writing the same
// job, so a stalled write holds up only callers waiting for that job.

// recordWrite is one queued version of a job's record: the record to put,
// or, del, its deletion.
type recordWrite struct {
	gen uint64
	del bool
	rec jobRecord
	// adopted is the job's adopted count when the write was queued
	// (cluster mode).
	adopted uint64
}

// queueWrite queues rec (nil: the record's deletion) as the job's next
// version and returns it. The record is copied (its manifest too, which
// shed and OpenFile change in memory), so it can be encoded after m.mu is
// let go. m.mu is held.
func (m *Manager) queueWrite(j *job, rec *jobRecord) uint64 {
	j.gen++
	w := &recordWrite{gen: j.gen, del: rec == nil, adopted: j.adopted}
	if rec != nil {
		w.rec = *rec
		if rec.Manifest != nil {
			mf := *rec.Manifest
			w.rec.Manifest = &mf
		}
	}
	j.pending = w
	return j.gen
}

// stage queues rec as the job's next version without changing the job:
// the worker writes a completed record before the transition that serves
// it. It returns 0 if the job is removed. m.mu is held.
func (m *Manager) stage(j *job, rec *jobRecord) uint64 {
	if j.removed {
		return 0
	}
	return m.queueWrite(j, rec)
}

// flush returns once version gen of the job's record (or a newer one) is
// written, with the result of that write; gen 0 returns nil at once. It
// writes what is queued itself unless another goroutine is writing the job
// already, and takes m.mu only between writes.
func (m *Manager) flush(j *job, gen uint64) error {
	if gen == 0 {
		return nil
	}
	m.mu.Lock()
	for j.written < gen {
		if !j.writing && j.pending != nil {
			w := j.pending
			j.pending, j.writing = nil, true
			rev, stale := j.rev, w.adopted != j.adopted
			m.mu.Unlock()
			var enc []byte
			if !w.del {
				enc = mustJSON(w.rec)
			}
			if m.shared != nil {
				m.mu.Lock()
				j.inflight = enc // the watch may echo it before the write returns
				m.mu.Unlock()
			}
			rev, err := m.write(j.id, enc, rev, stale)
			m.mu.Lock()
			j.inflight = nil
			if err == nil && rev > j.rev {
				j.rev = rev
			}
			j.writing, j.written, j.writeErr = false, w.gen, err
			if j.wrote != nil {
				close(j.wrote)
				j.wrote = nil
			}
			continue
		}
		if !j.writing {
			break // nothing queued: written already by an older flush's loop
		}
		if j.wrote == nil {
			j.wrote = make(chan struct{})
		}
		wrote := j.wrote
		m.mu.Unlock()
		<-wrote
		m.mu.Lock()
	}
	err := j.writeErr
	m.mu.Unlock()
	return err
}

// write puts record (nil: deletes it) as one version of a job's record. In cluster mode a put
// is a compare-and-set on rev, the revision the replica holds, and
// returns the new one; a stale write (another replica's change was adopted
// after it was queued) is ErrConflict without a try. A deletion is
// unconditional: removal is final from any state.
func (m *Manager) write(id string, record []byte, rev uint64, stale bool) (uint64, error) {
	if record == nil {
		return 0, m.jobs.DeleteJob(id)
	}
	if m.shared == nil {
		return 0, m.jobs.PutJob(id, record)
	}
	if stale {
		return 0, fmt.Errorf("export: job %s: %w", id, ErrConflict)
	}
	return m.shared.Update(id, record, rev)
}
