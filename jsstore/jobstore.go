package jsstore

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/bulkstream/bulkstream/export"
	"github.com/bulkstream/bulkstream/index"
)

// JobOptions configure a JobStore.
type JobOptions struct {
	// Bucket is the KV bucket, created if missing. Required.
	Bucket string
	// Replicas is the bucket's number of replicas, 1 to 5 (0: 1): how
	// many NATS nodes keep every job record. NewJobStore sets it on an
	// existing bucket too.
	Replicas int
	// Timeout bounds each request (0: 10 s). It does not bound Watch.
	Timeout time.Duration
}

func (o *JobOptions) validate() error {
	switch {
	case o.Bucket == "":
		return errors.New("jsstore: JobOptions.Bucket is required")
	case o.Replicas < 0 || o.Replicas > maxReplicas:
		return fmt.Errorf("jsstore: JobOptions.Replicas %d is not within 0..%d", o.Replicas, maxReplicas)
	case o.Timeout < 0:
		return fmt.Errorf("jsstore: JobOptions.Timeout %v is negative", o.Timeout)
	}
	if o.Replicas == 0 {
		o.Replicas = 1
	}
	if o.Timeout == 0 {
		o.Timeout = 10 * time.Second
	}
	return nil
}

// JobStore is an export.SharedJobStore on a JetStream KV bucket: one key
// per job id, its value the record, its revision the sequence of the
// bucket's stream that wrote it (see the package doc). Its methods may be
// called from several goroutines at once.
type JobStore struct {
	kv jetstream.KeyValue
	nc *nats.Conn
	// leader reads the bucket's stream through the stream API's message
	// get, which its leader answers: a direct get (kv.Get) may reach a
	// follower that has not applied the latest write yet.
	leader nats.JetStreamContext
	opts   JobOptions
}

var _ export.SharedJobStore = (*JobStore)(nil)

// NewJobStore opens the KV bucket opts.Bucket, creating it if missing.
func NewJobStore(ctx context.Context, js jetstream.JetStream, opts JobOptions) (*JobStore, error) {
	if err := opts.validate(); err != nil {
		return nil, err
	}
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:   opts.Bucket,
		Replicas: opts.Replicas,
		Storage:  jetstream.FileStorage,
	})
	if err != nil {
		return nil, fmt.Errorf("jsstore: kv bucket %q: %w", opts.Bucket, err)
	}
	leader, err := leaderReads(js)
	if err != nil {
		return nil, fmt.Errorf("jsstore: kv bucket %q: %w", opts.Bucket, err)
	}
	return &JobStore{kv: kv, nc: js.Conn(), leader: leader, opts: opts}, nil
}

// leaderReads is a JetStream context for reads the stream leader answers:
// its message get is the stream API's, not a direct get, which a follower
// that has not applied the latest write yet may answer.
func leaderReads(js jetstream.JetStream) (nats.JetStreamContext, error) {
	var jsOpts []nats.JSOpt
	switch o := js.Options(); {
	case o.Domain != "":
		jsOpts = append(jsOpts, nats.Domain(o.Domain))
	case o.APIPrefix != "":
		jsOpts = append(jsOpts, nats.APIPrefix(o.APIPrefix))
	}
	return js.Conn().JetStream(jsOpts...)
}

// kvStream is the name of the stream that holds KV bucket b.
func kvStream(b string) string { return "KV_" + b }

func (s *JobStore) ctx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), s.opts.Timeout)
}

// PutJob writes the record of job id.
func (s *JobStore) PutJob(id string, record []byte) error {
	ctx, cancel := s.ctx()
	defer cancel()
	if _, err := s.kv.Put(ctx, id, record); err != nil {
		return fmt.Errorf("jsstore: put job %q: %w", id, err)
	}
	return nil
}

// GetJob reads the record of job id: index.ErrNotFound when missing.
func (s *JobStore) GetJob(id string) ([]byte, error) {
	ctx, cancel := s.ctx()
	defer cancel()
	e, err := s.kv.Get(ctx, id)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, index.ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("jsstore: get job %q: %w", id, err)
	}
	return e.Value(), nil
}

// DeleteJob deletes the record of job id; a missing one is not an error.
func (s *JobStore) DeleteJob(id string) error {
	ctx, cancel := s.ctx()
	defer cancel()
	if err := s.kv.Delete(ctx, id); err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
		return fmt.Errorf("jsstore: delete job %q: %w", id, err)
	}
	return nil
}

// Jobs calls fn with every job record, stopping at fn's first error. A
// record deleted while the keys are listed is skipped.
func (s *JobStore) Jobs(fn func(id string, record []byte) error) error {
	ctx, cancel := s.ctx()
	defer cancel()
	keys, err := s.kv.Keys(ctx)
	if errors.Is(err, jetstream.ErrNoKeysFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("jsstore: list jobs: %w", err)
	}
	for _, id := range keys {
		rec, err := s.GetJob(id)
		if errors.Is(err, index.ErrNotFound) {
			continue
		}
		if err != nil {
			return err
		}
		if err := fn(id, rec); err != nil {
			return err
		}
	}
	return nil
}

// Update writes the record of job id if its latest revision is rev, or,
// with rev 0, if id has no record (never had one, or it was deleted). It
// returns the new revision. An error wrapping export.ErrConflict says
// another write or a deletion came first and nothing was written; so does
// a rev that is the deletion of id (as Watch reports it). After any other
// error (a timeout) the record may or may not have been written: Lookup
// tells.
func (s *JobStore) Update(id string, record []byte, rev uint64) (uint64, error) {
	ctx, cancel := s.ctx()
	defer cancel()
	if rev == 0 {
		n, err := s.kv.Create(ctx, id, record)
		if err != nil {
			return 0, updateErr(id, rev, err)
		}
		return n, nil
	}
	// The compare-and-set only checks that rev is the key's latest
	// message, and a deletion is one too: refuse to write over it. "Not
	// found" (rev was overwritten: the bucket keeps one revision per key)
	// is left to the compare-and-set.
	m, err := s.leader.GetMsg(kvStream(s.opts.Bucket), rev, nats.Context(ctx))
	switch {
	case err == nil && m.Subject == s.subject(id) && isDeletion(m.Header):
		return 0, fmt.Errorf("jsstore: update job %q at revision %d: the job was deleted: %w", id, rev, export.ErrConflict)
	case err != nil && !errors.Is(err, nats.ErrMsgNotFound):
		return 0, fmt.Errorf("jsstore: update job %q at revision %d: %w", id, rev, err)
	}
	n, err := s.kv.Update(ctx, id, record, rev)
	if err != nil {
		return 0, updateErr(id, rev, err)
	}
	return n, nil
}

// Lookup reads the record of job id and its revision as the bucket's
// stream leader holds them: a write acknowledged to any replica is seen.
// It is index.ErrNotFound when id has no record (or it was deleted).
func (s *JobStore) Lookup(id string) ([]byte, uint64, error) {
	if !validKey(id) {
		return nil, 0, index.ErrNotFound // no such key can exist
	}
	ctx, cancel := s.ctx()
	defer cancel()
	m, err := s.leader.GetLastMsg(kvStream(s.opts.Bucket), s.subject(id), nats.Context(ctx))
	switch {
	case errors.Is(err, nats.ErrMsgNotFound):
		return nil, 0, index.ErrNotFound
	case err != nil:
		return nil, 0, fmt.Errorf("jsstore: look up job %q: %w", id, err)
	case isDeletion(m.Header):
		return nil, 0, index.ErrNotFound
	}
	return m.Data, m.Sequence, nil
}

// validKey says whether id is a valid KV key, and so no wildcard: a
// message get by subject would take "*" or ">" as one.
func validKey(id string) bool {
	if id == "" || id[0] == '.' || id[len(id)-1] == '.' {
		return false
	}
	for _, c := range []byte(id) {
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case c == '-', c == '/', c == '_', c == '=', c == '.':
		default:
			return false
		}
	}
	return true
}

// subject is the subject of job id's messages in the bucket's stream.
func (s *JobStore) subject(id string) string { return "$KV." + s.opts.Bucket + "." + id }

// isDeletion says whether a KV message with header h is a delete or purge
// marker (one the client wrote, or one the server wrote for an expiry).
func isDeletion(h nats.Header) bool {
	return h.Get(kvOperation) != "" || h.Get(jetstream.MarkerReasonHeader) != ""
}

// kvOperation is the header of a KV delete or purge marker.
const kvOperation = "KV-Operation"

// updateErr wraps err, an Update's failure, with export.ErrConflict when it
// is a compare-and-set that found another revision: ErrKeyExists or
// ErrKeyRevisionMismatch, or the "wrong last sequence" API error itself
// (10071, or 10164 on a replicated bucket) where the client did not map it.
func updateErr(id string, rev uint64, err error) error {
	var apiErr *jetstream.APIError
	if errors.Is(err, jetstream.ErrKeyExists) || errors.Is(err, jetstream.ErrKeyRevisionMismatch) ||
		errors.As(err, &apiErr) && (apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
			apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant) {
		return fmt.Errorf("jsstore: update job %q at revision %d: %w: %w", id, rev, export.ErrConflict, err)
	}
	return fmt.Errorf("jsstore: update job %q at revision %d: %w", id, rev, err)
}

// Watch calls fn with every job record (not with deleted ones), then once
// with ("", nil, 0), then with every later change in the order the bucket
// applied it: a put with its record and revision, a delete or purge with
// record nil and the revision of its marker. The bucket keeps only the
// latest revision of a key, so a change overwritten before the watch
// delivered it may be skipped; a key's latest change is always delivered.
// fn runs on Watch's goroutine.
//
// When the connection reconnects (the server restarted, or the client
// moved to another one), Watch watches again from the revision after
// the last one it saw, so no change is lost. It returns ctx's error when
// ctx ends, or why the watch failed: the watcher stopped (the connection
// closed, or the bucket's stream is gone), or it could not be started
// again within JobOptions.Timeout of a reconnection.
func (s *JobStore) Watch(ctx context.Context, fn func(id string, record []byte, rev uint64)) error {
	reconnected := s.nc.StatusChanged(nats.CONNECTED)
	defer s.nc.RemoveStatusListener(reconnected)
	var (
		last     uint64 // the highest revision received
		caughtUp bool
		since    time.Time // the last reconnection
		wait     time.Duration
	)
	for {
		err := s.watch(ctx, fn, reconnected, &last, &caughtUp)
		if errors.Is(err, errReconnected) {
			since, wait = time.Now(), 25*time.Millisecond
			continue
		}
		// JetStream may answer a moment after the connection.
		if !errors.Is(err, errWatchStart) || since.IsZero() || time.Since(since) > s.opts.Timeout {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(wait):
		}
		wait = min(2*wait, time.Second)
	}
}

var (
	errReconnected = errors.New("jsstore: watch jobs: reconnected")
	errWatchStart  = errors.New("jsstore: watch jobs: start")
)

// watch runs one watcher until ctx ends, it fails (an error) or the
// connection reconnects (errReconnected). Before it has caught up it
// watches the latest revision of every key; after, every revision after
// *last. It updates *last and *caughtUp as it goes.
func (s *JobStore) watch(ctx context.Context, fn func(id string, record []byte, rev uint64), reconnected <-chan nats.Status, last *uint64, caughtUp *bool) error {
	var opts []jetstream.WatchOpt
	if *caughtUp {
		opts = append(opts, jetstream.IncludeHistory(), jetstream.ResumeFromRevision(*last+1))
	} else if *last > 0 {
		// A reconnection before the first watcher caught up: the
		// records it delivered are delivered again, as the state then.
		*last = 0
	}
	// The watcher unsubscribes when wctx ends: cancel ends it however
	// watch returns, so nothing the watcher started outlives it.
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	w, err := s.kv.WatchAll(wctx, opts...)
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("%w: %w", errWatchStart, err)
	}
	updates := w.Updates()
	defer func() {
		// The watcher blocks on a full channel, so take what it still
		// sends until it closes the channel on its unsubscription.
		w.Stop()
		for range updates {
		}
	}()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-reconnected:
			return errReconnected
		case e, ok := <-updates:
			switch {
			case !ok:
				if ctx.Err() != nil {
					return ctx.Err()
				}
				return errors.New("jsstore: watch jobs: the watcher stopped (connection closed or bucket gone)")
			case e == nil:
				if !*caughtUp {
					*caughtUp = true
					fn("", nil, 0)
				}
			case e.Operation() == jetstream.KeyValuePut:
				*last = e.Revision()
				fn(e.Key(), e.Value(), e.Revision())
			default:
				*last = e.Revision()
				if *caughtUp {
					fn(e.Key(), nil, e.Revision())
				}
			}
		}
	}
}
