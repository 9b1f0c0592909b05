package index

import (
	"errors"
	"log/slog"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/prometheus/client_golang/prometheus"
)

// Defaults for Options.
const (
	DefaultCacheSize = 64 << 20
)

// Options configures Open. The zero value is usable; a nil *Options is too.
type Options struct {
	// FS is the filesystem Pebble writes to; nil means the OS filesystem.
	// Tests use vfs.NewMem().
	FS vfs.FS
	// Logger receives Pebble's and the index's log lines; nil discards them.
	Logger *slog.Logger
	// Registerer, if set, gets the index's collector (resources by type,
	// tombstones, applied sequence, Pebble internals).
	Registerer prometheus.Registerer
	// CacheSize is Pebble's block cache in bytes (DefaultCacheSize), not
	// counting the memtables, which Pebble accounts in the same cache and
	// Open adds room for.
	CacheSize int64
	// NoSync commits batches without fsync. Only for benchmarks that
	// measure what the fsync costs; never in production.
	NoSync bool
	// CompactedStream says the stream keeps fewer changes per resource
	// than it received (a subject limit of 1 keeps only the last). A
	// rebuild from such a stream cannot tell a delete of a resource that
	// never existed from one whose upserts compaction removed, nor a
	// second delete from a first. So with CompactedStream every delete
	// writes a tombstone at its own commit time, as a rebuild would, and
	// the live index and a rebuild agree byte for byte; without it (the
	// stream keeps every change) a delete of a resource never stored or
	// already deleted is a no-op.
	CompactedStream bool

	// NoReferenceIndex leaves out the reference index (the p/, g/ and t/
	// keys): Patient- and Group-level export and includeAssociatedData
	// then find nothing. It exists to measure what the index costs
	// (ingest's and index's benchmarks); bulkstream serve never sets it.
	// Opening the index later without it builds the keys (backfillRefs).
	NoReferenceIndex bool
}

// clone returns a copy with defaults filled in.
func (o *Options) clone() *Options {
	var c Options
	if o != nil {
		c = *o
	}
	if c.FS == nil {
		c.FS = vfs.Default
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.CacheSize == 0 {
		c.CacheSize = DefaultCacheSize
	}
	return &c
}

func (o *Options) validate() error {
	if o.CacheSize < 0 {
		return errors.New("index: CacheSize must not be negative")
	}
	return nil
}
