package ingest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/bulkstream/bulkstream/index"
)

// ReplayStats counts what Replay read and applied.
type ReplayStats struct {
	Messages int    // messages read
	Applied  int    // changes handed to the Applier
	Rejected int    // messages Decode refused (dead-lettered when first seen)
	LastSeq  uint64 // last stream sequence applied
}

// replayProgressEvery is how often Replay logs its progress.
const replayProgressEvery = 2 * time.Second

// Replay reads cfg.Stream from its first message up to the last sequence
// it held when Replay started and applies every applicable event to dst,
// a fresh index, in batches of cfg.BatchSize, the way the live Consumer
// does: the commit clock starts at the stream's creation time (SetOrigin)
// and every change carries its stream sequence and timestamp, so the
// result equals the index the Consumer built. Events that fail Decode
// (with cfg.MaxEventBytes) are only counted: they were dead-lettered when
// the Consumer first saw them. It reads with an ordered consumer and
// creates no durable one. Progress is logged to log (nil: nowhere) every
// few seconds.
func Replay(ctx context.Context, js jetstream.JetStream, cfg Config, dst Applier, log *slog.Logger) (ReplayStats, error) {
	var st ReplayStats
	cfg = cfg.withDefaults()
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	stream, err := js.Stream(ctx, cfg.Stream)
	if err != nil {
		return st, fmt.Errorf("ingest: replay: stream %q: %w", cfg.Stream, err)
	}
	info, err := stream.Info(ctx)
	if err != nil {
		return st, fmt.Errorf("ingest: replay: stream %q: %w", cfg.Stream, err)
	}
	if err := dst.SetOrigin(info.Created); err != nil {
		return st, err
	}
	head := info.State.LastSeq
	if head == 0 || info.State.Msgs == 0 {
		return st, nil
	}
	cons, err := js.OrderedConsumer(ctx, cfg.Stream, jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverAllPolicy})
	if err != nil {
		return st, fmt.Errorf("ingest: replay: %w", err)
	}
	lastLog := time.Now()
	for st.LastSeq < head {
		// Ask for no more than the stream held at the start: a fetch of
		// more would wait out its timeout at the end of the stream.
		want := cfg.BatchSize
		if left := int64(info.State.Msgs) - int64(st.Messages); left > 0 && left < int64(want) {
			want = int(left)
		}
		batch, err := cons.Fetch(want, jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			return st, fmt.Errorf("ingest: replay: fetch: %w", err)
		}
		var changes []index.Change
		var last uint64
		for msg := range batch.Messages() {
			md, err := msg.Metadata()
			if err != nil {
				return st, fmt.Errorf("ingest: replay: %w", err)
			}
			st.Messages++
			last = md.Sequence.Stream
			ch, err := Decode(msg.Subject(), msg.Headers(), msg.Data(), cfg.MaxEventBytes)
			if err != nil {
				st.Rejected++
				continue
			}
			ch.Seq, ch.Time = md.Sequence.Stream, md.Timestamp
			changes = append(changes, ch)
		}
		if err := batch.Error(); err != nil && !errors.Is(err, jetstream.ErrNoMessages) {
			return st, fmt.Errorf("ingest: replay: fetch: %w", err)
		}
		if last == 0 {
			if err := ctx.Err(); err != nil {
				return st, err
			}
			continue
		}
		if _, err := dst.Apply(ctx, changes, last); err != nil {
			return st, err
		}
		st.Applied += len(changes)
		st.LastSeq = last
		if time.Since(lastLog) > replayProgressEvery {
			log.Info("rebuild progress", attrSeq, last, "head", head)
			lastLog = time.Now()
		}
	}
	return st, nil
}
