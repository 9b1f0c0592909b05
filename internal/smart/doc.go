// Package smart is the security core of SMART Backend Services
// authorization
// (https://hl7.org/fhir/smart-app-launch/backend-services.html, with the
// asymmetric client authentication of
// https://hl7.org/fhir/smart-app-launch/client-confidential-asymmetric.html):
// the client registry, client assertion verification, the assertion replay
// cache, scope granting, and the server's access tokens. It has no HTTP
// handlers; httpapi wires it into the token endpoint and the bearer-token
// middleware, and cmd/bulkstream owns the files, SIGHUP and key rotation.
// It imports only the standard library, go-jose v4 and internal/fhir (the
// R4 type list).
//
// # Model
//
// A backend client owns an asymmetric key pair and is registered out of
// band in a JSON registry file (LoadRegistry; Clients swaps a reloaded
// registry in atomically, keeping the old one when the new file is
// invalid), with its public keys inline, in a file, or as the URL of a
// JWK Set it publishes (JWKSCache fetches and caches those). To get a token it signs a short-lived JWT assertion
// (SignAssertion on the client side) and posts it with the requested
// scopes; the token endpoint calls VerifyAssertion, then GrantScopes with
// the client's allowed scopes, then Signer.Issue. Resource requests carry
// the access token, which Signer.Verify checks without touching the client
// registry or the assertion again, so an ES384 assertion check is paid once
// per token, not once per request. What a request may read is the token's
// scopes intersected with the client's registered scopes as they are now
// (Client.ReadScopes), so a registry reload that narrows a client narrows
// its unexpired tokens too.
//
//	client                           token endpoint                       resource server
//	SignAssertion ─ assertion ─▶ VerifyAssertion(ctx, reg, a, url, now, replay, jwks)
//	                             GrantScopes(scope, client.Scopes)
//	              ◀─ token ───── Signer.Issue(client.ID, scopes, 0)
//	              ─ Bearer ───────────────────────────────────────────▶ Signer.Verify(token, now)
//	                                                                     claims.Scopes.Intersect(
//	                                                                       client.ReadScopes()).Allows(type)
//
// # Decisions
//
//   - Algorithms: assertions RS384 or ES384 only, access tokens ES384 only,
//     enforced by go-jose at parse time (never none, HMAC, RS256 or a
//     DER-encoded ECDSA signature). Registry keys must be RSA ≥ 2048 bits or
//     EC P-384, so a registered key can always verify one of the two.
//   - Key sources (SMART accepts a JWK Set registered by URL or inline, and
//     jku only as the registered URL): each client registers exactly one of
//     jwks (inline), jwks_file or jwks_url. A jwks_url must be an absolute
//     https URL (≤ 2 KiB, no userinfo, no fragment); plain http only for a
//     loopback host (localhost, 127.0.0.0/8, ::1), for tests and local
//     development. URLs come only from the operator's registry: an
//     assertion's jku header must equal the client's registered jwks_url
//     byte for byte and is then redundant; a jku from a client registered
//     inline or by file, or any other jku, is invalid_client. Nothing an assertion says is ever fetched, so a token
//     request cannot aim this server at an arbitrary URL. An embedded jwk
//     or x5c header is never used.
//   - Fetching (JWKSCache, built by the caller with its own http.Client;
//     cmd/bulkstream gives it 5 s timeouts): GET with Accept:
//     application/json, 200 only, body ≤ 256 KiB, at most 3 redirects to
//     URLs the registry would accept (never https → http), and each key
//     checked as in a registry, except that, as RFC 7517 section 5 says,
//     keys this server cannot verify with (other kty, curve, alg or use,
//     RSA under MinRSABits, no kid) are ignored, as are members beside
//     "keys" and exact repeats of a key: a published set may serve other
//     purposes too. A private key fails the whole set, and so does a set
//     without one usable key. A failure is invalid_client whose
//     description names the URL and the kind of failure (HTTP status,
//     timeout, TLS, size, which key is unacceptable) but not resolved
//     addresses; the full cause is in OAuthError.Err for the server log.
//     The package logs nothing.
//   - Caching (SMART: never beyond the response's Cache-Control): no-store,
//     no-cache and max-age=0 → used for the one assertion only; max-age=N
//     (less Age) → reused up to N s, capped at 1 h so a withdrawn key stops
//     working within the hour; no Cache-Control freshness → Expires, else 5
//     min. Failures are not cached. An unknown kid in a fresh set triggers
//     one refetch (key rotation), at most one per URL every 10 s, so random
//     kids cannot turn this server against a client's key server;
//     concurrent lookups share one fetch, bounded by the context of the
//     request that started it (its waiters retry if it goes away). An
//     expired or no-store set is fetched for every assertion that needs it:
//     those requests come one-for-one from token requests, at most one in
//     flight per URL. The cache is keyed by URL and outlives registry
//     reloads.
//   - Key selection (SMART's signature verification steps): keys of the
//     client named by iss whose kid equals the header kid, whose kty fits
//     alg and whose own alg/use (if set) agree; exactly one must remain.
//     kids are unique per client.
//   - Time: assertion exp must be after now − ClockSkew (60 s) and at most
//     now + 5 min + ClockSkew; nbf/iat, if present, not after now +
//     ClockSkew. Access tokens allow TokenLeeway (5 s).
//   - Replay: the replay check is the last one, after the signature and all
//     claims verified, so forged assertions cannot burn a jti. ReplayFile
//     keeps (iss, jti) until exp + ClockSkew in an append-only, fsynced file
//     that is compacted on open, so a restart does not reopen the window. A
//     replay-store failure refuses the assertion but is returned as a plain
//     error (a 500), not as invalid_client.
//   - Errors: every client-caused rejection is an *OAuthError
//     (invalid_client, invalid_scope, invalid_token) whose Description names
//     the failed check and may be sent to the client; it never contains key
//     material. Registry and key-file errors name the file and client.
//   - Scopes
//     (https://hl7.org/fhir/smart-app-launch/scopes-and-launch-context.html):
//     system/ only, v1 and v2 syntax, no ?param constraints. Export needs
//     read and search, so each request is reduced to its "rs" part
//     (system/*.cruds → system/*.rs, system/*.* → system/*.read);
//     write-only, read-only-without-search and malformed scopes are
//     invalid_scope. Granted = requested ∩ allowed, v1 echoed as v1; a
//     wildcard request is narrowed to the specific types the client is
//     allowed.
//   - Server keys: ES384 P-384 private JWKs in <dir>/<kid>.jwk, mode 0600
//     (looser modes are refused, like ssh). kids start with the creation
//     time, so the newest key (the last kid) signs and every loaded key
//     verifies. Rotate adds a key and deletes a key once its successor has
//     existed for the token lifetime + TokenLeeway: by then every token it
//     signed has expired. Issue refuses a ttl above the lifetime, which that
//     rule relies on. Access tokens carry iss, sub and client_id (the
//     client id), scope, iat, exp and jti, with typ at+jwt (RFC 9068) so
//     that a client assertion can never pass as an access token.
//   - Client keys (GenerateClientKey): ES384 P-384 by default, RS384 with
//     3072-bit RSA; the kid is the RFC 7638 thumbprint.
//
// No package state: every component is built by its constructor
// (LoadRegistry, OpenClients, OpenReplayFile, OpenKeys, NewJWKSCache) and
// is safe for concurrent use.
package smart
