package smart

import (
	"context"
	"crypto/ecdsa"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

// Assertion limits (the authentication JWT of
// https://hl7.org/fhir/smart-app-launch/client-confidential-asymmetric.html).
const (
	// MaxAssertionLifetime is how far ahead of now an assertion's exp may be.
	MaxAssertionLifetime = 5 * time.Minute
	// ClockSkew is the tolerance for clock differences between a client and
	// this server when checking an assertion's exp, nbf and iat.
	ClockSkew = 60 * time.Second

	// AssertionType is the client_assertion_type of the token request.
	AssertionType = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"

	maxAssertionLen = 16 << 10
	maxJTILen       = 256
)

// assertionAlgs are the only algorithms accepted on a client assertion.
// go-jose refuses any other "alg" (none, HS*, RS256, …) at parse time and
// verifies ES384 signatures only in the raw r‖s form (96 bytes), so a DER
// encoded ECDSA signature fails.
var assertionAlgs = []jose.SignatureAlgorithm{jose.RS384, jose.ES384}

type assertionClaims struct {
	Iss string           `json:"iss"`
	Sub string           `json:"sub"`
	Aud jwt.Audience     `json:"aud"`
	Exp *jwt.NumericDate `json:"exp"`
	Nbf *jwt.NumericDate `json:"nbf"`
	Iat *jwt.NumericDate `json:"iat"`
	Jti string           `json:"jti"`
}

// VerifyAssertion authenticates a client from its client_assertion (SMART
// Backend Services,
// https://hl7.org/fhir/smart-app-launch/client-confidential-asymmetric.html;
// RFC 7523, https://www.rfc-editor.org/rfc/rfc7523) and returns the
// registered client. The step numbers below are those of SMART's signature
// verification.
//
// tokenURL is this server's token endpoint URL as clients know it (the
// configured public URL); aud must equal it or be an array containing it.
// jwks fetches the keys of clients registered by jwks_url; it may be nil
// when no client is (such a client then fails with a plain error, the
// server's fault). ctx bounds that fetch. The checks, in order:
//
//   - a compact JWS of at most 16 KiB whose alg is RS384 or ES384 (never
//     none, HMAC or RS256; ES384 signatures raw r‖s, not DER);
//   - header kid present; typ, if present, is JWT; other header members
//     (the SMART Bulk Data test suite adds kty) are ignored, including an
//     embedded jwk or x5c, which is never used;
//   - iss names a registered client;
//   - header jku (step 1), if present, is a string equal to the
//     client's registered jwks_url, byte for byte; a client registered
//     inline or by file may not send jku at all. The key URL is always
//     the registered one: jku only confirms it, and is never fetched
//     because the assertion names it;
//   - the candidate keys (step 2) are the client's inline or file keys,
//     or those its jwks_url publishes (jwks.Keys: cached within the
//     response's Cache-Control, fetched again once for an unknown kid
//     subject to a per-URL rate limit). A failed fetch is invalid_client
//     naming the URL and what went wrong;
//   - exactly one candidate has the header kid, a kty that fits alg (RSA
//     for RS384, EC for ES384) and no conflicting alg or use (step 3);
//   - the signature verifies with that key (step 4);
//   - sub = iss, aud contains tokenURL, exp present, after now − ClockSkew
//     and at most now + MaxAssertionLifetime + ClockSkew, nbf and iat (if
//     present) not after now + ClockSkew, jti present (≤ 256 bytes);
//   - last, once everything else holds, replay.Seen(iss, jti, exp +
//     ClockSkew) is false: each assertion is accepted once.
//
// Every rejection is an *OAuthError with Code "invalid_client" and a
// Description that names the failed check. An error from the replay cache
// is returned wrapped, not as an *OAuthError: it is the server's fault, and
// the assertion is refused (fail closed) without blaming the client. So is
// ctx ending during a key fetch.
func VerifyAssertion(ctx context.Context, reg *Registry, assertion, tokenURL string, now time.Time, replay ReplayCache, jwks *JWKSCache) (*Client, error) {
	if reg == nil || replay == nil || tokenURL == "" {
		return nil, errors.New("smart: VerifyAssertion needs a registry, a replay cache and the token URL")
	}
	if assertion == "" {
		return nil, invalidClient("client_assertion is empty")
	}
	if len(assertion) > maxAssertionLen {
		return nil, invalidClient("client_assertion is too large")
	}
	jws, err := jose.ParseSignedCompact(assertion, assertionAlgs)
	if err != nil {
		var algErr *jose.ErrUnexpectedSignatureAlgorithm
		if errors.As(err, &algErr) {
			return nil, invalidClient(fmt.Sprintf("assertion alg %q is not allowed: sign with RS384 or ES384", truncate(string(algErr.Got))))
		}
		return nil, invalidClient("client_assertion is not a compact JWS (header.payload.signature)")
	}
	if len(jws.Signatures) != 1 {
		return nil, invalidClient("assertion must carry exactly one signature")
	}
	h := jws.Signatures[0].Header
	alg := jose.SignatureAlgorithm(h.Algorithm)
	if h.KeyID == "" {
		return nil, invalidClient("assertion header has no kid")
	}
	if typ, ok := h.ExtraHeaders[jose.HeaderType]; ok {
		if s, _ := typ.(string); !strings.EqualFold(s, "JWT") {
			return nil, invalidClient("assertion header typ must be JWT")
		}
	}

	// Which client, and so which keys: from the unverified iss. Nothing
	// else from the unverified payload is trusted.
	var unverified assertionClaims
	if err := json.Unmarshal(jws.UnsafePayloadWithoutVerification(), &unverified); err != nil {
		return nil, invalidClient("assertion payload is not a JSON object with valid registered claims")
	}
	if unverified.Iss == "" {
		return nil, invalidClient("assertion has no iss")
	}
	client, ok := reg.Client(unverified.Iss)
	if !ok {
		return nil, invalidClient(fmt.Sprintf("unknown client %q (iss)", truncate(unverified.Iss)))
	}
	if jku, ok := h.ExtraHeaders["jku"]; ok {
		s, isString := jku.(string)
		switch {
		case client.JWKSURL == "":
			return nil, invalidClient(fmt.Sprintf("assertion header has jku, but client %q registered its keys inline, not by jwks_url: leave jku out", client.ID))
		case !isString || s != client.JWKSURL:
			return nil, invalidClient(fmt.Sprintf("assertion header jku is not the jwks_url registered for client %q (%s)", client.ID, client.JWKSURL))
		}
	}
	keys := client.keys
	if client.JWKSURL != "" {
		if jwks == nil {
			return nil, fmt.Errorf("smart: client %q is registered by jwks_url, but VerifyAssertion has no JWKSCache", client.ID)
		}
		keys, err = jwks.Keys(ctx, client.JWKSURL, h.KeyID)
		if err != nil {
			var fe *JWKSFetchError
			if !errors.As(err, &fe) {
				return nil, err
			}
			return nil, &OAuthError{Code: CodeInvalidClient, Err: err,
				Description: fmt.Sprintf("the keys of client %q could not be fetched: jwks_url %s %s", client.ID, fe.URL, fe.Reason)}
		}
	}
	var key *jose.JSONWebKey
	for i := range keys {
		k := &keys[i]
		if k.KeyID != h.KeyID || !keyFitsAlg(k, alg) {
			continue
		}
		if key != nil {
			return nil, invalidClient(fmt.Sprintf("several keys of client %q match kid %q and alg %s", client.ID, truncate(h.KeyID), alg))
		}
		key = k
	}
	if key == nil {
		if client.JWKSURL != "" {
			return nil, invalidClient(fmt.Sprintf("the jwks_url of client %q has no key with kid %q for alg %s", client.ID, truncate(h.KeyID), alg))
		}
		return nil, invalidClient(fmt.Sprintf("client %q has no registered key with kid %q for alg %s", client.ID, truncate(h.KeyID), alg))
	}
	payload, err := jws.Verify(key)
	if err != nil {
		return nil, invalidClient(fmt.Sprintf("assertion signature does not verify with key %q of client %q", key.KeyID, client.ID))
	}

	var c assertionClaims
	if err := json.Unmarshal(payload, &c); err != nil {
		return nil, invalidClient("assertion payload is not a JSON object with valid registered claims")
	}
	switch {
	case c.Iss != client.ID:
		return nil, invalidClient("assertion iss changed") // unreachable: same payload
	case c.Sub != c.Iss:
		return nil, invalidClient("assertion sub must equal iss (the client id)")
	case len(c.Aud) == 0:
		return nil, invalidClient("assertion has no aud")
	case !c.Aud.Contains(tokenURL):
		return nil, invalidClient(fmt.Sprintf("assertion aud must be the token endpoint URL %q", tokenURL))
	case c.Exp == nil:
		return nil, invalidClient("assertion has no exp")
	}
	exp := c.Exp.Time()
	switch {
	case !now.Before(exp.Add(ClockSkew)):
		return nil, invalidClient("assertion has expired")
	case exp.After(now.Add(MaxAssertionLifetime + ClockSkew)):
		return nil, invalidClient(fmt.Sprintf("assertion exp is more than %d minutes ahead (plus %d s allowed for clock skew)",
			int(MaxAssertionLifetime/time.Minute), int(ClockSkew/time.Second)))
	case c.Nbf != nil && c.Nbf.Time().After(now.Add(ClockSkew)):
		return nil, invalidClient("assertion is not valid yet (nbf)")
	case c.Iat != nil && c.Iat.Time().After(now.Add(ClockSkew)):
		return nil, invalidClient("assertion iat is in the future")
	case c.Jti == "":
		return nil, invalidClient("assertion has no jti")
	case len(c.Jti) > maxJTILen:
		return nil, invalidClient(fmt.Sprintf("assertion jti is longer than %d bytes", maxJTILen))
	}
	seen, err := replay.Seen(c.Iss, c.Jti, exp.Add(ClockSkew))
	if err != nil {
		return nil, fmt.Errorf("smart: replay cache: %w", err)
	}
	if seen {
		return nil, invalidClient("assertion jti was already used: assertions are single use")
	}
	return client, nil
}

// keyFitsAlg reports whether k can verify alg: RSA for RS384, EC for
// ES384, and the key's own alg and use (when given) agree.
func keyFitsAlg(k *jose.JSONWebKey, alg jose.SignatureAlgorithm) bool {
	if k.Algorithm != "" && k.Algorithm != string(alg) {
		return false
	}
	if k.Use != "" && k.Use != "sig" {
		return false
	}
	switch k.Key.(type) {
	case *rsa.PublicKey:
		return alg == jose.RS384
	case *ecdsa.PublicKey:
		return alg == jose.ES384
	}
	return false
}

// truncate bounds client-supplied strings echoed in error descriptions.
func truncate(s string) string {
	const n = 64
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
