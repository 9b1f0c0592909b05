package export

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// recordVersion is the format of persisted job records.
const recordVersion = 1

// jobRecord is what the JobStore holds for a job, as JSON. It is the only
// state that survives a restart.
type jobRecord struct {
	Version int     `json:"version"`
	State   State   `json:"state"`
	Request Request `json:"request"`
	// HeadSeq is the stream's last sequence at kick-off: the job waits
	// until ingest has applied it before taking its snapshot.
	HeadSeq  uint64    `json:"headSeq"`
	Created  time.Time `json:"created"`
	Finished time.Time `json:"finished,omitzero"`
	// Expires is when a completed or failed job is removed.
	Expires  time.Time `json:"expires,omitzero"`
	Manifest *Manifest `json:"manifest,omitempty"`
	Error    string    `json:"error,omitempty"`
	// Polled records that a status poll has seen the job (the first poll
	// never sees it finished).
	Polled bool `json:"polled,omitempty"`

	// Cluster mode only. Owner is the replica running the job and Lease
	// when its claim ends unless renewed (wall clock); Runs counts the
	// runs started, so a log can tell a takeover from the first run.
	Owner string    `json:"owner,omitempty"`
	Lease time.Time `json:"lease,omitzero"`
	Runs  int       `json:"runs,omitempty"`
}

func decodeRecord(b []byte) (jobRecord, error) {
	var r jobRecord
	if err := json.Unmarshal(b, &r); err != nil {
		return r, err
	}
	if r.Version != recordVersion {
		return r, fmt.Errorf("unsupported job record version %d", r.Version)
	}
	if r.Request.Since > 0 {
		// Records written before HasSince: Since 0 meant no _since.
		r.Request.HasSince = true
	}
	return r, nil
}

// job is the in-memory state of one job. Every field but id and prog is
// guarded by Manager.mu, under which nothing blocks (see the package doc);
// prog is written by the job's worker and read by Status without a lock.
type job struct {
	id string

	rec     jobRecord
	removed bool // cancelled, expired or evicted: record and files are gone or going
	// urlInStore: a finished job's manifest request URL was too long to
	// keep in memory (rec.Manifest.Request is ""); Status reads it from
	// the stored record.
	urlInStore bool

	// Set while a worker runs the job.
	cancel context.CancelCauseFunc
	done   chan struct{} // closed when the worker is finished with the job
	// changed is closed (and reset) at each transition out of queued or
	// running: Wait's callers hold it. Made on demand.
	changed chan struct{}

	// The record's writes (see persist.go): gen counts the record
	// versions queued, pending is the newest not yet started, writing
	// says one is being written, and written, writeErr and wrote tell
	// callers waiting for theirs.
	gen      uint64
	pending  *recordWrite
	writing  bool
	written  uint64
	writeErr error
	wrote    chan struct{}

	// Cluster mode (see cluster.go): rev is the store's revision of the
	// record as this replica last read or wrote it, and adopted counts
	// the changes taken from other replicas; a write queued before the
	// latest adoption is stale and is not written.
	rev     uint64
	adopted uint64
	// inflight is the record being written, which the watch may deliver
	// before the write returns its revision.
	inflight []byte
	// local: a worker of this replica runs the job; leaseHeld is when
	// the lease it last wrote successfully ends.
	local     bool
	leaseHeld time.Time

	prog progress
}

// progress is what the worker publishes for Status and the Retry-After
// estimate, through atomics: a status poll never waits for the worker.
// plan is stored before phase turns phaseScanning and never changes
// during the scan; written and scanned are added to as the scan goes.
type progress struct {
	phase   atomic.Uint32 // a phase
	waitSeq atomic.Uint64 // phaseWaiting: the stream sequence awaited
	plan    atomic.Pointer[scanPlan]
	typeIdx atomic.Int32 // 1-based index into plan.types of the type being scanned; 0 before the first
	written atomic.Int64 // lines written to output and deleted files
	scanned atomic.Int64 // scan entries visited (tombstones included)
}

// scanPlan is what a job scans, fixed once its snapshot is taken.
type scanPlan struct {
	types     []string // types with entries in the snapshot, in scan order
	full      bool     // a full export without _until: total is exact
	deletions bool     // a _since export: deletions are written too
	total     int64    // full: resources to write; otherwise entries that may be scanned
	entries   int64    // scan entries of all types (upper bound of scanned)
	start     time.Time
}

// reset readies the progress for a new run.
func (p *progress) reset() {
	p.phase.Store(uint32(phaseQueued))
	p.plan.Store(nil)
	p.typeIdx.Store(0)
	p.written.Store(0)
	p.scanned.Store(0)
}

func (p *progress) setPhase(ph phase) { p.phase.Store(uint32(ph)) }

// keepURLBytes is the longest manifest request URL a finished job keeps
// in memory; longer ones (up to the 32 KiB httpapi accepts) are read back
// from the job record by Status.
const keepURLBytes = 512

// shed drops what a finished (completed or failed) job no longer needs in
// memory once its record is persisted and its files written: the parsed
// request (types, _elements, ignored items), keeping only the client and
// its cap, and a long request URL. The stored record keeps all of it.
// Manager.mu is held. Without this a job kept ~264 KB for a 26 KB GET with 4,500
// _elements (BenchmarkFinishedJobMemory measures what is left).
func (j *job) shed() {
	j.rec.Request = Request{Client: j.rec.Request.Client, MaxFinished: j.rec.Request.MaxFinished}
	if mf := j.rec.Manifest; mf != nil && len(mf.Request) > keepURLBytes {
		mf.Request, j.urlInStore = "", true
	}
}

type phase uint8

const (
	phaseQueued phase = iota
	phaseWaiting
	phaseSnapshot
	phaseScanning
	phaseFinishing
)

// newJobID returns 128 random bits in hex.
func newJobID() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // never fails (crypto/rand documents it)
	return hex.EncodeToString(b[:])
}

// isJobID reports whether name could be a job id (and so a job directory
// this package created).
func isJobID(name string) bool {
	if len(name) != 32 {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// progressLimit keeps X-Progress under the 100 characters the IG allows
// (in-progress status, https://hl7.org/fhir/uv/bulkdata/export.html).
const progressLimit = 99

// An estimate of the time a job has left is only made from a throughput
// measured over at least minEstimateEntries scan entries and
// minEstimateTime of scanning: a rate taken over the first few entries
// (cold caches, the first file opened) once told a client to wait 10 s for
// a job that finished 6 ms later. Before that, and outside the scan, a
// status poll suggests the minimum interval, 1 s.
const (
	minEstimateEntries = 1000
	minEstimateTime    = 250 * time.Millisecond
	// maxPollInterval caps a running job's suggested polling interval.
	maxPollInterval = 10 * time.Second
)

// progress returns the X-Progress text and the suggested polling interval
// of a running job: whole seconds, at least 1 s, never more than the
// estimate of the time left (see estimate). It reads only the worker's
// atomics; appliedSeq is the source's current one.
func (j *job) progress(now time.Time, appliedSeq uint64) (string, time.Duration) {
	var s string
	retry := time.Second
	p := &j.prog
	switch phase(p.phase.Load()) {
	case phaseQueued, phaseSnapshot:
		s = "starting"
	case phaseWaiting:
		s = "waiting for ingest to reach sequence " + strconv.FormatUint(p.waitSeq.Load(), 10) +
			" (at " + strconv.FormatUint(appliedSeq, 10) + ")"
	case phaseScanning:
		pl := p.plan.Load()
		if pl == nil {
			s = "starting"
			break
		}
		written := p.written.Load()
		typ, typeIdx := "", int(p.typeIdx.Load())
		if typeIdx > 0 && typeIdx <= len(pl.types) {
			typ = pl.types[typeIdx-1]
		}
		switch {
		case pl.full:
			pct := int64(100)
			if pl.total > 0 {
				pct = min(99, written*100/pl.total)
			}
			s = "exporting"
			if typ != "" {
				s += " " + typ
			}
			s += fmt.Sprintf(": %d%% (%s of %s resources)", pct, group(written), group(pl.total))
		default:
			what := "resources and deletions"
			if !pl.deletions {
				what = "resources"
			}
			if typ == "" {
				// The scan has started, its first type not yet.
				s = fmt.Sprintf("exporting %d types: %s %s so far", len(pl.types), group(written), what)
			} else {
				s = fmt.Sprintf("exporting %s (type %d of %d): %s %s so far",
					typ, typeIdx, len(pl.types), group(written), what)
			}
		}
		if d, ok := j.estimate(now); ok {
			retry = clamp(d.Truncate(time.Second), time.Second, maxPollInterval)
		}
	case phaseFinishing:
		s = "writing the manifest"
	}
	if len(s) > progressLimit {
		s = s[:progressLimit]
	}
	return s, retry
}

// estimate is the time the scan has left: remaining work over the
// throughput measured so far. For a full export the resources are exact;
// otherwise the scan entries left are an upper bound. ok is false outside
// the scan and before minEstimateEntries and minEstimateTime of it. It
// reads only the worker's atomics.
func (j *job) estimate(now time.Time) (time.Duration, bool) {
	p := &j.prog
	pl := p.plan.Load()
	if phase(p.phase.Load()) != phaseScanning || pl == nil {
		return 0, false
	}
	written, scanned := p.written.Load(), p.scanned.Load()
	el := now.Sub(pl.start)
	if scanned < minEstimateEntries || el < minEstimateTime {
		return 0, false
	}
	rate := float64(scanned) / el.Seconds()
	left := float64(max(0, pl.entries-scanned))
	if pl.full {
		left = float64(max(0, pl.total-written)) * float64(scanned) / float64(max(written, 1))
	}
	return time.Duration(left / rate * float64(time.Second)), true
}

// remaining estimates how long the job has left, for a 429's Retry-After;
// ok is false when there is no trustworthy measurement yet.
func (j *job) remaining(now time.Time) (time.Duration, bool) {
	return j.estimate(now)
}

func clamp(d, lo, hi time.Duration) time.Duration {
	return min(max(d, lo), hi)
}

// group writes n with thousands separators: 38,483.
func group(n int64) string {
	s := strconv.FormatInt(n, 10)
	if n < 0 || len(s) <= 3 {
		return s
	}
	var b strings.Builder
	first := len(s) % 3
	if first > 0 {
		b.WriteString(s[:first])
	}
	for i := first; i < len(s); i += 3 {
		if b.Len() > 0 {
			b.WriteByte(',')
		}
		b.WriteString(s[i : i+3])
	}
	return b.String()
}
