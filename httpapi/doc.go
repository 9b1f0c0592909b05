// Package httpapi is bulkstream's HTTP surface, routed with
// julienschmidt/httprouter. It reaches the export job manager only through
// the Jobs interface defined here, and imports export for its types.
//
// # Routes
//
// [base] is Config.BasePath (default /fhir). Every absolute URL handed out
// starts with Config.PublicURL; the Host header is never used.
//
//	GET       /metrics                     Prometheus metrics (handler from Config.Metrics)
//	GET       /healthz                     200 {"status":"ok"} while the process runs
//	GET       /readyz                      200 when every readiness check passes, 503 with the reasons otherwise
//	GET, POST [base]/$export               kick-off: 202 + Content-Location [PublicURL][base]/bulkstatus/<id>
//	GET, POST [base]/Patient/$export       Patient-level kick-off (export.LevelPatient), as above
//	GET, POST [base]/Group/:id/$export     Group-level kick-off (export.LevelGroup): 400 when :id is not a FHIR id, 404 when the Group is not on this server
//	GET       [base]/bulkstatus/:id        202 (X-Progress, Retry-After) | 200 manifest | 500 OperationOutcome when the job failed
//	DELETE    [base]/bulkstatus/:id        202 + informational OperationOutcome
//	GET       [base]/bulkfiles/:id/:name   application/fhir+ndjson, Range/If-Range, gzip when accepted and no Range
//	GET       [base]/metadata              CapabilityStatement (no auth; _format=json accepted; gzip when accepted)
//	GET       [base]/.well-known/smart-configuration  SMART discovery (only with Config.Auth; no auth)
//	POST      [base]/auth/token            SMART Backend Services token endpoint (only with Config.Auth)
//	GET       [base]/OperationDefinition/export       HL7 system export definition
//	GET       [base]/OperationDefinition/bulk-export  CA-CSD bulk-export definition
//	GET       [base]/OperationDefinition/patient-export  HL7 Patient-level export definition
//	GET       [base]/OperationDefinition/group-export    HL7 Group-level export definition
//
// The FHIR routes exist only when Config.Jobs is set. Every GET route
// also answers HEAD (https://www.rfc-editor.org/rfc/rfc9110#section-9.3.2)
// except the kick-off, where HEAD is 405: a GET kick-off starts a job,
// which a HEAD must not do. Paths are matched exactly and
// case-sensitively: a wrongly cased or unclean path (/fhir/$Export,
// /fhir//metadata) is a 404 OperationOutcome, never a redirect; only a
// trailing slash is redirected (301 for GET, 307 otherwise). With
// Config.SeparateOps, /metrics, /healthz and /readyz are 404 here and
// NewOps serves them on a listener of their own.
//
// # Timeouts and connection caps
//
// Deadlines are per request, set through http.ResponseController: a body
// must arrive within Config.ReadBodyTimeout, an answer be written within
// Config.WriteTimeout, and a file download move at least 128 KiB every
// Config.DownloadStallTimeout. LimitListener caps the connections a
// listener keeps, in total and per client IP, answering one over a cap
// at once with 503.
//
// # Authorization (Config.Auth)
//
// With Config.Auth set, SMART Backend Services
// (https://hl7.org/fhir/smart-app-launch/backend-services.html) protects
// the kick-off, status, cancel and file routes; /metadata, the
// OperationDefinitions, discovery, the token endpoint and the operational
// endpoints stay public. internal/smart holds the cryptography and the
// policy (assertion checks, replay cache, scopes, access tokens); this
// package does HTTP:
//
//   - Discovery advertises only backend services (token endpoint,
//     client_credentials, private_key_jwt with RS384 and ES384, system/
//     scopes), and the CapabilityStatement gets rest.security with the
//     token URL.
//   - The token endpoint takes an application/x-www-form-urlencoded body
//     of at most 64 KiB with no parameter repeated, and answers per RFC
//     6749 (https://www.rfc-editor.org/rfc/rfc6749#section-5): JSON, never
//     cached, errors as {error, error_description} that never echo the
//     assertion; invalid_client is 401, an oversized body 413, other OAuth
//     errors 400, and a failure of ours a logged 500 server_error.
//     Refusals are logged at info and counted in
//     bulkstream_auth_token_requests_total{result}.
//   - Protected routes read only "Authorization: Bearer <token>". Missing
//     or another scheme: 401 with WWW-Authenticate: Bearer
//     realm="bulkstream"; invalid, expired, or of a client no longer
//     registered: 401 error="invalid_token". A request gets what both its
//     token's scopes and the client's registered scopes as they are now
//     allow, so removing or narrowing a client in the registry takes
//     effect at its tokens' next request; nothing left is 403
//     error="insufficient_scope". The token is checked when a request
//     starts, never again: a download that began with a valid token
//     finishes.
//   - A job belongs to the client that started it: another client's job
//     is 404 with the same body as an unknown job. The kick-off passes
//     the client, its registered caps and allowed types to export, whose
//     *export.ForbiddenError becomes 403 insufficient_scope naming the
//     scope needed.
//
// # Kick-off
//
// Accept is read per RFC 9110
// (https://www.rfc-editor.org/rfc/rfc9110#section-12.5.1) and must allow
// application/fhir+json with q > 0 (directly, through a wildcard, or as
// the DSTU2 application/json+fhir), the only format of the IG's kick-off
// (https://hl7.org/fhir/uv/bulkdata/export.html, "Headers"): missing → 400
// required, anything else → 400 not-supported. Prefer
// (https://www.rfc-editor.org/rfc/rfc7240), across all Prefer lines, must
// contain respond-async (400 otherwise); handling=lenient sets
// Kickoff.Lenient (the first handling wins) and relaxes parameters, never
// headers.
//
// GET: every query value is one export.Param, in request order; commas
// are not split (export.ParseRequest does that). POST: the body is a FHIR
// Parameters resource as application/fhir+json or application/json (else
// 415), at most Config.MaxBodyBytes (413, refused from Content-Length
// when it says so), and a query string on a POST is 400 (ignoring a URL
// _since would silently turn an incremental export into a full one).
// Each parameter needs a name and exactly one primitive value[x],
// valueReference (its reference) or valueCoding (its code); anything else
// is 400. On every route a request target over MaxURLBytes is 414.
// Parameter semantics (lenient handling, _since/_until bounds) are
// export.ParseRequest's.
//
// Kickoff.RequestURL is PublicURL + the raw request target (for POST
// without its query): the manifest's request echoes the client's own
// encoding, never a re-encoding of parsed values.
//
// # Status
//
// In progress: 202, X-Progress (control characters and quotes removed,
// under 100 bytes) and Retry-After (whole seconds, at least 1). Completed:
// 200 application/json, Expires, and a manifest with only the IG's
// fields: transactionTime, request, requiresAccessToken, output, deleted
// (only when non-empty), error (always, [] when empty); items are {type,
// url, count}, count left out when 0. With organizeOutputBy=Patient the
// manifest has outputOrganizedBy "Patient" and its output items no type
// (Bulk Data 3.0: type SHALL NOT be present then). Failed: 500 with the job's error
// as diagnostics and issue code "processing".
//
// A poll may send Prefer: wait=N
// (https://www.rfc-editor.org/rfc/rfc7240#section-4.3): it is held until
// the job finishes or N seconds pass (at most 30 s and half the write
// timeout), and a finished job is then 200 even on its first poll; no
// Preference-Applied is sent, and a server at its waiter limit answers at
// once. Polls are not rate-limited
// (the IG's 429 for polling too often is a SHOULD): a poll copies the
// job's state under export's lock, which is never held across I/O, so it
// never queues behind a disk write or another job. Prefer:
// separate-export-status is not honoured (RFC 7240 lets a server ignore a
// preference): status codes describe the job.
//
// # Errors
//
// Every error is an OperationOutcome produced by respondError:
// *export.RequestError → 400 (issue code from Code, expression [Param]),
// *export.TooManyJobsError → 429, *export.UnavailableError and
// export.ErrClosed → 503 (both with Retry-After), export.ErrNotFound and
// *export.NotFoundError (an unknown Group) → 404, *export.ForbiddenError
// → 403 (for Group and Provenance, saying the token must grant read
// access to them), a request cancelled by a departed client → nothing (logged as
// 499), anything else → a generic 500 whose cause is logged. Unknown
// routes are 404, a wrong method 405 with Allow, panics 500, and
// http.ServeContent's own refusals (416, 412) OperationOutcomes too.
// Issue codes of the transient family ("exception", "transient",
// "throttled") are kept for answers where the request, not the job,
// failed, so a client knows a retry may work.
//
// # Content types
//
// Every FHIR resource served (OperationOutcomes, the CapabilityStatement,
// the OperationDefinitions) is application/json when Accept gives
// application/json a higher q than application/fhir+json, and
// application/fhir+json otherwise, with the same body and Vary: Accept
// (fhirContentType decides it, in one place). A failed job's status
// departs from the IG's application/fhir+json only when the client asked
// for application/json first. Not negotiated: the
// manifest (application/json, as the IG specifies), /healthz, /readyz,
// SMART discovery and the token endpoint (JSON), and NDJSON files.
//
// # Files
//
// A name export never writes (<Type>-<n>.ndjson, <Type>-deleted-<n>.ndjson,
// Provenance-associated-<n>.ndjson, Patient-blocks-<n>.ndjson,
// error-<n>.ndjson), or one with "/", "\", NUL or "..", is 404 without
// asking Jobs. With auth on, a download needs a token whose scopes cover
// the file's resource type (for a deleted file, the type it deletes; for
// associated data, Provenance), else 403; a job's error files and its
// organizeOutputBy=Patient blocks (which mix the types its kick-off
// limited to the token's) are served to its owner whatever the types. Without Range and with gzip accepted, the file is streamed
// gzipped (no Content-Length, weak ETag W/"<digest>"); otherwise
// http.ServeContent serves it with the strong ETag "<digest>" (the
// SHA-256 export recorded; without one, a tag of job, name, size and
// modification time), so Range, If-Range and If-None-Match work. A
// file that no longer matches its recorded size and digest
// (export.ErrFileDamaged) is never served: 500, logged at ERROR. Every
// file response has Vary: Accept-Encoding and Cache-Control: no-store.
//
// # Observability
//
// One slog line per request (route pattern, method, status, bytes,
// duration; debug level for /metrics, /healthz and /readyz). Metrics on
// Config.Registerer: bulkstream_http_requests_total{route,method,code},
// bulkstream_http_request_duration_seconds{route},
// bulkstream_export_files_served_total and
// bulkstream_export_file_bytes_served_total (wire bytes, after gzip).
// route is the pattern ("/fhir/bulkstatus/:id") or "unmatched", and
// unknown methods are "other", so no label holds an id or a raw path.
package httpapi
