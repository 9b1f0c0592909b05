package export

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bulkstream/bulkstream/index"
	"github.com/bulkstream/bulkstream/internal/diskspace"
)

// Manager runs export jobs. Kickoff, Status, Wait, Cancel and OpenFile
// are safe for concurrent use, and so is Close.
//
// The lock rule: mu guards every job's metadata and the counts, and
// nothing under it blocks (no disk, no index, no JobStore, no logging, no
// metrics, no channel send that can wait); workers publish progress
// through atomics, and record writes and file removals happen after mu is
// let go.
type Manager struct {
	cfg  Config
	src  Source
	head Head
	jobs JobStore
	// shared is jobs in cluster mode (Config.Replica set), else nil.
	shared SharedJobStore
	files  FileStore
	log    *slog.Logger
	met    *metrics

	// hookScan, if set (tests), runs before each scan entry is written.
	hookScan func(ctx context.Context) error
	// hookRunEnd, if set (tests), runs as a run ends, before it lets go
	// of its job.
	hookRunEnd func(id string)
	// freeBytes measures the free space of a directory (tests replace it).
	freeBytes func(dir string) (int64, bool, error)
	// racyWindow is how old a file's ctime must be for its stamp to be
	// trusted (fileStamp; tests shorten it).
	racyWindow time.Duration

	mu  sync.Mutex
	all map[string]*job // every known job
	// active holds the queued and running jobs (at most MaxActiveJobs
	// after admission): a 429's Retry-After estimate looks at these only,
	// never at the finished jobs kept for download.
	active map[*job]struct{}
	queue  []*job // queued jobs, oldest first
	// byState and clients count the jobs, kept by transition: admission,
	// the caps on finished jobs and the jobs gauge read them in O(1).
	byState map[State]int
	clients map[string]*clientJobs
	started bool
	closed  bool
	// avgJob is the moving average of worker time per completed job.
	avgJob time.Duration
	// sinceSweep counts the jobs finished since the expiry loop last ran.
	sinceSweep int
	// undeleted holds the ids of removed jobs whose record deletion
	// failed; the expiry loop deletes them again until it succeeds.
	undeleted map[string]struct{}

	wake chan struct{} // a job was queued
	// sweep asks the expiry loop to run now (see finished).
	sweep   chan struct{}
	waiters atomic.Int64 // callers held in Wait
	ctx     context.Context
	stop    context.CancelFunc
	wg      sync.WaitGroup
	unreg   sync.Once
	closeE  error
}

// NewManager returns a Manager over src, exporting to cfg.Dir and keeping
// job records in jobs. head may be nil: jobs then wait for nothing beyond
// what is applied at kick-off. Call Start to run jobs.
func NewManager(cfg Config, src Source, head Head, jobs JobStore) (*Manager, error) {
	cfg.ensureDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if src == nil || jobs == nil {
		return nil, errors.New("export: NewManager needs a Source and a JobStore")
	}
	var shared SharedJobStore
	if cfg.Replica != "" {
		var ok bool
		if shared, ok = jobs.(SharedJobStore); !ok {
			return nil, errors.New("export: Config.Replica (cluster mode) needs a JobStore that is a SharedJobStore")
		}
	}
	m := &Manager{
		cfg:        cfg,
		src:        src,
		head:       head,
		jobs:       jobs,
		shared:     shared,
		files:      cfg.Files,
		log:        cfg.Logger.With("component", "export"),
		all:        map[string]*job{},
		active:     map[*job]struct{}{},
		byState:    map[State]int{},
		clients:    map[string]*clientJobs{},
		undeleted:  map[string]struct{}{},
		wake:       make(chan struct{}, 1),
		sweep:      make(chan struct{}, 1),
		freeBytes:  diskspace.Free,
		racyWindow: racyWindow,
	}
	m.met = newMetrics(m)
	if cfg.Registerer != nil {
		if err := m.met.register(cfg.Registerer); err != nil {
			return nil, fmt.Errorf("register export metrics: %w", err)
		}
	}
	return m, nil
}

// Start loads the persisted jobs and starts the workers and the expiry
// loop. Completed and failed jobs keep serving until they expire; jobs that
// were queued or running when the server stopped are restarted from
// scratch (their partial files removed first). Files of job ids that
// have no job (FileStore.Jobs) are removed. ctx only carries values: the
// manager runs until Close.
func (m *Manager) Start(ctx context.Context) error {
	m.mu.Lock()
	if m.started || m.closed {
		m.mu.Unlock()
		return errors.New("export: Start called twice or after Close")
	}
	m.started = true
	m.mu.Unlock()

	if err := os.MkdirAll(m.cfg.Dir, 0o750); err != nil {
		return fmt.Errorf("export: create exports directory: %w", err)
	}
	if m.shared != nil {
		m.mu.Lock()
		m.ctx, m.stop = context.WithCancel(context.WithoutCancel(ctx))
		m.mu.Unlock()
		return m.startCluster()
	}
	jobs, err := m.load()
	if err != nil {
		return err
	}
	if err := m.sweepOrphans(jobs); err != nil {
		m.log.Warn("cannot sweep orphaned export directories", "error", err)
	}

	m.mu.Lock()
	defer m.mu.Unlock()
	for _, j := range jobs {
		// Legal from stateNew, and queues nothing to write: load wrote
		// what changed.
		to := j.rec.State
		j.rec.State = stateNew
		if _, err := m.transition(j, to, nil); err != nil {
			return err
		}
		if to == Completed || to == Failed {
			j.shed()
		}
	}
	m.ctx, m.stop = context.WithCancel(context.WithoutCancel(ctx))
	for range m.cfg.Workers {
		m.wg.Go(m.worker)
	}
	m.wg.Go(m.expiryLoop)
	return nil
}

// load reads the job records: the jobs to serve or run, queued ones
// oldest first. It writes what it changes (a queued or running job's
// partial files removed and its record set queued, a completed job whose
// files are gone turned failed, unreadable and expired records dropped)
// before Start makes the jobs known, so no lock is needed.
func (m *Manager) load() ([]*job, error) {
	now := m.cfg.Now()
	var jobs []*job
	var drop []string
	err := m.jobs.Jobs(func(id string, b []byte) error {
		rec, err := decodeRecord(b)
		if err != nil || !isJobID(id) {
			m.log.Error("dropping unreadable export job record", "job", id, "error", err)
			drop = append(drop, id)
			return nil
		}
		j := &job{id: id, rec: rec}
		switch rec.State {
		case Completed, Failed:
			if !now.Before(rec.Expires) {
				drop = append(drop, id)
				return nil
			}
			if rec.State == Completed && !m.filesPresent(j) {
				m.log.Error("export files missing or truncated after restart; marking the job failed", "job", id)
				j.rec.State, j.rec.Error, j.rec.Manifest = Failed, "the export files were lost; please start a new export", nil
				if err := m.jobs.PutJob(id, mustJSON(j.rec)); err != nil {
					return err
				}
			}
		case Queued, Running:
			// Partial files are never served: start over.
			if err := m.files.RemoveJob(id); err != nil {
				return fmt.Errorf("export: remove partial files of job %s: %w", id, err)
			}
			if rec.State != Queued {
				j.rec.State = Queued
				if err := m.jobs.PutJob(id, mustJSON(j.rec)); err != nil {
					return err
				}
			}
		default:
			m.log.Error("dropping export job in unknown state", "job", id, "state", rec.State)
			drop = append(drop, id)
			return nil
		}
		jobs = append(jobs, j)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("export: load jobs: %w", err)
	}
	for _, id := range drop {
		if err := m.jobs.DeleteJob(id); err != nil {
			return nil, fmt.Errorf("export: drop job %s: %w", id, err)
		}
		if isJobID(id) {
			if err := m.files.RemoveJob(id); err != nil {
				m.log.Warn("cannot remove export files", "job", id, "error", err)
			}
		}
	}
	// Queued jobs run oldest first.
	slices.SortStableFunc(jobs, func(a, b *job) int { return a.rec.Created.Compare(b.rec.Created) })
	if len(jobs) > 0 {
		restarted := 0
		for _, j := range jobs {
			if j.rec.State == Queued {
				restarted++
			}
		}
		m.log.Info("loaded export jobs", "jobs", len(jobs), "restarted", restarted)
	}
	return jobs, nil
}

// filesPresent checks that every file of a completed job is on disk with
// the size it was written with (the digest is checked at download).
func (m *Manager) filesPresent(j *job) bool {
	if j.rec.Manifest == nil {
		return false
	}
	for _, fi := range j.rec.Manifest.files() {
		st, err := m.files.Stat(j.id, fi.Name)
		if err != nil || st.Size != fi.Bytes {
			return false
		}
	}
	return true
}

// sweepOrphans removes the files of job ids that have no job.
func (m *Manager) sweepOrphans(jobs []*job) error {
	stored, err := m.files.Jobs()
	if err != nil {
		return err
	}
	known := make(map[string]bool, len(jobs))
	for _, j := range jobs {
		known[j.id] = true
	}
	for _, id := range stored {
		if !isJobID(id) || known[id] {
			continue
		}
		m.log.Info("removing orphaned export directory", "job", id)
		if err := m.files.RemoveJob(id); err != nil {
			return err
		}
	}
	return nil
}

// Close stops accepting kick-offs, cancels running jobs and waits for the
// workers and the expiry loop, or for ctx. A job interrupted by Close has
// its partial files removed and stays persisted as queued, so the next
// Start runs it again. Close is idempotent.
func (m *Manager) Close(ctx context.Context) error {
	m.mu.Lock()
	m.closed = true
	stop := m.stop
	m.mu.Unlock()
	if stop != nil {
		stop()
	}
	done := make(chan struct{})
	go func() {
		m.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-ctx.Done():
		return fmt.Errorf("export: close: %w", ctx.Err())
	}
	m.unreg.Do(func() {
		if m.cfg.Registerer != nil {
			m.closeE = m.met.unregister(m.cfg.Registerer)
		}
	})
	return m.closeE
}

// Kickoff validates a kick-off and queues the job. It returns the job id,
// a *RequestError for a bad request, *TooManyJobsError past
// MaxActiveJobs, *UnavailableError when disk is low, or ErrClosed. It does
// no scanning: the job is persisted and queued before it returns.
//
// The job records the stream head (Head), so it exports everything
// published before the kick-off. If the head cannot be read (NATS down),
// the job records the applied sequence instead and a warning is logged:
// the export is then as of what is applied when it runs, which keeps every
// guarantee about transactionTime.
func (m *Manager) Kickoff(ctx context.Context, k Kickoff) (string, error) {
	now := m.cfg.Now()
	req, err := ParseRequest(k.Params, ParseOptions{
		Now:     max(index.Micros(now), m.src.Clock()),
		Lenient: k.Lenient,
		Level:   k.Level,
	})
	if err != nil {
		return "", err
	}
	req.RequestURL, req.Client = k.RequestURL, k.Client
	req.Level, req.Group = k.Level, k.Group
	req.MaxFinished = cmp.Or(k.MaxFinished, m.cfg.MaxFinishedJobsPerClient)
	if err := restrictTypes(&req, k.AllowedTypes); err != nil {
		return "", err
	}
	if req.Level == LevelGroup {
		if err := m.checkGroup(ctx, req.Group); err != nil {
			return "", err
		}
	}
	id, err := m.submit(ctx, req, k.MaxJobs, now)
	m.countThrottled(err)
	return id, err
}

// submit queues a validated request; quota is the client's own job limit
// (0: none). Admission is checked before the disk and the stream head are
// read and the record written, and again, with the job made known in the
// same critical section, after.
func (m *Manager) submit(ctx context.Context, req Request, quota int, now time.Time) (string, error) {
	if err := m.admit(now, req.Client, quota); err != nil {
		return "", err
	}
	if m.cfg.MinFreeBytes > 0 {
		free, ok, err := m.freeBytes(m.cfg.Dir)
		if err != nil {
			return "", fmt.Errorf("export: check free disk space: %w", err)
		}
		if ok && free < m.cfg.MinFreeBytes {
			m.log.Warn("refusing export kick-off: low disk space", "free_bytes", free, "min_free_bytes", m.cfg.MinFreeBytes)
			return "", &UnavailableError{Reason: "not enough free disk space for export files", RetryAfter: time.Minute}
		}
	}
	headSeq, known := m.headSeq(ctx)
	if !known && req.HasSince && req.Since > m.src.Clock() {
		// Without the stream head, the job would export as of what this
		// server has applied, which is older than the _since the client
		// holds (another replica's transactionTime): its manifest would
		// take the client back in time.
		return "", &UnavailableError{Reason: "this server has not yet applied the changes up to _since, and cannot read the stream head to wait for them",
			RetryAfter: 5 * time.Second}
	}

	id := newJobID()
	j := &job{id: id, rec: jobRecord{
		Version: recordVersion,
		State:   Queued,
		Request: req,
		HeadSeq: headSeq,
		Created: now,
	}}
	if err := m.create(j); err != nil {
		if m.shared != nil {
			// The shared store is out of reach (a NATS leader election, a
			// partition): the client should come back, not see a 500.
			m.log.Warn("cannot write a new export job to the shared job store", "error", err)
			return "", errStoreUnavailable
		}
		return "", fmt.Errorf("export: persist job: %w", err)
	}
	j.rec.State = stateNew
	m.mu.Lock()
	var err error
	if m.all[id] == nil { // in cluster mode the watch may have brought it, counted, already
		if err = m.admitLocked(now, req.Client, quota); err == nil {
			_, err = m.transition(j, Queued, nil)
		}
	}
	m.mu.Unlock()
	if err != nil {
		// Lost a race for the last slot, or closing: forget the job.
		if derr := m.jobs.DeleteJob(id); derr != nil {
			m.log.Warn("cannot delete refused export job", "job", id, "error", derr)
		}
		return "", err
	}
	m.log.Info("export job queued", "job", id, "client", req.Client, "types", len(req.Types),
		"since", req.Since, "head_seq", headSeq)
	return id, nil
}

// create writes a new job's first record; in cluster mode, only if the id
// is new, keeping its revision.
func (m *Manager) create(j *job) error {
	if m.shared == nil {
		return m.jobs.PutJob(j.id, mustJSON(j.rec))
	}
	rev, err := m.shared.Update(j.id, mustJSON(j.rec), 0)
	j.rev = rev
	return err
}

func (m *Manager) admit(now time.Time, client string, quota int) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.admitLocked(now, client, quota)
}

// admitLocked refuses a kick-off when closed, at the job limit, or when
// client already has quota (> 0) jobs queued or running. The decision
// reads the counts; only a refusal looks at the active jobs, for its
// Retry-After. m.mu is held.
func (m *Manager) admitLocked(now time.Time, client string, quota int) error {
	if m.closed {
		return ErrClosed
	}
	if !m.started {
		return &UnavailableError{Reason: "export manager is starting", RetryAfter: 5 * time.Second}
	}
	if c := m.clients[client]; quota > 0 && c != nil && c.active >= quota {
		return m.tooMany(ReasonClientQuota, quota, m.shortestLeft(now, client, true))
	}
	if m.byState[Queued]+m.byState[Running] < m.cfg.MaxActiveJobs {
		return nil
	}
	return m.tooMany(ReasonServerLimit, m.cfg.MaxActiveJobs, m.shortestLeft(now, "", false))
}

// shortestLeft is the shortest estimated time left of the active jobs (of
// client only, if mine), 0 when none has an estimate. It reads the
// workers' atomics. m.mu is held.
func (m *Manager) shortestLeft(now time.Time, client string, mine bool) time.Duration {
	var wait time.Duration
	for j := range m.active {
		if mine && j.rec.Request.Client != client {
			continue
		}
		if d, ok := j.remaining(now); ok && (wait == 0 || d < wait) {
			wait = d
		}
	}
	return wait
}

// tooMany is the 429 of admitLocked; wait is the shortest estimated time
// left of the jobs that hold the limit (0: unknown). m.mu is held.
func (m *Manager) tooMany(reason string, limit int, wait time.Duration) error {
	if wait == 0 {
		wait = cmp.Or(m.avgJob, 10*time.Second)
	}
	return &TooManyJobsError{RetryAfter: clamp(wait.Round(time.Second), time.Second, time.Minute),
		Reason: reason, Limit: limit}
}

// headSeq returns the stream sequence the job must wait for: the stream
// head (known), or, when it cannot be read, the applied sequence.
func (m *Manager) headSeq(ctx context.Context) (seq uint64, known bool) {
	applied := m.src.AppliedSeq()
	if m.head == nil {
		return applied, true // no stream: what is applied is all there is
	}
	hctx, cancel := context.WithTimeout(ctx, headTimeout)
	defer cancel()
	seq, err := m.head.Head(hctx)
	if err != nil {
		m.log.Warn("cannot read the stream head; the export starts from the applied sequence",
			"error", err, "seq", applied)
		return applied, false
	}
	return seq, true
}

// groupWait bounds how long a Group-level kick-off waits for ingest to
// apply the stream head when the Group is not found.
const groupWait = 2 * time.Second

// checkGroup answers a Group-level kick-off naming a Group the server does
// not hold with a *NotFoundError (404). A Group published just before the
// kick-off may not be applied yet: when it is not found and ingest is
// behind the stream head, the check waits (at most groupWait) for the
// head, then looks again. The job reads the members at its snapshot; a
// Group deleted in between fails the job.
func (m *Manager) checkGroup(ctx context.Context, id string) error {
	ok, err := m.src.Exists("Group", id)
	if err != nil {
		return fmt.Errorf("export: look up Group/%s: %w", id, err)
	}
	if ok {
		return nil
	}
	if head, known := m.headSeq(ctx); known && head > m.src.AppliedSeq() {
		wctx, cancel := context.WithTimeout(ctx, groupWait)
		werr := m.src.WaitApplied(wctx, head)
		cancel()
		if werr == nil {
			if ok, err = m.src.Exists("Group", id); err != nil {
				return fmt.Errorf("export: look up Group/%s: %w", id, err)
			} else if ok {
				return nil
			}
		}
	}
	return &NotFoundError{Type: "Group", ID: id}
}

// lookup returns the job with id, or nil.
func (m *Manager) lookup(id string) *job {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.all[id]
}

// expired reports whether a finished job is past its expiry at now. m.mu
// is held.
func (j *job) expired(now time.Time) bool {
	s := j.rec.State
	return (s == Completed || s == Failed) && !now.Before(j.rec.Expires)
}

// Status returns what a status poll sees, or ErrNotFound for an unknown,
// expired or cancelled job, or one another client started (client is the
// caller's Request.Client: "" when auth is off). The first poll of a job never sees it
// finished: a job that completed (or failed) before anyone polled is
// reported running once more.
func (m *Manager) Status(client, id string) (Status, error) {
	return m.status(client, id, false)
}

// status is Status; waited exempts the call from the first-poll rule.
func (m *Manager) status(client, id string, waited bool) (Status, error) {
	now := m.cfg.Now()
	if err := m.lookupShared(id); err != nil {
		return Status{}, err
	}
	m.mu.Lock()
	j := m.all[id]
	if j == nil || !j.ownedBy(client) {
		m.mu.Unlock()
		return Status{}, ErrNotFound
	}
	if j.expired(now) {
		m.mu.Unlock()
		m.remove(j, "expired")
		return Status{}, ErrNotFound
	}
	st := m.statusLocked(j, waited)
	urlInStore := j.urlInStore
	remote := m.shared != nil && st.State == Running && !j.local
	owner := j.rec.Owner
	m.mu.Unlock()
	if remote && st.Progress == "" {
		// Another replica runs it: its progress is there.
		st.Progress, st.RetryAfter = "running on replica "+owner, time.Second
	}
	if st.State == Running && st.Progress == "" {
		// Read outside m.mu: the worker's atomics and the index.
		st.Progress, st.RetryAfter = j.progress(now, m.src.AppliedSeq())
	}
	if urlInStore && st.Manifest != nil {
		// A long request URL is not kept in memory: read it from the
		// record (disk I/O, outside m.mu).
		url, err := m.storedURL(id)
		if err != nil {
			return Status{}, err
		}
		st.Manifest.Request = url
	}
	return st, nil
}

// statusLocked is Status of a job that is neither removed nor expired; a
// running job's Progress is left empty for the caller to fill in. m.mu is
// held.
func (m *Manager) statusLocked(j *job, waited bool) Status {
	first := !j.rec.Polled && !waited
	j.rec.Polled = true
	switch j.rec.State {
	case Queued:
		ahead := slices.Index(m.queue, j)
		if ahead < 0 {
			ahead = len(m.queue)
		}
		p := "queued"
		if ahead > 0 {
			p = fmt.Sprintf("queued behind %d other export jobs", ahead)
		}
		return Status{State: Queued, Progress: p, RetryAfter: time.Duration(min(ahead+1, 2)) * time.Second}
	case Running:
		return Status{State: Running}
	}
	if first {
		return Status{State: Running, Progress: "writing the manifest", RetryAfter: time.Second}
	}
	st := Status{State: j.rec.State, Expires: j.rec.Expires, Error: j.rec.Error}
	if j.rec.Manifest != nil {
		mf := *j.rec.Manifest
		mf.Output = slices.Clone(mf.Output)
		mf.Deleted = slices.Clone(mf.Deleted)
		mf.Error = slices.Clone(mf.Error)
		st.Manifest = &mf
	}
	return st
}

// storedURL reads a finished job's manifest request URL from its record.
func (m *Manager) storedURL(id string) (string, error) {
	b, err := m.jobs.GetJob(id)
	if errors.Is(err, index.ErrNotFound) {
		return "", ErrNotFound // removed meanwhile
	}
	if err != nil {
		return "", fmt.Errorf("export: read the record of job %s: %w", id, err)
	}
	rec, err := decodeRecord(b)
	if err != nil {
		return "", fmt.Errorf("export: decode the record of job %s: %w", id, err)
	}
	if rec.Manifest == nil {
		return "", nil // failed meanwhile (a damaged file): the next poll says so
	}
	return rec.Manifest.Request, nil
}

// Cancel stops a queued or running job, or discards a finished one: its
// files and record are removed, and Status, OpenFile and Cancel then
// return ErrNotFound. A running job's worker has stopped when Cancel
// returns. A job another client started is ErrNotFound, and left alone.
func (m *Manager) Cancel(client, id string) error {
	if err := m.lookupShared(id); err != nil {
		return err
	}
	m.mu.Lock()
	j := m.all[id]
	owned := j != nil && j.ownedBy(client)
	m.mu.Unlock()
	if !owned || !m.remove(j, "cancelled") {
		return ErrNotFound
	}
	return nil
}

// errCancelled is the cause of a cancelled job's context.
var errCancelled = errors.New("export: job cancelled")

// remove forgets a job (the transition to stateRemoved), then, with m.mu
// let go, stops its worker and deletes its record and files. It reports
// false if the job was already removed.
func (m *Manager) remove(j *job, why string) bool {
	return m.removeJob(j, why, true)
}

// removeJob is remove; mine false is a removal another replica made
// (cluster mode), whose record and files are that replica's to delete:
// the job is only forgotten here, its run stopped.
func (m *Manager) removeJob(j *job, why string, mine bool) bool {
	m.mu.Lock()
	state := j.rec.State
	gen, err := m.transition(j, stateRemoved, nil)
	if !mine {
		j.pending, gen = nil, 0 // nothing to write back
	}
	cancel, done := j.cancel, j.done
	m.mu.Unlock()
	if err != nil {
		return false // removed already: stateRemoved is final
	}
	if cancel != nil {
		cancel(errCancelled)
		<-done
	}
	if state == Queued {
		// A running job's worker counts it, once, as it lets go.
		m.met.finished.WithLabelValues(resultCancelled).Inc()
	}
	if !mine {
		m.log.Info("export job removed", "job", j.id, "reason", why, "state", state)
		return true
	}
	if err := m.flush(j, gen); err != nil {
		m.log.Error("cannot delete export job record; retrying in the background", "job", j.id, "error", err)
		m.mu.Lock()
		m.undeleted[j.id] = struct{}{}
		m.mu.Unlock()
	}
	if err := m.files.RemoveJob(j.id); err != nil {
		m.log.Error("cannot remove export files", "job", j.id, "error", err)
	}
	m.log.Info("export job removed", "job", j.id, "reason", why, "state", state)
	return true
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err) // plain data: cannot fail
	}
	return b
}

// clientMessage is the Status.Error text of a failure: what went wrong,
// without paths or internals (the log has those).
func clientMessage(err error) string {
	var ce *clientError
	if errors.As(err, &ce) {
		return ce.msg
	}
	if isNoSpace(err) {
		return "the server ran out of disk space while writing the export files; try again later"
	}
	if isNotWritable(err) {
		return "the server cannot write the export files: its export directory is read-only or not writable; try again later"
	}
	return "internal error while exporting; the server log has the details"
}

// Reasons of a failed job, the values of the reason label of
// bulkstream_export_jobs_failed_total.
const (
	failDiskReserve = "disk_reserve" // stopped before the disk fell below Config.ExportReserveBytes
	failDiskFull    = "disk_full"    // ENOSPC or quota
	failNotWritable = "not_writable" // read-only or permission
	failCatchUp     = "catch_up"     // ingest did not reach the head in time
	failInternal    = "internal"
)

var failReasons = []string{failDiskReserve, failDiskFull, failNotWritable, failCatchUp, failInternal}

// failReason is the metric label of a job's failure.
func failReason(err error) string {
	switch {
	case errors.Is(err, errDiskReserve):
		return failDiskReserve
	case errors.Is(err, errCatchUp):
		return failCatchUp
	case isNoSpace(err):
		return failDiskFull
	case isNotWritable(err):
		return failNotWritable
	}
	return failInternal
}

// clientError is a failure whose message is fit for the client.
type clientError struct {
	msg string
	err error
}

func (e *clientError) Error() string {
	if e.err == nil {
		return e.msg
	}
	return e.msg + ": " + e.err.Error()
}
func (e *clientError) Unwrap() error { return e.err }
