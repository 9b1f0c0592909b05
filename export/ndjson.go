package export

import (
	"bufio"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"io"
	"strconv"

	"golang.org/x/sync/errgroup"
)

// Output file names. A resource type starts with an upper-case letter, so
// the error files cannot collide with a type's files, and a type's deleted
// files cannot collide with its output files (n is digits).
//
//	<Type>-<n>.ndjson          resources of Type, n = 1, 2, …
//	<Type>-deleted-<n>.ndjson  deletions of Type (one transaction Bundle a line)
//	error-<n>.ndjson           OperationOutcomes
const (
	ndjsonExt  = ".ndjson"
	tmpExt     = ".tmp"
	deletedTag = "-deleted"
	errorBase  = "error"
)

// writeBufferSize is the bufio buffer of each open output file;
// errorBufferSize that of the error file, allocated at its first line.
const (
	writeBufferSize = 256 << 10
	errorBufferSize = 16 << 10
)

// diskCheckEvery is how many bytes a job writes between two checks of the
// free space (one statfs each).
const diskCheckEvery = 1 << 20

// errDiskReserve is the cause of a job stopped by its diskGuard.
var errDiskReserve = errors.New("export: free disk space would drop below the export reserve")

// diskLowMessage is the Status.Error of such a job.
const diskLowMessage = "the server is low on disk space: the export was stopped before it could fill the disk; try again later"

// diskGuard keeps a job's writes from taking the free space under the
// export directory below Config.ExportReserveBytes (the room ingest needs
// to keep committing): the free space is checked when a file opens and
// before the write that would take the bytes written since the last check
// past diskCheckEvery, and the job fails (errDiskReserve, a message fit for
// the client) when the free space, less margin and the line about to be
// written, is below the reserve. margin is what may reach the disk
// before the next check without being seen now: up to diskCheckEvery more
// bytes and the unflushed buffers, for every worker writing at once. One
// guard is shared by a job's file sequences; it is not safe for concurrent
// use.
type diskGuard struct {
	dir     string
	reserve int64 // negative: no check
	margin  int64
	free    func(dir string) (int64, bool, error)
	since   int64 // bytes written since the last check
}

// before accounts for n bytes about to be written, checking the free space
// first when opening a file or past diskCheckEvery. A nil guard checks
// nothing.
func (g *diskGuard) before(n int64, opening bool) error {
	if g == nil || g.reserve < 0 {
		return nil
	}
	if !opening && g.since+n <= diskCheckEvery {
		g.since += n
		return nil
	}
	free, ok, err := g.free(g.dir)
	if err != nil {
		return fmt.Errorf("check free disk space: %w", err)
	}
	if ok && free-g.margin-n < g.reserve {
		return &clientError{msg: diskLowMessage, err: fmt.Errorf("%w: %d bytes free, %d about to be written, reserve %d",
			errDiskReserve, free, g.margin+n, g.reserve)}
	}
	g.since = n
	return nil
}

// hashingWriter writes to w and hashes what it writes, so a file's digest
// is computed while it is written, in buffer-sized chunks, without a
// second pass.
type hashingWriter struct {
	w io.Writer
	h hash.Hash
}

func (w *hashingWriter) Write(p []byte) (int, error) {
	n, err := w.w.Write(p)
	w.h.Write(p[:n])
	return n, err
}

// maxSyncing is how many completed files a job commits (fsync, close,
// rename) at once in the background, on an errgroup.Group limited to it,
// so the disk writes a finished file while the scan fills the next one,
// and the many small files of a _since export are synced together (inline
// fsyncs made kick-off to manifest of 115k resources take 417 ms instead
// of 203 ms in BenchmarkExportE2E). The group's Wait returns the first
// error; a job's files count as written only after it.
const maxSyncing = 16

// fileSeq writes NDJSON lines into a sequence of files <base>-1.ndjson,
// <base>-2.ndjson, …, starting a new file before a line that would exceed
// maxCount lines or maxBytes bytes (a single longer line gets a file of its
// own). A file is created at its first line, so no file is empty, and
// committed in files once it is complete; the commit runs on sy, so a file
// is only complete once sy.Wait returned nil. Memory is the one bufio buffer, whatever the export size
// (bw nil: one of errorBufferSize is made at the first line). Each file's
// SHA-256 is computed as it is written (FileInfo.SHA256), and guard checks
// the free space (nil: no check).
type fileSeq struct {
	files    FileStore
	job      string
	base     string
	typ      string // FileInfo.Type
	maxCount int64
	maxBytes int64
	bw       *bufio.Writer // reset onto each file
	sy       *errgroup.Group
	guard    *diskGuard
	onFile   func(FileInfo)

	n     int
	f     FileWriter
	hw    hashingWriter
	name  string
	count int64
	size  int64
	// inBlock holds the file open: between startBlock and endBlock no new
	// file is started, so a block of lines stays in one file.
	inBlock bool
}

// startBlock begins a block of lines that stays in one file: a file that
// is full already is completed first.
func (s *fileSeq) startBlock() error {
	if s.f != nil && (s.count >= s.maxCount || s.size >= s.maxBytes) {
		if err := s.finish(); err != nil {
			return err
		}
	}
	s.inBlock = true
	return nil
}

// endBlock ends the block startBlock began.
func (s *fileSeq) endBlock() { s.inBlock = false }

// write appends line (without its '\n') to the current file.
func (s *fileSeq) write(line []byte) error {
	n := int64(len(line)) + 1
	if s.f != nil && !s.inBlock && (s.count >= s.maxCount || s.size+n > s.maxBytes) {
		if err := s.finish(); err != nil {
			return err
		}
	}
	if err := s.guard.before(n, s.f == nil); err != nil {
		return err
	}
	if s.f == nil {
		if err := s.open(); err != nil {
			return err
		}
	}
	if _, err := s.bw.Write(line); err != nil {
		return s.writeErr(err)
	}
	if err := s.bw.WriteByte('\n'); err != nil {
		return s.writeErr(err)
	}
	s.count++
	s.size += int64(len(line)) + 1
	return nil
}

func (s *fileSeq) open() error {
	s.n++
	s.name = s.base + "-" + strconv.Itoa(s.n) + ndjsonExt
	f, err := s.files.Create(s.job, s.name)
	if err != nil {
		return err
	}
	s.f, s.count, s.size = f, 0, 0
	if s.hw.h == nil {
		s.hw.h = sha256.New()
	}
	s.hw.w = f
	s.hw.h.Reset()
	if s.bw == nil {
		s.bw = bufio.NewWriterSize(nil, errorBufferSize)
	}
	s.bw.Reset(&s.hw)
	return nil
}

func (s *fileSeq) writeErr(err error) error {
	return fmt.Errorf("write %s: %w", s.name, err)
}

// finish completes the current file, if any: flush here, then commit on
// s.sy. The file is reported to onFile right away, in order; it is only
// complete once s.sy.Wait returned nil.
func (s *fileSeq) finish() error {
	if s.f == nil {
		return nil
	}
	f := s.f
	s.f = nil
	if err := s.bw.Flush(); err != nil {
		f.Abort()
		return s.writeErr(err)
	}
	s.bw.Reset(nil)
	s.hw.w = nil
	var sum Digest
	s.hw.h.Sum(sum[:0])
	s.sy.Go(f.Commit)
	s.onFile(FileInfo{Type: s.typ, Name: s.name, Count: s.count, Bytes: s.size, SHA256: sum})
	return nil
}

// abort discards the current file without completing it; the caller
// removes the job's files.
func (s *fileSeq) abort() {
	if s.f != nil {
		s.bw.Reset(nil)
		s.hw.w = nil
		s.f.Abort()
		s.f = nil
	}
}
