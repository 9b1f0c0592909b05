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
//	GET       [base]/bulkstatus/:id        202 (X-Progress, Retry-After) | 200 manifest | 500 OperationOutcome when the job failed
//	DELETE    [base]/bulkstatus/:id        202 + informational OperationOutcome
//	GET       [base]/bulkfiles/:id/:name   application/fhir+ndjson, Range/If-Range, gzip when accepted and no Range
//	GET       [base]/metadata              CapabilityStatement (no auth; _format=json accepted)
//	GET       [base]/.well-known/smart-configuration  SMART discovery (only with Config.Auth; no auth)
//	POST      [base]/auth/token            SMART Backend Services token endpoint (only with Config.Auth)
//	GET       [base]/OperationDefinition/export       HL7 system export definition
//	GET       [base]/OperationDefinition/bulk-export  CA-CSD bulk-export definition
//
// The FHIR routes exist only when Config.Jobs is set. Every GET route
// also answers HEAD (RFC 9110 9.1) except the kick-off: a GET kick-off
// starts a job, which a HEAD must not do, so HEAD there is 405. Paths are
// matched exactly and case-sensitively (FHIR URLs are): a wrongly cased or
// unclean path (/fhir/$Export, /fhir//metadata) is a 404 OperationOutcome,
// never a redirect to another route; only a trailing slash is redirected
// (301 for GET, 307 otherwise).
//
// With Config.SeparateOps, /metrics, /healthz and /readyz are left out
// (404) and NewOps serves them alone, for a listener of their own.
//
// # Timeouts and connection caps
//
// Every routed request gets connection deadlines through
// http.ResponseController (timeouts.go), never server-wide ones: a body
// must arrive within Config.ReadBodyTimeout (the read deadline is cleared
// at the body's end, so net/http's background read never cancels a
// request over it), an answer must be written within Config.WriteTimeout,
// and a file download within Config.DownloadStallTimeout of every 128 KiB.
// LimitListener caps the connections a listener keeps (in total and per
// client IP), answering one over a cap at once with 503.
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
//   - Discovery: token_endpoint [PublicURL][base]/auth/token (also the aud
//     assertions must name), grant_types_supported [client_credentials],
//     private_key_jwt, RS384 and ES384, scopes_supported system/*.rs and
//     system/*.read, capabilities client-confidential-asymmetric,
//     permission-v1, permission-v2, and code_challenge_methods_supported
//     [S256] (SMART 2.x lists it as required). No authorization_endpoint:
//     Inferno's optional SMART discovery group, which wants app launch,
//     fails by design. application/json whatever Accept says.
//   - The CapabilityStatement gets rest.security: the SMART-on-FHIR
//     service coding and the oauth-uris extension with the token URL.
//   - Token endpoint: the body must be application/x-www-form-urlencoded
//     (charset allowed), at most 64 KiB, no parameter repeated (RFC 6749
//     3.2); query parameters are not read. Order of checks: form →
//     grant_type, client_assertion_type, client_assertion present
//     (invalid_request) → grant_type client_credentials
//     (unsupported_grant_type) → client_assertion_type jwt-bearer
//     (invalid_client: an unsupported authentication method, RFC 6749
//     5.2) → scope present (invalid_scope: no default scope, RFC 6749
//     3.3) → smart.VerifyAssertion (invalid_client; the jti is burned
//     only once everything else holds) → smart.GrantScopes
//     (invalid_scope) → Signer.Issue. invalid_client is 401 (without a
//     WWW-Authenticate: no HTTP authentication scheme was used), a body
//     over 64 KiB 413 invalid_request naming the limit, every other
//     OAuth error 400; an error that is not an *smart.OAuthError
//     (replay file, keys) is a logged 500 server_error. Every answer is
//     JSON with Cache-Control: no-store and Pragma: no-cache; errors are
//     {error, error_description} and never echo the assertion. Success:
//     {access_token, token_type "bearer", expires_in (seconds, rounded
//     up), scope (granted)}. Refusals are logged at info with the reason
//     and counted in bulkstream_auth_token_requests_total{result}.
//   - Bearer check (requireToken): only "Authorization: Bearer <token>"
//     (scheme case-insensitive; a token in the query or body is not
//     read). Missing or another scheme: 401, WWW-Authenticate: Bearer
//     realm="bulkstream", issue code login. Present but invalid (bad
//     signature, expired, not ours, a client assertion, more than one
//     Authorization header) or its client no longer in the registry: 401
//     with error="invalid_token" and error_description, issue code
//     unknown. Removing a client from the clients file and reloading
//     therefore cuts off its unexpired tokens at their next request. A
//     request gets what both its token's scopes and the client's
//     registered scopes as they are now allow (smart.Scopes.Intersect), so
//     a reload that narrows a client narrows its tokens too; when nothing
//     is left, every protected route is 403 forbidden with
//     error="insufficient_scope". The
//     token is checked when a request starts, never again: a download that
//     began with a valid token finishes even if the token expires during
//     it.
//   - Jobs get the caller's client id: another client's job is 404 with
//     the same body as an unknown job. The kick-off carries Client,
//     MaxJobs and MaxFinished (max_finished_exports; both from the
//     registry as it is now) and AllowedTypes (nil for system/*, else the
//     token's types narrowed by the registry); export decides, and its *export.ForbiddenError becomes 403
//     forbidden with WWW-Authenticate: Bearer error="insufficient_scope"
//     and the scope needed; a client-quota *export.TooManyJobsError says
//     so in the 429's diagnostics.
//
// # Kick-off
//
// Accept is read per RFC 9110
// (https://www.rfc-editor.org/rfc/rfc9110#section-12.5.1: media ranges,
// case-insensitive, the most specific range's q decides, q=0 is "not
// acceptable"; parameters such as fhirVersion do not narrow a match). The
// Bulk Data IG's kick-off (https://hl7.org/fhir/uv/bulkdata/export.html,
// "Headers") supports only application/fhir+json, so Accept must allow it
// with q > 0, directly, through application/* or */*, or as the DSTU2
// application/json+fhir: missing or empty → 400 required, anything else
// (Accept: application/json alone, text/html, application/fhir+json;q=0)
// → 400 not-supported, whose diagnostics say to send Accept:
// application/fhir+json. Prefer: handling=lenient does not relax it (it
// is about parameters, not headers). The IG lets a server either refuse a
// kick-off without Accept or Prefer: respond-async or assume them; the
// SMART Bulk Data test suite (BDT,
// github.com/smart-on-fhir/bulk-data-tests) wants a 4xx, so both are
// refused. Prefer must contain respond-async (400 otherwise), read per
// RFC 7240 (https://www.rfc-editor.org/rfc/rfc7240) across all Prefer lines;
// handling=lenient sets Kickoff.Lenient, and the first handling wins.
//
// GET: every query value is one export.Param, in request order; commas are
// not split (export.ParseRequest does that). POST: the body is a FHIR
// Parameters resource sent as application/fhir+json or application/json
// (charset allowed; anything else, or no Content-Type, is 415), at most
// Config.MaxBodyBytes (DefaultMaxBodyBytes, 256 KiB; 413 naming the
// limit, refused from Content-Length before reading when it says so). On
// every route a request target over MaxURLBytes (8 KiB) is 414. Each
// parameter entry needs a name and exactly one of valueString, valueCode,
// valueId, valueUri, valueUrl, valueCanonical, valueInstant,
// valueDateTime, valueDate, valueBoolean,
// valueInteger, valuePositiveInt, valueUnsignedInt (stringified),
// valueReference (its reference) or valueCoding (its code); part, resource,
// other value types, null values and unknown elements are 400. An empty or
// missing parameter array is a full export. A query string on a POST is
// 400: the parameters belong in the body, and ignoring a URL _since would
// silently turn an incremental export into a full one.
//
// Kickoff.RequestURL is PublicURL + the raw request target (for POST
// without its query, as the IG defines the manifest's request), so the
// manifest echoes the client's own encoding: BDT compares it with the URL
// it sent, byte for byte, and re-encoding parsed values would reorder and
// re-escape them.
//
// Choices where the IG leaves room:
//
//   - A POST body with the wrong Content-Type is 415 and one over the cap
//     413, not 400: the more precise 4xx, and every suite accepts any 4xx
//     with an OperationOutcome. A body that is JSON but not a valid
//     Parameters resource is 400.
//   - Prefer: separate-export-status (3.0) is not honoured: RFC 7240 lets
//     a server ignore a preference, so no Preference-Applied is sent and
//     status codes describe the job (the IG's default: 202 while running,
//     200 with the manifest, 4xx/5xx when failed).
//   - A status poll may send Prefer: wait=N (RFC 7240,
//     https://www.rfc-editor.org/rfc/rfc7240#section-4.3): the request is
//     held until the job finishes or N seconds pass (at most 30 s, and
//     half the write timeout), then answered as usual; a finished job is
//     answered 200 even on its first poll. N not a positive integer: no
//     wait. No Preference-Applied is sent (RFC 7240 makes it a MAY): the
//     status code says whether the job finished, and a server at its
//     waiter limit answers at once.
//   - Status polls are not rate-limited (no 429 for polling too often,
//     which the IG's status request makes a SHOULD): a poll is one map
//     lookup.
//   - Parameter semantics (lenient handling, _since/_until bounds, what is
//     never ignored) are export.ParseRequest's and documented there.
//
// # Errors
//
// Every error is an OperationOutcome produced by respondError, which maps *export.RequestError to 400 (issue code from
// Code, expression [Param]), *export.TooManyJobsError to 429 and
// *export.UnavailableError / export.ErrClosed to 503 (both with Retry-After
// in whole seconds, at least 1), export.ErrNotFound to 404, a request
// context cancelled by a departed client to nothing at all (logged as
// 499), and anything else to a generic 500 whose cause is logged. Unknown
// routes are 404, known paths with the wrong method 405 with Allow, panics
// 500; http.ServeContent's own refusals (416, 412) are rewritten as
// OperationOutcomes too. A failed job's status is 500 with the job's error
// as diagnostics (the IG's error status) and issue code "processing":
// final. The codes
// of the transient family ("exception", "transient", "throttled") are kept
// for answers where the request, not the job, failed and a retry may work
// (the IG asks for a code of the transient family when the poll failed but
// the job did not, so a client retries: a poll that fails with exception
// does not mean the job did).
//
// # Content types
//
// Every FHIR resource served (OperationOutcomes, the CapabilityStatement,
// the OperationDefinitions) gets its Content-Type from fhirContentType,
// the one place it is decided: application/json when the request's
// Accept gives application/json a higher q than application/fhir+json
// (Accept: application/json; "application/json,
// application/fhir+json;q=0.5"), application/fhir+json otherwise (no
// Accept, */*, application/*, a tie, nothing JSON), always with Vary:
// Accept. The body is the same FHIR JSON either way: some clients (BDT's)
// parse only bodies labelled application/json. For a failed job's status
// this departs from the letter of the IG's error status (an
// OperationOutcome as application/fhir+json) only when the client itself
// asked for application/json first. Not negotiated: the
// completion manifest, which the IG's complete status specifies as
// application/json; /healthz, /readyz, SMART discovery and the token
// endpoint (plain JSON); NDJSON files; and the 503 LimitListener writes
// before any request is read (application/fhir+json).
//
// # Status and manifest
//
// In progress: 202, X-Progress (control characters and quotes removed, cut
// below 100 bytes) and Retry-After (whole seconds, at least 1). Completed:
// 200 application/json, Expires in http.TimeFormat, and a manifest with
// only the IG's fields: transactionTime, request, requiresAccessToken,
// output, deleted (only when non-empty), error (always, [] when empty).
// Items are {type, url, count}; url is
// [PublicURL][base]/bulkfiles/<id>/<name>, count is left out when 0 (BDT
// wants it > 0 when present), and the internal byte size is not shown.
//
// # Files
//
// File names containing "/", "\", NUL or "..", and names export never
// writes (<Type>-<n>.ndjson, <Type>-deleted-<n>.ndjson, error-<n>.ndjson),
// are 404 without asking Jobs. With auth on, a download needs a token
// (as narrowed by the registry) whose scopes cover the file's resource
// type, for a deleted file the type it deletes, else 403 forbidden with
// error="insufficient_scope" and the scope needed, decided from the name
// before the job is looked up; a job's error files (OperationOutcomes
// about its own request) are served to its owner whatever the types.
// Without a Range header and with gzip accepted (gzip, x-gzip or * with
// q > 0; an explicit gzip;q=0 wins over *), the file is streamed through
// gzip (level 1, no Content-Length, the weak ETag W/"<digest>", which
// answers If-None-Match with 304); otherwise http.ServeContent serves it
// with the strong ETag "<digest>" (the SHA-256 export recorded when it
// wrote the file), so Range, If-Range and If-None-Match work. A file
// without a recorded digest gets a strong ETag built from job, name, size
// and modification time, and none when gzipped. A file that no longer
// matches its recorded size and digest (export.ErrFileDamaged) is never
// served: 500 exception telling the client to run the export again,
// logged at ERROR. Every file response carries Vary: Accept-Encoding and
// Cache-Control: no-store.
//
// # Observability
//
// One slog line per request (route pattern, method, status, bytes,
// duration; debug level for /metrics, /healthz and /readyz). Metrics on
// Config.Registerer: bulkstream_http_requests_total{route,method,code},
// bulkstream_http_request_duration_seconds{route},
// bulkstream_export_files_served_total and
// bulkstream_export_file_bytes_served_total (wire bytes, after gzip).
// route is the pattern ("/fhir/bulkstatus/:id") or "unmatched" (404, 405,
// redirects, OPTIONS); unknown methods on unmatched paths are "other", so
// no label ever holds an id or a raw path.
package httpapi
