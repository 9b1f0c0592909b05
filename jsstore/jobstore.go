package jsstore

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/bulkstream/bulkstream/export"
	"github.com/bulkstream/bulkstream/index"
)

// JobOptions configure a JobStore.
type JobOptions struct {
	// Bucket is the KV bucket, created if missing. Required.
	Bucket string
	// Replicas of a bucket created here (0: 1).
	Replicas int
	// Timeout bounds each request (0: 10 s).
	Timeout time.Duration
}

func (o *JobOptions) validate() error {
	switch {
	case o.Bucket == "":
		return errors.New("jsstore: JobOptions.Bucket is required")
	case o.Replicas < 0:
		return fmt.Errorf("jsstore: JobOptions.Replicas %d is negative", o.Replicas)
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

// JobStore is an export.JobStore on a JetStream KV bucket: one key per
// job id, its value the record.
type JobStore struct {
	kv   jetstream.KeyValue
	opts JobOptions
}

var _ export.JobStore = (*JobStore)(nil)

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
	return &JobStore{kv: kv, opts: opts}, nil
}

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
