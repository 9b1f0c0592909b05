package ingest

import (
	"fmt"
	"log/slog"
	"math/rand/v2"
	"time"

	"github.com/nats-io/nats.go"
)

// Connect dials NATS for a long-running bulkstream process: it reconnects
// forever with exponential backoff (100ms doubling to 5s, plus up to 50%
// jitter so a fleet does not reconnect in lockstep), buffers publishes
// while reconnecting, and logs disconnects, reconnects, asynchronous
// errors and the final close. The first connection is not retried: a
// wrong URL fails at once. log may be nil. opts come after these defaults
// (credentials, TLS roots, an in-process server, an inbox prefix) and win
// where they set the same option.
func Connect(url, name string, log *slog.Logger, opts ...nats.Option) (*nats.Conn, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("component", "nats")
	// A flapping connection or a stream of async errors (slow consumer,
	// permission errors) logs a few lines a minute, with counts.
	var limit logLimiter
	allow := func(key string) (int, bool) { return limit.allow(key, time.Now()) }
	defaults := []nats.Option{
		nats.Name(name),
		nats.MaxReconnects(-1),
		nats.CustomReconnectDelay(reconnectDelay),
		nats.DisconnectErrHandler(func(nc *nats.Conn, err error) {
			n, ok := allow("disconnect")
			switch {
			case !ok:
			case err != nil:
				log.Warn("nats disconnected", "error", err, "suppressed", n)
			default:
				log.Info("nats disconnected", "suppressed", n)
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			if n, ok := allow("reconnect"); ok {
				log.Info("nats reconnected", "url", nc.ConnectedUrlRedacted(), "reconnects", nc.Stats().Reconnects, "suppressed", n)
			}
		}),
		nats.ClosedHandler(func(nc *nats.Conn) {
			if err := nc.LastError(); err != nil {
				log.Warn("nats connection closed", "error", err)
				return
			}
			log.Info("nats connection closed")
		}),
		nats.ErrorHandler(func(nc *nats.Conn, sub *nats.Subscription, err error) {
			n, ok := allow("async")
			if !ok {
				return
			}
			if sub != nil {
				log.Warn("nats async error", "subject", sub.Subject, "error", err, "suppressed", n)
				return
			}
			log.Warn("nats async error", "error", err, "suppressed", n)
		}),
	}
	nc, err := nats.Connect(url, append(defaults, opts...)...)
	if err != nil {
		return nil, fmt.Errorf("ingest: connect to nats %s: %w", redact(url), err)
	}
	return nc, nil
}

// reconnectDelay is the wait before reconnect attempt n (1-based) once
// every server in the pool has been tried.
func reconnectDelay(attempts int) time.Duration {
	d := min(5*time.Second, 100*time.Millisecond<<min(max(attempts-1, 0), 6))
	return d + rand.N(d/2+1)
}

// redact hides a password in a nats:// URL.
func redact(url string) string {
	for i := 0; i+3 <= len(url); i++ {
		if url[i:i+3] == "://" {
			rest := url[i+3:]
			at := -1
			for j := 0; j < len(rest) && rest[j] != '/'; j++ {
				if rest[j] == '@' {
					at = j
				}
			}
			if at < 0 {
				return url
			}
			return url[:i+3] + "redacted@" + rest[at+1:]
		}
	}
	return url
}
