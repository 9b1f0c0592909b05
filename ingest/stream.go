package ingest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// EnsureStreams creates the change-event stream, the dead-letter stream
// and the durable pull consumer that cfg describes when they are missing.
// When one exists with a configuration that contradicts cfg, it returns
// an error naming the stream (or consumer), the field and both values;
// nothing is changed then, so a misconfigured `serve` refuses to start
// instead of silently rewriting the stream.
func EnsureStreams(ctx context.Context, js jetstream.JetStream, cfg Config) error {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return err
	}
	_, _, err := ensureStreams(ctx, js, cfg)
	return err
}

func streamConfig(cfg Config) jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:              cfg.Stream,
		Description:       "bulkstream FHIR change events: one message per change on <prefix>.<Type>.<id>",
		Subjects:          cfg.Subjects,
		Retention:         jetstream.LimitsPolicy,
		MaxConsumers:      -1,
		MaxMsgs:           -1,
		MaxBytes:          -1,
		MaxAge:            cfg.MaxAge,
		MaxMsgsPerSubject: normLimit(cfg.MaxMsgsPerSubject),
		Discard:           jetstream.DiscardOld,
		Storage:           jetstream.FileStorage,
		Replicas:          cfg.Replicas,
		Duplicates:        dupWindow(cfg.Duplicates, cfg.MaxAge),
	}
}

func dlqConfig(cfg Config) jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:              cfg.DLQStream,
		Description:       "bulkstream dead letters: change events that cannot be applied, by reason",
		Subjects:          []string{cfg.DLQSubjectPrefix + ".>"},
		Retention:         jetstream.LimitsPolicy,
		MaxConsumers:      -1,
		MaxMsgs:           -1,
		MaxBytes:          -1,
		MaxAge:            DefaultDLQMaxAge,
		MaxMsgsPerSubject: -1,
		Discard:           jetstream.DiscardOld,
		Storage:           jetstream.FileStorage,
		Replicas:          cfg.Replicas,
		Duplicates:        cfg.Duplicates,
	}
}

func consumerConfig(cfg Config) jetstream.ConsumerConfig {
	return jetstream.ConsumerConfig{
		Durable:       cfg.Durable,
		Description:   "bulkstream index writer; its position follows the index's applied sequence",
		DeliverPolicy: jetstream.DeliverAllPolicy,
		AckPolicy:     jetstream.AckAllPolicy,
		AckWait:       cfg.AckWait,
		MaxDeliver:    -1,
		ReplayPolicy:  jetstream.ReplayInstantPolicy,
		MaxAckPending: max(4*cfg.BatchSize, 10000),
	}
}

func normLimit(n int64) int64 {
	if n <= 0 {
		return -1
	}
	return n
}

func dupWindow(dup, maxAge time.Duration) time.Duration {
	if maxAge > 0 && dup > maxAge {
		return maxAge
	}
	return dup
}

func ensureStreams(ctx context.Context, js jetstream.JetStream, cfg Config) (jetstream.Stream, jetstream.Consumer, error) {
	stream, err := ensureStream(ctx, js, streamConfig(cfg))
	if err != nil {
		return nil, nil, err
	}
	if _, err := ensureStream(ctx, js, dlqConfig(cfg)); err != nil {
		return nil, nil, err
	}
	cons, _, err := ensureConsumer(ctx, stream, cfg, 0)
	if err != nil {
		return nil, nil, err
	}
	return stream, cons, nil
}

// ensureConsumer returns the durable consumer of cfg on stream, creating
// it if it is missing (created reports that) to deliver from stream
// sequence startSeq (0: from the start).
func ensureConsumer(ctx context.Context, stream jetstream.Stream, cfg Config, startSeq uint64) (cons jetstream.Consumer, created bool, err error) {
	want := consumerConfig(cfg)
	if startSeq > 0 {
		want.DeliverPolicy, want.OptStartSeq = jetstream.DeliverByStartSequencePolicy, startSeq
	}
	cons, err = stream.Consumer(ctx, want.Durable)
	if errors.Is(err, jetstream.ErrConsumerNotFound) {
		cons, err = stream.CreateConsumer(ctx, want)
		created = err == nil
		if errors.Is(err, jetstream.ErrConsumerExists) {
			cons, err = stream.Consumer(ctx, want.Durable)
		}
	}
	if err != nil {
		return nil, false, fmt.Errorf("ingest: consumer %q on stream %q: %w", want.Durable, cfg.Stream, err)
	}
	if err := checkConsumer(cfg, cons.CachedInfo().Config); err != nil {
		return nil, false, err
	}
	return cons, created, nil
}

// ensureDLQ creates the dead-letter stream if it is missing and reports
// whether it did.
func ensureDLQ(ctx context.Context, js jetstream.JetStream, cfg Config) (bool, error) {
	_, err := js.Stream(ctx, cfg.DLQStream)
	if err == nil {
		return false, nil
	}
	if !errors.Is(err, jetstream.ErrStreamNotFound) {
		return false, fmt.Errorf("ingest: stream %q: %w", cfg.DLQStream, err)
	}
	if _, err := ensureStream(ctx, js, dlqConfig(cfg)); err != nil {
		return false, err
	}
	return true, nil
}

func ensureStream(ctx context.Context, js jetstream.JetStream, want jetstream.StreamConfig) (jetstream.Stream, error) {
	s, err := js.Stream(ctx, want.Name)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		s, err = js.CreateStream(ctx, want)
		if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
			s, err = js.Stream(ctx, want.Name) // created concurrently
		}
	}
	if err != nil {
		return nil, fmt.Errorf("ingest: stream %q: %w", want.Name, err)
	}
	if err := checkStream(want, s.CachedInfo().Config); err != nil {
		return nil, err
	}
	return s, nil
}

// checkStream compares the fields bulkstream depends on.
func checkStream(want, have jetstream.StreamConfig) error {
	var errs []error
	diff := func(field string, h, w any) {
		errs = append(errs, fmt.Errorf("ingest: stream %q exists with %s %v, configured %v", want.Name, field, h, w))
	}
	if hs, ws := slices.Sorted(slices.Values(have.Subjects)), slices.Sorted(slices.Values(want.Subjects)); !slices.Equal(hs, ws) {
		diff("subjects", hs, ws)
	}
	if have.Replicas != want.Replicas {
		diff("replicas", have.Replicas, want.Replicas)
	}
	if have.Retention != want.Retention {
		diff("retention", have.Retention, want.Retention)
	}
	if have.MaxAge != want.MaxAge {
		diff("max age", have.MaxAge, want.MaxAge)
	}
	if normLimit(have.MaxMsgsPerSubject) != normLimit(want.MaxMsgsPerSubject) {
		diff("max msgs per subject", have.MaxMsgsPerSubject, want.MaxMsgsPerSubject)
	}
	if have.Storage != want.Storage {
		diff("storage", have.Storage, want.Storage)
	}
	if have.Discard != want.Discard && (have.MaxMsgs > 0 || have.MaxBytes > 0) {
		diff("discard policy", have.Discard, want.Discard)
	}
	if have.MaxMsgs > 0 {
		diff("max msgs", have.MaxMsgs, "unlimited")
	}
	if have.MaxBytes > 0 {
		diff("max bytes", have.MaxBytes, "unlimited")
	}
	return errors.Join(errs...)
}

// checkConsumer rejects a durable that would not deliver every message of
// the stream, in order, to a pull fetcher acking cumulatively.
func checkConsumer(cfg Config, have jetstream.ConsumerConfig) error {
	var errs []error
	diff := func(field string, h, w any) {
		errs = append(errs, fmt.Errorf("ingest: consumer %q on stream %q exists with %s %v, want %v", cfg.Durable, cfg.Stream, field, h, w))
	}
	if have.AckPolicy != jetstream.AckAllPolicy {
		diff("ack policy", have.AckPolicy, jetstream.AckAllPolicy)
	}
	if have.FilterSubject != "" || len(have.FilterSubjects) > 0 {
		diff("filter subjects", append([]string{have.FilterSubject}, have.FilterSubjects...), "none")
	}
	if have.DeliverPolicy != jetstream.DeliverAllPolicy && have.DeliverPolicy != jetstream.DeliverByStartSequencePolicy {
		diff("deliver policy", have.DeliverPolicy, jetstream.DeliverAllPolicy)
	}
	if have.MaxAckPending > 0 && have.MaxAckPending < cfg.BatchSize {
		diff("max ack pending", have.MaxAckPending, fmt.Sprintf(">= batch size %d", cfg.BatchSize))
	}
	if have.MaxDeliver > 0 {
		diff("max deliver", have.MaxDeliver, "unlimited")
	}
	return errors.Join(errs...)
}
