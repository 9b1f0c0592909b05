package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"mime"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/bulkstream/bulkstream/internal/smart"
)

// SMART Backend Services
// (https://hl7.org/fhir/smart-app-launch/backend-services.html): discovery,
// the token endpoint and the bearer-token check of the protected routes.
// internal/smart does the cryptography and the policy; this file does HTTP.

const (
	tokenPath     = "/auth/token"
	discoveryPath = "/.well-known/smart-configuration"

	// maxTokenRequestBytes caps a token request body: four parameters,
	// the assertion at most 16 KiB.
	maxTokenRequestBytes = 64 << 10

	// authRealm is the realm of every WWW-Authenticate challenge.
	authRealm = "bulkstream"

	formContentType = "application/x-www-form-urlencoded"
)

// Auth is what SMART Backend Services authorization needs; see
// Config.Auth. cmd/bulkstream owns the files behind it (the clients file
// and its SIGHUP reload, the replay file, the server keys).
type Auth struct {
	// Clients is the registry of backend clients; Reload swaps it under
	// running requests.
	Clients *smart.Clients
	// Signer issues and verifies the access tokens.
	Signer *smart.Signer
	// Replay remembers client assertion ids (jti) so that each assertion
	// is accepted once.
	Replay smart.ReplayCache
	// JWKS fetches and caches the key sets of clients registered by jwks_url
	// (https://hl7.org/fhir/smart-app-launch/client-confidential-asymmetric.html).
	// nil is allowed while no client is; a client registered by URL then gets
	// a 500 server_error.
	JWKS *smart.JWKSCache
	// Now is the clock for assertion and token checks; nil means
	// time.Now. It should be the Signer's clock too.
	Now func() time.Time
}

func (au *Auth) validate() error {
	if au == nil {
		return nil
	}
	if au.Clients == nil || au.Signer == nil || au.Replay == nil {
		return errors.New("httpapi: Auth needs Clients, Signer and Replay")
	}
	return nil
}

func (a *api) now() time.Time {
	if a.cfg.Auth != nil && a.cfg.Auth.Now != nil {
		return a.cfg.Auth.Now()
	}
	return time.Now()
}

// smartConfiguration builds the discovery document
// (https://hl7.org/fhir/smart-app-launch/conformance.html). Only the
// backend-services fields: no authorization_endpoint (there is no app
// launch), no issuer or jwks_uri (no OpenID Connect).
// code_challenge_methods_supported is there because SMART 2.x lists it
// as required; it says S256 and never plain.
func smartConfiguration(tokenURL string) []byte {
	doc := struct {
		TokenEndpoint        string   `json:"token_endpoint"`
		GrantTypes           []string `json:"grant_types_supported"`
		AuthMethods          []string `json:"token_endpoint_auth_methods_supported"`
		SigningAlgs          []string `json:"token_endpoint_auth_signing_alg_values_supported"`
		Scopes               []string `json:"scopes_supported"`
		Capabilities         []string `json:"capabilities"`
		CodeChallengeMethods []string `json:"code_challenge_methods_supported"`
	}{
		TokenEndpoint:        tokenURL,
		GrantTypes:           []string{"client_credentials"},
		AuthMethods:          []string{"private_key_jwt"},
		SigningAlgs:          []string{"RS384", "ES384"},
		Scopes:               []string{"system/*.rs", "system/*.read"},
		Capabilities:         []string{"client-confidential-asymmetric", "permission-v1", "permission-v2"},
		CodeChallengeMethods: []string{"S256"},
	}
	b, err := json.Marshal(doc)
	if err != nil {
		panic(err) // plain strings
	}
	return b
}

// smartDiscovery serves GET [base]/.well-known/smart-configuration:
// public, application/json whatever Accept says, as SMART requires
// (https://hl7.org/fhir/smart-app-launch/conformance.html).
func (a *api) smartDiscovery(w http.ResponseWriter, _ *http.Request) {
	h := w.Header()
	h.Set("Content-Type", contentTypeJSON)
	h.Set("Cache-Control", "public, max-age=3600")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(a.discovery)
}

// tokenResponse is a successful token answer
// (https://hl7.org/fhir/smart-app-launch/backend-services.html, RFC 6749
// section 5.1).
type tokenResponse struct {
	AccessToken string `json:"access_token"`
	TokenType   string `json:"token_type"`
	ExpiresIn   int64  `json:"expires_in"`
	Scope       string `json:"scope"`
}

// oauthError is an RFC 6749 section 5.2 error answer.
type oauthError struct {
	Error       string `json:"error"`
	Description string `json:"error_description,omitempty"`
}

// OAuth error codes used here beyond the ones internal/smart returns.
const (
	codeUnsupportedGrantType = "unsupported_grant_type"
	codeServerError          = "server_error"
)

// token serves POST [base]/auth/token: the client-credentials grant with a
// private_key_jwt client assertion
// (https://hl7.org/fhir/smart-app-launch/backend-services.html,
// https://hl7.org/fhir/smart-app-launch/client-confidential-asymmetric.html).
// The checks, in order: the form (Content-Type, size, no repeated
// parameter), grant_type, client_assertion_type, client_assertion and scope
// present, then the assertion (smart.VerifyAssertion, which burns its jti
// last), then the scopes (smart.GrantScopes), then the token
// (Signer.Issue).
func (a *api) token(w http.ResponseWriter, r *http.Request) {
	auth := a.cfg.Auth
	form, err := readTokenForm(w, r)
	if err != nil {
		a.tokenError(w, r, "", err)
		return
	}
	now := a.now()
	// The request's context bounds a jwks_url fetch.
	client, err := smart.VerifyAssertion(r.Context(), auth.Clients.Registry(), form.Get("client_assertion"), a.tokenURL, now, auth.Replay, auth.JWKS)
	if err != nil {
		a.tokenError(w, r, "", err)
		return
	}
	setClient(w, client.ID)
	granted, err := smart.GrantScopes(form.Get("scope"), client.Scopes)
	if err != nil {
		a.tokenError(w, r, client.ID, err)
		return
	}
	scopes, err := smart.ParseScopes(strings.Join(granted, " "))
	if err != nil {
		a.tokenError(w, r, client.ID, err)
		return
	}
	tok, exp, err := auth.Signer.Issue(client.ID, scopes, 0)
	if err != nil {
		a.tokenError(w, r, client.ID, err)
		return
	}
	a.metrics.tokens.WithLabelValues("issued").Inc()
	a.log.Info("access token issued", "client", client.ID, "scope", scopes.String(), "expires", exp.UTC())
	// exp is in whole seconds (as in the token), so count from now,
	// rounding up: a 300 s token says 300, not 299.
	expiresIn := int64(math.Ceil(exp.Sub(a.now()).Seconds()))
	if expiresIn < 1 {
		expiresIn = 1 // never 0 (BDT: > 0)
	}
	writeOAuth(w, http.StatusOK, tokenResponse{AccessToken: tok, TokenType: "bearer", ExpiresIn: expiresIn, Scope: scopes.String()})
}

// errTokenRequestTooLarge marks a token request body over
// maxTokenRequestBytes: 413 instead of 400.
var errTokenRequestTooLarge = errors.New("token request body over the size limit")

// readTokenForm reads and checks the form of a token request. Every
// refusal is an *smart.OAuthError.
func readTokenForm(w http.ResponseWriter, r *http.Request) (url.Values, error) {
	invalid := func(desc string) error { return &smart.OAuthError{Code: smart.CodeInvalidRequest, Description: desc} }
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || !strings.EqualFold(mt, formContentType) {
		return nil, invalid("the token request must be a form: Content-Type " + formContentType)
	}
	tooLarge := &smart.OAuthError{Code: smart.CodeInvalidRequest, Err: errTokenRequestTooLarge,
		Description: fmt.Sprintf("the token request body is larger than the limit of %d bytes", maxTokenRequestBytes)}
	if r.ContentLength > maxTokenRequestBytes {
		return nil, tooLarge
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxTokenRequestBytes))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return nil, tooLarge
		}
		return nil, invalid("the token request body could not be read")
	}
	form, err := url.ParseQuery(string(body))
	if err != nil {
		return nil, invalid("the token request body is not valid form encoding")
	}
	for name, vs := range form {
		if len(vs) > 1 {
			// RFC 6749 3.2: parameters must not be repeated.
			return nil, invalid("parameter " + truncate(name, 50) + " is repeated")
		}
	}
	for _, name := range []string{"grant_type", "client_assertion_type", "client_assertion"} {
		if form.Get(name) == "" {
			return nil, invalid("parameter " + name + " is required")
		}
	}
	if gt := form.Get("grant_type"); gt != "client_credentials" {
		return nil, &smart.OAuthError{Code: codeUnsupportedGrantType,
			Description: "grant_type " + truncate(gt, 50) + " is not supported; use client_credentials"}
	}
	if form.Get("client_assertion_type") != smart.AssertionType {
		// An unsupported client authentication method (RFC 6749 5.2).
		return nil, &smart.OAuthError{Code: smart.CodeInvalidClient,
			Description: "client_assertion_type must be " + smart.AssertionType}
	}
	if _, ok := form["scope"]; !ok {
		// RFC 6749 3.3: no default scope here, so a missing scope is an
		// invalid one.
		return nil, &smart.OAuthError{Code: smart.CodeInvalidScope, Description: "parameter scope is required"}
	}
	return form, nil
}

// tokenError answers a refused token request: an *smart.OAuthError with
// its code (invalid_client 401, the others 400), anything else a logged
// 500 server_error. Refusals are logged at info with their reason (never
// the assertion) and, when there is one, the underlying cause that the
// client is not told (a failed jwks_url fetch's network error): operators
// debugging a client need them.
func (a *api) tokenError(w http.ResponseWriter, r *http.Request, client string, err error) {
	var oe *smart.OAuthError
	if !errors.As(err, &oe) {
		a.metrics.tokens.WithLabelValues(codeServerError).Inc()
		a.log.Error("token request failed", "client", client, "error", err)
		writeOAuth(w, http.StatusInternalServerError, oauthError{Error: codeServerError, Description: "internal server error"})
		return
	}
	status := http.StatusBadRequest
	switch {
	case oe.Code == smart.CodeInvalidClient:
		status = http.StatusUnauthorized
	case errors.Is(oe.Err, errTokenRequestTooLarge):
		status = http.StatusRequestEntityTooLarge // the body is still an RFC 6749 error
	}
	a.metrics.tokens.WithLabelValues(tokenResult(oe.Code)).Inc()
	attrs := []any{"client", client, "error", oe.Code, "reason", oe.Description, "remote", r.RemoteAddr}
	if oe.Err != nil {
		attrs = append(attrs, "cause", oe.Err.Error()) // for the operator only, e.g. why a jwks_url fetch failed
	}
	a.log.Info("token request refused", attrs...)
	writeOAuth(w, status, oauthError{Error: oe.Code, Description: oe.Description})
}

// tokenResult bounds the result label to known codes.
func tokenResult(code string) string {
	switch code {
	case smart.CodeInvalidRequest, smart.CodeInvalidClient, smart.CodeInvalidScope, codeUnsupportedGrantType:
		return code
	}
	return "other"
}

// writeOAuth writes a token endpoint answer: JSON, never cached (RFC 6749
// 5.1: Cache-Control no-store and Pragma no-cache).
func writeOAuth(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Pragma", "no-cache")
	writeJSON(w, status, v)
}

// principal is the authenticated caller of a protected route.
type principal struct {
	client *smart.Client // as registered now
	// scopes are the token's granted scopes intersected with the client's
	// registered scopes as they are now: a SIGHUP that narrows a client
	// narrows its unexpired tokens at their next request.
	scopes smart.Scopes
}

type principalKey struct{}

// principalFrom returns the caller, or nil when auth is off.
func principalFrom(ctx context.Context) *principal {
	p, _ := ctx.Value(principalKey{}).(*principal)
	return p
}

// clientID is the caller's client id, "" when auth is off: what Jobs
// compares with the job's owner.
func clientID(r *http.Request) string {
	if p := principalFrom(r.Context()); p != nil {
		return p.client.ID
	}
	return ""
}

// authError is a 401 (no usable token) or 403 (token without the needed
// scope), answered with an OperationOutcome and a WWW-Authenticate
// challenge (RFC 6750 section 3).
type authError struct {
	status int
	code   string // RFC 6750 error code; "" for a request without a token
	diag   string
	scope  string // the scope needed, for insufficient_scope
}

func (e *authError) Error() string { return e.diag }

// challenge is the WWW-Authenticate value for e.
func (e *authError) challenge() string {
	c := `Bearer realm="` + authRealm + `"`
	if e.code != "" {
		c += `, error="` + e.code + `", error_description="` + quotedText(e.diag) + `"`
	}
	if e.scope != "" {
		c += `, scope="` + quotedText(e.scope) + `"`
	}
	return c
}

// issueCode is the OperationOutcome issue code of e.
func (e *authError) issueCode() string {
	switch {
	case e.status == http.StatusForbidden:
		return "forbidden"
	case e.code == "":
		return "login"
	}
	return "unknown" // FHIR: the proffered token is unacceptable
}

// quotedText makes s safe inside an RFC 9110 quoted-string (and RFC 6750
// restricts error_description to printable ASCII without " and \).
func quotedText(s string) string {
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r > 0x7e || r == '"' || r == '\\' {
			return '\''
		}
		return r
	}, headerText(s, 200))
}

// requireToken wraps a protected route: without a valid access token the
// request is refused with 401 before h runs. The token is checked once,
// when the request starts: a download that began with a valid token
// finishes even if the token expires during it. The client must still be
// in the registry, so removing it and reloading (SIGHUP) cuts off its
// unexpired tokens too, and the request gets only what both the token
// and the client's current registry entry allow: a reload that narrows
// the client's scopes narrows its tokens (403 when nothing is left).
func (a *api) requireToken(h http.HandlerFunc) http.HandlerFunc {
	if a.cfg.Auth == nil {
		return h
	}
	return func(w http.ResponseWriter, r *http.Request) {
		p, err := a.authenticate(r)
		if err != nil {
			a.respondError(w, r, err)
			return
		}
		setClient(w, p.client.ID)
		h(w, r.WithContext(context.WithValue(r.Context(), principalKey{}, p)))
	}
}

func (a *api) authenticate(r *http.Request) (*principal, error) {
	tok, err := bearerToken(r.Header.Values("Authorization"))
	if err != nil {
		return nil, err
	}
	claims, err := a.cfg.Auth.Signer.Verify(tok, a.now())
	if err != nil {
		var oe *smart.OAuthError
		if errors.As(err, &oe) {
			return nil, &authError{status: http.StatusUnauthorized, code: smart.CodeInvalidToken,
				diag: "the access token is not valid: " + oe.Description}
		}
		return nil, err
	}
	client, ok := a.cfg.Auth.Clients.Client(claims.ClientID)
	if !ok {
		return nil, &authError{status: http.StatusUnauthorized, code: smart.CodeInvalidToken,
			diag: "the access token's client is no longer registered"}
	}
	scopes := claims.Scopes.Intersect(client.ReadScopes())
	if scopes.Empty() {
		return nil, &authError{status: http.StatusForbidden, code: "insufficient_scope",
			diag: "the access token's scopes (" + truncate(claims.Scopes.String(), 200) +
				") no longer allow reading any resource type: the client's registered scopes have changed; get a new token"}
	}
	return &principal{client: client, scopes: scopes}, nil
}

// bearerToken extracts the token of an "Authorization: Bearer <token>"
// header (RFC 6750 2.1; the scheme is case-insensitive). Tokens in the
// query string or a form body are not accepted (RFC 6750 discourages
// both: URLs end up in logs).
func bearerToken(values []string) (string, error) {
	missing := &authError{status: http.StatusUnauthorized,
		diag: "this endpoint needs an access token: get one from the token endpoint (SMART Backend Services) " +
			"and send it as Authorization: Bearer <token>"}
	if len(values) == 0 {
		return "", missing
	}
	if len(values) > 1 {
		return "", &authError{status: http.StatusUnauthorized, code: smart.CodeInvalidToken,
			diag: "more than one Authorization header"}
	}
	scheme, tok, _ := strings.Cut(strings.TrimSpace(values[0]), " ")
	if !strings.EqualFold(scheme, "Bearer") {
		return "", missing
	}
	tok = strings.TrimSpace(tok)
	if tok == "" {
		return "", &authError{status: http.StatusUnauthorized, code: smart.CodeInvalidToken,
			diag: "the Authorization header has no token after Bearer"}
	}
	return tok, nil
}

// forbiddenFile is the 403 for a download of a file whose resource type
// the token (as narrowed by the registry) does not cover.
func forbiddenFile(r *http.Request, typ string) *authError {
	granted := ""
	if p := principalFrom(r.Context()); p != nil {
		granted = p.scopes.String()
	}
	return &authError{status: http.StatusForbidden, code: "insufficient_scope", scope: "system/" + typ + ".rs",
		diag: "the access token (scope " + truncate(granted, 200) + ") does not allow reading " + typ +
			", the resource type of this file; ask for a token with system/" + typ + ".rs"}
}

// forbiddenTypes is the 403 for a kick-off whose _type the token does not
// cover.
func forbiddenTypes(r *http.Request, types []string) *authError {
	granted := ""
	if p := principalFrom(r.Context()); p != nil {
		granted = p.scopes.String()
	}
	need := make([]string, len(types))
	for i, t := range types {
		need[i] = "system/" + t + ".rs"
	}
	// Group and Provenance may be needed without _type naming them: a
	// Group-level export reads its Group, includeAssociatedData adds
	// Provenance.
	var why []string
	if slices.Contains(types, "Group") {
		why = append(why, "a Group-level export needs read access to Group (system/Group.rs)")
	}
	if slices.Contains(types, "Provenance") {
		why = append(why, "includeAssociatedData needs read access to Provenance (system/Provenance.rs)")
	}
	diag := "the access token (scope " + truncate(granted, 200) + ") does not allow exporting " +
		truncate(strings.Join(types, ", "), 200) + "; ask for a token with those types or leave them out of _type"
	if why != nil {
		diag += " (the token must grant read access to them: " + strings.Join(why, "; ") + ")"
	}
	return &authError{status: http.StatusForbidden, code: "insufficient_scope", scope: strings.Join(need, " "), diag: diag}
}
