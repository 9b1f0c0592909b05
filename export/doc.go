// Package export runs FHIR Bulk Data export jobs (system, Patient and
// Group level) over the index: kick-off validation, persisted jobs, a bounded worker pool that
// waits for ingest to catch up, scans a snapshot per type into split NDJSON
// files, writes deleted-resource Bundles and the manifest, and expires,
// cancels and resumes jobs.
//
// Guarantee: every exported resource has _since < meta.lastUpdated <=
// transactionTime (and < _until: _until is exclusive, "changed before");
// a client that chains exports with
// _since = the previous transactionTime sees every change exactly once.
//
// # Kick-off parameters
//
// [ParseRequest] holds the rules; the choices the FHIR Bulk Data Access
// IG (https://hl7.org/fhir/uv/bulkdata/export.html) leaves open are:
//
//   - "In the future" has no skew tolerance: _since or _until later than
//     max(wall clock, commit clock) is refused. The IG does not say what a
//     future _since means; the SMART Bulk Data test suite (BDT,
//     github.com/smart-on-fhir/bulk-data-tests) sends one and wants a
//     4xx. Such a _since can match nothing committed before the
//     kick-off, so a tolerance would only turn a client's clock error
//     into a silently (nearly) empty export; clients that chain exports
//     pass back transactionTime, which is never ahead of the clock.
//   - _until is exclusive ("changed before", as the IG defines it), like
//     _since; a looser "<= _until" is not followed. transactionTime is
//     still the snapshot's clock, not capped at _until: the IG does not
//     say whether to cap it, and nothing changed at or after _until is
//     exported either way.
//   - Lenient handling ignores only what can be ignored without changing
//     the data set in a way the client cannot see: unsupported and
//     unknown parameters, unknown _type entries and bad _elements entries
//     are skipped, and each becomes one OperationOutcome line in the
//     manifest's error file, as the IG asks of Prefer: handling=lenient.
//     A bad _outputFormat, _since or _until, a repeated 0..1 parameter,
//     and a _type left empty by skipping are refused even when lenient.
//   - Size: at most MaxTypeEntries _type entries, MaxElementsEntries
//     _elements entries and MaxIgnored ignored items (too-costly, lenient
//     or not), so a kick-off's memory, CPU (deduplication uses sets) and
//     error file are bounded.
//   - Any _since, even at or before the Unix epoch (Since 0), is a _since
//     export that lists deletions (Request.HasSince).
//   - allowPartialManifests is refused unless lenient: it is not
//     implemented, and the IG says a server SHOULD refuse a parameter it
//     does not support and MAY ignore it when lenient. So is patient at
//     system level, where it does not apply.
//
// # _typeFilter
//
// _typeFilter (https://hl7.org/fhir/uv/bulkdata/export.html#_typefilter-query-parameter)
// narrows a type to the resources matching FHIR search queries. Kick-off
// parses every query (internal/search: the R4 search parameters, compiled
// from their FHIRPath expressions into JSON paths, the token, date,
// reference, string and uri types) and keeps the raw queries in
// Request.TypeFilters; the run compiles them once and tests each scanned
// resource of a filtered type against its type's queries (ORed), in the
// same pass that writes it (scan.visit). So a filter costs no extra read:
// the stored bytes are matched as they stream by, and a resource that
// does not match is neither written nor counted. Decisions:
//
//   - A filter applies to its type only: filtering Patients does not
//     narrow a Patient- or Group-level cohort (the IG: "filtering Patients
//     does not filter Encounters"). In organizeOutputBy=Patient output a
//     patient whose Patient is filtered out still has a block (header
//     and its other matching resources); a patient with nothing left has
//     none.
//   - Deletions (a _since export) are listed whatever the filter: a
//     deleted resource has no body to test, and listing the deletion of
//     a resource the client never received is harmless while leaving one
//     out would keep a stale copy. A resource updated so that it no longer
//     matches is not listed as deleted (the IG has no way to say "left
//     the filter"); a client that needs that runs the query unfiltered.
//   - includeAssociatedData follows the exported resources: a filtered-out
//     resource brings no Provenance, and a Provenance query filters the
//     associated Provenance too.
//   - _elements is applied after the filter, to the whole stored
//     resource, so a filter may test an element _elements drops.
//
// # Patient and Group level
//
// [base]/Patient/$export and [base]/Group/[id]/$export (Request.Level) go
// through the same kick-off, job, status, manifest and file code as the
// system level; only the scan differs (patients.go). The patients of a
// job are resolved at its snapshot:
//
//   - Patient level: every Patient in the snapshot, and, for a _since
//     export, every Patient deleted since (its compartment's deletions
//     are listed).
//   - Group level: the Group's member entries at the snapshot. Members
//     with inactive=true, and members whose period does not cover
//     transactionTime, are left out. A member that is a Group is
//     followed (nested Groups, up to 16 deep, each once). A
//     urn:uuid:<id> member reference (Synthea's Groups use them) means
//     Patient/<id> when that Patient exists. Members of other types have
//     no compartment and export nothing. A Group not found at kick-off
//     is a 404 (NotFoundError), after waiting up to 2 s for ingest to
//     reach the stream head; one deleted before the job runs fails it.
//   - The patient parameter narrows either to the patients it names; a
//     named patient outside them is a warning line in the error file,
//     not a failure.
//
// For each type of the request that can be in a Patient compartment
// (fhirdefs.InPatientCompartment: a _type outside it exports nothing,
// and is not an error, as a client may reuse one _type list at every
// level), each patient's compartment is one range scan of the index's p/
// keys; a resource in several of the patients' compartments is written
// once. What is in a compartment is R4's CompartmentDefinition/patient,
// generated from the official definitions (see package index).
//
// _since at Group level: a resource is exported if it changed after
// _since, and a member added to the Group after _since (the commit time
// of the first Group version that listed it, kept by the index) gets its
// whole compartment, whatever _since says (the IG's SHOULD, Bulk Data
// 2.0 and 3.0): the client never had that patient's data. No deletions
// are listed for such a member.
//
// organizeOutputBy=Patient (Bulk Data 3.0, Patient and Group level):
// output files hold resource blocks, one per patient with something to
// export: a Parameters header line naming Patient/<id>, the Patient (when
// exported), then the patient's other resources type by type, then the
// Provenance includeAssociatedData adds for them. A block is never split:
// a file ends only between blocks, so a file can exceed the size limits
// by one block. A resource in several patients' compartments is in each
// of their blocks, so that every block is whole. The manifest has
// outputOrganizedBy and its output items no type. Deletions stay in the
// deleted files.
//
// includeAssociatedData (every level): LatestProvenanceResources adds,
// for each exported resource, the Provenance targeting it that changed
// last; RelevantProvenanceResources every Provenance targeting it; the
// least restrictive value given wins. They are read from the index's
// t/ keys as of transactionTime, whatever _since and _type say, each
// written once (once per block), and never a second time when the
// Provenance type is exported anyway. The client's token must grant
// Provenance (and, at Group level, Group): 403 otherwise.
//
// # Jobs
//
// [Manager.Kickoff] parses the parameters (ParseRequest, with "now" =
// max(wall clock, commit clock)), records the stream head, persists the
// job record (JSON, through the [JobStore]) and queues it; it never scans.
// If the head cannot be read (NATS down) the job records the sequence
// already applied and a warning is logged: the export is then as of what
// is applied when it runs, and the guarantee above holds unchanged. Past
// Config.MaxActiveJobs queued plus running jobs Kickoff returns
// *TooManyJobsError (completed jobs never count); with less than
// Config.MinFreeBytes free under Config.Dir, *UnavailableError.
//
// A worker (Config.Workers of them) runs a job in this order:
//
//  1. wait until ingest has applied the recorded head (progress "waiting
//     for ingest to reach sequence N (at M)"), at most
//     Config.MaxCatchUpWait, after which the job fails;
//  2. take one index snapshot: its clock is the manifest's transactionTime;
//  3. scan each type (the requested ones, or every type with data in the
//     snapshot) for since < lastUpdated <= min(Until, transactionTime),
//     where Request.Until is the last microsecond before _until,
//     streaming the stored bytes (through applyElements when _elements is
//     given) into the files; nothing is buffered beyond one bufio buffer
//     per file sequence, so memory is flat whatever the export size;
//  4. close the snapshot, write the error file, fsync the directory, and
//     persist the completed record with the manifest and
//     Expires = completion + Config.TTL.
//
// Any error fails the job: its partial files are removed and Status
// reports State Failed with a message fit for the client (a full disk says
// so; other internals are logged, not shown), counted by reason in
// bulkstream_export_jobs_failed_total. Two things do not fail a job:
//
//   - A stored resource _elements cannot be applied to (malformed meta) is
//     left out, and an OperationOutcome naming Type/id goes into the error
//     file, so the output counts stay exact.
//   - Before the free space under Dir would drop below
//     Config.ExportReserveBytes the job fails on purpose ("disk space
//     low"), leaving ingest room to commit: the writer checks the free
//     space as each file opens and at least every MiB written (diskGuard).
//
// # Files
//
// A job's files are kept by a [FileStore] (Config.Files; by default
// [NewDirStore] of Config.Dir, which keeps them in Config.Dir/<job id>/),
// through which every read, write and removal of them goes, and named
//
//	<Type>-<n>.ndjson          resources of Type, n = 1, 2, …
//	<Type>-deleted-<n>.ndjson  deletions of Type (_since exports only)
//	error-<n>.ndjson           OperationOutcomes (lenient kick-offs, warnings)
//	Provenance-associated-<n>.ndjson  Provenance added by includeAssociatedData
//	Patient-blocks-<n>.ndjson  organizeOutputBy=Patient output
//
// A type's output starts a new file before the line that would exceed
// Config.FileMaxResources lines or Config.FileMaxBytes bytes (a single
// larger resource gets a file of its own). Empty files are never created,
// and a type without data gets no manifest entry. Every file is written,
// then committed (locally: under <name>.tmp, then flushed, fsynced and
// renamed, the directory fsynced once all are); the manifest counts are
// the exact line counts. Each file's SHA-256 is computed while it is
// written and kept with its size in the job record. [Manager.OpenFile]
// serves only the names of a completed job's manifest, and only while the
// file still matches: a truncated or changed file is ErrFileDamaged and
// turns the job failed (see OpenFile for how a re-hash is avoided).
//
// # Deletions
//
// Full exports (no _since) skip tombstones. A _since export writes every
// deletion with since < deletion time <= min(Until, transactionTime) as
// one line of its type's deleted file: a transaction Bundle with a single
// DELETE entry and the deletion time as meta.lastUpdated,
//
//	{"resourceType":"Bundle","meta":{"lastUpdated":"2026-11-26T17:58:41.120000Z"},"type":"transaction","entry":[{"request":{"method":"DELETE","url":"Patient/123"}}]}
//
// listed in the manifest's deleted array with type "Bundle". A resource is
// either in output or in deleted, never both (the index keeps one entry
// per resource). One deletion a line keeps count equal to the number of
// deleted resources and lets a client apply any line on its own.
//
// # Status polls
//
// The first [Manager.Status] call of a job never sees it finished: a job
// that completed (or failed) before anyone polled is reported running
// ("writing the manifest") once, as the Bulk Data test suites require.
// Whether a job was polled is persisted with its completion, so a job
// polled only after completion may show that one extra 202 again after a
// restart.
//
// RetryAfter is whole seconds, at least 1 s, and never more than the
// estimate of the time the job has left (at most 10 s): that estimate is
// the work left over the scan throughput measured so far, and is made only
// once the scan has visited at least 1,000 entries over at least 250 ms; a
// rate measured over less work is noise (a job that finished 6 ms later
// once suggested 10 s). Before that, and outside the scan, it is 1 s; a
// queued job behind others suggests 2 s. The same estimate bounds a 429's
// Retry-After.
//
// [Manager.Wait] serves a status request that asks to wait (Prefer: wait,
// https://www.rfc-editor.org/rfc/rfc7240#section-4.3): it holds the
// caller until the job finishes, is cancelled or removed, the manager
// closes, the caller's context ends or the wait (capped at [MaxWait])
// passes, then answers as Status does, except that the first-poll rule
// does not apply: a client that asked to wait is not the test suite's
// immediate poll. Each job has a channel closed when it leaves queued or
// running; waiters hold no lock and need no goroutine of their own.
// At most [MaxWaiters] callers wait at once; past that, Wait answers at
// once.
//
// # Restarts, cancel, expiry
//
// [Manager.Close] cancels running jobs, removes their partial files and
// leaves them persisted as queued. [Manager.Start] serves completed and
// failed jobs until they expire (a completed job whose files are missing
// is turned into a failed one), restarts queued and running jobs from
// scratch with their original stream head, and removes the files the
// FileStore holds for job ids that have no job (with the default store,
// such directories in Config.Dir). A job is never reported complete with
// partial files.
//
// [Manager.Cancel] stops a job (it returns once the worker has let go),
// removes its files and record; Status and OpenFile then return
// ErrNotFound. Completed and failed jobs are removed the same way once
// Expires has passed, by a background loop and lazily by Status and
// OpenFile, and earlier past the caps on finished jobs: a client's own
// (Kickoff.MaxFinished, Config.MaxFinishedJobsPerClient; its oldest go
// first) and Config.MaxFinishedJobs (the oldest job of the client holding
// the most). A finished job keeps in memory only its client, its cap and
// its manifest; the rest of the request stays in its record. A download that already opened a file finishes even if the
// job is removed meanwhile.
//
// # When the job store fails
//
// A job's outcome and what is served follow what the [JobStore] holds:
//
//   - Kick-off: the queued record is written before the job is known; if
//     the write fails, Kickoff returns the error and there is no job.
//   - Start of a run, or completion: if the running or the completed
//     record cannot be written, the job fails (its files removed) and
//     no manifest is served: a manifest is served only once its
//     completed record is durable.
//   - Failure, or shutdown's interrupt: if the failed or queued record
//     cannot be written, the job is failed (or interrupted) in memory and
//     the error is logged; the store still says queued or running, so the
//     next Start runs the job again from scratch.
//   - Removal (cancel, expiry, eviction): the job is gone at once (Status
//     and OpenFile say ErrNotFound, its files are removed) even when its
//     record cannot be deleted; the expiry loop deletes the record again
//     until it succeeds. Should the server restart first, the job comes
//     back: a finished one as failed (its files are gone), a queued or
//     running one to run again.
//
// # Job states and the lock
//
// A job's state changes only through one function (transition), which
// refuses any change not in this table:
//
//	from       to         when
//	(new)      queued     Kickoff admits the job (its record written first)
//	(new)      completed  Start loads a finished job's record
//	           failed
//	(new)      running    cluster mode: the watch brings a job another replica runs
//	queued     running    a worker takes the job
//	running    completed  the files are written and the completed record is durable
//	running    failed     any error (the partial files removed)
//	running    queued     Close interrupts the job; the next Start (in cluster
//	                      mode, any replica) runs it again; or a takeover
//	completed  failed     a file is found damaged on disk at download
//	any        removed    Cancel, expiry or eviction past a cap on finished jobs;
//	                      final: the record is deleted and the files removed
//
// Each transition keeps the counts by state and by client that admission,
// the caps on finished jobs and the bulkstream_export_jobs gauge read, so
// none of them walks the jobs.
//
// The lock rule: one mutex guards every job's metadata and those counts,
// and nothing under it blocks (no disk, no index, no JobStore, no logging,
// no metrics, no channel send that can wait). The worker publishes a
// running job's progress through atomics, which Status and the Retry-After
// estimate read without waiting for it. A transition queues the job's new
// record as a numbered version; it is written after the mutex is let go,
// one write at a time per job, the newest version replacing an older one
// not yet started, and a removed job's deletion is its last write, so a
// removed job is never written back. A slow disk or a stalled index commit
// therefore delays only the job whose write or scan it is: other jobs'
// status polls, kick-offs, cancels and a metrics scrape still answer.
//
// # Several replicas (cluster mode)
//
// With Config.Replica set and a [SharedJobStore] (jsstore's, on a
// JetStream KV bucket) and a FileStore every replica reads (jsstore's
// Object Store), several managers — one per replica, each over its own
// copy of the index — share the jobs: a kick-off on any replica, a status
// poll, a download and a cancel on any other all work. Each replica keeps
// every job in memory, as above, and keeps that copy in step with the
// store through its watch; a job another replica created that the watch
// has not delivered yet is read from the store on a miss. A replica
// changes a record only by compare-and-set on the revision it holds, so
// of two replicas acting on one job one wins and the other learns the
// outcome from its watch:
//
//   - a worker claims a queued job by writing it running, with this
//     replica as owner and a lease (Config.Lease); it renews the lease
//     every Lease/3 and stops the run at once, writing nothing, if a
//     renewal loses the compare-and-set or none succeeded for
//     Lease - Lease/3 (fencing);
//   - any replica sets queued, by compare-and-set, a running job whose
//     lease ended more than Config.LeaseGrace ago, or one that names it as
//     owner without a run of its own (it restarted); the job then runs
//     again from scratch on whichever replica claims it, with a new
//     snapshot, and its manifest reports that snapshot's transactionTime;
//   - cancel, expiry and eviction delete the record: every replica's
//     watch sees it and the owner stops the run; the completed record is
//     written by compare-and-set, so a run that lost its job never
//     publishes a manifest;
//   - admission (Config.MaxActiveJobs, Kickoff.MaxJobs) counts every
//     replica's queued and running jobs, and so does the jobs gauge;
//   - a running job another replica owns reports its progress as
//     "running on replica <name>" (the owner has the details);
//   - a completed record whose write fails without a conflict (a timeout
//     while JetStream elects a leader: it may have been applied) is
//     written again every second while the run holds the job, and the
//     files are never removed on that account: another replica may
//     already serve the manifest;
//   - a run that fails with an internal error (JetStream electing a
//     leader, a timeout) is queued again, after a pause of 2 s per run so
//     far, for any replica to run; the job fails only at its fifth run. A
//     kick-off that cannot write the shared store is *UnavailableError
//     (503, Retry-After), not an internal error;
//   - OpenFile of a job this replica does not hold as completed reads the
//     store first: a client may download from a replica whose watch has
//     not yet delivered the completion another replica served; a file the
//     FileStore cannot open for a moment is *UnavailableError (503);
//   - Start reads the whole store through the watch (at most 30 s) and
//     does not sweep files: the Object Store bucket's age limit removes
//     what no replica is left to remove.
//
// Each replica waits, before its snapshot, until its own index has
// applied the stream head recorded at kick-off (read-your-writes), as a
// single server does; since the commit clock is a function of the stream,
// that snapshot's transactionTime is at least any _since another replica
// handed out before the kick-off. When the head cannot be read (NATS
// unreachable), a kick-off whose _since is later than what this replica
// has applied is refused with *UnavailableError (503, Retry-After) rather
// than answered with an older transactionTime.
//
// # Clients (authorization)
//
// httpapi authenticates (SMART Backend Services); export enforces what
// the authenticated client may do, from the fields of [Kickoff]:
//
//   - Ownership: a job belongs to Kickoff.Client, persisted in its record
//     (Request.Client). Status, Cancel and OpenFile take the caller's
//     client id and answer ErrNotFound for any other client's job, the
//     same answer as for a job that does not exist, so job ids leaked in
//     logs reveal nothing. The match is exact: with auth off every caller
//     and job has client "", and jobs started with auth on stay invisible
//     if the server is restarted with auth off (and the other way round).
//   - Types: Kickoff.AllowedTypes (nil: all) are the types the client's
//     token grants. A _type naming any other type is a *ForbiddenError
//     (403), lenient or not: leniency skips what the server does not
//     support, never what the client may not read. Without _type the job
//     exports exactly the allowed types.
//   - Quota: Kickoff.MaxJobs (> 0) caps the client's own queued plus
//     running jobs, checked before Config.MaxActiveJobs; past either,
//     Kickoff returns a *TooManyJobsError whose Reason (client_quota or
//     server_limit) is also the label of
//     bulkstream_export_kickoffs_throttled_total.
//   - Config.RequiresAccessToken is the manifests' requiresAccessToken
//     (true when auth is on).
package export
