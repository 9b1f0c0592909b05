package index

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	iofs "io/fs"
	"log/slog"
	"maps"
	"math"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/bloom"
	"github.com/cockroachdb/pebble/v2/vfs"
)

// Sentinel errors.
var (
	// ErrNotFound is returned for a job record that does not exist.
	ErrNotFound = errors.New("index: not found")
	// ErrClosed is returned by calls on a closed Index.
	ErrClosed = errors.New("index: closed")
	// ErrFailed is returned, wrapped with Pebble's message, by writes to
	// an index whose store hit an error it cannot go on from (a failed
	// WAL write or MANIFEST update, typically a full disk), and by Ready.
	// Nothing is written after it; reads still work. Restart the process
	// once the cause is fixed: the store recovers from its WAL on open.
	ErrFailed = errors.New("index: store failed")
)

// formatVersion pins Pebble's on-disk format so that a dependency upgrade
// never changes it silently.
const formatVersion = pebble.FormatValueSeparation

// Tuning of the Pebble store (see pebbleOptions).
const (
	// memTableSize is large so that a bulk ingest flushes rarely: each
	// flush is a compaction's worth of input later. Pebble grows memtables
	// up to this size, so small stores do not pay for it.
	memTableSize = 64 << 20
	// memTableStopWrites is how many memtables may queue for flushing
	// before writes stall.
	memTableStopWrites = 4
	// valueSeparationMinSize is the smallest value stored in a blob file
	// instead of the sstable. Resource bodies (~1 KB) are; r/ records,
	// tombstones and meta values are not. Separated values are not
	// rewritten by compactions, which then only move keys and handles.
	valueSeparationMinSize = 256
	// bloomBitsPerKey sizes the bloom filters: Apply reads the r/ record of
	// every change, and on fresh data nearly all of those reads miss.
	bloomBitsPerKey = 10
	// maxRetainedBatch is the largest buffer Apply keeps for its next
	// batch (see Index.batch); a larger one, from an unusually large
	// batch, is left to the GC.
	maxRetainedBatch = 8 << 20
)

// pebbleOptions returns the Pebble options of an index. None of them
// changes the keys or values stored, only how Pebble lays them out.
func pebbleOptions(opts *Options, cache *pebble.Cache, fatal *fatalState) *pebble.Options {
	o := &pebble.Options{
		FS:                          opts.FS,
		Cache:                       cache,
		FormatMajorVersion:          formatVersion,
		Logger:                      pebbleLogger{opts.Logger.With("component", "pebble"), fatal},
		MemTableSize:                memTableSize,
		MemTableStopWritesThreshold: memTableStopWrites,
		L0CompactionThreshold:       4,
		L0StopWritesThreshold:       24,
		LBaseMaxBytes:               256 << 20,
		CompactionConcurrencyRange:  func() (int, int) { return 1, 2 },
	}
	o.TargetFileSizes[0] = 8 << 20
	for i := range o.Levels {
		o.Levels[i].FilterPolicy = bloom.FilterPolicy(bloomBitsPerKey)
	}
	o.Experimental.ValueSeparationPolicy = func() pebble.ValueSeparationPolicy {
		return pebble.ValueSeparationPolicy{
			Enabled:               true,
			MinimumSize:           valueSeparationMinSize,
			MaxBlobReferenceDepth: 10,
			RewriteMinimumAge:     5 * time.Minute,
			TargetGarbageRatio:    0.2,
		}
	}
	return o
}

// Index is the Pebble store of current resources ordered by type and commit
// time. Apply is the single writer; Snapshot, job records and the read
// accessors may be used concurrently with it.
type Index struct {
	db     *pebble.DB
	cache  interface{ Unref() }
	opts   *Options
	log    *slog.Logger
	syncWO *pebble.WriteOptions
	// fatal is set by Pebble's Logger.Fatalf: the store failed, and every
	// write is refused from then on.
	fatal *fatalState

	// mu is the commit lock: Apply holds it while it commits a batch and
	// publishes the new state; Snapshot holds it to pair a Pebble snapshot
	// with the clock, so transactionTime and snapshot contents agree.
	// appliedSeq, clock and types are the writer's copy, under mu.
	mu         sync.Mutex
	appliedSeq uint64
	clock      uint64
	types      map[string]TypeCount
	// pub is the state as of the last commit, for the readers that must
	// not wait for a batch being synced (AppliedSeq, Clock, Counts,
	// metrics): stored under mu, loaded without it.
	pub    atomic.Pointer[published]
	closed atomic.Bool // stored under both mu and dbMu

	// notifyMu guards applied, the channel WaitApplied waits on, which
	// each commit closes and replaces. A leaf: nothing else is taken
	// under it.
	notifyMu sync.Mutex
	applied  chan struct{}

	// dbMu keeps Close from closing db under the calls that do not take
	// the commit lock (job records, Dump): they hold it shared, Close
	// exclusively. Pebble panics on a closed DB.
	dbMu sync.RWMutex
	coll *collector // registered with opts.Registerer, if any

	// Apply's batch and scratch memory, under mu.
	wb      *pebble.Batch
	scratch applyScratch
	// refsMarked: m/refs says the reference index is complete (under mu).
	refsMarked bool
}

// published is the index's state after a commit. It is never modified.
type published struct {
	appliedSeq, clock uint64
	counts            []TypeCount // sorted by type
}

// publish makes the writer's state (under mu) the one readers see and
// wakes WaitApplied. countsChanged false reuses the last counts.
func (x *Index) publish(countsChanged bool) {
	p := &published{appliedSeq: x.appliedSeq, clock: x.clock}
	if prev := x.pub.Load(); prev != nil && !countsChanged {
		p.counts = prev.counts
	} else {
		p.counts = sortedCounts(x.types)
	}
	x.pub.Store(p)
	x.notifyMu.Lock()
	close(x.applied)
	x.applied = make(chan struct{})
	x.notifyMu.Unlock()
}

// TypeCount is how many current resources and tombstones a type has.
type TypeCount struct {
	Type       string `json:"type"`
	Resources  int64  `json:"resources"`
	Tombstones int64  `json:"tombstones"`
}

// Exists reports whether dir holds an index (a Pebble store), without
// opening or creating anything. fs nil means the OS filesystem.
func Exists(dir string, fs vfs.FS) (bool, error) {
	if fs == nil {
		fs = vfs.Default
	}
	desc, err := pebble.Peek(dir, fs)
	if errors.Is(err, iofs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return desc.Exists, nil
}

// Open opens (creating it if needed) the index in dir.
func Open(dir string, opts *Options) (*Index, error) {
	opts = opts.clone()
	if err := opts.validate(); err != nil {
		return nil, err
	}
	// Pebble charges its memtables to the block cache: room for the
	// active one keeps CacheSize for blocks in steady state. Memtables
	// queued for flushing during a bulk ingest squeeze blocks out for a
	// while, rather than the cache being sized for that worst case: sized
	// for 4 memtables, an export filled all 320 MB with blocks that a
	// sequential scan never reads twice (peak RSS at 1M resources 812 MB
	// against 111 MB now, BenchmarkExportE2E).
	cache := pebble.NewCache(opts.CacheSize + memTableSize)
	fatal := &fatalState{}
	po := pebbleOptions(opts, cache, fatal)
	readOnly, err := needsReadOnly(opts.FS, dir)
	if err != nil {
		cache.Unref()
		return nil, fmt.Errorf("open index %q: %w", dir, err)
	}
	if readOnly != "" {
		// Pebble would flush the WAL at open and retry that forever on a
		// full disk, and the process would never serve. Read-only, it
		// replays the WAL into memory and writes nothing.
		po.ReadOnly = true
		opts.Logger.Warn("index opened read-only: writes are refused until a restart with more free disk space", "dir", dir, "reason", readOnly)
		fatal.set("opened read-only: " + readOnly + "; free disk space and restart")
	}
	db, err := pebble.Open(dir, po)
	if err == nil && readOnly == "" {
		err = fatal.err() // Fatalf during Open, which then went on
		if err != nil {
			db.Close()
		}
	}
	if err != nil {
		cache.Unref()
		return nil, fmt.Errorf("open index %q: %w", dir, err)
	}
	x := &Index{
		db:      db,
		cache:   cache,
		fatal:   fatal,
		opts:    opts,
		log:     opts.Logger.With("component", "index"),
		syncWO:  pebble.Sync,
		types:   map[string]TypeCount{},
		applied: make(chan struct{}),
	}
	if opts.NoSync {
		x.syncWO = pebble.NoSync
	}
	if err := x.load(); err != nil {
		db.Close()
		cache.Unref()
		return nil, fmt.Errorf("open index %q: %w", dir, err)
	}
	if readOnly == "" {
		if err := x.backfillRefs(); err != nil {
			db.Close()
			cache.Unref()
			return nil, fmt.Errorf("open index %q: %w", dir, err)
		}
	}
	x.publish(true)
	if opts.Registerer != nil {
		coll := newCollector(x)
		if err := opts.Registerer.Register(coll); err != nil {
			db.Close()
			cache.Unref()
			return nil, fmt.Errorf("register index metrics: %w", err)
		}
		x.coll = coll
	}
	return x, nil
}

// load reads the meta keys into memory.
func (x *Index) load() error {
	var err error
	if x.appliedSeq, err = x.getUint64(keyAppliedSeq); err != nil {
		return err
	}
	if x.clock, err = x.getUint64(keyClock); err != nil {
		return err
	}
	v, closer, err := x.db.Get(keyTypes)
	if errors.Is(err, pebble.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	defer closer.Close()
	var counts []TypeCount
	if err := json.Unmarshal(v, &counts); err != nil {
		return fmt.Errorf("decode %s: %w", keyTypes, err)
	}
	for _, c := range counts {
		x.types[c.Type] = c
	}
	return nil
}

func (x *Index) getUint64(k []byte) (uint64, error) {
	v, closer, err := x.db.Get(k)
	if errors.Is(err, pebble.ErrNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	defer closer.Close()
	n, err := decodeUint64(v)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", k, err)
	}
	return n, nil
}

// Close closes the store and unregisters its metrics collector, so the
// same Registerer can be given to a later Open. It is safe to call more
// than once. On a failed store (ErrFailed), Pebble's close error is only
// logged: the failure was reported when it happened.
func (x *Index) Close() error {
	x.dbMu.Lock()
	defer x.dbMu.Unlock()
	x.mu.Lock()
	if x.closed.Load() {
		x.mu.Unlock()
		return nil
	}
	x.closed.Store(true)
	x.notifyMu.Lock()
	close(x.applied) // wakes WaitApplied
	x.applied = make(chan struct{})
	x.notifyMu.Unlock()
	if x.wb != nil {
		x.wb.Close()
		x.wb = nil
	}
	err := x.db.Close()
	if ferr := x.fatal.err(); err != nil && ferr != nil {
		// The failure was logged and reported by Ready when it happened;
		// closing the broken store is expected to fail.
		x.log.Warn("closing the failed store", "error", err, "failure", ferr)
		err = nil
	}
	x.cache.Unref()
	x.mu.Unlock()
	if x.coll != nil {
		x.opts.Registerer.Unregister(x.coll)
	}
	return err
}

// rlockDB holds dbMu shared for a call that uses db without the commit
// lock; it returns ErrClosed (and holds nothing) on a closed Index.
func (x *Index) rlockDB() error {
	x.dbMu.RLock()
	if x.closed.Load() {
		x.dbMu.RUnlock()
		return ErrClosed
	}
	return nil
}

// Ready reports whether the store is open and writable: nil, ErrClosed,
// or ErrFailed with Pebble's message. It backs the readiness probe, so it
// does not take the commit lock: a probe never waits for a batch being
// synced.
func (x *Index) Ready() error {
	if err := x.rlockDB(); err != nil {
		return err
	}
	x.dbMu.RUnlock()
	return x.fatal.err()
}

// AppliedSeq returns the last stream sequence whose batch is committed.
// Like Clock and Counts, it never waits for a batch being committed.
func (x *Index) AppliedSeq() uint64 {
	return x.pub.Load().appliedSeq
}

// Clock returns the last commit time handed out (µs since the epoch), or the
// origin set by SetOrigin when nothing has been applied.
func (x *Index) Clock() uint64 {
	return x.pub.Load().clock
}

// Counts returns the current resource and tombstone counts by type, sorted
// by type.
func (x *Index) Counts() []TypeCount {
	return slices.Clone(x.pub.Load().counts)
}

func sortedCounts(m map[string]TypeCount) []TypeCount {
	out := make([]TypeCount, 0, len(m))
	for _, k := range slices.Sorted(maps.Keys(m)) {
		out = append(out, m[k])
	}
	return out
}

// SetOrigin starts the commit clock at origin (the stream's creation time)
// if nothing has been applied yet. The first commit time is then at least
// origin+1µs, and a snapshot of the empty store has transactionTime origin.
func (x *Index) SetOrigin(origin time.Time) error {
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.closed.Load() {
		return ErrClosed
	}
	if x.clock != 0 || x.appliedSeq != 0 {
		return nil
	}
	us := Micros(origin)
	if err := x.write(func() error { return x.db.Set(keyClock, encodeUint64(us), x.syncWO) }); err != nil {
		return fmt.Errorf("index: set origin: %w", err)
	}
	x.clock = us
	x.publish(false)
	return nil
}

// WaitApplied blocks until a batch covering stream sequence seq is committed
// or ctx is done. It returns ErrClosed if the Index is closed first.
func (x *Index) WaitApplied(ctx context.Context, seq uint64) error {
	for {
		// The channel first: publish stores the state before it closes
		// the channel, so a commit after this load wakes ch.
		x.notifyMu.Lock()
		ch := x.applied
		x.notifyMu.Unlock()
		if x.AppliedSeq() >= seq {
			return nil
		}
		if x.closed.Load() {
			return ErrClosed
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// Change is one event to apply: an upsert or a delete of one resource,
// at a position in the stream.
type Change struct {
	Seq    uint64    // JetStream stream sequence
	Time   time.Time // JetStream timestamp of the message (the stream leader's receive time)
	Type   string    // resourceType; must not contain a NUL byte
	ID     string    // resource id; must not be empty
	Delete bool
	// Body is the resource as published: a compact JSON object (no
	// whitespace between tokens) whose resourceType and id match Type and
	// ID. Ignored for deletes.
	Body []byte
}

// Result reports what Apply did with one Change.
type Result struct {
	Change     *Change
	Skipped    bool   // Seq was already applied (redelivery)
	CommitTime uint64 // µs since the epoch
	Version    uint64
	// Noop reports a change that wrote nothing (its sequence counts as
	// applied): an upsert equal to the stored current version but for
	// meta.versionId and meta.lastUpdated, or, unless
	// Options.CompactedStream, a delete of a resource never stored or
	// deleted already. CommitTime and Version are those of the stored
	// version or tombstone, zero for an unknown resource.
	Noop bool
}

// Apply commits changes, in the order given (stream order), as one synced
// Pebble batch together with the new applied sequence and clock. lastSeq is
// the highest stream sequence the batch covers, including messages that were
// not applicable (dead-lettered), so they are not seen again after a
// restart; it may be 0 to mean the highest Seq among changes.
//
// Changes whose Seq is not above the already applied sequence are skipped:
// a redelivery after a crash between commit and ack is not applied twice.
// Apply must not be called concurrently with itself.
func (x *Index) Apply(ctx context.Context, changes []Change, lastSeq uint64) ([]Result, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.closed.Load() {
		return nil, ErrClosed
	}
	if err := x.fatal.err(); err != nil {
		return nil, err
	}
	applied, clock := x.appliedSeq, x.clock
	var types map[string]TypeCount // copied on first write
	count := func(typ string, dRes, dTomb int64) {
		if types == nil {
			types = maps.Clone(x.types)
		}
		c := types[typ]
		c.Type = typ
		c.Resources += dRes
		c.Tombstones += dTomb
		types[typ] = c
	}
	results := make([]Result, len(changes))
	b := x.batch()
	defer b.Reset()
	sc := &x.scratch
	// The records of the batch's resources: read from the store first,
	// then replaced as the batch changes them (the batch is not indexed,
	// so a second change of the same resource must see the first here).
	if sc.recent == nil {
		sc.recent = map[resourceName]resourceRecord{}
	}
	recent := sc.recent
	defer clear(recent)
	// stored reads the stored versions that no-op candidates are compared
	// with: one iterator for the batch, so that successive reads share the
	// blob blocks it has loaded (a Get loads them again every time).
	var stored *pebble.Iterator
	defer func() {
		if stored != nil {
			stored.Close()
		}
	}()
	if err := x.readRecords(changes, applied, recent); err != nil {
		return nil, err
	}
	kbuf, rkey, vbuf := sc.kbuf[:0], sc.rkey[:0], sc.vbuf[:0]
	// arena holds the stored bytes of the upserts of resources the batch
	// changes again, so that the later change can compare with them.
	arena := sc.arena[:0]
	defer func() {
		sc.kbuf, sc.rkey, sc.vbuf = kbuf[:0], rkey[:0], vbuf[:0]
		if cap(arena) <= maxRetainedBatch {
			sc.arena = arena[:0]
		} else {
			sc.arena = nil
		}
	}()
	var rbuf []byte
	defer clear(sc.groups)
	if sc.lists = sc.lists[:0]; cap(sc.lists) > 1<<16 {
		sc.lists = nil // grown by an unusually large batch
	}
	if sc.raw = sc.raw[:0]; cap(sc.raw) > maxRetainedBatch {
		sc.raw = nil
	}
	for i := range changes {
		c := &changes[i]
		results[i].Change = c
		if c.Seq <= applied {
			results[i].Skipped = true
			continue
		}
		if c.Type == "" || strings.IndexByte(c.Type, 0) >= 0 || c.ID == "" {
			return nil, fmt.Errorf("index: seq %d: invalid type %q or id %q", c.Seq, c.Type, c.ID)
		}
		name := resourceName{c.Type, c.ID}
		old, found := recent[name]
		clock = nextClock(clock, c.Time)
		if c.Delete && !x.opts.CompactedStream && (!found || old.Deleted) {
			// Nothing to delete: no tombstone, so no deletion reported
			// to an incremental export that never saw the resource, and
			// a second delete keeps the first one's lastUpdated.
			applied = c.Seq
			results[i].Noop = true
			if found {
				results[i].CommitTime, results[i].Version = old.CommitTime, old.Version
			}
			continue
		}
		if !c.Delete && found && !old.Deleted {
			// An upsert of what is stored already, but for versionId and
			// lastUpdated, is a no-op: stamped with the stored version and
			// commit time, its bytes equal the stored ones.
			var err error
			if vbuf, err = stamp(vbuf[:0], c.Body, old.Version, old.CommitTime); err != nil {
				return nil, fmt.Errorf("apply seq %d %s/%s: %w", c.Seq, c.Type, c.ID, err)
			}
			same, err := x.sameAsStored(c, old, vbuf, arena, &stored)
			if err != nil {
				return nil, fmt.Errorf("apply seq %d %s/%s: %w", c.Seq, c.Type, c.ID, err)
			}
			if same {
				applied = c.Seq
				results[i].Noop = true
				results[i].CommitTime, results[i].Version = old.CommitTime, old.Version
				continue
			}
		}
		// versionId is the stream sequence of the change: a function of
		// the stream, like the commit clock.
		rec := resourceRecord{CommitTime: clock, Version: c.Seq, Deleted: c.Delete, HasSum: true}
		if found {
			kbuf = changeKey(kbuf[:0], c.Type, old.CommitTime, c.ID)
			if err := b.Delete(kbuf, nil); err != nil {
				return nil, err
			}
			if old.Deleted {
				count(c.Type, 0, -1)
			} else {
				count(c.Type, -1, 0)
			}
		}
		kbuf = changeKey(kbuf[:0], c.Type, clock, c.ID)
		if c.Delete {
			// A tombstone is an empty value. For a resource never stored
			// or deleted already, only with Options.CompactedStream.
			if err := b.Set(kbuf, nil, nil); err != nil {
				return nil, err
			}
			count(c.Type, 0, 1)
		} else {
			// Only a resource the batch changes again needs its stored
			// bytes kept; the others reuse one small, cache-hot buffer.
			_, again := sc.repeated[name]
			buf, start := vbuf[:0], 0
			if again {
				buf, start = arena, len(arena)
			}
			var err error
			if buf, err = stamp(buf, c.Body, rec.Version, clock); err != nil {
				return nil, fmt.Errorf("apply seq %d %s/%s: %w", c.Seq, c.Type, c.ID, err)
			}
			stored := buf[start:]
			if err := b.Set(kbuf, stored, nil); err != nil {
				return nil, err
			}
			rec.Sum = crc32.Checksum(stored, crcTable)
			if again {
				arena = buf
				rec.bodyAt, rec.bodyEnd = start, len(arena)
			} else {
				vbuf = buf
			}
			count(c.Type, 1, 0)
		}
		if x.opts.NoReferenceIndex {
		} else if err := x.applyRefs(b, c, found, &old, &rec, clock); err != nil {
			return nil, fmt.Errorf("apply seq %d %s/%s: %w", c.Seq, c.Type, c.ID, err)
		}
		rkey = resourceKey(rkey[:0], c.Type, c.ID)
		rbuf = rec.encode(rbuf[:0])
		if err := b.Set(rkey, rbuf, nil); err != nil {
			return nil, err
		}
		recent[name] = rec
		applied = c.Seq
		results[i].CommitTime, results[i].Version = clock, rec.Version
	}
	applied = max(applied, lastSeq)
	if applied == x.appliedSeq {
		return results, nil // nothing new: a fully redelivered batch
	}
	if err := b.Set(keyAppliedSeq, encodeUint64(applied), nil); err != nil {
		return nil, err
	}
	if err := b.Set(keyClock, encodeUint64(clock), nil); err != nil {
		return nil, err
	}
	if !x.refsMarked && !x.opts.NoReferenceIndex {
		// The first batch of a new index: it has the reference index
		// from the start (see backfillRefs).
		if err := b.Set(keyRefs, encodeUint64(refsVersion), nil); err != nil {
			return nil, err
		}
	}
	if types != nil {
		v, err := json.Marshal(sortedCounts(types))
		if err != nil {
			return nil, err
		}
		if err := b.Set(keyTypes, v, nil); err != nil {
			return nil, err
		}
	}
	if err := x.write(func() error { return b.Commit(x.syncWO) }); err != nil {
		x.dropBatch()
		return nil, fmt.Errorf("index: commit batch up to seq %d: %w", applied, err)
	}
	x.appliedSeq, x.clock = applied, clock
	x.refsMarked = true
	if types != nil {
		x.types = types
	}
	x.publish(types != nil)
	return results, nil
}

// batch returns the Pebble batch Apply fills: one kept between calls, so
// that its buffer, once grown to the size of a batch, is not allocated
// and grown again for every batch.
func (x *Index) batch() *pebble.Batch {
	if x.wb == nil {
		x.wb = x.db.NewBatch(pebble.WithMaxRetainedSizeBytes(maxRetainedBatch))
	}
	return x.wb
}

// dropBatch forgets the kept batch after a failed commit: Pebble does not
// reuse such a batch either.
func (x *Index) dropBatch() {
	x.wb = nil
}

// resourceName is a resource's type and id.
type resourceName struct{ typ, id string }

// applyScratch is memory Apply keeps between calls (it is the single
// writer, under the commit lock).
type applyScratch struct {
	recent           map[resourceName]resourceRecord
	names            []resourceName
	kbuf, rkey, vbuf []byte
	// arena holds the stored bytes of the batch's upserts of resources in
	// repeated: those the batch changes more than once (see readRecords).
	arena    []byte
	repeated map[resourceName]struct{}
	// refs and rkey2 are applyRefs' buffers; groups holds the member
	// entries of the Groups the batch changed (see groupState).
	refs   []string
	refKey []byte
	groups map[string]map[memberName]memberValue
	// ids interns patient ids across batches (compartmentOfIn); lists
	// holds the batch's records' patient lists (reset at each Apply:
	// records do not outlive their batch).
	ids   map[string]string
	lists []string
	// raw holds the batch's records' undecoded reference lists
	// (decodeRecordFixed).
	raw []byte
}

// crcTable is CRC-32C (Castagnoli), computed in hardware on amd64 and arm64.
var crcTable = crc32.MakeTable(crc32.Castagnoli)

// sameAsStored reports whether stamped (an upsert stamped with the stored
// version and commit time) equals the stored bytes of the resource whose
// record is old: in arena if this batch wrote them, else in the store,
// read with *it (opened on first use). A differing checksum answers
// without reading them.
func (x *Index) sameAsStored(c *Change, old resourceRecord, stamped, arena []byte, it **pebble.Iterator) (bool, error) {
	if old.HasSum && crc32.Checksum(stamped, crcTable) != old.Sum {
		return false, nil
	}
	if old.bodyEnd > 0 {
		return bytes.Equal(arena[old.bodyAt:old.bodyEnd], stamped), nil
	}
	if *it == nil {
		var err error
		if *it, err = x.db.NewIter(&pebble.IterOptions{
			LowerBound: []byte(prefixChange),
			UpperBound: []byte("c0"), // '0' follows '/'
		}); err != nil {
			return false, err
		}
	}
	k := changeKey(x.scratch.kbuf[:0], c.Type, old.CommitTime, c.ID)
	x.scratch.kbuf = k[:0]
	if !(*it).SeekGE(k) || !bytes.Equal((*it).Key(), k) {
		// The r/ record says the entry is there.
		return false, errors.Join(fmt.Errorf("read stored version: %s/%s not found", c.Type, c.ID), (*it).Error())
	}
	v, err := (*it).ValueAndErr()
	if err != nil {
		return false, fmt.Errorf("read stored version: %w", err)
	}
	return bytes.Equal(v, stamped), nil
}

// readRecords reads into recent the r/ records of the resources that
// changes above applied touch, and notes in scratch.repeated those that
// more than one of them touches. It reads them in key order with one
// iterator: each seek moves forward from the last, through store nodes
// the last one brought into the CPU cache, which costs much less than a
// Get per change in stream order.
func (x *Index) readRecords(changes []Change, applied uint64, recent map[resourceName]resourceRecord) error {
	names := x.scratch.names[:0]
	defer func() {
		clear(names)
		x.scratch.names = names[:0]
	}()
	for i := range changes {
		if c := &changes[i]; c.Seq > applied {
			names = append(names, resourceName{c.Type, c.ID})
		}
	}
	if len(names) == 0 {
		return nil
	}
	// The order of resourceKey: type, then id (types hold no NUL byte;
	// Apply rejects a change whose type does before using its record).
	slices.SortFunc(names, func(a, b resourceName) int {
		if c := strings.Compare(a.typ, b.typ); c != 0 {
			return c
		}
		return strings.Compare(a.id, b.id)
	})
	if x.scratch.repeated == nil {
		x.scratch.repeated = map[resourceName]struct{}{}
	}
	clear(x.scratch.repeated)
	for i := 1; i < len(names); i++ {
		if names[i] == names[i-1] {
			x.scratch.repeated[names[i]] = struct{}{}
		}
	}
	names = slices.Compact(names)
	it, err := x.db.NewIter(&pebble.IterOptions{
		LowerBound: []byte(prefixResource),
		UpperBound: []byte("r0"), // '0' follows '/'
	})
	if err != nil {
		return err
	}
	rkey := x.scratch.rkey[:0]
	err = func() error {
		for _, n := range names {
			rkey = resourceKey(rkey[:0], n.typ, n.id)
			if !it.SeekPrefixGE(rkey) || !bytes.Equal(it.Key(), rkey) {
				if err := it.Error(); err != nil {
					return err
				}
				continue
			}
			v, err := it.ValueAndErr()
			if err != nil {
				return err
			}
			rec, err := decodeRecordFixed(v, &x.scratch.raw)
			if err != nil {
				return err
			}
			recent[n] = rec
		}
		return nil
	}()
	x.scratch.rkey = rkey[:0]
	return errors.Join(err, it.Close())
}

// Snapshot is a consistent read view of the index paired with the commit
// clock at the moment it was taken. The caller MUST call Close as soon as it
// is done: an open snapshot keeps old versions alive in Pebble.
type Snapshot struct {
	snap *pebble.Snapshot
	// TransactionTime is the commit time of the last change in the view
	// (the clock origin when nothing is applied): every resource in it has
	// lastUpdated <= TransactionTime, and every later change a greater one.
	TransactionTime uint64
	// AppliedSeq is the last stream sequence in the view.
	AppliedSeq uint64
	counts     []TypeCount
}

// Snapshot returns a read view and its transactionTime, taken under the
// commit lock.
func (x *Index) Snapshot() (*Snapshot, error) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.closed.Load() {
		return nil, ErrClosed
	}
	return &Snapshot{
		snap:            x.db.NewSnapshot(),
		TransactionTime: x.clock,
		AppliedSeq:      x.appliedSeq,
		counts:          slices.Clone(x.pub.Load().counts), // published under mu: agrees with the clock
	}, nil
}

// Counts returns the resource and tombstone counts by type in this view.
func (s *Snapshot) Counts() []TypeCount { return s.counts }

// Close releases the snapshot.
func (s *Snapshot) Close() error { return s.snap.Close() }

// Entry is one resource (or tombstone) returned by a scan.
type Entry struct {
	Type       string
	ID         string
	CommitTime uint64 // µs since the epoch; the resource's meta.lastUpdated
	Deleted    bool
	// Resource is the stored NDJSON-ready bytes (nil for a tombstone). It is
	// only valid during the callback; copy it to keep it.
	Resource []byte
	// Shared (ScanPatient only) says the resource is in more than one
	// patient's compartment.
	Shared bool
}

// Unbounded is the until value of a scan without an upper time bound.
const Unbounded = math.MaxUint64

// Scan calls fn, in commit-time order, for each current resource and
// tombstone of type typ with since < CommitTime <= until. A non-nil error
// from fn stops the scan and is returned, and so does ctx's error (checked
// before the scan and every 1024 entries). Tombstones are passed to fn too;
// full exports skip them.
func (s *Snapshot) Scan(ctx context.Context, typ string, since, until uint64, fn func(Entry) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if until <= since {
		return nil
	}
	upper := typeUpperBound(typ)
	if until != Unbounded {
		upper = changeBound(typ, until+1)
	}
	it, err := s.snap.NewIterWithContext(ctx, &pebble.IterOptions{
		LowerBound: changeBound(typ, since+1),
		UpperBound: upper,
	})
	if err != nil {
		return err
	}
	defer it.Close()
	n := 0
	for valid := it.First(); valid; valid = it.Next() {
		if n++; n%1024 == 0 {
			if err := ctx.Err(); err != nil {
				return err
			}
		}
		t, ts, id, err := parseChangeKey(it.Key())
		if err != nil {
			return fmt.Errorf("index: scan %s: %w", typ, err)
		}
		v, err := it.ValueAndErr()
		if err != nil {
			return err
		}
		e := Entry{Type: t, ID: id, CommitTime: ts, Deleted: len(v) == 0}
		if !e.Deleted {
			e.Resource = v
		}
		if err := fn(e); err != nil {
			return err
		}
	}
	return it.Error()
}

// PutJob stores (or replaces) a job record, durably.
func (x *Index) PutJob(id string, record []byte) error {
	if id == "" {
		return errors.New("index: empty job id")
	}
	if err := x.rlockDB(); err != nil {
		return err
	}
	defer x.dbMu.RUnlock()
	return x.write(func() error { return x.db.Set(jobKey(id), record, pebble.Sync) })
}

// GetJob returns a copy of the job record, or ErrNotFound.
func (x *Index) GetJob(id string) ([]byte, error) {
	if err := x.rlockDB(); err != nil {
		return nil, err
	}
	defer x.dbMu.RUnlock()
	v, closer, err := x.db.Get(jobKey(id))
	if errors.Is(err, pebble.ErrNotFound) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, err
	}
	defer closer.Close()
	return bytes.Clone(v), nil
}

// DeleteJob removes a job record; removing a missing one is not an error.
func (x *Index) DeleteJob(id string) error {
	if err := x.rlockDB(); err != nil {
		return err
	}
	defer x.dbMu.RUnlock()
	return x.write(func() error { return x.db.Delete(jobKey(id), pebble.Sync) })
}

// Jobs calls fn for every job record in id order.
func (x *Index) Jobs(fn func(id string, record []byte) error) error {
	if err := x.rlockDB(); err != nil {
		return err
	}
	defer x.dbMu.RUnlock()
	it, err := x.db.NewIter(&pebble.IterOptions{
		LowerBound: []byte(prefixJob),
		UpperBound: []byte("j0"), // '0' follows '/'
	})
	if err != nil {
		return err
	}
	defer it.Close()
	for valid := it.First(); valid; valid = it.Next() {
		v, err := it.ValueAndErr()
		if err != nil {
			return err
		}
		if err := fn(string(it.Key()[len(prefixJob):]), v); err != nil {
			return err
		}
	}
	return it.Error()
}

// Dump calls fn for every key and value of the resource state (c/, g/,
// m/, p/, r/ and t/ keys; not jobs) in key order. Tests compare two indexes with it, e.g.
// a rebuilt one with the live one.
func (x *Index) Dump(fn func(key, value []byte) error) error {
	if err := x.rlockDB(); err != nil {
		return err
	}
	defer x.dbMu.RUnlock()
	it, err := x.db.NewIter(&pebble.IterOptions{
		LowerBound: []byte(prefixChange),
		UpperBound: []byte("u"), // 'u' follows 't': c/ through t/, j/ included and skipped below
	})
	if err != nil {
		return err
	}
	defer it.Close()
	for valid := it.First(); valid; valid = it.Next() {
		if bytes.HasPrefix(it.Key(), []byte(prefixJob)) {
			continue
		}
		v, err := it.ValueAndErr()
		if err != nil {
			return err
		}
		if err := fn(it.Key(), v); err != nil {
			return err
		}
	}
	return it.Error()
}

// write runs a Pebble write unless the store has failed, and reports a
// failure Pebble signalled during it: after Logger.Fatalf, Pebble's
// commit returns nil although the batch is not durable.
func (x *Index) write(fn func() error) error {
	if err := x.fatal.err(); err != nil {
		return err
	}
	if err := fn(); err != nil {
		return err
	}
	return x.fatal.err()
}

// openMargin is the free space Open wants besides room to flush the WAL:
// a new MANIFEST, OPTIONS file and WAL.
const openMargin = 4 << 20

// needsReadOnly reports why the store in dir must open read-only (empty:
// it need not): opening read-write flushes the WALs left by the last run,
// which needs up to about their size in free space (the sstable and blob
// files hold the same keys and values, compressed), and Pebble retries a
// failed flush at open forever. Every .log file counts, also the ones
// Pebble keeps for reuse, so the estimate errs on the safe side. A
// filesystem that does not report its free space, or a store that does
// not exist yet, opens read-write.
func needsReadOnly(fs vfs.FS, dir string) (string, error) {
	names, err := fs.List(dir)
	if errors.Is(err, iofs.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	var wal int64
	for _, n := range names {
		if !strings.HasSuffix(n, ".log") {
			continue
		}
		fi, err := fs.Stat(fs.PathJoin(dir, n))
		if err != nil {
			return "", err
		}
		wal += fi.Size()
	}
	du, err := fs.GetDiskUsage(dir)
	if err != nil {
		return "", nil // unknown: try
	}
	need := uint64(wal + openMargin)
	if du.AvailBytes >= need {
		return "", nil
	}
	return fmt.Sprintf("the disk has %d bytes free, opening read-write needs about %d to flush %d bytes of write-ahead log", du.AvailBytes, need, wal), nil
}

// fatalState records the first Logger.Fatalf of a Pebble store.
type fatalState struct {
	msg atomic.Pointer[string]
}

// set records msg unless a message is recorded already.
func (f *fatalState) set(msg string) bool { return f.msg.CompareAndSwap(nil, &msg) }

// err returns nil, or ErrFailed with the first fatal message.
func (f *fatalState) err() error {
	if m := f.msg.Load(); m != nil {
		return fmt.Errorf("%w: %s", ErrFailed, *m)
	}
	return nil
}

// pebbleLogger adapts slog to pebble.Logger.
type pebbleLogger struct {
	l     *slog.Logger
	fatal *fatalState
}

func (p pebbleLogger) Infof(format string, args ...any) {
	p.l.Debug(fmt.Sprintf(format, args...))
}
func (p pebbleLogger) Errorf(format string, args ...any) {
	p.l.Error(fmt.Sprintf(format, args...))
}

// Fatalf does not exit or panic, which would take the HTTP API (and an
// embedded NATS server) down with the store: it logs, and marks the store
// failed so that Ready reports it and writes are refused. Pebble calls it
// on errors it cannot go on from (a WAL or MANIFEST write failing, e.g.
// on a full disk) and then returns as if the write had succeeded, so
// every write checks the mark after Pebble returns (see write).
func (p pebbleLogger) Fatalf(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	if p.fatal.set(msg) {
		p.l.Error("index store failed: writes stop until a restart", "error", msg)
		return
	}
	p.l.Error(msg)
}
