package export

import (
	"os"
	"path/filepath"
	"time"
)

// OpenFile opens a file of a completed job for download. Only names listed
// in the job's manifest (output, deleted or error) are served; any other
// name, including one with a path in it, is ErrNotFound, as is every name of
// an unknown, expired, cancelled or unfinished job, and of a job another
// client started (client is the caller's Request.Client).
//
// Removing a job (Cancel, expiry) does not cut short a download that has
// already opened its file: the open descriptor keeps the data readable.
func (m *Manager) OpenFile(client, id, name string) (File, error) {
	j := m.lookup(id)
	if j == nil {
		return nil, ErrNotFound
	}
	j.mu.Lock()
	ok := !j.removed && j.ownedBy(client) && j.rec.State == Completed && !m.expired(j) && j.rec.Manifest != nil && j.rec.Manifest.has(name)
	j.mu.Unlock()
	if !ok {
		return nil, ErrNotFound
	}
	// name is one this package generated, never a client's string.
	f, err := os.Open(filepath.Join(m.jobDir(id), name))
	if err != nil {
		if os.IsNotExist(err) {
			return nil, ErrNotFound
		}
		return nil, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	return &osFile{File: f, size: fi.Size(), mod: fi.ModTime()}, nil
}

// has reports whether name is a file of the manifest.
func (mf *Manifest) has(name string) bool {
	for _, list := range [][]FileInfo{mf.Output, mf.Deleted, mf.Error} {
		for _, fi := range list {
			if fi.Name == name {
				return true
			}
		}
	}
	return false
}

// files returns every file of the manifest.
func (mf *Manifest) files() []FileInfo {
	var all []FileInfo
	all = append(all, mf.Output...)
	all = append(all, mf.Deleted...)
	return append(all, mf.Error...)
}

type osFile struct {
	*os.File
	size   int64
	mod    time.Time
	digest string
}

func (f *osFile) Size() int64        { return f.size }
func (f *osFile) ModTime() time.Time { return f.mod }
func (f *osFile) Digest() string     { return f.digest }

// jobDir is where a job's files are.
func (m *Manager) jobDir(id string) string { return filepath.Join(m.cfg.Dir, id) }

// syncDir fsyncs a directory, so the renames in it are durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}
