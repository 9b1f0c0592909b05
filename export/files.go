package export

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"time"
)

// OpenFile opens a file of a completed job for download. Only names listed
// in the job's manifest (output, deleted or error) are served; any other
// name, including one with a path in it, is ErrNotFound, as is every name of
// an unknown, expired, cancelled or unfinished job, and of a job another
// client started (client is the caller's Request.Client).
//
// The file is checked against the size and SHA-256 recorded when it was
// written; File.Digest is that digest. A file that no longer matches
// (truncated, edited, replaced) is never served: OpenFile returns
// ErrFileDamaged, logs it, counts it (bulkstream_export_files_damaged_total)
// and turns the job failed, its other files removed, so a client polling
// the status URL sees a failed job saying a file was damaged and to start a
// new export (the manifest's counts can no longer be trusted); later
// downloads of the job are ErrNotFound. Hashing a large file on every
// download would cost as much as serving it, so the bytes are hashed only
// when the file's stamp (inode, size, mtime, ctime) differs from the one
// recorded when they last matched, or that stamp is too recent to trust
// (see fileStamp); a file whose stat matches is served on the strength of
// the check already made. Records written before digests are served
// unchecked, without a digest.
//
// Removing a job (Cancel, expiry) does not cut short a download that has
// already opened its file: the open descriptor keeps the data readable.
func (m *Manager) OpenFile(client, id, name string) (File, error) {
	if err := m.refreshShared(id, func(j *job) bool { return j.rec.State != Completed }); err != nil {
		return nil, err
	}
	now := m.cfg.Now()
	m.mu.Lock()
	j := m.all[id]
	var want FileInfo
	ok := j != nil && j.ownedBy(client) && j.rec.State == Completed && !j.expired(now) && j.rec.Manifest != nil
	if ok {
		want, ok = j.rec.Manifest.file(name)
	}
	m.mu.Unlock()
	if !ok {
		return nil, ErrNotFound
	}
	// name is one this package generated, never a client's string.
	f, err := m.files.Open(id, name)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			m.damaged(j, name, "the file is missing")
			return nil, ErrFileDamaged
		}
		if m.shared != nil {
			// The shared files are out of reach for a moment (a NATS
			// leader election): the client should retry, not see a 500.
			m.log.Warn("cannot open a shared export file", "job", id, "file", name, "error", err)
			return nil, &UnavailableError{Reason: "the export files are unavailable for a moment; try again shortly", RetryAfter: 2 * time.Second}
		}
		return nil, err
	}
	cur, err := f.Stamp()
	if err != nil {
		f.Close()
		return nil, err
	}
	file := &openFile{StoredFile: f, size: cur.Size, mod: cur.ModTime()}
	if want.SHA256 == (Digest{}) {
		return file, nil // written before digests
	}
	file.digest = want.SHA256.String()
	if cur.Size != want.Bytes {
		f.Close()
		m.damaged(j, name, fmt.Sprintf("%d bytes on disk, %d written", cur.Size, want.Bytes))
		return nil, ErrFileDamaged
	}
	if want.stamp.matches(cur, m.racyWindow) {
		return file, nil
	}
	h := sha256.New()
	n, err := io.Copy(h, io.LimitReader(f, want.Bytes+1))
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("export: check %s of job %s: %w", name, id, err)
	}
	var got Digest
	h.Sum(got[:0])
	if n != want.Bytes || got != want.SHA256 {
		f.Close()
		m.damaged(j, name, "its bytes differ from the ones written (SHA-256 "+got.String()+", written "+want.SHA256.String()+")")
		return nil, ErrFileDamaged
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		f.Close()
		return nil, err
	}
	// Remember the stamp the bytes matched under, unless the file changed
	// while it was read (then the next download hashes it again).
	if again, err := f.Stamp(); err == nil && cur.ID != 0 && again.sameState(cur) {
		m.mu.Lock()
		if mf := j.rec.Manifest; mf != nil && !j.removed {
			mf.setStamp(name, cur)
		}
		m.mu.Unlock()
	}
	return file, nil
}

// damagedMessage is the Status.Error of a job turned failed by a damaged
// file.
const damagedMessage = "an export file (%s) was changed or truncated on the server after it was written, so the export can no longer be served; start a new export"

// damaged turns a completed job whose file name no longer matches what was
// written into a failed one and removes its files.
func (m *Manager) damaged(j *job, name, why string) {
	m.met.damaged.Inc()
	m.log.Error("export file damaged on disk: not served; the job is failed", "job", j.id, "file", name, "problem", why)
	m.mu.Lock()
	gen, err := m.transition(j, Failed, func(rec *jobRecord) {
		rec.Error, rec.Manifest = fmt.Sprintf(damagedMessage, name), nil
	})
	if err == nil {
		j.urlInStore = false
	}
	m.mu.Unlock()
	if err != nil {
		return // removed, or failed already
	}
	if err := m.flush(j, gen); err != nil {
		m.log.Error("cannot persist the failed export job", "job", j.id, "error", err)
	}
	if err := m.files.RemoveJob(j.id); err != nil {
		m.log.Error("cannot remove export files", "job", j.id, "error", err)
	}
}

// file returns the manifest entry of name.
func (mf *Manifest) file(name string) (FileInfo, bool) {
	for _, list := range [][]FileInfo{mf.Output, mf.Deleted, mf.Error} {
		for _, fi := range list {
			if fi.Name == name {
				return fi, true
			}
		}
	}
	return FileInfo{}, false
}

// setStamp records the stamp of file name.
func (mf *Manifest) setStamp(name string, st FileStamp) {
	for _, list := range [][]FileInfo{mf.Output, mf.Deleted, mf.Error} {
		for i := range list {
			if list[i].Name == name {
				list[i].stamp = st
				return
			}
		}
	}
}

// files returns every file of the manifest.
func (mf *Manifest) files() []FileInfo {
	var all []FileInfo
	all = append(all, mf.Output...)
	all = append(all, mf.Deleted...)
	return append(all, mf.Error...)
}

// openFile is a File served from the FileStore: the size and time of its
// stamp when opened, and the digest recorded when it was written.
type openFile struct {
	StoredFile
	size   int64
	mod    time.Time
	digest string
}

func (f *openFile) Size() int64        { return f.size }
func (f *openFile) ModTime() time.Time { return f.mod }
func (f *openFile) Digest() string     { return f.digest }
