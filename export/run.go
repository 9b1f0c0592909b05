package export

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/bulkstream/bulkstream/index"
	"github.com/bulkstream/bulkstream/internal/fhirdefs"
	"github.com/bulkstream/bulkstream/internal/search"
)

// worker runs queued jobs until the manager closes.
func (m *Manager) worker() {
	for {
		r := m.next()
		if r == nil {
			return
		}
		m.run(r)
	}
}

// jobRun is one run of a job by a worker: what it needs of the job,
// copied when the job left the queue.
type jobRun struct {
	j       *job
	ctx     context.Context
	cancel  context.CancelCauseFunc
	done    chan struct{}
	gen     uint64 // the running record's version
	req     Request
	headSeq uint64
	created time.Time
}

// next takes the oldest queued job to running, waiting for one; nil when
// closing.
func (m *Manager) next() *jobRun {
	for {
		m.mu.Lock()
		if m.ctx.Err() != nil {
			m.mu.Unlock()
			return nil
		}
		if len(m.queue) > 0 {
			j := m.queue[0]
			j.prog.reset()
			var set func(*jobRecord)
			if m.shared != nil {
				set = m.claim(m.cfg.Now())
			}
			gen, err := m.transition(j, Running, set) // takes it off the queue
			if err != nil {
				// Not queued: the machine refused. Drop it from the queue
				// so the worker does not spin on it.
				m.queue = m.queue[1:]
				m.mu.Unlock()
				m.log.Error("export job in the queue is not queued", "job", j.id, "error", err)
				continue
			}
			ctx, cancel := context.WithCancelCause(m.ctx)
			r := &jobRun{j: j, ctx: ctx, cancel: cancel, done: make(chan struct{}), gen: gen,
				req: j.rec.Request, headSeq: j.rec.HeadSeq, created: j.rec.Created}
			j.cancel, j.done, j.local = r.cancel, r.done, true
			j.leaseHeld = j.rec.Lease // durable once the running record is written
			if len(m.queue) > 0 {
				m.signal() // chain: another worker may take the next one
			}
			m.mu.Unlock()
			return r
		}
		m.mu.Unlock()
		select {
		case <-m.ctx.Done():
			return nil
		case <-m.wake:
		}
	}
}

// run takes a running job to completed or failed; if the manager closes
// meanwhile, the job goes back to queued for the next Start, and if it is
// cancelled, Cancel cleans up.
func (m *Manager) run(r *jobRun) {
	j := r.j
	start := m.cfg.Now()
	defer func() {
		r.cancel(nil)
		if m.hookRunEnd != nil {
			m.hookRunEnd(j.id)
		}
		m.mu.Lock()
		// Only if the job is still this run's: a run that requeued it
		// (retryShared, requeue) may end after the next run of the job,
		// on this replica, began, and that run is local.
		if j.done == r.done {
			j.local = false
		}
		m.mu.Unlock()
		close(r.done)
	}()
	log := m.log.With("job", j.id)

	err := m.flush(j, r.gen) // the running record (in cluster mode, the claim)
	claimed := err == nil
	var mf *Manifest
	if err == nil {
		log.Info("export job started", "head_seq", r.headSeq)
		mf, err = m.export(r.ctx, j, r.req, r.headSeq)
	}
	lost := errors.Is(err, ErrConflict) || errors.Is(context.Cause(r.ctx), errLostLease)
	if err != nil && !lost {
		// Partial files are never served. A run that lost its job
		// leaves them: the replica now running it starts by clearing
		// them (FileStore.NewJob), and the one removing it removes them.
		if rerr := m.files.RemoveJob(j.id); rerr != nil {
			log.Error("cannot remove partial export files", "error", rerr)
		}
	}
	end := m.cfg.Now()
	if lost {
		// Learn who has it now rather than wait for the watch: a watch
		// held up (a NATS node restarting) would leave this replica
		// retrying the stale claim.
		m.refreshShared(j.id, func(*job) bool { return true })
	}
	switch {
	case lost && !claimed:
		log.Debug("another replica claimed the export job first", "error", err)
		return
	case lost:
		log.Info("export job lost to another replica; this run stops", "error", err)
		return
	case errors.Is(context.Cause(r.ctx), errCancelled) || m.isRemoved(j):
		// remove deletes the record; a running job is counted by its
		// worker, once.
		m.met.finished.WithLabelValues(resultCancelled).Inc()
		log.Info("export job cancelled")
		return
	case err == nil:
		if err = m.complete(r, mf, start, end, log); err == nil {
			return
		}
		if errors.Is(err, ErrConflict) {
			log.Info("export job lost to another replica before its completion was written")
			return
		}
		// The manifest is not durable: fail rather than serve files a
		// restart would lose track of.
	case m.ctx.Err() != nil:
		m.requeue(j, log, shutdownRequeued)
		return
	case m.retryShared(r, err, log):
		return
	}
	m.fail(r, err, start, end, log)
}

// isRemoved reports whether j was cancelled, expired or evicted.
func (m *Manager) isRemoved(j *job) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return j.removed
}

// complete writes the completed record, counts the job, and only then
// makes it completed, so a poll that sees it completed sees it counted. An
// error is the record's write: the job has not completed and its files
// are removed. A job removed meanwhile stays counted completed: its worker
// counts it once, whatever the outcome (see remove).
func (m *Manager) complete(r *jobRun, mf *Manifest, start, end time.Time, log *slog.Logger) error {
	j := r.j
	set := func(rec *jobRecord) {
		rec.Manifest = mf
		rec.Finished, rec.Expires = end, end.Add(m.cfg.TTL)
	}
	m.mu.Lock()
	rec := j.rec
	set(&rec)
	rec.State = Completed
	gen := m.stage(j, &rec)
	m.mu.Unlock()
	if gen == 0 {
		m.met.finished.WithLabelValues(resultCancelled).Inc()
		log.Info("export job cancelled") // removed already: remove cleans up
		return nil
	}
	if err := m.flushCompleted(r, gen, &rec, log); err != nil {
		if errors.Is(err, ErrConflict) {
			return err // another replica's job now: its files are its
		}
		if rerr := m.files.RemoveJob(j.id); rerr != nil {
			log.Error("cannot remove export files", "error", rerr)
		}
		return fmt.Errorf("persist completed job: %w", err)
	}
	m.met.finished.WithLabelValues(resultCompleted).Inc()
	m.met.duration.WithLabelValues(resultCompleted).Observe(end.Sub(start).Seconds())
	m.met.toManifest.Observe(end.Sub(r.created).Seconds())
	m.mu.Lock()
	_, err := m.transition(j, Completed, set)
	if err == nil {
		if d := end.Sub(start); m.avgJob == 0 {
			m.avgJob = d
		} else {
			m.avgJob = (3*m.avgJob + d) / 4 // for a 429's Retry-After
		}
		j.shed()
	}
	m.mu.Unlock()
	if err != nil {
		log.Info("export job cancelled") // removed meanwhile: remove cleans up
		return nil
	}
	log.Info("export job completed", "transaction_time", mf.TransactionTime,
		"files", len(mf.Output)+len(mf.Deleted)+len(mf.Error), "lines", j.prog.written.Load(),
		"duration", end.Sub(start))
	return nil
}

// shutdownRequeued is what requeue logs for a job Close interrupted.
const shutdownRequeued = "export job interrupted by shutdown; it runs again after the restart (in a cluster, on another replica)"

// flushCompleted writes the completed record (version gen, staged from
// rec). In cluster mode a failed write's outcome may be unknown (a
// timeout during a leader election), and the files may already be
// promised to a client by a replica that read the record: the write is
// tried again, every second, while the run holds the job; a run that
// stops holding it (lease lost, cancelled, closing) reports ErrConflict,
// leaving the files to whoever holds the job now.
func (m *Manager) flushCompleted(r *jobRun, gen uint64, rec *jobRecord, log *slog.Logger) error {
	for {
		err := m.flush(r.j, gen)
		if err == nil || errors.Is(err, ErrConflict) || m.shared == nil {
			return err
		}
		log.Warn("cannot write the completed export job record; retrying", "error", err)
		select {
		case <-r.ctx.Done():
			return fmt.Errorf("export: job %s stopped before its completion was written: %w", r.j.id, ErrConflict)
		case <-time.After(time.Second):
		}
		m.mu.Lock()
		gen = m.stage(r.j, rec)
		m.mu.Unlock()
		if gen == 0 {
			return fmt.Errorf("export: job %s removed: %w", r.j.id, ErrConflict)
		}
	}
}

// requeue puts a job back to queued, to run again: interrupted by Close
// (after the restart, or on another replica), or failed in cluster mode
// (retryShared); msg is the log line.
func (m *Manager) requeue(j *job, log *slog.Logger, msg string) {
	var set func(*jobRecord)
	if m.shared != nil {
		set = unclaim // another replica may run it now
	}
	m.mu.Lock()
	gen, err := m.transition(j, Queued, set)
	j.prog.setPhase(phaseQueued)
	m.mu.Unlock()
	if err != nil {
		m.met.finished.WithLabelValues(resultCancelled).Inc() // removed meanwhile
		return
	}
	if perr := m.flush(j, gen); perr != nil {
		log.Error("cannot persist the export job as queued; it will run again anyway", "error", perr)
	}
	log.Info(msg)
}

// fail counts a job failed, then makes it failed with a message fit for
// the client (counted first, as in complete).
func (m *Manager) fail(r *jobRun, err error, start, end time.Time, log *slog.Logger) {
	j := r.j
	log.Error("export job failed", "error", err)
	m.met.finished.WithLabelValues(resultFailed).Inc()
	m.met.failed.WithLabelValues(failReason(err)).Inc()
	m.met.duration.WithLabelValues(resultFailed).Observe(end.Sub(start).Seconds())
	m.mu.Lock()
	gen, terr := m.transition(j, Failed, func(rec *jobRecord) {
		rec.Error, rec.Manifest = clientMessage(err), nil
		rec.Finished, rec.Expires = end, end.Add(m.cfg.TTL)
	})
	if terr == nil {
		j.shed()
	}
	m.mu.Unlock()
	if terr != nil {
		return // removed meanwhile
	}
	if perr := m.flush(j, gen); perr != nil {
		log.Error("cannot persist failed export job", "error", perr)
	}
}

// export runs a job's steps: catch up, snapshot, plan, scan, finish. It
// returns the manifest of the files written.
func (m *Manager) export(ctx context.Context, j *job, req Request, headSeq uint64) (*Manifest, error) {
	// 1. Catch up: everything published before the kick-off is applied.
	if err := m.catchUp(ctx, j, headSeq); err != nil {
		return nil, err
	}

	// 2. Snapshot: it fixes transactionTime.
	j.prog.setPhase(phaseSnapshot)
	snap, err := m.src.Snapshot()
	if err != nil {
		return nil, fmt.Errorf("take snapshot: %w", err)
	}
	snapOpen := true
	defer func() {
		if snapOpen {
			snap.Close()
		}
	}()
	if req.Until == 0 {
		req.Until = index.Unbounded // a record written without _until
	}

	// 3. Plan: the types to scan, and what progress counts against.
	plan := planScan(snap, req)
	s, err := m.newScan(j, req, snap.TransactionTime())
	if err != nil {
		return nil, err
	}
	defer s.close()
	if req.Provenance != ProvenanceNone && slices.ContainsFunc(snap.Counts(), func(c TypeCount) bool {
		return c.Type == "Provenance" && c.Resources > 0
	}) {
		s.prov = newProvenance(req.Provenance)
	}
	plan.start = time.Now()
	j.prog.plan.Store(plan)
	j.prog.setPhase(phaseScanning)

	// 4. Scan: one scan per type, straight from the snapshot into the
	// files, which are synced in the background.
	if err := s.ignored(); err != nil {
		return nil, err
	}
	if req.Level == LevelSystem {
		for i, typ := range plan.types {
			if err := s.scanType(ctx, snap, i, typ); err != nil {
				return nil, err
			}
		}
	} else if err := s.scanPatients(ctx, snap, plan); err != nil {
		return nil, err
	}
	if s.prov != nil && req.OrganizeBy == "" {
		if err := s.prov.flush(ctx, snap, s); err != nil {
			return nil, err
		}
	}
	// Release the snapshot before the remaining (small) writes.
	snapOpen = false
	if err := snap.Close(); err != nil {
		return nil, fmt.Errorf("close snapshot: %w", err)
	}

	// 5. Finish: the error file, the syncs, the directory, the stamps.
	j.prog.setPhase(phaseFinishing)
	return s.finish()
}

// catchUp waits until ingest has applied stream sequence seq, at most
// Config.MaxCatchUpWait.
func (m *Manager) catchUp(ctx context.Context, j *job, seq uint64) error {
	if m.src.AppliedSeq() >= seq {
		return nil
	}
	j.prog.waitSeq.Store(seq)
	j.prog.setPhase(phaseWaiting)
	t0 := time.Now()
	wctx, cancel := context.WithTimeoutCause(ctx, m.cfg.MaxCatchUpWait, errCatchUp)
	err := m.src.WaitApplied(wctx, seq)
	cancel()
	m.met.catchUp.Observe(time.Since(t0).Seconds())
	if err == nil {
		return nil
	}
	if ctx.Err() == nil && errors.Is(context.Cause(wctx), errCatchUp) {
		return &clientError{msg: fmt.Sprintf(
			"ingest did not reach stream sequence %d within %v (it is at %d); try again later",
			seq, m.cfg.MaxCatchUpWait, m.src.AppliedSeq()), err: errCatchUp}
	}
	return fmt.Errorf("wait for ingest to apply sequence %d: %w", seq, err)
}

// planScan picks the types to scan (the requested ones, or every type
// with data in the snapshot, skipping those with nothing to export), with
// their entry counts (an upper bound of what the scan visits) and, for an
// unbounded full export, the exact number of resources to write.
func planScan(snap Snapshot, req Request) *scanPlan {
	tt := snap.TransactionTime()
	full := !req.HasSince
	counts := map[string]TypeCount{}
	for _, c := range snap.Counts() {
		counts[c.Type] = c
	}
	types := req.Types
	if len(types) == 0 {
		for _, c := range snap.Counts() {
			types = append(types, c.Type)
		}
	}
	p := &scanPlan{full: full && req.Until >= tt && req.Level == LevelSystem, deletions: req.HasSince}
	var resources int64
	for _, t := range types {
		if req.Level != LevelSystem && !fhirdefs.InPatientCompartment(t) {
			continue // never in a patient's compartment
		}
		c := counts[t]
		if c.Resources == 0 && (full || c.Tombstones == 0) {
			continue
		}
		p.types = append(p.types, t)
		resources += c.Resources
		p.entries += c.Resources + c.Tombstones
	}
	p.total = p.entries
	if p.full {
		p.total = resources
	}
	return p
}

// scan is the writing side of a job's run: its manifest, buffers,
// background commits, disk guard and error file.
type scan struct {
	m     *Manager
	j     *job
	req   Request
	until uint64 // min(Until, transactionTime)
	full  bool   // no _since: tombstones are skipped
	mf    *Manifest
	sy    *errgroup.Group // the files' commits (see maxSyncing)
	guard *diskGuard
	// outBuf and delBuf are reused by every type's file sequences.
	outBuf, delBuf *bufio.Writer
	errs           *fileSeq // the error file; its buffer is made at its first line
	line           []byte   // deleted Bundles, _elements output and OperationOutcomes, reused
	skipped        int64    // resources _elements could not be applied to
	firstSkipped   string
	prov           *provenance    // includeAssociatedData (nil: none asked)
	filter         *search.Filter // _typeFilter (nil: none)
}

// newScan readies the job's (empty) set of files and its writing.
func (m *Manager) newScan(j *job, req Request, tt uint64) (*scan, error) {
	if err := m.files.NewJob(j.id); err != nil {
		return nil, err
	}
	sy := &errgroup.Group{}
	sy.SetLimit(maxSyncing)
	s := &scan{m: m, j: j, req: req, until: min(req.Until, tt), full: !req.HasSince,
		mf: &Manifest{
			TransactionTime:     index.FormatInstant(tt),
			Request:             req.RequestURL,
			RequiresAccessToken: m.cfg.RequiresAccessToken,
			Output:              []FileInfo{},
			Error:               []FileInfo{},
		},
		sy: sy,
		guard: &diskGuard{dir: m.cfg.Dir, reserve: m.cfg.ExportReserveBytes, free: m.freeBytes,
			margin: int64(m.cfg.Workers) * (diskCheckEvery + 2*writeBufferSize + errorBufferSize)},
		outBuf: bufio.NewWriterSize(nil, writeBufferSize),
		delBuf: bufio.NewWriterSize(nil, writeBufferSize),
	}
	var err error
	if s.filter, err = compileTypeFilters(req.TypeFilters); err != nil {
		return nil, err
	}
	// nil buffer: the error file makes a small one at its first line.
	s.errs = s.fileSeq(errorBase, "OperationOutcome", nil, func(fi FileInfo) { s.mf.Error = append(s.mf.Error, fi) })
	return s, nil
}

// fileSeq returns a sequence of the job's files named base-<n>.ndjson,
// of manifest type typ, written through bw, each reported to onFile.
func (s *scan) fileSeq(base, typ string, bw *bufio.Writer, onFile func(FileInfo)) *fileSeq {
	return &fileSeq{files: s.m.files, job: s.j.id, base: base, typ: typ, maxCount: s.m.cfg.FileMaxResources,
		maxBytes: s.m.cfg.FileMaxBytes, bw: bw, sy: s.sy, guard: s.guard, onFile: onFile}
}

// close aborts what is unfinished (a no-op once finished) and waits for
// the background commits: every return of export goes through it.
func (s *scan) close() {
	s.errs.abort()
	s.sy.Wait()
}

// ignored writes what a lenient kick-off ignored to the error file.
func (s *scan) ignored() error {
	for _, msg := range s.req.Ignored {
		s.line = appendOutcome(s.line[:0], "warning", "informational", msg)
		if err := s.errs.write(s.line); err != nil {
			return err
		}
	}
	return nil
}

// scanType writes type typ (the i-th of the plan) from the snapshot:
// resources to its output files, deletions (a _since export) to its
// deleted files.
func (s *scan) scanType(ctx context.Context, snap Snapshot, i int, typ string) error {
	s.j.prog.typeIdx.Store(int32(i + 1))
	out, del := s.typeFiles(typ, typ)
	err := snap.Scan(ctx, typ, s.req.Since, s.until, func(e Entry) error {
		return s.entry(ctx, snap, e, out, del, s.full)
	})
	return s.finishType(ctx, typ, err, out, del)
}

// typeFiles returns the file sequences of type typ: its output files
// (named base, usually typ) and its deleted files.
func (s *scan) typeFiles(typ, base string) (out, del *fileSeq) {
	m, mf := s.m, s.mf
	resCounter, delCounter, bytesCounter := m.met.resources.WithLabelValues(typ),
		m.met.deleted.WithLabelValues(typ), m.met.bytes.WithLabelValues(typ)
	out = s.fileSeq(base, typ, s.outBuf, func(fi FileInfo) {
		mf.Output = append(mf.Output, fi)
		resCounter.Add(float64(fi.Count))
		bytesCounter.Add(float64(fi.Bytes))
	})
	del = s.fileSeq(base+deletedTag, "Bundle", s.delBuf, func(fi FileInfo) {
		mf.Deleted = append(mf.Deleted, fi)
		delCounter.Add(float64(fi.Count))
		bytesCounter.Add(float64(fi.Bytes))
	})
	return out, del
}

// entry writes one scanned entry (visit, then emit).
func (s *scan) entry(ctx context.Context, snap Snapshot, e Entry, out, del *fileSeq, full bool) error {
	if keep, err := s.visit(ctx, e); !keep {
		return err
	}
	return s.emit(ctx, snap, e, out, del, full)
}

// visit counts a scanned entry and reports whether it is to be written:
// a deletion always, a resource when it matches its type's _typeFilter
// queries (or the type has none).
func (s *scan) visit(ctx context.Context, e Entry) (keep bool, err error) {
	s.j.prog.scanned.Add(1)
	if h := s.m.hookScan; h != nil {
		if err := h(ctx); err != nil {
			return false, err
		}
	}
	return e.Deleted || s.matches(e), nil
}

// emit writes an entry visit kept: a resource to out (reduced to
// _elements), a deletion to del, nothing for a tombstone when full (an
// export without _since lists no deletions).
func (s *scan) emit(ctx context.Context, snap Snapshot, e Entry, out, del *fileSeq, full bool) error {
	p := &s.j.prog
	if e.Deleted {
		if full {
			return nil
		}
		s.line = appendDeletedBundle(s.line[:0], e.Type, e.ID, e.CommitTime)
		if err := del.write(s.line); err != nil {
			return err
		}
		p.written.Add(1)
		return nil
	}
	res := e.Resource
	if len(s.req.Elements) > 0 {
		var ok bool
		var err error
		if res, ok, err = s.applyElements(e.Type, e); !ok {
			return err
		}
	}
	if err := out.write(res); err != nil {
		return err
	}
	p.written.Add(1)
	if s.prov != nil {
		return s.prov.add(ctx, snap, e)
	}
	return nil
}

// finishType completes a type's files after its scan, whose error is err.
func (s *scan) finishType(ctx context.Context, typ string, err error, files ...*fileSeq) error {
	for _, f := range files {
		if err == nil {
			err = f.finish()
		}
	}
	if err != nil {
		for _, f := range files {
			f.abort()
		}
		if ctx.Err() != nil {
			return context.Cause(ctx)
		}
		return fmt.Errorf("export %s: %w", typ, err)
	}
	// Do not hold on to a buffer grown by one huge resource.
	if cap(s.line) > 1<<20 {
		s.line = nil
	}
	return nil
}

// applyElements returns e's resource reduced to _elements (in s.line).
// One malformed stored resource (ingest validates what _elements edits,
// but older data or a restored index may hold one) never fails the job:
// it is left out (ok false), and the error file names it, so the output
// counts stay exact; err is that line's write.
func (s *scan) applyElements(typ string, e Entry) (res []byte, ok bool, err error) {
	line, aerr := applyElements(s.line[:0], e.Resource, typ, s.req.Elements)
	s.line = line
	if aerr == nil {
		return line, true, nil
	}
	if s.skipped++; s.skipped == 1 {
		s.firstSkipped = typ + "/" + e.ID
	}
	s.m.met.skipped.WithLabelValues(typ).Inc()
	s.line = appendOutcome(s.line[:0], "error", "processing", fmt.Sprintf(
		"%s/%s is left out of this export: _elements cannot be applied to it because its stored JSON is malformed (%s)",
		typ, e.ID, elementsProblem(aerr)))
	return nil, false, s.errs.write(s.line)
}

// finish completes the error file, waits for every file's commit, syncs
// the job's files (the directory) and stamps them; the manifest is then
// complete.
func (s *scan) finish() (*Manifest, error) {
	mf := s.mf
	if len(mf.Deleted) == 0 {
		mf.Deleted = nil
	}
	if s.skipped > 0 {
		s.m.log.Warn("export left out stored resources _elements cannot be applied to; the error file names them",
			"job", s.j.id, "resources", s.skipped, "first", s.firstSkipped)
	}
	if err := s.errs.finish(); err != nil {
		return nil, err
	}
	if err := s.sy.Wait(); err != nil {
		return nil, err
	}
	if err := s.m.files.SyncJob(s.j.id); err != nil {
		return nil, err
	}
	// Stamp the files as they are now, committed and synced, for
	// OpenFile's check (FileStamp).
	for _, list := range [][]FileInfo{mf.Output, mf.Deleted, mf.Error} {
		for i := range list {
			if st, err := s.m.files.Stat(s.j.id, list[i].Name); err == nil {
				list[i].stamp = st
			}
		}
	}
	return mf, nil
}

// elementsProblem is what applyElements found wrong, for the error file.
func elementsProblem(err error) string {
	if u := errors.Unwrap(err); u != nil {
		return u.Error()
	}
	return err.Error()
}

// errCatchUp is the cause of a catch-up wait that timed out.
var errCatchUp = errors.New("export: ingest did not catch up in time")
