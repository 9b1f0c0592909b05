package atomicfile

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// File is the new content of a file, being written under a temporary
// name. It is not safe for concurrent use.
type File struct {
	f       *os.File
	path    string
	done    bool                   // committed or closed
	syncDir func(dir string) error // SyncDir; tests watch it
}

// Create starts a replacement of path: a new temporary file
// ".<base>.*.tmp" in path's directory, with permissions exactly perm (not
// masked by the umask).
func Create(path string, perm os.FileMode) (*File, error) {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*.tmp")
	if err != nil {
		return nil, err
	}
	if err := f.Chmod(perm); err != nil {
		f.Close()
		os.Remove(f.Name())
		return nil, err
	}
	return &File{f: f, path: path, syncDir: SyncDir}, nil
}

// CreateTemp is Create with a temporary file of the caller's choosing
// (created with perm, masked by the umask, or truncated if it exists),
// for callers whose temporary name
// is part of their contract, such as a download's "name.part". tmp must
// be in path's directory for the rename to be atomic.
func CreateTemp(path, tmp string, perm os.FileMode) (*File, error) {
	if filepath.Dir(tmp) != filepath.Dir(path) {
		return nil, fmt.Errorf("atomicfile: temporary file %s is not in the directory of %s", tmp, path)
	}
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, perm)
	if err != nil {
		return nil, err
	}
	return &File{f: f, path: path, syncDir: SyncDir}, nil
}

// Write writes to the temporary file.
func (f *File) Write(p []byte) (int, error) { return f.f.Write(p) }

// OS returns the temporary file, for Seek, Truncate or Chmod. Do not
// close or rename it.
func (f *File) OS() *os.File { return f.f }

// Name returns the temporary file's name.
func (f *File) Name() string { return f.f.Name() }

// Commit syncs the temporary file, closes it, renames it over the path
// and syncs the directory. On an error before the rename the temporary
// file is removed and the path keeps its old content.
func (f *File) Commit() error {
	g, err := f.CommitOpen()
	if g != nil {
		err = errors.Join(err, g.Close())
	}
	return err
}

// CommitOpen is Commit that keeps the file open (positioned where the
// writes left it) and returns it, now under the path: a caller that goes
// on appending never writes to the replaced file. The returned file is
// non-nil whenever the rename happened, even with an error (a failed
// directory sync); the caller closes it.
func (f *File) CommitOpen() (*os.File, error) {
	if f.done {
		return nil, errors.New("atomicfile: commit of a closed file")
	}
	f.done = true
	if err := f.f.Sync(); err != nil {
		return nil, f.discard(err)
	}
	if err := os.Rename(f.f.Name(), f.path); err != nil {
		return nil, f.discard(err)
	}
	// In place even if the directory sync fails: hand it back.
	return f.f, f.syncDir(filepath.Dir(f.path))
}

// discard closes and removes the temporary file and returns err.
func (f *File) discard(err error) error {
	f.f.Close()
	os.Remove(f.f.Name())
	return err
}

// Close abandons an uncommitted write: the temporary file is closed and
// removed, and the path keeps its old content. After Commit it does
// nothing, so it can be deferred right after Create.
func (f *File) Close() error {
	if f.done {
		return nil
	}
	f.done = true
	err := f.f.Close()
	if rerr := os.Remove(f.f.Name()); rerr != nil && !errors.Is(rerr, os.ErrNotExist) {
		err = errors.Join(err, rerr)
	}
	return err
}

// WriteFile replaces path with data, atomically and durably.
func WriteFile(path string, data []byte, perm os.FileMode) error {
	f, err := Create(path, perm)
	if err != nil {
		return err
	}
	defer f.Close()
	if _, err := f.Write(data); err != nil {
		return err
	}
	return f.Commit()
}

// SyncDir fsyncs a directory, so that the renames and removals in it are
// durable.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
