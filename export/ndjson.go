package export

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
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

// writeBufferSize is the bufio buffer of each open output file.
const writeBufferSize = 256 << 10

// fileSeq writes NDJSON lines into a sequence of files <base>-1.ndjson,
// <base>-2.ndjson, …, starting a new file before a line that would exceed
// maxCount lines or maxBytes bytes (a single longer line gets a file of its
// own). A file is created at its first line, so no file is empty, written
// to <name>.tmp and renamed to <name> once it is complete and synced.
// Memory is the one bufio buffer, whatever the export size.
type fileSeq struct {
	dir      string
	base     string
	typ      string // FileInfo.Type
	maxCount int64
	maxBytes int64
	bw       *bufio.Writer // reset onto each file
	onFile   func(FileInfo)

	n     int
	f     *os.File
	name  string
	count int64
	size  int64
}

// write appends line (without its '\n') to the current file.
func (s *fileSeq) write(line []byte) error {
	if s.f != nil && (s.count >= s.maxCount || s.size+int64(len(line))+1 > s.maxBytes) {
		if err := s.finish(); err != nil {
			return err
		}
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
	f, err := os.OpenFile(filepath.Join(s.dir, s.name+tmpExt), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o640)
	if err != nil {
		return err
	}
	s.f, s.count, s.size = f, 0, 0
	s.bw.Reset(f)
	return nil
}

func (s *fileSeq) writeErr(err error) error {
	return fmt.Errorf("write %s: %w", s.name, err)
}

// finish completes the current file, if any: flush, fsync, close, rename.
func (s *fileSeq) finish() error {
	if s.f == nil {
		return nil
	}
	f := s.f
	s.f = nil
	if err := s.bw.Flush(); err != nil {
		f.Close()
		return s.writeErr(err)
	}
	s.bw.Reset(nil)
	if err := f.Sync(); err != nil {
		f.Close()
		return s.writeErr(err)
	}
	if err := f.Close(); err != nil {
		return s.writeErr(err)
	}
	tmp := filepath.Join(s.dir, s.name+tmpExt)
	if err := os.Rename(tmp, filepath.Join(s.dir, s.name)); err != nil {
		return err
	}
	s.onFile(FileInfo{Type: s.typ, Name: s.name, Count: s.count, Bytes: s.size})
	return nil
}

// abort closes the current file without completing it; the caller removes
// the job directory.
func (s *fileSeq) abort() {
	if s.f != nil {
		s.bw.Reset(nil)
		s.f.Close()
		s.f = nil
	}
}
