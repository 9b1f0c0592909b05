package indextest

import (
	"strings"
	"sync"
	"sync/atomic"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/cockroachdb/pebble/v2/vfs/errorfs"
)

// WALStall makes an index's commits hang in their write-ahead-log fsync,
// as on a stalled disk, from Arm until Release: for tests that check
// what must go on answering while ingest's commit cannot finish.
type WALStall struct {
	armed       atomic.Bool
	enterOnce   sync.Once
	releaseOnce sync.Once
	entered     chan struct{}
	release     chan struct{}
}

// NewWALStall returns a stall, not yet armed.
func NewWALStall() *WALStall {
	return &WALStall{entered: make(chan struct{}), release: make(chan struct{})}
}

// FS wraps fs: once the stall is armed, every fsync of a WAL (".log")
// file blocks until Release. Pass it as index.Options.FS.
func (s *WALStall) FS(fs vfs.FS) vfs.FS {
	return errorfs.Wrap(fs, errorfs.InjectorFunc(func(op errorfs.Op) error {
		if s.armed.Load() && strings.HasSuffix(op.Path, ".log") &&
			(op.Kind == errorfs.OpFileSync || op.Kind == errorfs.OpFileSyncData) {
			s.enterOnce.Do(func() { close(s.entered) })
			<-s.release
		}
		return nil
	}))
}

// Arm makes the next WAL fsyncs hang.
func (s *WALStall) Arm() { s.armed.Store(true) }

// Entered is closed when the first armed fsync hangs.
func (s *WALStall) Entered() <-chan struct{} { return s.entered }

// Release lets every hanging and later fsync through. It may be called
// more than once.
func (s *WALStall) Release() { s.releaseOnce.Do(func() { close(s.release) }) }
