// Package bulkclient is a client for FHIR Bulk Data $export servers
// (https://hl7.org/fhir/uv/bulkdata/export.html): kick-off, status polling,
// manifest, downloads and cancel. It talks plain HTTP to any server that
// follows the IG, not only to bulkstream, and imports only the standard
// library, internal/smart and internal/atomicfile.
//
// Contract:
//
//   - Kick-off is a GET with query parameters, or a POST of a Parameters
//     resource (Request.Post). Both send Accept: application/fhir+json and
//     Prefer: respond-async; the answer must be 202 with Content-Location.
//     The level is [base]/$export, [base]/Patient/$export
//     (Request.PatientLevel) or [base]/Group/<id>/$export (Request.Group,
//     the id path-escaped). Request.Patients (patient, Patient or Group
//     level only) is sent as POST valueReference entries only, as the IG
//     defines it, so it makes the kick-off a POST. Request.TypeFilters
//     (_typeFilter queries) are repeated query parameters, never
//     comma-joined, or one valueString each. Request.Validate refuses
//     contradictory levels and a filter that is no Type?query before any
//     request.
//   - Polling waits what Retry-After says (seconds or HTTP-date), clamped
//     to [Config.PollMin, Config.PollMax]; without it the wait grows by
//     half from PollMin up to PollMax. X-Progress goes to Config.OnProgress.
//   - Every request is retried on connection errors, 429 and 5xx, with
//     exponential backoff (jittered) that never waits less than the
//     server's Retry-After. A 5xx whose OperationOutcome has only codes
//     outside the transient family (which the IG asks a server to use when
//     the poll, not the job, failed) is final: that is how a failed job is
//     reported on the status URL. A 401 with a token source drops the
//     cached token and retries once with a fresh one.
//   - Errors answered with an OperationOutcome become *OutcomeError, whose
//     message is the issues' diagnostics, never the raw JSON.
//   - Downloads (Download) run Config.Parallel at a time. Each file goes to
//     name.part and is renamed to name only once it is complete and its
//     line count equals the manifest's count (when the manifest has one),
//     through internal/atomicfile (fsynced, then the directory too); a
//     download that fails removes its .part file.
//     The first request sends Accept-Encoding: gzip and is decoded here; a
//     body cut short is resumed with Range: bytes=N- (identity encoding,
//     N = the decoded bytes already in the .part file). A 200 answer to a
//     Range request restarts the file from zero.
//   - The access token (Config.Token) goes on kick-off, status and cancel,
//     and on downloads only when the manifest says requiresAccessToken.
//     SMARTTokenSource refreshes the token a minute before it expires.
//   - A download directory holds one run: ClearPrevious removes the files
//     its previous manifest.json lists, WriteManifest writes the new one
//     once every file is in place.
//   - Incremental sync: State (a JSON file, replaced atomically) keeps per
//     server and type list (StateKey; RequestStateKey adds the level,
//     Group, patient list and _typeFilter queries) the transactionTime of the last
//     complete run, the next run's _since. ApplyMirror keeps a directory
//     of <Type>.ndjson files equal to the server's current state: a full
//     run replaces the types it covers, an incremental one replaces the
//     changed resources and drops the deleted ones; each type's file is
//     replaced atomically, and applying a run twice is harmless.
package bulkclient
