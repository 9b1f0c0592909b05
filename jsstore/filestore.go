package jsstore

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"io/fs"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/bulkstream/bulkstream/export"
)

// DefaultPartSize is FileOptions.PartSize when it is 0.
const DefaultPartSize = 64 << 20

// maxReplicas is the most replicas a JetStream stream may have.
const maxReplicas = 5

// maxPartRead bounds the read of one part: it lasts as long as the client
// reading it (a slow download), so it has no short deadline of its own;
// Close ends it.
const maxPartRead = 24 * time.Hour

// partReadStall is how long one read of a part may wait for bytes before
// the part's get is abandoned (an error the download reports).
const partReadStall = 30 * time.Second

// FileOptions configure a FileStore.
type FileOptions struct {
	// Bucket is the Object Store bucket, created if missing. Required.
	Bucket string
	// Replicas is the bucket's number of replicas, 1 to 5 (0: 1): how
	// many NATS nodes keep every file. NewFileStore sets it, MaxAge and
	// MaxBytes on an existing bucket too.
	Replicas int
	// MaxAge is the bucket's TTL (0: none): every object older than it is
	// removed by the server, so the files of an export no replica removed
	// (all of them gone, or the job record lost) still disappear. Each
	// part expires by its own age, and a file's parts are written before
	// the file, so set it well beyond the time finished exports are kept
	// for download; at least 1 s.
	MaxAge time.Duration
	// MaxBytes caps the bucket's size in bytes (0: no cap). A part that
	// would pass it is refused, so the export writing it fails; nothing
	// already stored is dropped to make room.
	MaxBytes int64
	// PartSize is the largest object a file is cut into, in bytes (0:
	// DefaultPartSize).
	PartSize int64
	// Timeout bounds each request other than a part's put or read (0:
	// 10 s).
	Timeout time.Duration
	// ReadRetries is how many more times a read that finds nothing tries
	// again (0: 4; negative: none), ReadRetryWait the wait before the
	// first retry, doubled after each (0: 50 ms).
	ReadRetries   int
	ReadRetryWait time.Duration
}

func (o *FileOptions) validate() error {
	switch {
	case o.Bucket == "":
		return errors.New("jsstore: FileOptions.Bucket is required")
	case o.Replicas < 0 || o.Replicas > maxReplicas:
		return fmt.Errorf("jsstore: FileOptions.Replicas %d is not within 0..%d", o.Replicas, maxReplicas)
	case o.MaxAge < 0 || o.MaxAge > 0 && o.MaxAge < time.Second:
		return fmt.Errorf("jsstore: FileOptions.MaxAge %v is neither 0 nor at least 1s", o.MaxAge)
	case o.MaxBytes < 0:
		return fmt.Errorf("jsstore: FileOptions.MaxBytes %d is negative", o.MaxBytes)
	case o.PartSize < 0:
		return fmt.Errorf("jsstore: FileOptions.PartSize %d is negative", o.PartSize)
	case o.Timeout < 0:
		return fmt.Errorf("jsstore: FileOptions.Timeout %v is negative", o.Timeout)
	case o.ReadRetryWait < 0:
		return fmt.Errorf("jsstore: FileOptions.ReadRetryWait %v is negative", o.ReadRetryWait)
	}
	if o.Replicas == 0 {
		o.Replicas = 1
	}
	if o.PartSize == 0 {
		o.PartSize = DefaultPartSize
	}
	if o.Timeout == 0 {
		o.Timeout = 10 * time.Second
	}
	if o.ReadRetries == 0 {
		o.ReadRetries = 4
	} else if o.ReadRetries < 0 {
		o.ReadRetries = 0
	}
	if o.ReadRetryWait == 0 {
		o.ReadRetryWait = 50 * time.Millisecond
	}
	return nil
}

// FileStore is an export.FileStore on a JetStream Object Store bucket
// (see the package doc for the layout). Its methods may be called from
// several goroutines at once.
type FileStore struct {
	obs  jetstream.ObjectStore
	opts FileOptions
	// leader reads file objects at the bucket's stream leader (see info).
	leader nats.JetStreamContext
}

var _ export.FileStore = (*FileStore)(nil)

// NewFileStore opens the bucket opts.Bucket, creating it if missing.
func NewFileStore(ctx context.Context, js jetstream.JetStream, opts FileOptions) (*FileStore, error) {
	if err := opts.validate(); err != nil {
		return nil, err
	}
	obs, err := js.CreateOrUpdateObjectStore(ctx, jetstream.ObjectStoreConfig{
		Bucket:   opts.Bucket,
		Replicas: opts.Replicas,
		TTL:      opts.MaxAge,
		MaxBytes: opts.MaxBytes,
		Storage:  jetstream.FileStorage,
	})
	if err != nil {
		return nil, fmt.Errorf("jsstore: object store %q: %w", opts.Bucket, err)
	}
	leader, err := leaderReads(js)
	if err != nil {
		return nil, fmt.Errorf("jsstore: object store %q: %w", opts.Bucket, err)
	}
	return &FileStore{obs: obs, opts: opts, leader: leader}, nil
}

// Metadata keys of a file object.
const (
	metaWriter   = "writer"
	metaSize     = "size"
	metaPartSize = "part-size"
	metaParts    = "parts"
)

func checkJob(job string) error {
	if job == "" || strings.Contains(job, "/") {
		return fmt.Errorf("jsstore: job %q is empty or holds a '/'", job)
	}
	return nil
}

func checkName(job, name string) error {
	if err := checkJob(job); err != nil {
		return err
	}
	if name == "" || strings.Contains(name, "/") {
		return fmt.Errorf("jsstore: file name %q is empty or holds a '/'", name)
	}
	return nil
}

func fileObject(job, name string) string { return "f/" + job + "/" + name }

func partObject(job, name, writer string, n int) string {
	return "p/" + job + "/" + name + "/" + writer + "/" + strconv.Itoa(n)
}

// jobOf returns the job of an object name of this store's layout.
func jobOf(object string) (string, bool) {
	kind, rest, ok := strings.Cut(object, "/")
	if !ok || (kind != "f" && kind != "p") {
		return "", false
	}
	job, _, ok := strings.Cut(rest, "/")
	return job, ok && job != ""
}

func (s *FileStore) ctx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), s.opts.Timeout)
}

// retry runs f until it returns anything but jetstream.ErrObjectNotFound
// or the retries are spent: right after a write a follower may not have
// it yet.
func (s *FileStore) retry(f func() error) error {
	wait := s.opts.ReadRetryWait
	err := f()
	for i := 0; i < s.opts.ReadRetries && errors.Is(err, jetstream.ErrObjectNotFound); i++ {
		time.Sleep(wait)
		wait *= 2
		err = f()
	}
	return err
}

// NewJob removes whatever job has in the bucket.
func (s *FileStore) NewJob(job string) error { return s.RemoveJob(job) }

// Create starts writing file name of job as parts.
func (s *FileStore) Create(job, name string) (export.FileWriter, error) {
	if err := checkName(job, name); err != nil {
		return nil, err
	}
	return &fileWriter{s: s, job: job, name: name, writer: writerID()}, nil
}

// writerID is a fresh id for a FileWriter's parts.
func writerID() string {
	var b [8]byte
	_, _ = rand.Read(b[:]) // never fails (crypto/rand documents it)
	return hex.EncodeToString(b[:])
}

// SyncJob returns nil: a put returns once JetStream stored it (on a
// replicated bucket, on a quorum of replicas).
func (s *FileStore) SyncJob(job string) error { return checkJob(job) }

// Stat returns the stamp of committed file name of job.
func (s *FileStore) Stat(job, name string) (export.FileStamp, error) {
	if err := checkName(job, name); err != nil {
		return export.FileStamp{}, err
	}
	at := time.Now()
	m, err := s.info(job, name)
	if err != nil {
		return export.FileStamp{}, err
	}
	return m.stamp(at), nil
}

// Open opens committed file name of job.
func (s *FileStore) Open(job, name string) (export.StoredFile, error) {
	if err := checkName(job, name); err != nil {
		return nil, err
	}
	m, err := s.info(job, name)
	if err != nil {
		return nil, err
	}
	return &storedFile{s: s, m: m}, nil
}

// fileMeta is a committed file as its file object describes it.
type fileMeta struct {
	job, name, writer string
	nuid              string
	mod               time.Time
	size, partSize    int64
	parts             int
}

func (m fileMeta) stamp(at time.Time) export.FileStamp {
	h := fnv.New64a()
	h.Write([]byte(m.nuid))
	id := h.Sum64()
	if id == 0 {
		id = 1
	}
	mod := m.mod.UnixNano()
	return export.FileStamp{ID: id, Size: m.size, Mod: mod, Change: mod, At: at.UnixNano()}
}

// info reads the file object of job's name, retrying "not found".
//
// The file object is read at the bucket's stream leader: a file rewritten
// by a later run of its job (a retry, a takeover) has a new file object,
// and a follower that has not applied it would hand back the old one,
// whose size and digest no longer match the manifest.
func (s *FileStore) info(job, name string) (fileMeta, error) {
	obj := fileObject(job, name)
	var info *jetstream.ObjectInfo
	err := s.retry(func() error {
		ctx, cancel := s.ctx()
		defer cancel()
		var err error
		info, err = s.leaderInfo(ctx, obj)
		return err
	})
	if errors.Is(err, jetstream.ErrObjectNotFound) {
		return fileMeta{}, fmt.Errorf("jsstore: %s of job %s: %w", name, job, fs.ErrNotExist)
	}
	if err != nil {
		return fileMeta{}, fmt.Errorf("jsstore: %s of job %s: %w", name, job, err)
	}
	m := fileMeta{job: job, name: name, writer: info.Metadata[metaWriter], nuid: info.NUID, mod: info.ModTime}
	var perr error
	num := func(key string) int64 {
		v, err := strconv.ParseInt(info.Metadata[key], 10, 64)
		if err != nil || v < 0 {
			perr = errors.Join(perr, fmt.Errorf("metadata %s %q", key, info.Metadata[key]))
		}
		return v
	}
	m.size, m.partSize, m.parts = num(metaSize), num(metaPartSize), int(num(metaParts))
	if perr == nil && (m.writer == "" || m.partSize == 0 && m.size > 0 ||
		m.size > 0 && int64(m.parts) != (m.size+m.partSize-1)/m.partSize) {
		perr = errors.New("inconsistent metadata")
	}
	if perr != nil {
		return fileMeta{}, fmt.Errorf("jsstore: %s of job %s: file object: %w", name, job, perr)
	}
	return m, nil
}

// leaderInfo is ObjectStore.GetInfo answered by the stream leader: the
// object's last metadata message ($O.<bucket>.M.<base64url name>, the
// Object Store's layout), jetstream.ErrObjectNotFound when there is none
// or it marks the object deleted.
func (s *FileStore) leaderInfo(ctx context.Context, obj string) (*jetstream.ObjectInfo, error) {
	subj := "$O." + s.opts.Bucket + ".M." + base64.URLEncoding.EncodeToString([]byte(obj))
	m, err := s.leader.GetLastMsg("OBJ_"+s.opts.Bucket, subj, nats.Context(ctx))
	if errors.Is(err, nats.ErrMsgNotFound) {
		return nil, jetstream.ErrObjectNotFound
	}
	if err != nil {
		return nil, err
	}
	var info jetstream.ObjectInfo
	if err := json.Unmarshal(m.Data, &info); err != nil {
		return nil, fmt.Errorf("object %s: metadata: %w", obj, err)
	}
	if info.Deleted {
		return nil, jetstream.ErrObjectNotFound
	}
	info.ModTime = m.Time
	return &info, nil
}

// objects lists the names of the bucket's objects that belong to job
// ("" for every job).
func (s *FileStore) objects(job string) ([]string, error) {
	ctx, cancel := s.ctx()
	defer cancel()
	infos, err := s.obs.List(ctx)
	if errors.Is(err, jetstream.ErrNoObjectsFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("jsstore: list bucket %s: %w", s.opts.Bucket, err)
	}
	var names []string
	for _, info := range infos {
		if j, ok := jobOf(info.Name); ok && (job == "" || j == job) {
			names = append(names, info.Name)
		}
	}
	return names, nil
}

// RemoveJob deletes every object of job: its file objects first, so no
// reader finds a file whose parts are going.
func (s *FileStore) RemoveJob(job string) error {
	if err := checkJob(job); err != nil {
		return err
	}
	names, err := s.objects(job)
	if err != nil {
		return err
	}
	var errs []error
	for _, pass := range []string{"f/", "p/"} {
		for _, n := range names {
			if strings.HasPrefix(n, pass) {
				errs = append(errs, s.delete(n))
			}
		}
	}
	return errors.Join(errs...)
}

func (s *FileStore) delete(object string) error {
	ctx, cancel := s.ctx()
	defer cancel()
	if err := s.obs.Delete(ctx, object); err != nil && !errors.Is(err, jetstream.ErrObjectNotFound) {
		return fmt.Errorf("jsstore: delete %s: %w", object, err)
	}
	return nil
}

// Jobs lists the jobs that have objects, committed files or parts.
func (s *FileStore) Jobs() ([]string, error) {
	names, err := s.objects("")
	if err != nil {
		return nil, err
	}
	seen := map[string]bool{}
	var jobs []string
	for _, n := range names {
		if j, _ := jobOf(n); !seen[j] {
			seen[j] = true
			jobs = append(jobs, j)
		}
	}
	return jobs, nil
}

// fileWriter streams a file into parts: each part is one Object Store put
// reading from a pipe, run by a goroutine the writer owns and waits for
// (when the part is full, and in Commit and Abort).
type fileWriter struct {
	s                  *FileStore
	job, name, writer  string
	size               int64
	parts              int // parts put (or being put)
	pw                 *io.PipeWriter
	inPart             int64 // bytes written to the part being put
	done               chan error
	failed             error
	committed, aborted bool
}

func (w *fileWriter) Write(p []byte) (int, error) {
	if w.failed != nil {
		return 0, w.failed
	}
	if w.committed || w.aborted {
		return 0, fmt.Errorf("jsstore: write %s of job %s after Commit or Abort", w.name, w.job)
	}
	written := 0
	for len(p) > 0 {
		if w.pw == nil {
			w.startPart()
		}
		n := int(min(int64(len(p)), w.s.opts.PartSize-w.inPart))
		m, err := w.pw.Write(p[:n])
		written += m
		w.inPart += int64(m)
		w.size += int64(m)
		if err != nil {
			w.failed = fmt.Errorf("jsstore: write %s of job %s: %w", w.name, w.job, w.endPart(err))
			return written, w.failed
		}
		p = p[n:]
		if w.inPart == w.s.opts.PartSize {
			if err := w.endPart(nil); err != nil {
				w.failed = fmt.Errorf("jsstore: write %s of job %s: %w", w.name, w.job, err)
				return written, w.failed
			}
		}
	}
	return written, nil
}

// startPart starts the put of the next part.
func (w *fileWriter) startPart() {
	pr, pw := io.Pipe()
	obj := partObject(w.job, w.name, w.writer, w.parts)
	w.parts++
	w.pw, w.inPart, w.done = pw, 0, make(chan error, 1)
	done := w.done
	go func() {
		_, err := w.s.obs.Put(context.Background(), jetstream.ObjectMeta{Name: obj}, pr)
		pr.CloseWithError(err) // unblocks a Write when the put failed
		done <- err
	}()
}

// endPart ends the part being put and waits for its put: cause nil closes
// the pipe (the part is complete), otherwise it fails the put.
func (w *fileWriter) endPart(cause error) error {
	if w.pw == nil {
		return cause
	}
	if cause != nil {
		w.pw.CloseWithError(cause)
	} else {
		w.pw.Close()
	}
	err := <-w.done
	w.pw, w.done = nil, nil
	if err == nil {
		err = cause
	}
	return err
}

// Commit waits for the last part's put, then puts the file object.
func (w *fileWriter) Commit() error {
	if w.committed || w.aborted {
		return fmt.Errorf("jsstore: commit %s of job %s after Commit or Abort", w.name, w.job)
	}
	if w.failed != nil {
		return w.failed
	}
	if err := w.endPart(nil); err != nil {
		w.failed = fmt.Errorf("jsstore: write %s of job %s: %w", w.name, w.job, err)
		return w.failed
	}
	ctx, cancel := w.s.ctx()
	defer cancel()
	_, err := w.s.obs.Put(ctx, jetstream.ObjectMeta{
		Name: fileObject(w.job, w.name),
		Metadata: map[string]string{
			metaWriter:   w.writer,
			metaSize:     strconv.FormatInt(w.size, 10),
			metaPartSize: strconv.FormatInt(w.s.opts.PartSize, 10),
			metaParts:    strconv.Itoa(w.parts),
		},
	}, strings.NewReader(""))
	if err != nil {
		w.failed = fmt.Errorf("jsstore: commit %s of job %s: %w", w.name, w.job, err)
		return w.failed
	}
	w.committed = true
	return nil
}

// Abort fails the put under way and deletes the parts written.
func (w *fileWriter) Abort() error {
	if w.committed || w.aborted {
		return nil
	}
	w.aborted = true
	_ = w.endPart(errors.New("aborted"))
	var errs []error
	for n := range w.parts {
		errs = append(errs, w.s.delete(partObject(w.job, w.name, w.writer, n)))
	}
	return errors.Join(errs...)
}

// storedFile reads a committed file across its parts.
type storedFile struct {
	s   *FileStore
	m   fileMeta
	pos int64

	mu     sync.Mutex // guards closed against a Close during a Read
	closed bool
	cur    jetstream.ObjectResult // the part being read, nil if none
	cancel context.CancelFunc
	curN   int   // its index
	curOff int64 // the offset in the file its next byte is at
}

var errClosed = errors.New("jsstore: file already closed")

func (f *storedFile) Read(p []byte) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return 0, errClosed
	}
	if f.pos >= f.m.size {
		return 0, io.EOF
	}
	if len(p) == 0 {
		return 0, nil
	}
	if f.cur == nil || f.curOff != f.pos {
		if err := f.openAt(f.pos); err != nil {
			return 0, err
		}
	}
	end := min(int64(f.curN+1)*f.m.partSize, f.m.size)
	p = p[:min(int64(len(p)), end-f.pos)]
	// A get whose messages stop coming (its consumer's server died as
	// the connection moved) would block until maxPartRead: give up on it
	// after partReadStall without a byte.
	stall := time.AfterFunc(partReadStall, f.cancel)
	n, err := f.cur.Read(p)
	stall.Stop()
	f.pos += int64(n)
	f.curOff = f.pos
	if err == io.EOF {
		err = nil
		if f.pos < end {
			err = fmt.Errorf("jsstore: %s of job %s: part %d ends early", f.m.name, f.m.job, f.curN)
		}
	}
	if err == nil && f.pos == end {
		f.closePart()
	}
	if err != nil {
		f.closePart()
		return n, fmt.Errorf("jsstore: read %s of job %s: %w", f.m.name, f.m.job, err)
	}
	return n, nil
}

// openAt opens the part holding offset off and skips to it.
func (f *storedFile) openAt(off int64) error {
	f.closePart()
	n := int(off / f.m.partSize)
	obj := partObject(f.m.job, f.m.name, f.m.writer, n)
	var res jetstream.ObjectResult
	var cancel context.CancelFunc
	err := f.s.retry(func() error {
		var ctx context.Context
		ctx, cancel = context.WithTimeout(context.Background(), maxPartRead)
		var err error
		res, err = f.s.obs.Get(ctx, obj)
		if err != nil {
			cancel()
		}
		return err
	})
	if errors.Is(err, jetstream.ErrObjectNotFound) {
		err = fs.ErrNotExist
	}
	if err != nil {
		return fmt.Errorf("jsstore: %s of job %s: part %d: %w", f.m.name, f.m.job, n, err)
	}
	f.cur, f.cancel, f.curN = res, cancel, n
	skip := off - int64(n)*f.m.partSize
	stall := time.AfterFunc(partReadStall, cancel) // as in Read, for the whole skip
	_, err = io.CopyN(io.Discard, res, skip)
	stall.Stop()
	if err != nil {
		f.closePart()
		return fmt.Errorf("jsstore: %s of job %s: skip %d bytes of part %d: %w", f.m.name, f.m.job, skip, n, err)
	}
	f.curOff = off
	return nil
}

func (f *storedFile) closePart() {
	if f.cur != nil {
		f.cur.Close()
		f.cancel()
		f.cur, f.cancel = nil, nil
	}
}

func (f *storedFile) Seek(offset int64, whence int) (int64, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return 0, errClosed
	}
	var abs int64
	switch whence {
	case io.SeekStart:
		abs = offset
	case io.SeekCurrent:
		abs = f.pos + offset
	case io.SeekEnd:
		abs = f.m.size + offset
	default:
		return 0, fmt.Errorf("jsstore: seek: bad whence %d", whence)
	}
	if abs < 0 {
		return 0, fmt.Errorf("jsstore: seek to negative offset %d", abs)
	}
	f.pos = abs
	return abs, nil
}

// Stamp is the stamp of the file object opened: a committed file is never
// changed in place, so it is the file's state now.
func (f *storedFile) Stamp() (export.FileStamp, error) {
	return f.m.stamp(time.Now()), nil
}

func (f *storedFile) Close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return errClosed
	}
	f.closed = true
	f.closePart()
	return nil
}
