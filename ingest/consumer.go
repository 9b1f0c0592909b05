package ingest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/bulkstream/bulkstream/index"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Applier is the store the consumer writes to; *index.Index satisfies it.
type Applier interface {
	// Apply commits changes (stream order) and the applied sequence
	// lastSeq as one durable batch, skipping changes at or below the
	// applied sequence.
	Apply(ctx context.Context, changes []index.Change, lastSeq uint64) ([]index.Result, error)
	// AppliedSeq is the last committed stream sequence.
	AppliedSeq() uint64
	// SetOrigin starts the commit clock at the stream's creation time.
	SetOrigin(origin time.Time) error
}

// Errors of the Consumer lifecycle.
var (
	ErrStarted = errors.New("ingest: consumer already started")
	ErrClosed  = errors.New("ingest: consumer closed")
)

// Log attribute keys.
const (
	attrError    = "error"
	attrSeq      = "seq"
	attrStage    = "stage"
	attrFailures = "failures"
	attrReason   = "reason"
	attrSubject  = "subject"
)

// Backoff of the fetch loop after a failed step.
const (
	minBackoff     = 100 * time.Millisecond
	maxBackoff     = 5 * time.Second
	logEvery       = 30 * time.Second // repeated failures are logged at most this often
	dlqTimeout     = 30 * time.Second
	resyncTimeout  = 10 * time.Second
	fetchMoreLimit = 1 // see fetch
	fetchAhead     = 2 // batches per pull request, see fetch
)

// Consumer is the single writer of an index: it fetches change events
// from the durable pull consumer in stream order, dead-letters bad ones,
// commits each fetched batch with one Apply and acks it afterwards.
type Consumer struct {
	cfg Config
	js  jetstream.JetStream
	dst Applier
	log *slog.Logger
	m   *metrics
	g   *gauges
	// deadLogs rate-limits the dead-letter warnings (commit goroutine).
	deadLogs logLimiter
	// diskLogs rate-limits the free-space measurement failures.
	diskLogs logLimiter

	mu      sync.Mutex
	started bool
	closed  bool
	cancel  context.CancelFunc
	done    chan struct{} // closed when the loop and the pending refresher have returned
	stream  jetstream.Stream
	cons    jetstream.Consumer

	// Owned by the loop goroutine.
	lastDSeq uint64 // consumer (delivery) sequence of the last message seen; 0 after a resync
	// progressed is set when a step committed a batch or found the
	// stream applied to its head: only then has a failing loop recovered.
	progressed bool
	// The loop prepares (fetches and decodes) the next batch while the
	// previous one commits: inflight is the commit running, if any, and
	// queued the last stream sequence handed to it. The two batch buffers
	// take turns.
	inflight chan commitResult
	queued   uint64
	bufs     [2]batch
	next     int
	// pull is the open pull request that the next batches are taken
	// from (see fetch), or nil; it asks for pullSize messages.
	pull     jetstream.MessageBatch
	pullSize int
}

// batch is a fetched and decoded batch, ready to commit.
type batch struct {
	msgs          []jetstream.Msg
	changes       []index.Change
	dead          []deadLetter
	last, pending uint64
	lastTime      time.Time
	redelivered   int
	// applied is the stream sequence up to which messages are skipped as
	// redeliveries; err is the first error of a message, which fails the
	// batch.
	applied uint64
	err     error
}

// reset empties b for reuse, keeping its capacity.
func (b *batch) reset() {
	clear(b.msgs)
	clear(b.changes)
	clear(b.dead)
	*b = batch{msgs: b.msgs[:0], changes: b.changes[:0], dead: b.dead[:0]}
}

// commitResult is the outcome of a batch's commit: the failing stage and
// its error, or "" and nil.
type commitResult struct {
	stage string
	err   error
}

// New checks cfg and builds a Consumer. It does not touch NATS until
// Start.
func New(cfg Config, js jetstream.JetStream, dst Applier) (*Consumer, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if js == nil || dst == nil {
		return nil, errors.New("ingest: New needs a JetStream context and an Applier")
	}
	g := &gauges{conn: js.Conn}
	c := &Consumer{
		cfg:  cfg,
		js:   js,
		dst:  dst,
		log:  cfg.Logger.With("component", "ingest"),
		g:    g,
		m:    newMetrics(g),
		done: make(chan struct{}),
	}
	g.lastSeq.Store(dst.AppliedSeq())
	if err := c.m.register(cfg.Registerer); err != nil {
		return nil, fmt.Errorf("ingest: register metrics: %w", err)
	}
	return c, nil
}

// Start ensures the streams and the durable consumer exist (see
// EnsureStreams), starts the commit clock at the stream's creation time,
// positions the durable consumer just after the index's applied sequence
// and starts the fetch loop. ctx bounds the setup only; Close stops the
// loop.
func (c *Consumer) Start(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case c.closed:
		return ErrClosed
	case c.started:
		return ErrStarted
	}
	stream, cons, err := ensureStreams(ctx, c.js, c.cfg)
	if err != nil {
		return err
	}
	info := stream.CachedInfo()
	if err := c.dst.SetOrigin(info.Created); err != nil {
		return fmt.Errorf("ingest: start commit clock: %w", err)
	}
	if applied := c.dst.AppliedSeq(); applied > info.State.LastSeq {
		return fmt.Errorf("ingest: the index has applied stream %q up to sequence %d but the stream ends at %d: "+
			"the stream was recreated; rebuild the index", c.cfg.Stream, applied, info.State.LastSeq)
	}
	c.stream, c.cons = stream, cons
	if info.State.Msgs > 0 {
		c.g.sawHead(info.State.LastSeq)
	}
	if t := c.appliedTime(ctx, stream, info.State); !t.IsZero() {
		c.g.lastTimeUS.Store(t.UnixMicro())
	}
	cc := cons.CachedInfo().Config
	c.pullSize = pullSize(c.cfg.BatchSize, cc.MaxAckPending, cc.MaxRequestBatch)
	if err := c.resync(ctx); err != nil {
		return err
	}
	loopCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	c.cancel = cancel
	c.started = true
	c.log.Info("ingest started", "stream", c.cfg.Stream, "durable", c.cfg.Durable, attrSeq, c.dst.AppliedSeq())
	var wg sync.WaitGroup
	wg.Go(func() { c.run(loopCtx) })
	if c.cfg.PendingRefresh > 0 {
		wg.Go(func() { c.refreshPending(loopCtx) })
	}
	go func() { wg.Wait(); close(c.done) }()
	return nil
}

// Lag is how far the index is behind the stream: while the applied
// sequence is below the stream's head (its last sequence), now minus the
// JetStream timestamp of the last applied message (of the stream's first
// message if none was applied); 0 when the head is applied. It grows while
// ingest is stuck, whatever the durable consumer reports.
func (c *Consumer) Lag() time.Duration {
	return time.Duration(c.g.lag() * float64(time.Second))
}

// Pending is the number of stream sequences after the applied one, up to
// the stream's head as last seen.
func (c *Consumer) Pending() uint64 { return c.g.pending() }

// appliedTime is the JetStream timestamp of the last applied message, or
// of the stream's first message if it cannot be read (none applied yet,
// or it is gone).
func (c *Consumer) appliedTime(ctx context.Context, stream jetstream.Stream, st jetstream.StreamState) time.Time {
	if applied := c.dst.AppliedSeq(); applied > 0 && applied >= st.FirstSeq {
		if m, err := stream.GetMsg(ctx, applied); err == nil {
			return m.Time
		}
	}
	return st.FirstTime
}

// refreshPending reads the stream's head every PendingRefresh, so that
// pending and lag stay true while the fetch loop is idle or failing: they
// compare the applied sequence with the head, never with what the
// durable consumer counts as delivered (a consumer that is gone or
// redelivers a failing batch has delivered everything).
func (c *Consumer) refreshPending(ctx context.Context) {
	t := time.NewTicker(c.cfg.PendingRefresh)
	defer t.Stop()
	var failures int
	var lastLog time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		ictx, cancel := context.WithTimeout(ctx, c.cfg.PendingRefresh)
		// A fresh handle: the loop's stream handle is not shared.
		stream, err := c.js.Stream(ictx, c.cfg.Stream)
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			failures++
			if failures == 1 || time.Since(lastLog) >= logEvery {
				c.log.Debug("cannot read the stream's head", attrFailures, failures, attrError, err)
				lastLog = time.Now()
			}
			continue
		}
		failures = 0
		st := stream.CachedInfo().State
		if st.Msgs == 0 {
			// Everything expired or was purged: nothing is left to apply.
			c.g.head.Store(c.g.lastSeq.Load())
			continue
		}
		c.g.head.Store(st.LastSeq)
		if c.g.lastTimeUS.Load() == 0 && !st.FirstTime.IsZero() {
			c.g.lastTimeUS.Store(st.FirstTime.UnixMicro())
		}
	}
}

// Close stops the fetch loop and waits for it: a batch being committed is
// committed and acked first. It is safe to call more than once; it
// returns ctx's error if ctx ends first.
func (c *Consumer) Close(ctx context.Context) error {
	c.mu.Lock()
	first := !c.closed
	c.closed = true
	started := c.started
	if c.cancel != nil {
		c.cancel()
	}
	c.mu.Unlock()
	if started {
		select {
		case <-c.done:
		case <-ctx.Done():
			return fmt.Errorf("ingest: close: %w", ctx.Err())
		}
	}
	if first {
		c.m.unregister(c.cfg.Registerer)
		c.log.Info("ingest stopped", attrSeq, c.dst.AppliedSeq())
	}
	return nil
}

// Head returns the stream's last sequence. Everything published before
// the call is applied once the index's applied sequence reaches it.
func (c *Consumer) Head(ctx context.Context) (uint64, error) {
	s, err := c.js.Stream(ctx, c.cfg.Stream)
	if err != nil {
		return 0, fmt.Errorf("ingest: stream %q head: %w", c.cfg.Stream, err)
	}
	return s.CachedInfo().State.LastSeq, nil
}

// run is the fetch loop.
func (c *Consumer) run(ctx context.Context) {
	defer c.dropPull()
	// A batch whose commit started is committed and acked before the loop
	// ends (Close waits for it).
	defer c.wait()
	var (
		failures   int
		lastLog    time.Time
		needResync bool
	)
	for ctx.Err() == nil {
		c.progressed = false
		stage, err := c.step(ctx, &needResync)
		if err == nil {
			// A step that only started a commit has not recovered yet: the
			// commit may fail like the last one.
			if c.progressed {
				if failures > 0 {
					c.log.Info("ingest recovered", attrFailures, failures, attrSeq, c.dst.AppliedSeq())
				}
				failures = 0
			}
			continue
		}
		if ctx.Err() != nil {
			return
		}
		// The unacked batch is thrown away and the durable consumer moved
		// back to just after the applied sequence, so the same messages
		// come again, at once and in stream order.
		needResync = true
		failures++
		c.m.errors.WithLabelValues(stage).Inc()
		if failures == 1 || time.Since(lastLog) >= logEvery {
			c.log.Warn("ingest step failed; retrying", attrStage, stage, attrFailures, failures, attrSeq, c.dst.AppliedSeq(), attrError, err)
			lastLog = time.Now()
		}
		delay := min(maxBackoff, minBackoff<<min(failures-1, 10))
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return
		}
	}
}

// step runs one fetch–decode–commit–ack cycle, overlapped with the
// previous one: it fetches and decodes a batch while the previous batch
// commits, then waits for that commit (and its ack) and starts this
// batch's. A failure of either discards the batch not yet committed. It
// returns the failing stage for the error metric.
func (c *Consumer) step(ctx context.Context, needResync *bool) (string, error) {
	if *needResync {
		// No commit is in flight: a failed step waited for it.
		if err := c.resync(ctx); err != nil {
			return "resync", err
		}
		*needResync = false
	}
	// The buffer of the commit before the one in flight, if any: wait
	// returned for it.
	b := &c.bufs[c.next]
	if err := c.fetch(ctx, b); err != nil {
		if stage, cerr := c.wait(); cerr != nil {
			return stage, cerr
		}
		return "fetch", err
	}
	if len(b.msgs) == 0 {
		if stage, err := c.wait(); err != nil {
			return stage, err
		}
		if c.g.head.Load() > c.dst.AppliedSeq() {
			// The durable delivers nothing but the stream has more: it was
			// moved (or recreated) past what the index holds. Put it back.
			*needResync = true
			return "", nil
		}
		c.progressed = true
		return "", nil
	}
	if cstage, cerr := c.wait(); cerr != nil {
		return cstage, cerr // b is dropped: the resync delivers it again
	}
	if b.err != nil {
		return "fetch", b.err
	}
	// Nothing is in flight now: while the disk is low, nothing is
	// committed. The batch is dropped after a pause and delivered again
	// by the resync (its deliveries may have timed out meanwhile).
	if paused, err := c.waitDisk(ctx, batchBytes(b)); paused || err != nil {
		*needResync = true
		return "", err
	}
	c.next = 1 - c.next
	c.queued = b.last
	done := make(chan commitResult, 1)
	c.inflight = done
	go func() {
		stage, err := c.commit(ctx, b)
		done <- commitResult{stage, err}
	}()
	return "", nil
}

// wait waits for the commit in flight, if any, and returns its result.
func (c *Consumer) wait() (string, error) {
	if c.inflight == nil {
		return "", nil
	}
	r := <-c.inflight
	c.inflight = nil
	if r.err != nil {
		c.queued = 0
	} else {
		c.progressed = true
	}
	return r.stage, r.err
}

// resync moves the durable consumer to the sequence after the index's
// applied one and forgets every delivery in flight. The index, not the
// consumer's ack floor, is the truth about what is applied.
func (c *Consumer) resync(ctx context.Context) error {
	c.dropPull()
	seq := c.dst.AppliedSeq() + 1
	rctx, cancel := context.WithTimeout(ctx, resyncTimeout)
	defer cancel()
	// The durable may have been deleted behind our back (an operator, a
	// restore), and the server does not answer a reset of a consumer it
	// does not have: create it again first, delivering from just after
	// the applied sequence.
	cons, created, err := ensureConsumer(rctx, c.stream, c.cfg, seq)
	if err != nil {
		return err
	}
	c.cons = cons
	if created {
		c.log.Warn("durable consumer was missing; created it again after the applied sequence",
			"durable", c.cfg.Durable, "stream", c.cfg.Stream, attrSeq, seq-1)
	}
	_, err = c.stream.ResetConsumerToSequence(rctx, c.cfg.Durable, seq)
	if err != nil {
		return fmt.Errorf("ingest: reset consumer %q to stream sequence %d: %w", c.cfg.Durable, seq, err)
	}
	c.lastDSeq = 0
	c.queued = 0
	return nil
}

// fetch fetches the next messages into b: all that are available up to
// BatchSize, or, when none are, the first to arrive within FetchWait
// together with whatever arrived with it. It never waits for a batch to
// fill up. Each message is checked and decoded as it arrives (see
// prepare), while the rest are still on their way. An error of the fetch
// is returned; one of a message is left in b.err.
//
// When messages are available, one pull request asks for several
// batches (pullSize), and fetch takes BatchSize of them at a time: the
// server sends the next batch while this one commits, instead of waiting
// for a request per batch. The request stays open across calls (pull).
func (c *Consumer) fetch(ctx context.Context, b *batch) error {
	b.reset()
	// Messages at or below this are committed, or will be by the commit in
	// flight; Apply would skip them.
	b.applied = max(c.dst.AppliedSeq(), c.queued)
	for fresh := false; len(b.msgs) == 0; {
		if c.pull == nil {
			if fresh {
				break // a new request found nothing: caught up
			}
			mb, err := c.cons.FetchNoWait(c.pullSize)
			if err != nil {
				return err
			}
			c.pull, fresh = mb, true
		}
		if err := c.take(b); err != nil {
			return err
		}
	}
	if len(b.msgs) > 0 {
		return nil
	}
	wctx, cancel := context.WithTimeout(ctx, c.cfg.FetchWait)
	err := c.collect(b)(c.cons.Fetch(fetchMoreLimit, jetstream.FetchContext(wctx)))
	cancel()
	if errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil {
		err = nil
	}
	if err != nil || len(b.msgs) == 0 || c.cfg.BatchSize == 1 {
		return err
	}
	return c.collect(b)(c.cons.FetchNoWait(c.cfg.BatchSize - len(b.msgs)))
}

// take receives the messages of the open pull request into b until b
// holds BatchSize or the request ends, and fails when the request did.
func (c *Consumer) take(b *batch) error {
	msgs := c.pull.Messages()
	for len(b.msgs) < c.cfg.BatchSize {
		m, ok := <-msgs
		if !ok {
			err := c.pull.Error()
			c.pull = nil
			return err
		}
		c.add(b, m)
	}
	return nil
}

// dropPull waits for the open pull request, if any, to end and drops its
// messages. It must end before the consumer is reset: the server would
// deliver from the new position to it otherwise, and those deliveries
// would be lost. A request without wait ends as soon as the server has
// sent what it had, or after a second without messages if the connection
// is gone.
func (c *Consumer) dropPull() {
	if c.pull == nil {
		return
	}
	for range c.pull.Messages() {
	}
	c.pull = nil
}

// collect receives all the messages of a pull request into b and fails
// when the request did.
func (c *Consumer) collect(b *batch) func(jetstream.MessageBatch, error) error {
	return func(mb jetstream.MessageBatch, err error) error {
		if err != nil {
			return err
		}
		for m := range mb.Messages() {
			c.add(b, m)
		}
		return mb.Error()
	}
}

// add appends m to b and prepares it, unless an earlier message of b
// failed.
func (c *Consumer) add(b *batch, m jetstream.Msg) {
	b.msgs = append(b.msgs, m)
	if b.err == nil {
		b.err = c.prepare(b, m)
	}
}

// pullSize is how many messages one pull request asks for: fetchAhead
// batches, as far as the durable's limits allow. MaxAckPending has to
// leave room for the batch being committed, which is not acked yet.
func pullSize(batch, maxAckPending, maxRequestBatch int) int {
	n := fetchAhead * batch
	if maxAckPending > 0 {
		n = min(n, maxAckPending-batch)
	}
	n = max(n, batch)
	if maxRequestBatch > 0 {
		n = min(n, maxRequestBatch)
	}
	return n
}

// prepare checks the delivery order of m, the next message of b, and
// decodes it into b, setting it aside for the dead letter stream if it is
// rejected. An error fails the whole batch.
func (c *Consumer) prepare(b *batch, m jetstream.Msg) error {
	md, err := m.Metadata()
	if err != nil {
		return fmt.Errorf("ingest: message metadata: %w", err)
	}
	if c.lastDSeq != 0 && md.Sequence.Consumer != c.lastDSeq+1 {
		// A delivery never reached us (it went to a fetch that had
		// already ended, or across a reconnect). Applying what follows
		// would skip it for good.
		err := fmt.Errorf("ingest: delivery %d follows %d: a delivery was lost", md.Sequence.Consumer, c.lastDSeq)
		c.lastDSeq = 0
		return err
	}
	c.lastDSeq = md.Sequence.Consumer
	seq := md.Sequence.Stream
	if seq <= b.last {
		return fmt.Errorf("ingest: stream sequence %d delivered after %d", seq, b.last)
	}
	b.last, b.pending = seq, md.NumPending
	if seq <= b.applied {
		b.redelivered++
		return nil
	}
	b.lastTime = md.Timestamp
	ch, err := Decode(m.Subject(), m.Headers(), m.Data(), c.cfg.MaxEventBytes)
	if err != nil {
		var rej *RejectError
		if !errors.As(err, &rej) {
			return err
		}
		b.dead = append(b.dead, deadLetter{subject: m.Subject(), hdr: m.Headers(), data: m.Data(), seq: seq, rej: rej})
		return nil
	}
	ch.Seq, ch.Time = seq, md.Timestamp
	b.changes = append(b.changes, ch)
	return nil
}

// commit dead-letters a prepared batch's rejected messages, commits the
// rest with one Apply and acks the batch. It runs while the loop prepares
// the next batch, so it touches nothing the loop does.
func (c *Consumer) commit(ctx context.Context, b *batch) (string, error) {
	// Dead letters are acked by the DLQ stream before the batch that
	// skips them commits: a crash in between republishes them, and the
	// Nats-Msg-Id makes that a duplicate.
	if len(b.dead) > 0 {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), dlqTimeout)
		err := publishDeadLetters(dctx, c.js, c.cfg.DLQSubjectPrefix, c.cfg.Stream, b.dead)
		if err != nil {
			// The dead-letter stream may have been deleted: create it
			// again and publish once more (the message ids deduplicate).
			if created, cerr := ensureDLQ(dctx, c.js, c.cfg); cerr != nil {
				err = errors.Join(err, cerr)
			} else if created {
				c.log.Warn("dead-letter stream was missing; created it again", "stream", c.cfg.DLQStream)
				err = publishDeadLetters(dctx, c.js, c.cfg.DLQSubjectPrefix, c.cfg.Stream, b.dead)
			}
		}
		cancel()
		if err != nil {
			return "dlq", err
		}
	}
	last := b.last
	if last > c.dst.AppliedSeq() {
		start := time.Now()
		// Not cancelled by Close: a batch that started commits.
		results, err := c.dst.Apply(context.WithoutCancel(ctx), b.changes, last)
		if err != nil {
			return "apply", err
		}
		c.m.commit.Observe(time.Since(start).Seconds())
		c.m.batchSize.Observe(float64(len(b.msgs)))
		for _, r := range results {
			if r.Skipped {
				continue
			}
			if r.Noop {
				c.m.noop.WithLabelValues(r.Change.Type).Inc()
				continue
			}
			op := OpUpsert
			if r.Change.Delete {
				op = OpDelete
			}
			c.m.applied.WithLabelValues(r.Change.Type, op).Inc()
		}
		for _, d := range b.dead {
			c.m.deadLettered.WithLabelValues(d.rej.Reason).Inc()
			if n, ok := c.deadLogs.allow(d.rej.Reason, time.Now()); ok {
				c.log.Warn("event dead-lettered", attrSeq, d.seq, attrSubject, d.subject, attrReason, d.rej.Reason,
					"detail", d.rej.Detail, "suppressed", n)
			}
		}
		if !b.lastTime.IsZero() {
			c.g.lastTimeUS.Store(b.lastTime.UnixMicro())
		}
		c.g.lastSeq.Store(last)
	}
	c.m.redelivered.Add(float64(b.redelivered))
	c.g.sawHead(b.last + b.pending)
	// AckAll: acking the last message acks the batch. A lost ack only
	// means a redelivery, which the applied sequence recognises.
	if err := b.msgs[len(b.msgs)-1].Ack(); err != nil && !errors.Is(err, nats.ErrConnectionClosed) {
		c.m.errors.WithLabelValues("ack").Inc()
		c.log.Debug("ack failed", attrSeq, last, attrError, err)
	}
	return "", nil
}
