// Package jsstore keeps what export persists in NATS JetStream, so that
// several bulkstream replicas can share it: [FileStore] keeps export files
// in an Object Store bucket and [JobStore] keeps job records in a KV
// bucket. They implement export.FileStore and export.JobStore; export
// itself knows nothing about NATS.
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
// [JobStore] keeps each job record under its job id as key. It is a plain
// store: several replicas may read and write it, but nothing yet stops
// two of them from running the same job. The multi-replica protocol, in
// which a replica takes a queued job by compare-and-set on the key's
// revision (queued → running with its owner and a lease it renews, taken
// over by another replica when the lease expires), is the next step and
// is not built here.
package jsstore
