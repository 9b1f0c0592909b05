package export

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/bulkstream/bulkstream/index"
)

// worker runs queued jobs until the manager closes.
func (m *Manager) worker() {
	for {
		j := m.next()
		if j == nil {
			return
		}
		m.run(j)
	}
}

// next pops the oldest queued job, waiting for one; nil when closing.
func (m *Manager) next() *job {
	for {
		m.mu.Lock()
		if m.ctx.Err() != nil {
			m.mu.Unlock()
			return nil
		}
		if len(m.queue) > 0 {
			j := m.queue[0]
			m.queue = m.queue[1:]
			if len(m.queue) > 0 {
				m.signal() // chain: another worker may take the next one
			}
			m.mu.Unlock()
			return j
		}
		m.mu.Unlock()
		select {
		case <-m.ctx.Done():
			return nil
		case <-m.wake:
		}
	}
}

// run takes a job from queued to completed or failed; if the manager
// closes meanwhile, the job goes back to queued for the next Start, and if
// it is cancelled, Cancel cleans up.
func (m *Manager) run(j *job) {
	start := m.cfg.Now()
	j.mu.Lock()
	if j.removed {
		j.mu.Unlock()
		return
	}
	ctx, cancel := context.WithCancelCause(m.ctx)
	done := make(chan struct{})
	j.cancel, j.done = cancel, done
	j.rec.State = Running
	j.phase = phaseQueued
	j.written.Store(0)
	j.scanned.Store(0)
	err := m.persist(j)
	j.mu.Unlock()
	defer func() {
		cancel(nil)
		close(done)
	}()
	log := m.log.With("job", j.id)
	log.Info("export job started", "head_seq", j.rec.HeadSeq)

	var mf *Manifest
	if err == nil {
		mf, err = m.export(ctx, j)
	}
	if err != nil {
		// Partial files are never served.
		if rerr := os.RemoveAll(m.jobDir(j.id)); rerr != nil {
			log.Error("cannot remove partial export files", "error", rerr)
		}
	}
	end := m.cfg.Now()
	j.mu.Lock()
	defer j.mu.Unlock()
	defer j.signalLocked() // wake Wait: completed, failed, cancelled or requeued
	switch {
	case errors.Is(context.Cause(ctx), errCancelled) || j.removed:
		log.Info("export job cancelled")
		return // remove deletes the record and counts the job
	case err == nil:
		j.rec.State, j.rec.Manifest = Completed, mf
		j.rec.Finished, j.rec.Expires = end, end.Add(m.cfg.TTL)
		if perr := m.persist(j); perr != nil {
			// The manifest is not durable: fail rather than serve files a
			// restart would lose track of.
			err = fmt.Errorf("persist completed job: %w", perr)
			j.rec.Manifest = nil
			if rerr := os.RemoveAll(m.jobDir(j.id)); rerr != nil {
				log.Error("cannot remove export files", "error", rerr)
			}
			break
		}
		m.met.finished.WithLabelValues(resultCompleted).Inc()
		m.met.duration.WithLabelValues(resultCompleted).Observe(end.Sub(start).Seconds())
		m.met.toManifest.Observe(end.Sub(j.rec.Created).Seconds())
		m.observeJob(end.Sub(start))
		m.noteFinished(j.rec.Request.Client, j.rec.Request.MaxFinished)
		log.Info("export job completed", "transaction_time", mf.TransactionTime,
			"files", len(mf.Output)+len(mf.Deleted)+len(mf.Error), "lines", j.written.Load(),
			"duration", end.Sub(start))
		j.shed()
		return
	case m.ctx.Err() != nil:
		// Shutting down: run it again after the restart.
		j.rec.State = Queued
		j.phase = phaseQueued
		if perr := m.persist(j); perr != nil {
			log.Error("cannot persist interrupted export job; it will restart anyway", "error", perr)
		}
		log.Info("export job interrupted by shutdown; it restarts with the server")
		return
	}
	log.Error("export job failed", "error", err)
	j.rec.State, j.rec.Error, j.rec.Manifest = Failed, clientMessage(err), nil
	j.rec.Finished, j.rec.Expires = end, end.Add(m.cfg.TTL)
	if perr := m.persist(j); perr != nil {
		log.Error("cannot persist failed export job", "error", perr)
	}
	m.met.finished.WithLabelValues(resultFailed).Inc()
	m.met.failed.WithLabelValues(failReason(err)).Inc()
	m.met.duration.WithLabelValues(resultFailed).Observe(end.Sub(start).Seconds())
	m.noteFinished(j.rec.Request.Client, j.rec.Request.MaxFinished)
	j.shed()
}

// observeJob folds a completed job's worker time into the average used to
// estimate a 429's Retry-After.
func (m *Manager) observeJob(d time.Duration) {
	m.avgMu.Lock()
	defer m.avgMu.Unlock()
	if m.avgJob == 0 {
		m.avgJob = d
	} else {
		m.avgJob = (3*m.avgJob + d) / 4
	}
}

// setPhase updates the progress phase under j.mu.
func (j *job) setPhase(p phase, fn func()) {
	j.mu.Lock()
	j.phase = p
	if fn != nil {
		fn()
	}
	j.mu.Unlock()
}

// export waits for ingest, scans a snapshot into the job's files and
// returns the manifest.
func (m *Manager) export(ctx context.Context, j *job) (*Manifest, error) {
	req := j.rec.Request // immutable once queued

	// 1. Everything published before the kick-off must be applied.
	if seq := j.rec.HeadSeq; m.src.AppliedSeq() < seq {
		j.setPhase(phaseWaiting, func() { j.waitSeq = seq })
		t0 := time.Now()
		wctx, cancel := context.WithTimeoutCause(ctx, m.cfg.MaxCatchUpWait, errCatchUp)
		err := m.src.WaitApplied(wctx, seq)
		cancel()
		m.met.catchUp.Observe(time.Since(t0).Seconds())
		if err != nil {
			if ctx.Err() == nil && errors.Is(context.Cause(wctx), errCatchUp) {
				return nil, &clientError{msg: fmt.Sprintf(
					"ingest did not reach stream sequence %d within %v (it is at %d); try again later",
					seq, m.cfg.MaxCatchUpWait, m.src.AppliedSeq()), err: errCatchUp}
			}
			return nil, fmt.Errorf("wait for ingest to apply sequence %d: %w", seq, err)
		}
	}

	// 2. The snapshot fixes transactionTime.
	j.setPhase(phaseSnapshot, nil)
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
	tt := snap.TransactionTime
	if req.Until == 0 {
		req.Until = index.Unbounded // a record written without _until
	}
	until := min(req.Until, tt)
	full := !req.HasSince

	// Types to scan, with their entry counts (an upper bound of what the
	// scan visits) and, for an unbounded full export, the exact number of
	// resources to write.
	counts := map[string]index.TypeCount{}
	for _, c := range snap.Counts() {
		counts[c.Type] = c
	}
	var types []string
	if len(req.Types) > 0 {
		types = req.Types
	} else {
		for _, c := range snap.Counts() {
			types = append(types, c.Type)
		}
	}
	var scan []string
	var resources, entries int64
	for _, t := range types {
		c := counts[t]
		if c.Resources == 0 && (full || c.Tombstones == 0) {
			continue
		}
		scan = append(scan, t)
		resources += c.Resources
		entries += c.Resources + c.Tombstones
	}

	dir := m.jobDir(j.id)
	if err := os.RemoveAll(dir); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, err
	}

	mf := &Manifest{
		TransactionTime:     index.FormatInstant(tt),
		Request:             req.RequestURL,
		RequiresAccessToken: m.cfg.RequiresAccessToken,
		Output:              []FileInfo{},
		Error:               []FileInfo{},
	}
	j.setPhase(phaseScanning, func() {
		j.full = full && req.Until >= tt
		j.deletions = req.HasSince
		j.total, j.entries = resources, entries
		if !j.full {
			j.total = entries
		}
		j.typeN = len(scan)
		j.scanStart = time.Now()
	})

	// 3. One scan per type, straight from the snapshot into the files,
	// which are synced in the background; every return waits for that.
	sy := &syncer{}
	defer sy.wait()
	outBuf := bufio.NewWriterSize(nil, writeBufferSize)
	delBuf := bufio.NewWriterSize(nil, writeBufferSize)
	guard := &diskGuard{dir: m.cfg.Dir, reserve: m.cfg.ExportReserveBytes, free: m.freeBytes,
		margin: int64(m.cfg.Workers) * (diskCheckEvery + 2*writeBufferSize + errorBufferSize)}
	var line []byte // deleted Bundles, _elements output and OperationOutcomes, reused

	// The error file: what a lenient kick-off ignored, then the resources
	// left out (see below). Its buffer is made at its first line.
	errs := &fileSeq{dir: dir, base: errorBase, typ: "OperationOutcome", maxCount: m.cfg.FileMaxResources,
		maxBytes: m.cfg.FileMaxBytes, sy: sy, guard: guard, onFile: func(fi FileInfo) { mf.Error = append(mf.Error, fi) }}
	defer errs.abort() // a no-op once finished
	for _, msg := range req.Ignored {
		line = appendOutcome(line[:0], "warning", "informational", msg)
		if err := errs.write(line); err != nil {
			return nil, err
		}
	}
	var skipped int64
	var firstSkipped string
	for i, typ := range scan {
		j.setPhase(phaseScanning, func() { j.typ, j.typeIdx = typ, i+1 })
		resCounter, delCounter, bytesCounter := m.met.resources.WithLabelValues(typ),
			m.met.deleted.WithLabelValues(typ), m.met.bytes.WithLabelValues(typ)
		out := &fileSeq{dir: dir, base: typ, typ: typ, maxCount: m.cfg.FileMaxResources,
			maxBytes: m.cfg.FileMaxBytes, bw: outBuf, sy: sy, guard: guard, onFile: func(fi FileInfo) {
				mf.Output = append(mf.Output, fi)
				resCounter.Add(float64(fi.Count))
				bytesCounter.Add(float64(fi.Bytes))
			}}
		del := &fileSeq{dir: dir, base: typ + deletedTag, typ: "Bundle", maxCount: m.cfg.FileMaxResources,
			maxBytes: m.cfg.FileMaxBytes, bw: delBuf, sy: sy, guard: guard, onFile: func(fi FileInfo) {
				mf.Deleted = append(mf.Deleted, fi)
				delCounter.Add(float64(fi.Count))
				bytesCounter.Add(float64(fi.Bytes))
			}}
		err := snap.Scan(ctx, typ, req.Since, until, func(e index.Entry) error {
			j.scanned.Add(1)
			if m.hookScan != nil {
				if err := m.hookScan(ctx); err != nil {
					return err
				}
			}
			if e.Deleted {
				if full {
					return nil
				}
				line = appendDeletedBundle(line[:0], e.Type, e.ID, e.CommitTime)
				if err := del.write(line); err != nil {
					return err
				}
				j.written.Add(1)
				return nil
			}
			res := e.Resource
			if len(req.Elements) > 0 {
				var err error
				if line, err = applyElements(line[:0], res, typ, req.Elements); err != nil {
					// One malformed stored resource (ingest validates
					// what _elements edits, but older data or a restored
					// index may hold one) never fails the job: it is left
					// out, and the error file names it, so the output
					// counts stay exact.
					if skipped++; skipped == 1 {
						firstSkipped = typ + "/" + e.ID
					}
					m.met.skipped.WithLabelValues(typ).Inc()
					line = appendOutcome(line[:0], "error", "processing", fmt.Sprintf(
						"%s/%s is left out of this export: _elements cannot be applied to it because its stored JSON is malformed (%s)",
						typ, e.ID, elementsProblem(err)))
					return errs.write(line)
				}
				res = line
			}
			if err := out.write(res); err != nil {
				return err
			}
			j.written.Add(1)
			return nil
		})
		if err == nil {
			err = out.finish()
		}
		if err == nil {
			err = del.finish()
		}
		if err != nil {
			out.abort()
			del.abort()
			if ctx.Err() != nil {
				return nil, context.Cause(ctx)
			}
			return nil, fmt.Errorf("export %s: %w", typ, err)
		}
		// Do not hold on to a buffer grown by one huge resource.
		if cap(line) > 1<<20 {
			line = nil
		}
	}
	// 4. Release the snapshot before the remaining (small) writes.
	snapOpen = false
	if err := snap.Close(); err != nil {
		return nil, fmt.Errorf("close snapshot: %w", err)
	}

	j.setPhase(phaseFinishing, nil)
	if len(mf.Deleted) == 0 {
		mf.Deleted = nil
	}
	if skipped > 0 {
		m.log.Warn("export left out stored resources _elements cannot be applied to; the error file names them",
			"job", j.id, "resources", skipped, "first", firstSkipped)
	}
	if err := errs.finish(); err != nil {
		return nil, err
	}
	if err := sy.wait(); err != nil {
		return nil, err
	}
	if err := syncDir(dir); err != nil {
		return nil, err
	}
	// Stamp the files as they are now, renamed and synced, for OpenFile's
	// check (fileStamp).
	for _, list := range [][]FileInfo{mf.Output, mf.Deleted, mf.Error} {
		for i := range list {
			at := time.Now()
			if fi, err := os.Stat(filepath.Join(dir, list[i].Name)); err == nil {
				list[i].stamp, _ = stampOf(fi, at)
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
