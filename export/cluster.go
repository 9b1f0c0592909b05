package export

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/bulkstream/bulkstream/index"
)

// Cluster mode: several replicas share one SharedJobStore (and a FileStore
// every replica can read). Each replica holds every job in memory, as the
// single-node manager does, and keeps that copy in step with the store
// through its watch; a replica changes a record only by compare-and-set on
// the revision it holds, so of two replicas acting on the same job one
// wins and the other learns the outcome from its watch:
//
//   - Kick-off writes the queued record with revision 0 (create).
//   - A worker claims a queued job by writing it running with this replica
//     as Owner and a Lease; losing the compare-and-set means another
//     replica claimed it (or it was cancelled), and the worker lets go.
//   - The owner renews the lease every Lease/3. A renewal that loses the
//     compare-and-set, or no successful renewal for Lease - Lease/3,
//     stops the run at once, without writing anything or touching files
//     (fencing): by the time another replica may take the job over, the
//     old owner has stopped.
//   - Every replica looks for running jobs whose lease ended more than
//     LeaseGrace ago (or that name it as owner without a run of its own:
//     it restarted) and sets them queued by compare-and-set; one replica
//     wins and the job runs again from scratch, with a new snapshot.
//   - Cancel, expiry and eviction delete the record; every replica's watch
//     sees the deletion, and the owner stops the run.
//   - Completion writes the completed record by compare-and-set: a run
//     that lost its job never publishes a manifest.
//
// Admission counts every replica's queued and running jobs, since every
// replica holds them all.

// errLostLease is the cause of a run stopped because its replica no longer
// holds the job: another replica took it over or the lease could not be
// renewed in time.
var errLostLease = errors.New("export: this replica lost the job's lease")

// clusterSyncTimeout bounds how long Start waits for the first complete
// read of the shared job store.
const clusterSyncTimeout = 30 * time.Second

// startCluster starts a cluster-mode manager: the watch, whose first
// complete read Start waits for, then the workers, the expiry loop and the
// lease loop. m.ctx is set.
func (m *Manager) startCluster() error {
	synced := make(chan struct{})
	var once sync.Once
	m.wg.Go(func() { m.watchJobs(func() { once.Do(func() { close(synced) }) }) })
	t := time.NewTimer(clusterSyncTimeout)
	defer t.Stop()
	select {
	case <-synced:
	case <-t.C:
		m.stop()
		m.wg.Wait()
		return fmt.Errorf("export: the shared job store did not answer within %v", clusterSyncTimeout)
	}
	m.mu.Lock()
	for range m.cfg.Workers {
		m.wg.Go(m.worker)
	}
	m.wg.Go(m.expiryLoop)
	m.wg.Go(m.leaseLoop)
	m.mu.Unlock()
	return nil
}

// watchJobs follows the shared job store until the manager closes,
// starting the watch again (after a second) when it fails. synced is
// called each time a watch has delivered every stored record. A watch
// started again reports only the records that exist, not those deleted
// meanwhile: once it has caught up, the jobs it did not report that are
// no newer than what it did are forgotten.
func (m *Manager) watchJobs(synced func()) {
	for attempt := 0; ; attempt++ {
		seen, caughtUp, newest := map[string]bool{}, false, uint64(0)
		err := m.shared.Watch(m.ctx, func(id string, record []byte, rev uint64) {
			switch {
			case id == "":
				caughtUp = true
				if attempt > 0 {
					m.forgetUnseen(seen, newest)
				}
				synced()
				return
			case !caughtUp:
				seen[id], newest = true, max(newest, rev)
			}
			m.adoptRecord(id, record, rev)
		})
		if m.ctx.Err() != nil {
			return
		}
		m.log.Warn("watch of the shared export jobs failed; retrying", "error", err)
		select {
		case <-m.ctx.Done():
			return
		case <-time.After(time.Second):
		}
	}
}

// forgetUnseen forgets the jobs a restarted watch did not report although
// their revision is no newer than the newest it reported: they were
// deleted while the watch was down.
func (m *Manager) forgetUnseen(seen map[string]bool, newest uint64) {
	var gone []*job
	m.mu.Lock()
	for id, j := range m.all {
		if !seen[id] && j.rev != 0 && j.rev <= newest {
			gone = append(gone, j)
		}
	}
	m.mu.Unlock()
	for _, j := range gone {
		m.removeJob(j, "deleted while the watch of the shared jobs was down", false)
	}
}

// adoptRecord applies a record the watch delivered (nil: deleted) at
// revision rev to the job in memory.
func (m *Manager) adoptRecord(id string, record []byte, rev uint64) {
	if !isJobID(id) {
		return
	}
	m.mu.Lock()
	j := m.all[id]
	m.mu.Unlock()
	if record == nil {
		if j != nil {
			m.removeJob(j, "removed by another replica", false)
		}
		return
	}
	rec, err := decodeRecord(record)
	if err != nil {
		m.log.Error("ignoring unreadable shared export job record", "job", id, "error", err)
		return
	}
	m.mu.Lock()
	if j = m.all[id]; j != nil && rev <= j.rev {
		m.mu.Unlock()
		return // what this replica wrote, or older
	}
	var stop func(error)
	if j != nil && j.inflight != nil && bytes.Equal(record, j.inflight) {
		// This replica's own write, seen before the write returned:
		// nothing to adopt.
		j.rev = rev
	} else {
		stop, err = m.adopt(j, id, rec, rev)
	}
	m.mu.Unlock()
	if stop != nil {
		stop(errLostLease)
	}
	if err != nil {
		m.log.Error("cannot adopt shared export job record", "job", id, "error", err)
	}
}

// adopt makes the job in memory (j; nil: not known yet) what another
// replica wrote, without writing anything back. It returns the cancel of a
// run of this replica that no longer holds the job. m.mu is held.
func (m *Manager) adopt(j *job, id string, rec jobRecord, rev uint64) (stop func(error), err error) {
	if j != nil {
		j.adopted++
		j.rev = rev
		if j.local && (rec.State != Running || rec.Owner != m.cfg.Replica || rec.Runs != j.rec.Runs) {
			stop = j.cancel
		}
		// A poll seen here counts for the first-poll rule whatever the
		// record says.
		rec.Polled = rec.Polled || j.rec.Polled
		if j.state() == rec.State {
			j.rec = rec
			if s := rec.State; s == Completed || s == Failed {
				j.shed()
			}
			return stop, nil
		}
		if slices.Contains(transitions[j.state()], rec.State) {
			_, err := m.transition(j, rec.State, func(r *jobRecord) { *r = rec })
			j.pending = nil // another replica's change: nothing to write back
			if s := rec.State; err == nil && (s == Completed || s == Failed) {
				j.shed()
			}
			return stop, err
		}
		// A jump the machine has no edge for (the watch restarted and
		// missed the steps between): start the job over from its record.
		if _, err := m.transition(j, stateRemoved, nil); err != nil {
			return stop, err
		}
		j.pending = nil
	}
	nj := &job{id: id, rec: rec, rev: rev}
	nj.rec.State = stateNew
	if _, err := m.transition(nj, rec.State, nil); err != nil {
		return stop, err
	}
	if s := rec.State; s == Completed || s == Failed {
		nj.shed()
	}
	return stop, nil
}

// lookupShared makes a job another replica created moments ago known
// here, before this replica's watch delivers it: a client may kick off on
// one replica and poll another at once. Outside cluster mode, or when
// the job is known, it does nothing. When the job is not known here and
// the store cannot be read (a leader election), whether the job exists is
// unknown: it returns an *UnavailableError (503, come back), not
// ErrNotFound (404, which a client takes as final).
func (m *Manager) lookupShared(id string) error {
	return m.refreshShared(id, func(*job) bool { return false })
}

// errStoreUnavailable answers a request whose job only the shared store,
// out of reach for now, could tell about.
var errStoreUnavailable = &UnavailableError{Reason: "the shared export job store is unavailable; try again shortly", RetryAfter: 5 * time.Second}

// refreshShared is lookupShared that also reads the store when the job
// is known but stale says its copy may be behind (OpenFile: not yet
// completed here, while a client holds a manifest another replica
// served). If the store says completed while the job still runs here
// (this replica's own completion, written but not yet made visible), it
// waits for that, briefly.
//
// It returns errStoreUnavailable when the store cannot be read and the job
// is not known here; nil otherwise.
func (m *Manager) refreshShared(id string, stale func(*job) bool) error {
	if m.shared == nil || !isJobID(id) {
		return nil
	}
	m.mu.Lock()
	_, undeleted := m.undeleted[id] // removed here; its record outlived it
	j := m.all[id]
	fresh := undeleted || (j != nil && !stale(j))
	m.mu.Unlock()
	if fresh {
		return nil
	}
	record, rev, err := m.shared.Lookup(id)
	if err != nil {
		if errors.Is(err, index.ErrNotFound) {
			return nil
		}
		m.log.Warn("cannot read a shared export job record", "job", id, "error", err)
		if j == nil {
			return errStoreUnavailable
		}
		return nil
	}
	m.adoptRecord(id, record, rev)
	if rec, err := decodeRecord(record); j == nil || err != nil || rec.State != Completed {
		return nil
	}
	m.mu.Lock()
	var changed <-chan struct{}
	if s := j.state(); (s == Queued || s == Running) && m.ctx != nil {
		changed = j.waitersChan()
	}
	mctx := m.ctx
	m.mu.Unlock()
	if changed != nil {
		t := time.NewTimer(2 * time.Second)
		defer t.Stop()
		select {
		case <-changed:
		case <-t.C:
		case <-mctx.Done():
		}
	}
	return nil
}

// claim is the change a worker of this replica makes to a job it takes
// from the queue in cluster mode. m.mu is held.
func (m *Manager) claim(now time.Time) func(*jobRecord) {
	return func(r *jobRecord) {
		r.Owner, r.Lease = m.cfg.Replica, now.Add(m.cfg.Lease)
		r.Runs++
	}
}

// unclaim is the change that gives a running job back to the queue (a
// takeover, or an interrupted run).
func unclaim(r *jobRecord) { r.Owner, r.Lease = "", time.Time{} }

// leaseLoop renews this replica's leases and takes over the jobs whose
// owner has stopped renewing, every Lease/3, until the manager closes.
func (m *Manager) leaseLoop() {
	t := time.NewTicker(m.cfg.Lease / 3)
	defer t.Stop()
	for {
		select {
		case <-m.ctx.Done():
			return
		case <-t.C:
		}
		m.leases()
	}
}

// leaseWrite is one record write of the lease loop.
type leaseWrite struct {
	j     *job
	gen   uint64
	lease time.Time // a renewal: the lease it writes
	stop  func(error)
}

// leases does one round of the lease loop: under m.mu it queues the
// renewals and takeovers and picks the runs to stop; after, it writes.
func (m *Manager) leases() {
	now := m.cfg.Now()
	var renew, take []leaseWrite
	var stops []func(error)
	m.mu.Lock()
	for j := range m.active {
		if j.rec.State != Running {
			continue
		}
		switch {
		case j.local && !now.Before(j.leaseHeld.Add(-m.cfg.Lease/3)):
			stops = append(stops, j.cancel) // fenced: not renewed in time
		case j.local && (j.pending != nil || j.writing):
			// A write is queued or under way (it may be the completed
			// record, which a renewal must not replace): renew next round.
		case j.local:
			lease := now.Add(m.cfg.Lease)
			j.rec.Lease = lease
			renew = append(renew, leaseWrite{j: j, gen: m.queueWrite(j, &j.rec), lease: lease, stop: j.cancel})
		case j.rec.Owner == m.cfg.Replica || now.After(j.rec.Lease.Add(m.cfg.LeaseGrace)):
			if gen, err := m.transition(j, Queued, unclaim); err == nil {
				take = append(take, leaseWrite{j: j, gen: gen})
			}
		}
	}
	m.mu.Unlock()
	for _, stop := range stops {
		stop(errLostLease)
	}
	for _, w := range renew {
		err := m.flush(w.j, w.gen)
		switch {
		case err == nil:
			m.mu.Lock()
			w.j.leaseHeld = w.lease
			m.mu.Unlock()
		case errors.Is(err, ErrConflict):
			w.stop(errLostLease)
		default:
			m.log.Warn("cannot renew the lease of an export job", "job", w.j.id, "error", err)
		}
	}
	for _, w := range take {
		if err := m.flush(w.j, w.gen); err == nil {
			m.log.Info("export job taken over: its owner stopped renewing its lease", "job", w.j.id)
		}
	}
}

// clusterMaxRuns is how many runs a cluster-mode job gets before an
// internal error fails it: JetStream answering "no responders" or timing
// out through a leader election is an internal error too, and the next
// run, after a pause, usually succeeds.
const clusterMaxRuns = 5

// retryShared gives a cluster-mode job that failed with an internal error
// (not the client's request, not a disk limit) back to the queue for
// another run on any replica, after a pause of 2 s per run so far (at
// most 10 s) during which this replica keeps the lease. It reports false,
// doing nothing, when the job should fail instead: single-node mode, a
// failure the client should hear about, or clusterMaxRuns runs done.
func (m *Manager) retryShared(r *jobRun, err error, log *slog.Logger) bool {
	if m.shared == nil || failReason(err) != failInternal {
		return false
	}
	j := r.j
	m.mu.Lock()
	runs := j.rec.Runs
	m.mu.Unlock()
	if runs >= clusterMaxRuns {
		return false
	}
	pause := min(time.Duration(runs)*2*time.Second, 10*time.Second)
	log.Warn("export job failed; it runs again, on any replica, after a pause", "error", err, "run", runs, "pause", pause)
	t := time.NewTimer(pause)
	defer t.Stop()
	select {
	case <-t.C:
	case <-r.ctx.Done():
		// Cancelled, lost or closing meanwhile: run's cleanup applies
		// (a closing manager requeues it anyway).
		if m.ctx.Err() != nil {
			m.requeue(j, log, shutdownRequeued)
		}
		return true
	}
	m.requeue(j, log, "export job queued again after its failure")
	return true
}
