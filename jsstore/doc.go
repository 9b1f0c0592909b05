// Package jsstore keeps what export persists in NATS JetStream, so that
// several bulkstream replicas can share it: [FileStore] keeps export files
// in an Object Store bucket and [JobStore] keeps job records in a KV
// bucket. They implement export.FileStore and export.SharedJobStore;
// export itself knows nothing about NATS.
//
// # Files
//
// A file is written as parts of at most FileOptions.PartSize bytes
// (64 MiB by default: large single objects on a replicated bucket fail
// under load). Every part is streamed into its own object while export
// writes, so a writer holds no more than the client's chunk buffer in
// memory. Object names are
//
//	p/<job>/<name>/<writer>/<n>   part n (0, 1, …) written by one writer
//	f/<job>/<name>                the file: an empty object whose metadata
//	                              holds the writer, size, part size and count
//
// where <writer> is a fresh id per FileWriter, so a rewrite never touches
// the parts of a committed file. Commit puts the file object only after
// every part's put returned, so a reader never sees a file with a missing
// part; until then Stat and Open say fs.ErrNotExist. Abort deletes the
// parts written. Every part but the last holds exactly PartSize bytes, so
// a read at any offset knows its part without asking the server.
//
// A StoredFile reads the parts in turn. A Seek is free; the next Read
// after one opens the part holding the offset and skips to it, so a range
// request costs at most one part's bytes read past (the Object Store has
// no ranged get). Its stamp's ID is a hash of the file object's NUID and
// its Change the object's modification time: a committed file is never
// changed in place (a rewrite is a new object with a new NUID), so export
// trusts the stamp once its racy window has passed and does not hash the file
// on every download.
//
// Reads right after a write may reach a follower of a replicated bucket
// that has not applied the write yet. Stat, Open and the opening of a
// part therefore treat "not found" as "retry shortly": up to
// FileOptions.ReadRetries more tries, FileOptions.ReadRetryWait apart
// (doubling). A truly missing file is reported after those retries, as
// fs.ErrNotExist.
//
// RemoveJob and Jobs list the bucket's objects, which reads every
// object's metadata: fine for the number of files a retention period
// holds. A reader open when its job is removed may fail at its next part.
//
// # Jobs
//
// [JobStore] keeps each job record under its job id as key; the key's
// revision is the sequence number of the bucket's stream that wrote it.
// It implements export.SharedJobStore, the contract that lets several
// replicas share the records without a lock:
//
//   - Update(id, record, rev) is a compare-and-set on the revision: it
//     writes only if rev is still id's latest revision (rev 0: only if id
//     has no record, never had one or was deleted), and returns the new
//     revision. If another replica wrote or deleted the record first, it
//     writes nothing and returns an error wrapping export.ErrConflict.
//     The server checks the revision atomically with the write; a rev
//     that is the deletion itself is refused too.
//   - Lookup(id) reads the record and its revision at the stream's
//     leader, so it sees every write acknowledged to any replica (a
//     direct get may reach a follower that has not applied it yet).
//   - Watch(ctx, fn) delivers every record (deleted ones are left out),
//     then once ("", nil, 0) when caught up, then every later change in
//     the order the bucket applied it, with its revision: record nil for a
//     delete or purge. The bucket keeps one revision per key, so a change
//     overwritten before the watch delivered it may be skipped; the latest
//     change of every key is always delivered. When the connection
//     reconnects (a NATS node restarted or the client moved to another),
//     the watch starts again after the last revision it saw, at once, so
//     nothing is lost. It returns ctx's error, or an error when the
//     connection closes or the bucket is gone, after which the caller
//     watches again from the start.
//
// What a replica writes with Update, and when, is the export manager's
// business. PutJob, GetJob, DeleteJob and Jobs write and read without
// revisions, for a single replica.
//
// JobOptions.Replicas and FileOptions.Replicas set how many NATS nodes
// keep each bucket (1 to 5; more than 1 needs a JetStream cluster).
// FileOptions.MaxAge is the file bucket's TTL: the server removes an
// object older than it, so the files of an export no replica removed
// still go; FileOptions.MaxBytes caps the bucket, refusing a part that
// would pass it. Both default to none, and NewFileStore applies them to
// an existing bucket too.
package jsstore
