package export

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/bulkstream/bulkstream/internal/atomicfile"
)

// FileStore keeps the export files of jobs: every read, write and removal
// of an export file goes through it. job is a job id and name a file name
// export generates (see "Files" in the package doc), never a client's
// string. [NewDirStore] keeps them in a local directory, the default.
//
// A file is written as a stream (FileWriter.Write, in chunks of at most
// the scan's buffer, except a single line longer than that) and is
// invisible until committed; nothing asks a store to hold a file in
// memory or in one piece. A store with a cap on an object's size (a
// JetStream Object Store keeps parts of at most 64 MiB, while a file may
// reach Config.FileMaxBytes) cuts the stream into parts at any byte and
// reads them back as one file, its Seek mapping an offset to a part.
//
// The methods may be called from several goroutines at once, for
// different files.
type FileStore interface {
	// NewJob readies an empty set of files for job, removing whatever an
	// earlier run of it left.
	NewJob(job string) error
	// Create starts writing file name of job (after NewJob). Its bytes
	// are visible to Stat and Open once committed, not before.
	Create(job, name string) (FileWriter, error)
	// SyncJob makes the commits of job's files durable (for the local
	// store, an fsync of the job's directory). The files are only
	// complete, and listed in a manifest, once it returned nil.
	SyncJob(job string) error
	// Stat returns the stamp of committed file name of job. A missing
	// file is an error satisfying errors.Is(err, fs.ErrNotExist).
	Stat(job, name string) (FileStamp, error)
	// Open opens committed file name of job for reading. A missing file
	// is an error satisfying errors.Is(err, fs.ErrNotExist). Removing the
	// job does not cut short a reader already open.
	Open(job, name string) (StoredFile, error)
	// RemoveJob removes every file of job, committed or not; nil when
	// there is none.
	RemoveJob(job string) error
	// Jobs lists the jobs that have files, for the sweep of files that
	// belong to no job. Entries may be any name (the caller keeps only
	// job ids).
	Jobs() ([]string, error)
}

// FileWriter is a file being written. Exactly one of Commit and Abort
// ends it.
type FileWriter interface {
	io.Writer
	// Commit makes the bytes written durable and visible under the
	// file's name, at once: for the local store, fsync, close and rename
	// from the temporary name (the directory's fsync is SyncJob's).
	Commit() error
	// Abort discards the bytes written.
	Abort() error
}

// StoredFile is a committed file open for reading.
type StoredFile interface {
	io.ReadSeekCloser
	// Stamp is the file's state now, without reading its bytes.
	Stamp() (FileStamp, error)
}

// NewDirStore returns the FileStore of a local directory: job's files
// are in dir/<job>/, each written under <name>.tmp, then fsynced, closed
// and renamed to <name> on Commit, the directory fsynced by SyncJob.
func NewDirStore(dir string) FileStore { return dirStore{dir: dir} }

type dirStore struct{ dir string }

var errBadJobName = errors.New("export: a job's file set is named by a single path element")

// jobDir is where job's files are.
func (d dirStore) jobDir(job string) (string, error) {
	if job == "" || job == "." || job == ".." || filepath.Base(job) != job {
		return "", fmt.Errorf("%w: %q", errBadJobName, job)
	}
	return filepath.Join(d.dir, job), nil
}

func (d dirStore) path(job, name string) (string, error) {
	jd, err := d.jobDir(job)
	if err != nil {
		return "", err
	}
	if name == "" || filepath.Base(name) != name || name == "." || name == ".." {
		return "", fmt.Errorf("export: file name %q is not a single path element", name)
	}
	return filepath.Join(jd, name), nil
}

func (d dirStore) NewJob(job string) error {
	jd, err := d.jobDir(job)
	if err != nil {
		return err
	}
	if err := os.RemoveAll(jd); err != nil {
		return err
	}
	return os.MkdirAll(jd, 0o750)
}

func (d dirStore) Create(job, name string) (FileWriter, error) {
	p, err := d.path(job, name)
	if err != nil {
		return nil, err
	}
	f, err := os.OpenFile(p+tmpExt, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o640)
	if err != nil {
		return nil, err
	}
	return &dirWriter{f: f, name: name, path: p}, nil
}

func (d dirStore) SyncJob(job string) error {
	jd, err := d.jobDir(job)
	if err != nil {
		return err
	}
	return atomicfile.SyncDir(jd)
}

func (d dirStore) Stat(job, name string) (FileStamp, error) {
	p, err := d.path(job, name)
	if err != nil {
		return FileStamp{}, err
	}
	at := time.Now()
	fi, err := os.Stat(p)
	if err != nil {
		return FileStamp{}, err
	}
	return stampOf(fi, at), nil
}

func (d dirStore) Open(job, name string) (StoredFile, error) {
	p, err := d.path(job, name)
	if err != nil {
		return nil, err
	}
	f, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	return dirFile{f}, nil
}

func (d dirStore) RemoveJob(job string) error {
	jd, err := d.jobDir(job)
	if err != nil {
		return err
	}
	return os.RemoveAll(jd)
}

func (d dirStore) Jobs() ([]string, error) {
	ents, err := os.ReadDir(d.dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var jobs []string
	for _, e := range ents {
		if e.IsDir() {
			jobs = append(jobs, e.Name())
		}
	}
	return jobs, nil
}

// dirWriter is a local file being written under <name>.tmp.
type dirWriter struct {
	f    *os.File
	name string // for errors
	path string // the final name
}

func (w *dirWriter) Write(p []byte) (int, error) { return w.f.Write(p) }

func (w *dirWriter) Commit() error {
	if err := w.f.Sync(); err != nil {
		w.f.Close()
		return fmt.Errorf("write %s: %w", w.name, err)
	}
	if err := w.f.Close(); err != nil {
		return fmt.Errorf("write %s: %w", w.name, err)
	}
	return os.Rename(w.path+tmpExt, w.path)
}

func (w *dirWriter) Abort() error {
	err := w.f.Close()
	if rerr := os.Remove(w.path + tmpExt); rerr != nil && !errors.Is(rerr, fs.ErrNotExist) {
		err = errors.Join(err, rerr)
	}
	return err
}

// dirFile is a committed local file open for reading.
type dirFile struct{ *os.File }

func (f dirFile) Stamp() (FileStamp, error) {
	at := time.Now()
	fi, err := f.Stat()
	if err != nil {
		return FileStamp{}, err
	}
	return stampOf(fi, at), nil
}
