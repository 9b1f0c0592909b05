package ingest

import (
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/bulkstream/bulkstream/internal/diskspace"
)

// Defaults for Config.
const (
	DefaultStream           = "FHIR"
	DefaultSubject          = DefaultSubjectPrefix + ".*.*" // the stream's one subject filter
	DefaultDurable          = "bulkstream"
	DefaultDLQStream        = "FHIR_DLQ"
	DefaultDLQSubjectPrefix = "bulkstream.dlq"
	DefaultBatchSize        = 500
	DefaultFetchWait        = 5 * time.Second
	DefaultAckWait          = time.Minute
	DefaultDuplicates       = 2 * time.Minute
	DefaultDLQMaxAge        = 0 // keep dead letters until an operator purges them
	DefaultPendingRefresh   = 5 * time.Second
	DefaultMinFreeBytes     = 64 << 20 // serve's --ingest-min-free-bytes
	DefaultDiskPoll         = time.Second
)

// Config configures the streams, the durable consumer and the fetch loop.
// The zero value plus defaults is a working single-node setup.
type Config struct {
	// Stream is the change-event stream (DefaultStream).
	Stream string
	// Subjects of Stream (["fhir.*.*"]).
	Subjects []string
	// Replicas of both streams (1).
	Replicas int
	// MaxAge of change events in Stream; 0 keeps them forever.
	MaxAge time.Duration
	// MaxMsgsPerSubject > 0 compacts Stream to that many changes per
	// resource (1 keeps the latest change, like a KV bucket); 0 keeps all.
	MaxMsgsPerSubject int64
	// Duplicates is the Nats-Msg-Id deduplication window of both streams
	// (DefaultDuplicates).
	Duplicates time.Duration

	// Durable is the pull consumer's name (DefaultDurable). It is the
	// consumer of ONE index: every bulkstream replica with its own index
	// needs its own durable name, or the replicas split the stream.
	Durable string
	// AckWait is the consumer's ack wait (DefaultAckWait). It only matters
	// when a batch takes longer than this to commit: the redelivered
	// messages are then recognised by sequence and acked.
	AckWait time.Duration

	// DLQStream is the dead-letter stream (DefaultDLQStream) holding the
	// subjects <DLQSubjectPrefix>.> (DefaultDLQSubjectPrefix).
	DLQStream        string
	DLQSubjectPrefix string

	// BatchSize is the most messages fetched and committed together
	// (DefaultBatchSize).
	BatchSize int
	// FetchWait is how long one fetch waits for a message when the stream
	// is idle (DefaultFetchWait). A batch is committed as soon as the
	// messages available are fetched; FetchWait is not a commit delay.
	FetchWait time.Duration
	// MaxEventBytes is the largest event body accepted
	// (DefaultMaxEventBytes); larger ones are dead-lettered as too_large.
	MaxEventBytes int
	// PendingRefresh is how often the consumer's pending count is read
	// from the consumer info, besides every fetched batch
	// (DefaultPendingRefresh; negative: never).
	PendingRefresh time.Duration

	// MinFreeBytes is the free space, on the filesystem of DiskDir (the
	// index directory), below which ingest pauses: before each batch is
	// committed it needs MinFreeBytes plus twice the batch's size free,
	// else nothing is committed or acked (the events stay in the stream)
	// until the space is there again, checked every DiskPoll. Negative,
	// or DiskDir empty: no check. serve uses DefaultMinFreeBytes.
	MinFreeBytes int64
	DiskDir      string
	// DiskPoll is how often a paused consumer measures the free space
	// again (DefaultDiskPoll).
	DiskPoll time.Duration
	// FreeBytes measures the free bytes on dir's filesystem (ok false:
	// cannot be measured, no pause); nil uses statfs. Tests replace it.
	FreeBytes func(dir string) (free int64, ok bool, err error)

	// Logger receives the consumer's logs; nil discards them.
	Logger *slog.Logger
	// Registerer, if set, gets the consumer's metrics.
	Registerer prometheus.Registerer
}

// withDefaults returns a copy of c with defaults filled in.
func (c Config) withDefaults() Config {
	if c.Stream == "" {
		c.Stream = DefaultStream
	}
	if len(c.Subjects) == 0 {
		c.Subjects = []string{DefaultSubject}
	} else {
		c.Subjects = append([]string(nil), c.Subjects...)
	}
	if c.Replicas == 0 {
		c.Replicas = 1
	}
	if c.Duplicates == 0 {
		c.Duplicates = DefaultDuplicates
	}
	if c.Durable == "" {
		c.Durable = DefaultDurable
	}
	if c.AckWait == 0 {
		c.AckWait = DefaultAckWait
	}
	if c.DLQStream == "" {
		c.DLQStream = DefaultDLQStream
	}
	if c.DLQSubjectPrefix == "" {
		c.DLQSubjectPrefix = DefaultDLQSubjectPrefix
	}
	if c.BatchSize == 0 {
		c.BatchSize = DefaultBatchSize
	}
	if c.FetchWait == 0 {
		c.FetchWait = DefaultFetchWait
	}
	if c.MaxEventBytes == 0 {
		c.MaxEventBytes = DefaultMaxEventBytes
	}
	if c.PendingRefresh == 0 {
		c.PendingRefresh = DefaultPendingRefresh
	}
	if c.DiskPoll == 0 {
		c.DiskPoll = DefaultDiskPoll
	}
	if c.FreeBytes == nil {
		c.FreeBytes = diskspace.Free
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

// validate reports every invalid field of a defaulted Config.
func (c Config) validate() error {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("ingest: config %s: "+format, append([]any{field}, args...)...))
	}
	for _, n := range []struct{ field, v string }{
		{"Stream", c.Stream}, {"Durable", c.Durable}, {"DLQStream", c.DLQStream},
	} {
		if strings.ContainsAny(n.v, ".*> \t\r\n/\\") {
			bad(n.field, "%q must not contain '.', '*', '>', '/', '\\' or whitespace", n.v)
		}
	}
	if c.Stream == c.DLQStream {
		bad("DLQStream", "%q is the same stream as Stream", c.DLQStream)
	}
	for _, s := range c.Subjects {
		if !validSubject(s, true) {
			bad("Subjects", "%q is not a valid subject filter", s)
		}
	}
	if !validSubject(c.DLQSubjectPrefix, false) {
		bad("DLQSubjectPrefix", "%q is not a valid subject without wildcards", c.DLQSubjectPrefix)
	} else {
		probe := c.DLQSubjectPrefix + "." + ReasonNotJSON
		for _, s := range c.Subjects {
			if subjectMatches(s, probe) {
				bad("DLQSubjectPrefix", "dead letters %s.<reason> would be captured by stream subject %q", c.DLQSubjectPrefix, s)
			}
		}
	}
	if c.Replicas < 1 || c.Replicas > 5 {
		bad("Replicas", "%d is not in 1..5", c.Replicas)
	}
	if c.MaxAge < 0 {
		bad("MaxAge", "%v is negative", c.MaxAge)
	}
	if c.MaxMsgsPerSubject < 0 {
		bad("MaxMsgsPerSubject", "%d is negative", c.MaxMsgsPerSubject)
	}
	if c.Duplicates < 0 {
		bad("Duplicates", "%v is negative", c.Duplicates)
	}
	if c.AckWait < time.Second {
		bad("AckWait", "%v is shorter than 1s", c.AckWait)
	}
	if c.BatchSize < 1 || c.BatchSize > 10000 {
		bad("BatchSize", "%d is not in 1..10000", c.BatchSize)
	}
	if c.FetchWait < 10*time.Millisecond {
		bad("FetchWait", "%v is shorter than 10ms", c.FetchWait)
	}
	if c.MaxEventBytes < 1 {
		bad("MaxEventBytes", "%d is not positive", c.MaxEventBytes)
	}
	if c.DiskPoll < 10*time.Millisecond {
		bad("DiskPoll", "%v is shorter than 10ms", c.DiskPoll)
	}
	return errors.Join(errs...)
}

// validSubject reports whether s is a NATS subject (a filter if wild).
func validSubject(s string, wild bool) bool {
	if s == "" {
		return false
	}
	toks := strings.Split(s, ".")
	for i, t := range toks {
		if t == "" || strings.ContainsAny(t, " \t\r\n") {
			return false
		}
		if strings.ContainsAny(t, "*>") {
			if !wild || (t != "*" && t != ">") || (t == ">" && i != len(toks)-1) {
				return false
			}
		}
	}
	return true
}

// subjectMatches reports whether the literal subject matches filter.
func subjectMatches(filter, subject string) bool {
	f, s := strings.Split(filter, "."), strings.Split(subject, ".")
	for i, t := range f {
		if t == ">" {
			return len(s) > i
		}
		if i >= len(s) || (t != "*" && t != s[i]) {
			return false
		}
	}
	return len(f) == len(s)
}
