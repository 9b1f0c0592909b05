package export

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/bulkstream/bulkstream/index"
	"github.com/bulkstream/bulkstream/internal/diskspace"
)

// Defaults for Config.
const (
	DefaultWorkers          = 2
	DefaultMaxActiveJobs    = 8
	DefaultFileMaxResources = 100_000
	DefaultFileMaxBytes     = 256 << 20
	DefaultTTL              = 24 * time.Hour
	DefaultMaxFinishedJobs  = 10_000
	// DefaultMaxFinishedJobsPerClient is each client's own cap.
	DefaultMaxFinishedJobsPerClient = 1000
	DefaultMinFreeBytes             = 256 << 20
	// DefaultExportReserveBytes is the free space running exports leave.
	DefaultExportReserveBytes = 128 << 20
	DefaultMaxCatchUpWait     = 10 * time.Minute
)

// headTimeout bounds the stream-head lookup of a kick-off, which must
// answer quickly even when NATS does not.
const headTimeout = time.Second

// Config configures a Manager. Zero fields get the defaults above.
type Config struct {
	// Dir is the exports root; a job's files are in Dir/<job id>/. The
	// manager owns it: directories named like a job id that belong to no
	// job are removed by Start.
	Dir string
	// Workers is how many jobs run at once (DefaultWorkers).
	Workers int
	// MaxActiveJobs caps queued plus running jobs; past it Kickoff returns
	// *TooManyJobsError (DefaultMaxActiveJobs). Completed jobs do not count.
	MaxActiveJobs int
	// FileMaxResources and FileMaxBytes split a type's output: a new file
	// starts before the line that would exceed either. A single resource
	// larger than FileMaxBytes gets a file of its own.
	FileMaxResources int64
	FileMaxBytes     int64
	// TTL is how long a completed (or failed) job's manifest and files
	// stay available (DefaultTTL).
	TTL time.Duration
	// MaxFinishedJobs caps the completed and failed jobs kept for
	// download, all clients together: past it finished jobs are removed
	// before their TTL, each time the oldest of the client holding the
	// most, so a client that never deletes its jobs cannot grow memory and
	// disk without bound, nor evict another client's exports while it
	// holds more than that client (DefaultMaxFinishedJobs; the heap a
	// finished job holds is measured by BenchmarkFinishedJobMemory;
	// negative: no cap).
	MaxFinishedJobs int
	// MaxFinishedJobsPerClient caps each client's own finished jobs: past
	// it the client's own oldest finished job is removed. Kickoff.MaxFinished
	// overrides it per client (DefaultMaxFinishedJobsPerClient; negative:
	// no per-client cap).
	MaxFinishedJobsPerClient int
	// MinFreeBytes: Kickoff answers *UnavailableError while the
	// filesystem of Dir has less free space (DefaultMinFreeBytes;
	// negative disables the check).
	MinFreeBytes int64
	// ExportReserveBytes: a running job fails (files removed, a message
	// saying the disk is low) rather than let the free space of Dir drop
	// below it, checked when a file opens and at least every MiB written,
	// so ingest keeps room to commit (DefaultExportReserveBytes; negative
	// disables the check; at most MinFreeBytes when both are checked).
	ExportReserveBytes int64
	// MaxCatchUpWait bounds how long a job waits for ingest to apply the
	// stream head recorded at kick-off before it fails
	// (DefaultMaxCatchUpWait).
	MaxCatchUpWait time.Duration
	// RequiresAccessToken is the manifest's requiresAccessToken.
	RequiresAccessToken bool
	// Logger receives the manager's log lines; nil discards them.
	Logger *slog.Logger
	// Registerer, if set, gets the manager's metrics; Close unregisters
	// them.
	Registerer prometheus.Registerer
	// Now is the wall clock (time.Now); tests replace it. It stamps job
	// creation, completion and expiry, never transactionTime.
	Now func() time.Time
}

func (c *Config) ensureDefaults() {
	if c.Workers == 0 {
		c.Workers = DefaultWorkers
	}
	if c.MaxActiveJobs == 0 {
		c.MaxActiveJobs = DefaultMaxActiveJobs
	}
	if c.FileMaxResources == 0 {
		c.FileMaxResources = DefaultFileMaxResources
	}
	if c.FileMaxBytes == 0 {
		c.FileMaxBytes = DefaultFileMaxBytes
	}
	if c.TTL == 0 {
		c.TTL = DefaultTTL
	}
	if c.MaxFinishedJobs == 0 {
		c.MaxFinishedJobs = DefaultMaxFinishedJobs
	}
	if c.MaxFinishedJobsPerClient == 0 {
		c.MaxFinishedJobsPerClient = DefaultMaxFinishedJobsPerClient
	}
	if c.MinFreeBytes == 0 {
		c.MinFreeBytes = DefaultMinFreeBytes
	}
	if c.ExportReserveBytes == 0 {
		c.ExportReserveBytes = DefaultExportReserveBytes
	}
	if c.MaxCatchUpWait == 0 {
		c.MaxCatchUpWait = DefaultMaxCatchUpWait
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Now == nil {
		c.Now = time.Now
	}
}

func (c *Config) validate() error {
	var errs []error
	if c.Dir == "" {
		errs = append(errs, errors.New("export: Config.Dir is required"))
	}
	if c.Workers < 0 {
		errs = append(errs, fmt.Errorf("export: Config.Workers %d must be positive", c.Workers))
	}
	if c.MaxActiveJobs < 0 {
		errs = append(errs, fmt.Errorf("export: Config.MaxActiveJobs %d must be positive", c.MaxActiveJobs))
	}
	if c.FileMaxResources < 0 {
		errs = append(errs, fmt.Errorf("export: Config.FileMaxResources %d must be positive", c.FileMaxResources))
	}
	if c.FileMaxBytes < 0 {
		errs = append(errs, fmt.Errorf("export: Config.FileMaxBytes %d must be positive", c.FileMaxBytes))
	}
	if c.TTL < 0 {
		errs = append(errs, fmt.Errorf("export: Config.TTL %v must be positive", c.TTL))
	}
	if c.MinFreeBytes >= 0 && c.ExportReserveBytes >= 0 && c.ExportReserveBytes > c.MinFreeBytes {
		errs = append(errs, fmt.Errorf("export: Config.ExportReserveBytes %d must not exceed Config.MinFreeBytes %d (--export-reserve-bytes ≤ --min-free-bytes): a kick-off admitted just above the one would fail at once on the other",
			c.ExportReserveBytes, c.MinFreeBytes))
	}
	if c.MaxCatchUpWait < 0 {
		errs = append(errs, fmt.Errorf("export: Config.MaxCatchUpWait %v must be positive", c.MaxCatchUpWait))
	}
	return errors.Join(errs...)
}

// Manager runs export jobs. Kickoff, Status, Cancel and OpenFile are safe
// for concurrent use, and so is Close.
type Manager struct {
	cfg  Config
	src  Source
	head Head
	jobs JobStore
	log  *slog.Logger
	met  *metrics

	// hookScan, if set (tests), runs before each scan entry is written.
	hookScan func(ctx context.Context) error
	// freeBytes measures the free space of a directory (tests replace it).
	freeBytes func(dir string) (int64, bool, error)
	// racyWindow is how old a file's ctime must be for its stamp to be
	// trusted (fileStamp; tests shorten it).
	racyWindow time.Duration

	// Lock order: mu before any job's mu.
	mu  sync.Mutex
	all map[string]*job // every known job
	// active holds every queued or running job, and finished ones until
	// the next admission prunes them: admission looks at these only, not
	// at the day of finished jobs kept for download.
	active  map[*job]struct{}
	queue   []*job // queued jobs, oldest first
	started bool
	closed  bool
	// avgJob is the moving average of worker time per completed job,
	// under its own leaf mutex: run updates it holding a job's mu, and
	// admitLocked takes job mus holding m.mu, so m.mu here would deadlock.
	avgMu  sync.Mutex
	avgJob time.Duration

	wake chan struct{} // a job was queued
	// sweep asks the expiry loop to run now: finishedSinceSweep jobs have
	// finished since it last did, a tenth of MaxFinishedJobs.
	sweep              chan struct{}
	finishedSinceSweep atomic.Int64
	// finishedBy counts each client's finished jobs, so a finish past the
	// client's own cap wakes the sweep at once. Under its own leaf mutex,
	// like avgMu: run updates it holding a job's mu.
	finMu      sync.Mutex
	finishedBy map[string]int
	waiters    atomic.Int64 // callers held in Wait
	ctx        context.Context
	stop       context.CancelFunc
	wg         sync.WaitGroup
	unreg      sync.Once
	closeE     error
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
	m := &Manager{
		cfg:        cfg,
		src:        src,
		head:       head,
		jobs:       jobs,
		log:        cfg.Logger.With("component", "export"),
		all:        map[string]*job{},
		finishedBy: map[string]int{},
		active:     map[*job]struct{}{},
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
// scratch (their partial files removed first). Directories in Dir that
// belong to no job are removed. ctx only carries values: the manager runs
// until Close.
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
	if err := m.load(); err != nil {
		return err
	}
	if err := m.sweepOrphans(); err != nil {
		m.log.Warn("cannot sweep orphaned export directories", "error", err)
	}

	m.mu.Lock()
	defer m.mu.Unlock()
	m.ctx, m.stop = context.WithCancel(context.WithoutCancel(ctx))
	for range m.cfg.Workers {
		m.wg.Go(m.worker)
	}
	m.wg.Go(m.expiryLoop)
	if len(m.queue) > 0 {
		m.signal()
	}
	return nil
}

// load reads the job records into memory.
func (m *Manager) load() error {
	now := m.cfg.Now()
	var resume []*job
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
			if err := os.RemoveAll(m.jobDir(id)); err != nil {
				return fmt.Errorf("export: remove partial files of job %s: %w", id, err)
			}
			if rec.State != Queued {
				j.rec.State = Queued
				if err := m.jobs.PutJob(id, mustJSON(j.rec)); err != nil {
					return err
				}
			}
			resume = append(resume, j)
			m.active[j] = struct{}{}
		default:
			m.log.Error("dropping export job in unknown state", "job", id, "state", rec.State)
			drop = append(drop, id)
			return nil
		}
		m.all[id] = j
		if s := j.rec.State; s == Completed || s == Failed {
			m.finishedBy[rec.Request.Client]++
			j.shed()
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("export: load jobs: %w", err)
	}
	for _, id := range drop {
		if err := m.jobs.DeleteJob(id); err != nil {
			return fmt.Errorf("export: drop job %s: %w", id, err)
		}
		if isJobID(id) {
			if err := os.RemoveAll(m.jobDir(id)); err != nil {
				m.log.Warn("cannot remove export files", "job", id, "error", err)
			}
		}
	}
	slices.SortStableFunc(resume, func(a, b *job) int { return a.rec.Created.Compare(b.rec.Created) })
	m.queue = resume
	if len(resume) > 0 || len(m.all) > 0 {
		m.log.Info("loaded export jobs", "jobs", len(m.all), "restarted", len(resume))
	}
	return nil
}

// filesPresent checks that every file of a completed job is on disk with
// the size it was written with (the digest is checked at download).
func (m *Manager) filesPresent(j *job) bool {
	if j.rec.Manifest == nil {
		return false
	}
	for _, fi := range j.rec.Manifest.files() {
		st, err := os.Stat(filepath.Join(m.jobDir(j.id), fi.Name))
		if err != nil || st.Size() != fi.Bytes {
			return false
		}
	}
	return true
}

// sweepOrphans removes job directories without a job.
func (m *Manager) sweepOrphans() error {
	ents, err := os.ReadDir(m.cfg.Dir)
	if err != nil {
		return err
	}
	for _, e := range ents {
		if !e.IsDir() || !isJobID(e.Name()) {
			continue
		}
		if _, ok := m.all[e.Name()]; ok {
			continue
		}
		m.log.Info("removing orphaned export directory", "job", e.Name())
		if err := os.RemoveAll(filepath.Join(m.cfg.Dir, e.Name())); err != nil {
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
	})
	if err != nil {
		return "", err
	}
	req.RequestURL, req.Client = k.RequestURL, k.Client
	req.MaxFinished = cmp.Or(k.MaxFinished, m.cfg.MaxFinishedJobsPerClient)
	if err := restrictTypes(&req, k.AllowedTypes); err != nil {
		return "", err
	}
	id, err := m.submit(ctx, req, k.MaxJobs, now)
	m.countThrottled(err)
	return id, err
}

// submit queues a validated request; quota is the client's own job limit
// (0: none).
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
	headSeq := m.headSeq(ctx)

	id := newJobID()
	j := &job{id: id, rec: jobRecord{
		Version: recordVersion,
		State:   Queued,
		Request: req,
		HeadSeq: headSeq,
		Created: now,
	}}
	if err := m.jobs.PutJob(id, mustJSON(j.rec)); err != nil {
		return "", fmt.Errorf("export: persist job: %w", err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.admitLocked(now, req.Client, quota); err != nil {
		// Lost a race for the last slot, or closing: forget the job.
		if derr := m.jobs.DeleteJob(id); derr != nil {
			m.log.Warn("cannot delete refused export job", "job", id, "error", derr)
		}
		return "", err
	}
	m.all[id] = j
	m.active[j] = struct{}{}
	m.queue = append(m.queue, j)
	m.signal()
	m.log.Info("export job queued", "job", id, "client", req.Client, "types", len(req.Types),
		"since", req.Since, "head_seq", headSeq)
	return id, nil
}

func (m *Manager) admit(now time.Time, client string, quota int) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.admitLocked(now, client, quota)
}

// admitLocked refuses a kick-off when closed, at the job limit, or when
// client already has quota (> 0) jobs queued or running.
func (m *Manager) admitLocked(now time.Time, client string, quota int) error {
	if m.closed {
		return ErrClosed
	}
	if !m.started {
		return &UnavailableError{Reason: "export manager is starting", RetryAfter: 5 * time.Second}
	}
	active, mine := 0, 0
	wait, myWait := time.Duration(0), time.Duration(0)
	for j := range m.active {
		j.mu.Lock()
		if s := j.rec.State; s != Queued && s != Running {
			delete(m.active, j) // finished: admission need not look again
		} else {
			active++
			d, ok := j.remaining(now)
			if ok && (wait == 0 || d < wait) {
				wait = d
			}
			if j.rec.Request.Client == client {
				mine++
				if ok && (myWait == 0 || d < myWait) {
					myWait = d
				}
			}
		}
		j.mu.Unlock()
	}
	if quota > 0 && mine >= quota {
		return m.tooMany(ReasonClientQuota, quota, myWait)
	}
	if active < m.cfg.MaxActiveJobs {
		return nil
	}
	return m.tooMany(ReasonServerLimit, m.cfg.MaxActiveJobs, wait)
}

// tooMany is the 429 of admitLocked; wait is the shortest estimated time
// left of the jobs that hold the limit (0: unknown). m.mu is held.
func (m *Manager) tooMany(reason string, limit int, wait time.Duration) error {
	if wait == 0 {
		m.avgMu.Lock()
		wait = cmp.Or(m.avgJob, 10*time.Second)
		m.avgMu.Unlock()
	}
	return &TooManyJobsError{RetryAfter: clamp(wait.Round(time.Second), time.Second, time.Minute),
		Reason: reason, Limit: limit}
}

// headSeq returns the stream sequence the job must wait for.
func (m *Manager) headSeq(ctx context.Context) uint64 {
	applied := m.src.AppliedSeq()
	if m.head == nil {
		return applied
	}
	hctx, cancel := context.WithTimeout(ctx, headTimeout)
	defer cancel()
	seq, err := m.head.Head(hctx)
	if err != nil {
		m.log.Warn("cannot read the stream head; the export starts from the applied sequence",
			"error", err, "seq", applied)
		return applied
	}
	return seq
}

// signal wakes a worker. m.mu is held.
func (m *Manager) signal() {
	select {
	case m.wake <- struct{}{}:
	default:
	}
}

// lookup returns the job with id, or nil.
func (m *Manager) lookup(id string) *job {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.all[id]
}

// expired reports whether a finished job is past its expiry. j.mu is held.
func (m *Manager) expired(j *job) bool {
	s := j.rec.State
	return (s == Completed || s == Failed) && !m.cfg.Now().Before(j.rec.Expires)
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
	m.mu.Lock()
	j := m.all[id]
	ahead := 0
	for _, q := range m.queue {
		if q == j {
			break
		}
		ahead++
	}
	m.mu.Unlock()
	if j == nil {
		return Status{}, ErrNotFound
	}
	now := m.cfg.Now()
	j.mu.Lock()
	if j.removed || !j.ownedBy(client) {
		j.mu.Unlock()
		return Status{}, ErrNotFound
	}
	if m.expired(j) {
		j.mu.Unlock()
		m.remove(j, "expired")
		return Status{}, ErrNotFound
	}
	st := m.statusLocked(j, ahead, now, waited)
	urlInStore := j.urlInStore
	j.mu.Unlock()
	if urlInStore && st.Manifest != nil {
		// A long request URL is not kept in memory: read it from the
		// record, without holding j.mu (disk I/O).
		url, err := m.storedURL(id)
		if err != nil {
			return Status{}, err
		}
		st.Manifest.Request = url
	}
	return st, nil
}

// statusLocked is Status of a job that is neither removed nor expired.
// j.mu is held.
func (m *Manager) statusLocked(j *job, ahead int, now time.Time, waited bool) Status {
	first := !j.rec.Polled && !waited
	j.rec.Polled = true
	switch j.rec.State {
	case Queued:
		p := "queued"
		if ahead > 0 {
			p = fmt.Sprintf("queued behind %d other export jobs", ahead)
		}
		return Status{State: Queued, Progress: p, RetryAfter: time.Duration(min(ahead+1, 2)) * time.Second}
	case Running:
		p, retry := j.progress(now, m.src.AppliedSeq())
		return Status{State: Running, Progress: p, RetryAfter: retry}
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
	j := m.lookup(id)
	if j == nil || !j.isOwnedBy(client) {
		return ErrNotFound
	}
	if !m.remove(j, "cancelled") {
		return ErrNotFound
	}
	return nil
}

// errCancelled is the cause of a cancelled job's context.
var errCancelled = errors.New("export: job cancelled")

// remove forgets a job: stops its worker, deletes its record and files.
// It reports false if the job was already removed.
func (m *Manager) remove(j *job, why string) bool {
	m.mu.Lock()
	if m.all[j.id] == j {
		delete(m.all, j.id)
	}
	delete(m.active, j)
	if i := slices.Index(m.queue, j); i >= 0 {
		m.queue = slices.Delete(m.queue, i, i+1)
	}
	m.mu.Unlock()

	j.mu.Lock()
	if j.removed {
		j.mu.Unlock()
		return false
	}
	j.removed = true
	j.signalLocked()
	state, cancel, done, client := j.rec.State, j.cancel, j.done, j.rec.Request.Client
	j.mu.Unlock()
	if state == Completed || state == Failed {
		m.forgetFinished(client)
	}
	if cancel != nil {
		cancel(errCancelled)
		<-done
	}
	if state == Queued || state == Running {
		m.met.finished.WithLabelValues(resultCancelled).Inc()
	}
	if err := m.jobs.DeleteJob(j.id); err != nil {
		m.log.Error("cannot delete export job record", "job", j.id, "error", err)
	}
	if err := os.RemoveAll(m.jobDir(j.id)); err != nil {
		m.log.Error("cannot remove export files", "job", j.id, "error", err)
	}
	m.log.Info("export job removed", "job", j.id, "reason", why, "state", state)
	return true
}

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

// noteFinished counts a job of client that completed or failed, and wakes
// the expiry loop when the client now holds more finished jobs than its
// cap keep (0: Config.MaxFinishedJobsPerClient; none for the anonymous
// client "" of a server without authorization), or when a tenth of
// MaxFinishedJobs have finished since its last sweep. It takes only
// finMu: run calls it holding j.mu.
func (m *Manager) noteFinished(client string, keep int) {
	m.finMu.Lock()
	m.finishedBy[client]++
	mine := m.finishedBy[client]
	m.finMu.Unlock()
	wake := false
	if limit := clientCap(client, keep, m.cfg.MaxFinishedJobsPerClient); limit > 0 && mine > limit {
		wake = true
	}
	if limit := int64(m.cfg.MaxFinishedJobs); limit > 0 && m.finishedSinceSweep.Add(1) >= max(1, limit/10) {
		wake = true
	}
	if wake {
		select {
		case m.sweep <- struct{}{}:
		default:
		}
	}
}

// forgetFinished uncounts a finished job of client that was removed.
func (m *Manager) forgetFinished(client string) {
	m.finMu.Lock()
	defer m.finMu.Unlock()
	if m.finishedBy[client]--; m.finishedBy[client] <= 0 {
		delete(m.finishedBy, client)
	}
}

// expire removes every finished job past its expiry, then each client's
// oldest finished jobs beyond its own cap, then, while more than
// MaxFinishedJobs are left, the oldest finished job of the client holding
// the most (so a client holding fewer than another never loses a job to
// the global cap while the other still has more).
func (m *Manager) expire() {
	m.finishedSinceSweep.Store(0)
	var old []*job
	byClient := map[string][]finishedJob{}
	m.mu.Lock()
	for _, j := range m.all {
		j.mu.Lock()
		if m.expired(j) {
			old = append(old, j)
		} else if s := j.rec.State; s == Completed || s == Failed {
			c := j.rec.Request.Client
			byClient[c] = append(byClient[c], finishedJob{j, j.rec.Finished, j.rec.Request.MaxFinished})
		}
		j.mu.Unlock()
	}
	m.mu.Unlock()
	for _, j := range old {
		m.remove(j, "expired")
	}
	for _, v := range evictions(byClient, m.cfg.MaxFinishedJobsPerClient, m.cfg.MaxFinishedJobs) {
		m.remove(v.j, v.why)
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

// stateCounts counts jobs by state, for the jobs gauge.
func (m *Manager) stateCounts() map[State]int {
	m.mu.Lock()
	defer m.mu.Unlock()
	counts := map[State]int{}
	for _, j := range m.all {
		j.mu.Lock()
		counts[j.rec.State]++
		j.mu.Unlock()
	}
	return counts
}

// persist writes the job record. j.mu is held; a removed job is not
// written back.
func (m *Manager) persist(j *job) error {
	if j.removed {
		return nil
	}
	return m.jobs.PutJob(j.id, mustJSON(j.rec))
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
