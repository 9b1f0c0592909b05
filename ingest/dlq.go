package ingest

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Headers of a dead letter. The original message's headers are kept,
// except the Nats-* ones that would change how JetStream stores the
// dead letter (its Nats-Msg-Id is kept as Bulkstream-Dlq-Msg-Id).
const (
	HeaderDLQReason    = "Bulkstream-Dlq-Reason"
	HeaderDLQDetail    = "Bulkstream-Dlq-Detail"
	HeaderDLQSubject   = "Bulkstream-Dlq-Subject"
	HeaderDLQSequence  = "Bulkstream-Dlq-Sequence"
	HeaderDLQMsgID     = "Bulkstream-Dlq-Msg-Id"
	HeaderDLQTruncated = "Bulkstream-Dlq-Truncated" // original body size when the body was dropped to fit
)

// deadLetter is a message Decode rejected.
type deadLetter struct {
	subject string
	hdr     nats.Header
	data    []byte
	seq     uint64
	rej     *RejectError
}

// dlqMsg builds the dead letter of d. Its Nats-Msg-Id
// dlq/<stream>/<seq> makes a republish after a failed batch a duplicate
// the DLQ stream drops. maxPayload is the server's limit; a body that
// would not fit is dropped (it stays in the change stream at seq).
func dlqMsg(prefix, stream string, d deadLetter, maxPayload int64) *nats.Msg {
	h := nats.Header{}
	for k, v := range d.hdr {
		if strings.HasPrefix(strings.ToLower(k), "nats-") {
			if strings.EqualFold(k, jetstream.MsgIDHeader) && len(v) > 0 {
				h.Set(HeaderDLQMsgID, v[0])
			}
			continue
		}
		h[k] = append([]string(nil), v...)
	}
	detail := d.rej.Detail
	if len(detail) > 512 {
		detail = detail[:512]
	}
	h.Set(HeaderDLQReason, d.rej.Reason)
	h.Set(HeaderDLQDetail, sanitizeHeader(detail))
	h.Set(HeaderDLQSubject, d.subject)
	h.Set(HeaderDLQSequence, strconv.FormatUint(d.seq, 10))
	h.Set(jetstream.MsgIDHeader, "dlq/"+stream+"/"+strconv.FormatUint(d.seq, 10))
	m := &nats.Msg{Subject: prefix + "." + d.rej.Reason, Header: h, Data: d.data}
	const slack = 512 // protocol framing, and the headers set below
	if maxPayload > 0 && int64(len(m.Data)+headerSize(h)+slack) > maxPayload {
		h.Set(HeaderDLQTruncated, strconv.Itoa(len(d.data)))
		m.Data = nil
		if int64(headerSize(h)+slack) > maxPayload {
			// The original headers alone are too large: keep ours only.
			for k := range h {
				if !strings.HasPrefix(k, "Bulkstream-Dlq-") && k != jetstream.MsgIDHeader {
					delete(h, k)
				}
			}
		}
	}
	return m
}

func headerSize(h nats.Header) int {
	n := len("NATS/1.0\r\n\r\n")
	for k, vs := range h {
		for _, v := range vs {
			n += len(k) + len(v) + 4
		}
	}
	return n
}

// sanitizeHeader keeps a header value on one line.
func sanitizeHeader(s string) string {
	return strings.Map(func(r rune) rune {
		if r == '\r' || r == '\n' {
			return ' '
		}
		return r
	}, s)
}

// publishDeadLetters republishes letters and waits for every ack.
func publishDeadLetters(ctx context.Context, js jetstream.JetStream, prefix, stream string, letters []deadLetter) error {
	maxPayload := js.Conn().MaxPayload()
	futures := make([]jetstream.PubAckFuture, 0, len(letters))
	for _, d := range letters {
		f, err := js.PublishMsgAsync(dlqMsg(prefix, stream, d, maxPayload))
		if err != nil {
			return fmt.Errorf("ingest: dead-letter seq %d: %w", d.seq, err)
		}
		futures = append(futures, f)
	}
	for i, f := range futures {
		select {
		case <-f.Ok():
		case err := <-f.Err():
			return fmt.Errorf("ingest: dead-letter seq %d: %w", letters[i].seq, err)
		case <-ctx.Done():
			return fmt.Errorf("ingest: dead-letter seq %d: waiting for ack: %w", letters[i].seq, ctx.Err())
		}
	}
	return nil
}
