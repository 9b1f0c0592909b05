package ingest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/bulkstream/bulkstream/internal/fhir"
)

// Defaults for PublisherConfig.
const (
	DefaultMaxInFlight = 4096
	DefaultAckTimeout  = 5 * time.Second
	DefaultMaxRetries  = 10
)

// PublisherConfig configures a Publisher.
type PublisherConfig struct {
	// MaxInFlight is the most publishes awaiting their ack
	// (DefaultMaxInFlight).
	MaxInFlight int
	// SubjectPrefix is the first subject token (DefaultSubjectPrefix).
	SubjectPrefix string
	// MaxEventBytes is the largest body Upsert accepts
	// (DefaultMaxEventBytes); it should match the consumer's.
	MaxEventBytes int
	// AckTimeout is how long one attempt waits for its ack before it is
	// retried (DefaultAckTimeout).
	AckTimeout time.Duration
	// MaxRetries is how often one publish is retried after a timeout,
	// disconnect or missing stream before it fails (DefaultMaxRetries).
	// Retries back off from 100ms to 2s.
	MaxRetries int
}

// PublisherStats counts what a Publisher did.
type PublisherStats struct {
	Published  uint64 // acked by the stream (duplicates included)
	Duplicates uint64 // acked as a duplicate of an earlier Nats-Msg-Id
	Retried    uint64 // attempts repeated after a timeout or disconnect
	Failed     uint64 // publishes given up
	InFlight   int
}

// Publisher publishes change events asynchronously with a bounded number
// in flight, checking the ack of every one.
//
// Nats-Msg-Id (JetStream drops a second message with the same id within
// the stream's duplicate window) names the change, not its content:
// <Type>/<id>/<run>-<n> for an upsert and <Type>/<id>/delete/<run>-<n>
// for a delete, where run is 16 random hex digits drawn per Publisher and
// n counts its Upsert and Delete calls. Every call is a change of its
// own, so a revert (v1, v2, v1 again) within the window is never dropped
// as a duplicate, as a hash of the body would be; publishing identical
// content again is stored, and the index recognises it as a no-op (no new
// version).
//
// A retried attempt reuses its message and so its id: if the first
// attempt was stored after all, the server drops the retry.
//
// Order: publishes of the same resource are sent one after another (a
// publish waits for the ack of the previous one of its subject), so a
// retry can never land after a newer change of the same resource. Events
// of different resources are pipelined.
type Publisher struct {
	js  jetstream.JetStream
	cfg PublisherConfig
	sem chan struct{}

	mu       sync.Mutex
	inflight map[string]chan struct{} // subject → closed when its publish settles
	n        int                      // publishes in flight
	idle     chan struct{}            // closed when n drops to 0; nil while n == 0
	firstErr error

	published, duplicates, retried, failed atomic.Uint64

	run   string        // random, per Publisher: the Nats-Msg-Id prefix of its changes
	calls atomic.Uint64 // Upsert and Delete calls, numbering the changes
}

// NewPublisher returns a Publisher on js.
func NewPublisher(js jetstream.JetStream, cfg PublisherConfig) (*Publisher, error) {
	if js == nil {
		return nil, errors.New("ingest: NewPublisher needs a JetStream context")
	}
	if cfg.MaxInFlight == 0 {
		cfg.MaxInFlight = DefaultMaxInFlight
	}
	if cfg.SubjectPrefix == "" {
		cfg.SubjectPrefix = DefaultSubjectPrefix
	}
	if cfg.MaxEventBytes == 0 {
		cfg.MaxEventBytes = DefaultMaxEventBytes
	}
	if cfg.AckTimeout == 0 {
		cfg.AckTimeout = DefaultAckTimeout
	}
	if cfg.MaxRetries == 0 {
		cfg.MaxRetries = DefaultMaxRetries
	}
	switch {
	case cfg.MaxInFlight < 1:
		return nil, fmt.Errorf("ingest: publisher MaxInFlight %d is not positive", cfg.MaxInFlight)
	case !validSubject(cfg.SubjectPrefix, false):
		return nil, fmt.Errorf("ingest: publisher SubjectPrefix %q is not a subject", cfg.SubjectPrefix)
	case cfg.MaxEventBytes < 1, cfg.AckTimeout < 0, cfg.MaxRetries < 0:
		return nil, errors.New("ingest: publisher MaxEventBytes, AckTimeout and MaxRetries must be positive")
	}
	var run [8]byte
	_, _ = rand.Read(run[:]) // never fails (crypto/rand)
	return &Publisher{
		js:       js,
		cfg:      cfg,
		sem:      make(chan struct{}, cfg.MaxInFlight),
		inflight: map[string]chan struct{}{},
		run:      hex.EncodeToString(run[:]),
	}, nil
}

// changeID is the Nats-Msg-Id suffix of the next change: unique per call
// (and per Publisher), the same for all attempts of that call.
func (p *Publisher) changeID() string {
	return p.run + "-" + strconv.FormatUint(p.calls.Add(1), 10)
}

// Upsert publishes body, a FHIR resource, on the subject of its
// resourceType and id. A body the consumer would dead-letter (not a JSON
// object, no or unknown resourceType, bad id, too large, …) is returned
// as a *RejectError without publishing. Upsert returns once the event is
// sent; Flush waits for the acks. body must not be modified afterwards.
func (p *Publisher) Upsert(ctx context.Context, body []byte) error {
	if len(body) > p.cfg.MaxEventBytes {
		return reject(ReasonTooLarge, "%d bytes, limit %d", len(body), p.cfg.MaxEventBytes)
	}
	r, rej := scanResource(body)
	if rej != nil {
		return rej
	}
	m := &nats.Msg{
		Subject: EncodeSubject(p.cfg.SubjectPrefix, r.typ, r.id),
		Header:  nats.Header{jetstream.MsgIDHeader: {r.typ + "/" + r.id + "/" + p.changeID()}},
		Data:    r.body,
	}
	return p.publish(ctx, m)
}

// Delete publishes a delete of typ/id.
func (p *Publisher) Delete(ctx context.Context, typ, id string) error {
	if !fhir.IsResourceType(typ) {
		return reject(ReasonUnknownType, "%s is not a FHIR R4 resource type", quote(typ))
	}
	if !fhir.IsID(id) {
		return reject(ReasonBadID, "%s is not a FHIR id", quote(id))
	}
	m := &nats.Msg{
		Subject: EncodeSubject(p.cfg.SubjectPrefix, typ, id),
		Header: nats.Header{
			HeaderOp:              {OpDelete},
			jetstream.MsgIDHeader: {typ + "/" + id + "/delete/" + p.changeID()},
		},
	}
	return p.publish(ctx, m)
}

// publish waits for the previous publish of m's subject and a free slot,
// sends m and hands its ack to a goroutine.
func (p *Publisher) publish(ctx context.Context, m *nats.Msg) error {
	for {
		p.mu.Lock()
		prev, busy := p.inflight[m.Subject]
		if !busy {
			break // p.mu held
		}
		p.mu.Unlock()
		select {
		case <-prev:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	done := make(chan struct{})
	p.inflight[m.Subject] = done
	p.n++
	p.mu.Unlock()
	select {
	case p.sem <- struct{}{}:
	case <-ctx.Done():
		p.settle(m, done, ctx.Err())
		return ctx.Err()
	}
	f, err := p.js.PublishMsgAsync(m)
	if err != nil && !retryable(err) {
		<-p.sem
		p.settle(m, done, err)
		return fmt.Errorf("ingest: publish %s: %w", m.Subject, err)
	}
	go p.await(m, f, err, done)
	return nil
}

// await waits for the ack of m, retrying as needed, then settles it.
func (p *Publisher) await(m *nats.Msg, f jetstream.PubAckFuture, err error, done chan struct{}) {
	defer func() { <-p.sem }()
	for attempt := 0; ; attempt++ {
		if err == nil {
			err = p.wait(f)
		}
		if err == nil || !retryable(err) || attempt >= p.cfg.MaxRetries {
			if err != nil {
				err = fmt.Errorf("ingest: publish %s (Nats-Msg-Id %s): %w", m.Subject, m.Header.Get(jetstream.MsgIDHeader), err)
			}
			p.settle(m, done, err)
			return
		}
		p.retried.Add(1)
		time.Sleep(min(2*time.Second, 100*time.Millisecond<<min(attempt, 5)))
		f, err = p.js.PublishMsgAsync(m)
	}
}

// wait returns nil when f is acked.
func (p *Publisher) wait(f jetstream.PubAckFuture) error {
	t := time.NewTimer(p.cfg.AckTimeout)
	defer t.Stop()
	select {
	case ack := <-f.Ok():
		if ack.Duplicate {
			p.duplicates.Add(1)
		}
		return nil
	case err := <-f.Err():
		return err
	case <-t.C:
		return jetstream.ErrAsyncPublishTimeout
	}
}

// retryable reports whether a publish may succeed when repeated with the
// same Nats-Msg-Id: timeouts, disconnects, a stream without leader. An
// error answer of the stream (too large, wrong expectations) is final.
func retryable(err error) bool {
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) {
		return false
	}
	return !errors.Is(err, nats.ErrConnectionClosed) && !errors.Is(err, nats.ErrMaxPayload) &&
		!errors.Is(err, nats.ErrBadSubject) && !errors.Is(err, nats.ErrInvalidMsg)
}

func (p *Publisher) settle(m *nats.Msg, done chan struct{}, err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if err == nil {
		p.published.Add(1)
	} else {
		p.failed.Add(1)
		if p.firstErr == nil {
			p.firstErr = err
		}
	}
	if p.inflight[m.Subject] == done {
		delete(p.inflight, m.Subject)
	}
	close(done)
	p.n--
	if p.n == 0 && p.idle != nil {
		close(p.idle)
		p.idle = nil
	}
}

// Flush waits until every publish so far is acked or has failed. It
// returns an error if any publish of this Publisher ever failed.
func (p *Publisher) Flush(ctx context.Context) error {
	p.mu.Lock()
	if p.n > 0 {
		if p.idle == nil {
			p.idle = make(chan struct{})
		}
		idle := p.idle
		p.mu.Unlock()
		select {
		case <-idle:
		case <-ctx.Done():
			return fmt.Errorf("ingest: flush: %w", ctx.Err())
		}
		p.mu.Lock()
	}
	defer p.mu.Unlock()
	if p.firstErr != nil {
		return fmt.Errorf("ingest: %d publishes failed; first: %w", p.failed.Load(), p.firstErr)
	}
	return nil
}

// Stats returns the publisher's counters.
func (p *Publisher) Stats() PublisherStats {
	p.mu.Lock()
	n := p.n
	p.mu.Unlock()
	return PublisherStats{
		Published:  p.published.Load(),
		Duplicates: p.duplicates.Load(),
		Retried:    p.retried.Load(),
		Failed:     p.failed.Load(),
		InFlight:   n,
	}
}
