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
