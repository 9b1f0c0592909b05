// Package index is bulkstream's Pebble store: the current version of every
// FHIR resource, ordered by resource type and commit time, so that a `_type`
// plus `_since` export is one bounded range scan per type.
//
// # Key layout
//
// All integers are big-endian, so byte order is numeric order.
//
//	c/<type>\x00<commitTs u64>/<id>  stored resource JSON, or an empty value for a tombstone
//	r/<type>\x00<id>                 commitTs u64, versionId u64, deleted byte, CRC-32C u32 of the c/ value
//	                                 (older records lack it): where the c/ entry is
//	m/applied_seq                    u64: last JetStream stream sequence applied
//	m/clock                          u64: last commit time handed out (µs since the epoch)
//	m/types                          JSON [{type, resources, tombstones}]: counts by type
//	m/refs                           u64: version of the reference index (p/, g/, t/ keys)
//	p/<patient>\x00<type>\x00<commitTs u64>/<id>
//	                                 type/id, whose c/ entry is at commitTs, is in the
//	                                 patient's compartment; value: in how many (1 byte, ≤255)
//	g/<group>\x00<type>\x00<id>       a member entry of Group group (type "" for urn:uuid:<id>);
//	                                 value: added u64, inactive byte, period start, end u64
//	t/<type>/<id>\x00<provenance id>  Provenance/<provenance id> targets type/id
//	j/<jobID>                        export job record (opaque to this package)
//
// The r/ record of a resource in a compartment, or of a Provenance, ends
// with its lists of patients and targets (uvarint counts and lengths), so
// that the next version can remove the keys the last one wrote.
//
// # Reference index
//
// Patient- and Group-level export read the p/ and g/ keys,
// includeAssociatedData the t/ keys; Apply writes them in the same batch
// as the resource. A resource is in the Patient compartment of every
// patient its current version references at the paths of R4's
// CompartmentDefinition/patient (fhirdefs.PatientCompartment: e.g.
// Observation.subject and performer, Encounter.subject; a Patient is in
// its own), so "type T of patient P changed after S" is one bounded scan
// of p/<P>\x00<T>\x00 from S, and each entry is read from its c/ key. An
// update that moves a resource deletes its old p/ keys and writes new ones
// at the new commit time; a delete leaves p/ keys of the tombstone in the
// compartments of the version it deleted (with Options.CompactedStream,
// only a Patient's own: a rebuild could not know the others). A Group's g/
// keys hold its member entries, each with the commit time of the Group
// version from which the entity has been a member without interruption:
// the Group-level _since rule needs it. Like every other key they are
// functions of the stream, so a rebuild and every replica write the same
// bytes; one exception: on a compacted stream, a rebuild sees only the
// last version of a Group, so its members count as added then (a later
// time, which exports more, never less). An index written before the
// reference index existed (no m/refs) gets it at Open (backfillRefs), in
// batches, from its live resources: tombstones get no p/ keys, and Group
// members count as added at the Group's commit time.
//
// # Invariants
//
//   - Apply is the single writer. One call is one Pebble batch committed with
//     Sync: the resources, their r/ records, the counts, m/clock and
//     m/applied_seq land together or not at all. A change whose stream
//     sequence is not above m/applied_seq is skipped, so redelivery after a
//     crash between commit and ack applies nothing twice.
//   - Every resource has exactly one c/ entry, at its current version's
//     commit time: an update deletes the old entry in the same batch, a
//     delete replaces it with a tombstone at the delete's commit time
//     (for a resource never stored or deleted already, only with
//     Options.CompactedStream; see below).
//   - The commit clock is clock(seq) = max(timestamp(seq), clock(seq-1)+1µs),
//     starting at the origin given to SetOrigin (the stream's creation time).
//     It depends on nothing but the stream, so a rebuild from the same
//     stream yields the same keys and bytes.
//   - meta.versionId is the stream sequence of the change that wrote the
//     version (a delete included), so it depends on nothing but the stream:
//     a replay of a compacted stream, which keeps only the last message per
//     resource, gives the same versionId, and it never goes down.
//     meta.lastUpdated is the commit time as a UTC instant with six
//     fractional digits. Every other byte of the published resource is
//     kept, numbers included.
//   - An upsert equal byte for byte to the live stored version, once
//     stamped with that version's versionId and commit time, is a no-op:
//     nothing is written for it but the applied sequence and clock, and
//     Result.Noop reports it (the r/ record's CRC-32C only spares reading
//     the stored bytes when they differ). A delete of a resource never
//     stored or deleted already is a no-op too, except with
//     Options.CompactedStream: a rebuild from a compacted stream cannot
//     know whether earlier changes were compacted away, so there every
//     delete writes a tombstone, as the rebuild will.
//   - Snapshot takes a Pebble snapshot and reads the clock under the commit
//     lock, so every entry in it has CommitTime <= TransactionTime and every
//     later change has a greater one. Only Apply, Snapshot, SetOrigin and
//     Close take the commit lock; AppliedSeq, Clock, Counts, WaitApplied,
//     Ready, the job records and the metrics never do, so a request path or
//     a scrape never waits for a batch's fsync. A Snapshot must be closed
//     as soon as its scans finish: it pins old versions of keys.
//
// # Failure
//
// Pebble's Logger.Fatalf (a WAL or MANIFEST write failed, e.g. on a full
// disk) does not end the process: the store is marked failed, Ready
// returns ErrFailed with Pebble's message and every later write is
// refused, so nothing is acked that is not durable; reads go on. Open
// opens the store read-only, marked the same way, when the disk has less
// free space than flushing the WAL left by the last run needs: Pebble
// retries that flush forever, and the process would never serve. Both
// need a restart once there is room.
package index
