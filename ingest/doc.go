// Package ingest applies FHIR change events from NATS JetStream to the
// index, in stream order, and publishes them.
//
// # Events
//
// One message per change on <prefix>.<ResourceType>.<id> (prefix "fhir",
// stream "FHIR" with subjects "fhir.*.*" by default). A '.' in an id is
// written %2E and a '%' %25 (EncodeSubject, ParseSubject). An upsert's
// body is the resource JSON, whose resourceType and id must equal the
// subject's; a delete has the header Fhir-Op: delete and any body.
// Publishers set Nats-Msg-Id to an id of the change; Publisher's scheme
// is documented on it.
//
// Decode accepts an upsert only if the body is at most MaxEventBytes
// (1 MiB), UTF-8, JSON, an object nested at most MaxDepth (64) deep, with
// no duplicate top-level member, a resourceType from the 146 FHIR R4
// resource types, an id matching [A-Za-z0-9\-.]{1,64}, and an object meta
// if any, in which tag, versionId and lastUpdated (the members bulkstream
// rewrites) appear at most once and tag is an array of objects. The body
// reaches the index compacted but otherwise byte for byte as published:
// numbers are never converted, member order is kept.
//
// # Dead letters
//
// An event that fails Decode is never dropped and never blocks the
// stream: it is republished to <DLQSubjectPrefix>.<reason>
// ("bulkstream.dlq.<reason>", stream "FHIR_DLQ") with its body, its
// headers and the headers Bulkstream-Dlq-Reason, -Detail, -Subject and
// -Sequence, under Nats-Msg-Id dlq/<stream>/<seq>. Reasons are the fixed
// Reason* set. The dead letters of a batch are acked by the DLQ stream
// before the batch is committed, so a crash cannot lose one and a retry
// is deduplicated.
//
// # Commit and ack
//
// A Consumer is the single writer of an index. It fetches what is
// available (up to BatchSize, waiting up to FetchWait only when nothing
// is), commits the batch with one Applier.Apply (one synced Pebble batch
// carrying the changes and the batch's last stream sequence,
// dead-lettered messages included), and only then acks it with AckAll. A
// crash between commit and ack redelivers messages the index has already
// applied; Apply skips them by sequence.
//
// The index, not the consumer's ack floor, says what is applied. On
// Start, and after every failed step (fetch error, disconnect, DLQ or
// Apply failure, a lost delivery), the durable consumer is reset to the
// sequence after the index's applied sequence (JetStream consumer reset;
// a server without it makes Start fail), so unacked messages come back
// at once and in stream order. Failed steps back off from 100ms to 5s
// and are logged at most every 30s. A durable consumer or dead-letter
// stream deleted at runtime is created again at the next resync or dead
// letter.
//
// The durable consumer belongs to one index: replicas of bulkstream with
// their own index need their own Durable names.
//
// # Disk space
//
// With Config.DiskDir set and MinFreeBytes not negative, a batch is
// committed only while the free space there is at least MinFreeBytes
// plus twice the batch's size; below it the loop pauses (nothing is
// committed or acked, the events stay in the stream), DiskPaused reports
// it, and the loop resumes by itself when space is back.
//
// # Streams and rebuild
//
// EnsureStreams creates missing streams and the consumer; it never
// changes existing ones and fails, naming stream, field and both values,
// when an existing one contradicts the configuration.
//
// Replay rebuilds a fresh index from the stream alone: it reads the
// stream with an ordered consumer (no durable one), from its first
// message up to the last one it held when Replay started, and applies it
// in batches as the Consumer does (the clock starts at the stream's
// creation time, every change keeps its sequence and timestamp), so the
// result equals the index the Consumer built. Events that fail Decode
// are only counted: they were dead-lettered when first seen.
//
// # Metrics
//
// The bulkstream_ingest_* metrics are listed in the README's Metrics
// table. Pending and lag compare the applied sequence with the stream's
// head, never with the durable consumer's own counters, so a stuck
// ingest shows.
package ingest
