package httpapi

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"log/slog"
	"maps"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"

	"github.com/bulkstream/bulkstream/export"
	"github.com/bulkstream/bulkstream/index"
	"github.com/bulkstream/bulkstream/index/indextest"
	"github.com/bulkstream/bulkstream/internal/smart"
)

const testTokenURL = testPublicURL + "/fhir/auth/token"

// testClient is a registered client and its private key.
type testClient struct {
	id  string
	alg string
	kid string
	key crypto.Signer
	jwk []byte // private JWK, as `bulkstream client keygen` writes it
}

// authEnv is an httpapi handler with auth on, over fake jobs, with a
// clock the test moves.
type authEnv struct {
	h        http.Handler
	jobs     *fakeJobs
	clients  map[string]*testClient
	registry *smart.Clients
	regPath  string
	signer   *smart.Signer
	jwks     *smart.JWKSCache
	auth     *Auth
	keySrv   *jwksServer // publishes app-url's keys
	mu       sync.Mutex
	now      time.Time
}

// jwksServer is a client's JWK Set endpoint on loopback, counting requests.
type jwksServer struct {
	*httptest.Server
	hits atomic.Int64

	mu           sync.Mutex
	status       int
	cacheControl string
	body         []byte
}

func newJWKSServer(t testing.TB, body []byte) *jwksServer {
	t.Helper()
	s := &jwksServer{status: http.StatusOK, cacheControl: "max-age=60", body: body}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		s.hits.Add(1)
		s.mu.Lock()
		defer s.mu.Unlock()
		w.Header().Set("Cache-Control", s.cacheControl)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(s.status)
		_, _ = w.Write(s.body)
	}))
	t.Cleanup(s.Close)
	return s
}

func (s *jwksServer) set(status int, cacheControl string, body []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.status, s.cacheControl = status, cacheControl
	if body != nil {
		s.body = body
	}
}

func (s *jwksServer) jwksURL() string { return s.URL + "/.well-known/jwks.json" }

func (e *authEnv) clock() time.Time {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.now
}

func (e *authEnv) advance(d time.Duration) {
	e.mu.Lock()
	e.now = e.now.Add(d)
	e.mu.Unlock()
}

// newTestClient makes a key with smart.GenerateClientKey and returns the
// client and its registry entry with the given scopes and quota.
func newTestClient(t testing.TB, id, alg string, scopes []string, maxJobs int) (*testClient, map[string]any) {
	t.Helper()
	priv, entry, err := smart.GenerateClientKey(id, alg)
	if err != nil {
		t.Fatal(err)
	}
	var jwk jose.JSONWebKey
	if err := json.Unmarshal(priv, &jwk); err != nil {
		t.Fatal(err)
	}
	var e map[string]any
	if err := json.Unmarshal(entry, &e); err != nil {
		t.Fatal(err)
	}
	e["scopes"], e["max_jobs"] = scopes, maxJobs
	return &testClient{id: id, alg: alg, kid: jwk.KeyID, key: jwk.Key.(crypto.Signer), jwk: priv}, e
}

func writeRegistry(t testing.TB, path string, entries ...map[string]any) {
	t.Helper()
	b, err := json.Marshal(map[string]any{"clients": entries})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// newAuthEnv registers app1 (ES384, everything, 2 jobs), app2 (RS384,
// everything), narrow (ES384, Patient only), and app-url (ES384,
// everything) whose keys are published on e.keySrv (max-age=60) and
// registered by jwks_url.
func newAuthEnv(t *testing.T) *authEnv {
	t.Helper()
	dir := t.TempDir()
	e := &authEnv{jobs: newFakeJobs(), clients: map[string]*testClient{},
		now: time.Now().Truncate(time.Second), regPath: filepath.Join(dir, "clients.json")}
	var entries []map[string]any
	for _, c := range []struct {
		id, alg string
		scopes  []string
		jobs    int
	}{
		{"app1", "ES384", []string{"system/*.rs"}, 2},
		{"app2", "RS384", []string{"system/*.read"}, 3},
		{"narrow", "ES384", []string{"system/Patient.rs"}, 1},
	} {
		tc, entry := newTestClient(t, c.id, c.alg, c.scopes, c.jobs)
		e.clients[c.id] = tc
		entries = append(entries, entry)
	}
	tc, entry := newTestClient(t, "app-url", "ES384", []string{"system/*.rs"}, 2)
	set, err := json.Marshal(entry["jwks"])
	if err != nil {
		t.Fatal(err)
	}
	e.keySrv = newJWKSServer(t, set)
	delete(entry, "jwks")
	entry["jwks_url"] = e.keySrv.jwksURL()
	e.clients["app-url"] = tc
	entries = append(entries, entry)
	writeRegistry(t, e.regPath, entries...)
	if e.registry, err = smart.OpenClients(e.regPath); err != nil {
		t.Fatal(err)
	}
	replay, err := smart.OpenReplayFile(filepath.Join(dir, "replay.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { replay.Close() })
	if e.signer, err = smart.OpenKeys(filepath.Join(dir, "keys"), e.clock, &smart.SignerOptions{Issuer: testPublicURL + "/fhir"}); err != nil {
		t.Fatal(err)
	}
	if e.jwks, err = smart.NewJWKSCache(&smart.JWKSCacheOptions{Now: e.clock}); err != nil {
		t.Fatal(err)
	}
	e.auth = &Auth{Clients: e.registry, Signer: e.signer, Replay: replay, Now: e.clock, JWKS: e.jwks}
	e.h = New(Config{Jobs: e.jobs, PublicURL: testPublicURL, Version: "1.2.3-test", Auth: e.auth})
	return e
}

// b64 is base64url without padding.
func b64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

// signFunc signs a JWS signing input.
type signFunc func(t testing.TB, input []byte) []byte

// jws builds a compact JWS by hand, so tests can send what no library
// would.
func jws(t testing.TB, header, claims map[string]any, sign signFunc) string {
	t.Helper()
	h, _ := json.Marshal(header)
	c, _ := json.Marshal(claims)
	input := b64(h) + "." + b64(c)
	return input + "." + b64(sign(t, []byte(input)))
}

func signWith(key crypto.Signer, alg string) signFunc {
	return func(t testing.TB, input []byte) []byte {
		t.Helper()
		switch alg {
		case "ES384":
			h := sha512.Sum384(input)
			r, s, err := ecdsa.Sign(rand.Reader, key.(*ecdsa.PrivateKey), h[:])
			if err != nil {
				t.Fatal(err)
			}
			out := make([]byte, 96) // raw r‖s
			r.FillBytes(out[:48])
			s.FillBytes(out[48:])
			return out
		case "RS384":
			h := sha512.Sum384(input)
			sig, err := rsa.SignPKCS1v15(rand.Reader, key.(*rsa.PrivateKey), crypto.SHA384, h[:])
			if err != nil {
				t.Fatal(err)
			}
			return sig
		case "RS256":
			h := sha256.Sum256(input)
			sig, err := rsa.SignPKCS1v15(rand.Reader, key.(*rsa.PrivateKey), crypto.SHA256, h[:])
			if err != nil {
				t.Fatal(err)
			}
			return sig
		}
		t.Fatalf("alg %s", alg)
		return nil
	}
}

func hs384(secret []byte) signFunc {
	return func(_ testing.TB, input []byte) []byte {
		m := hmac.New(sha512.New384, secret)
		m.Write(input)
		return m.Sum(nil)
	}
}

// assertion is a well-formed client assertion of c, changed by edit.
func (e *authEnv) assertion(t testing.TB, c *testClient, edit func(h, cl map[string]any)) string {
	t.Helper()
	now := e.clock()
	h := map[string]any{"alg": c.alg, "kid": c.kid, "typ": "JWT"}
	cl := map[string]any{"iss": c.id, "sub": c.id, "aud": testTokenURL,
		"exp": now.Add(4 * time.Minute).Unix(), "iat": now.Unix(), "jti": rand.Text()}
	sign := signWith(c.key, c.alg)
	if edit != nil {
		edit(h, cl)
		if s, ok := h["sign"].(signFunc); ok {
			sign = s
			delete(h, "sign")
		}
	}
	return jws(t, h, cl, sign)
}

func tokenForm(assertion, scope string) url.Values {
	return url.Values{
		"grant_type":            {"client_credentials"},
		"client_assertion_type": {smart.AssertionType},
		"client_assertion":      {assertion},
		"scope":                 {scope},
	}
}

func (e *authEnv) postToken(form url.Values, contentType string) *httptest.ResponseRecorder {
	return serve(e.h, request{method: "POST", target: "/fhir/auth/token",
		header: http.Header{"Content-Type": {contentType}}, body: form.Encode()})
}

// token gets an access token for client c.
func (e *authEnv) token(t testing.TB, c, scope string) string {
	t.Helper()
	rec := e.postToken(tokenForm(e.assertion(t, e.clients[c], nil), scope), formContentType)
	if rec.Code != http.StatusOK {
		t.Fatalf("token for %s: %d %s", c, rec.Code, rec.Body)
	}
	var tr tokenResponse
	if err := json.Unmarshal(rec.Body.Bytes(), &tr); err != nil {
		t.Fatal(err)
	}
	return tr.AccessToken
}

// checkOAuthAnswer checks the headers every token endpoint answer has.
func checkOAuthAnswer(t testing.TB, rec *httptest.ResponseRecorder) {
	t.Helper()
	h := rec.Header()
	if ct := h.Get("Content-Type"); ct != contentTypeJSON {
		t.Errorf("Content-Type = %q, want %q", ct, contentTypeJSON)
	}
	if h.Get("Cache-Control") != "no-store" || h.Get("Pragma") != "no-cache" {
		t.Errorf("Cache-Control %q, Pragma %q; want no-store, no-cache", h.Get("Cache-Control"), h.Get("Pragma"))
	}
}

// TestTokenEndpointErrors is the refusal matrix of the SMART Bulk Data test
// suite (BDT, github.com/smart-on-fhir/bulk-data-tests) and Inferno's Bulk
// Data test kit (github.com/inferno-framework/bulk-data-test-kit): bad
// assertions, OAuth errors per RFC 6749 section 5.2 and bad scopes. Each
// request is refused with the right status and OAuth
// error, as JSON, never cached, and without a token in the answer.
func TestTokenEndpointErrors(t *testing.T) {
	e := newAuthEnv(t)
	app1, app2, appURL := e.clients["app1"], e.clients["app2"], e.clients["app-url"]
	stranger, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	strangerRSA, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	app1Pub, _ := x509.MarshalPKIXPublicKey(app1.key.Public())
	replayed := e.assertion(t, app1, nil)
	if rec := e.postToken(tokenForm(replayed, "system/*.rs"), formContentType); rec.Code != http.StatusOK {
		t.Fatalf("first use of the assertion: %d %s", rec.Code, rec.Body)
	}

	good := func() url.Values { return tokenForm(e.assertion(t, app1, nil), "system/*.rs") }
	without := func(name string) url.Values { f := good(); f.Del(name); return f }
	with := func(name, value string) url.Values { f := good(); f.Set(name, value); return f }
	edited := func(c *testClient, edit func(h, cl map[string]any)) url.Values {
		return tokenForm(e.assertion(t, c, edit), "system/*.rs")
	}
	tests := []struct {
		name        string
		form        url.Values
		contentType string // default form
		rawBody     string // instead of form
		status      int
		code        string
		desc        string // in error_description
	}{
		{name: "content type json", rawBody: `{"grant_type":"client_credentials"}`, contentType: "application/json",
			status: 400, code: "invalid_request", desc: "Content-Type"},
		{name: "no content type", form: good(), contentType: "-", status: 400, code: "invalid_request"},
		{name: "grant_type missing", form: without("grant_type"), status: 400, code: "invalid_request", desc: "grant_type"},
		{name: "grant_type invalid", form: with("grant_type", "invalid test value"), status: 400, code: "unsupported_grant_type"},
		{name: "grant_type authorization_code", form: with("grant_type", "authorization_code"), status: 400, code: "unsupported_grant_type"},
		{name: "client_assertion_type missing", form: without("client_assertion_type"), status: 400, code: "invalid_request"},
		{name: "client_assertion_type invalid", form: with("client_assertion_type", "invalid test value"), status: 401, code: "invalid_client"},
		{name: "client_assertion missing", form: without("client_assertion"), status: 400, code: "invalid_request"},
		{name: "client_assertion invalid", form: with("client_assertion", "invalid test value"), status: 401, code: "invalid_client"},
		{name: "scope missing", form: without("scope"), status: 400, code: "invalid_scope"},
		{name: "scope empty", form: with("scope", ""), status: 400, code: "invalid_scope"},
		{name: "scope invalid", form: with("scope", "invalid test value"), status: 400, code: "invalid_scope"},
		{name: "scope launch fhirUser", form: with("scope", "launch fhirUser"), status: 400, code: "invalid_scope"},
		{name: "scope write", form: with("scope", "system/Patient.write"), status: 400, code: "invalid_scope"},
		{name: "scope cud", form: with("scope", "system/Patient.cud"), status: 400, code: "invalid_scope"},
		{name: "scope unknown action", form: with("scope", "system/Patient.unknownAction"), status: 400, code: "invalid_scope"},
		{name: "scope unknown resource", form: with("scope", "system/UnknownResource.read"), status: 400, code: "invalid_scope"},
		{name: "scope outside allowed", form: tokenForm(e.assertion(t, e.clients["narrow"], nil), "system/Observation.rs"),
			status: 400, code: "invalid_scope"},
		{name: "parameter repeated", form: func() url.Values { f := good(); f.Add("scope", "system/*.read"); return f }(),
			status: 400, code: "invalid_request", desc: "repeated"},
		{name: "body too large", form: with("scope", strings.Repeat("system/Patient.rs ", 5000)), status: 413, code: "invalid_request",
			desc: "larger than the limit of 65536 bytes"},
		{name: "bad aud", form: edited(app1, func(_, cl map[string]any) { cl["aud"] = "test-bad-aud-value" }), status: 401, code: "invalid_client", desc: "aud"},
		{name: "aud of another server", form: edited(app1, func(_, cl map[string]any) { cl["aud"] = "https://other.example.org/fhir/auth/token" }), status: 401, code: "invalid_client"},
		{name: "bad iss", form: edited(app1, func(_, cl map[string]any) { cl["iss"] = "test-bad-iss" }), status: 401, code: "invalid_client"},
		{name: "bad sub", form: edited(app1, func(_, cl map[string]any) { cl["sub"] = "app2" }), status: 401, code: "invalid_client"},
		{name: "bad iss and sub", form: edited(app1, func(_, cl map[string]any) { cl["iss"], cl["sub"] = "unknown", "unknown" }), status: 401, code: "invalid_client"},
		{name: "iss of another client", form: edited(app1, func(_, cl map[string]any) { cl["iss"], cl["sub"] = "app2", "app2" }), status: 401, code: "invalid_client"},
		{name: "unknown kid", form: edited(app1, func(h, _ map[string]any) { h["kid"] = "no-such-kid" }), status: 401, code: "invalid_client"},
		{name: "kid missing", form: edited(app1, func(h, _ map[string]any) { delete(h, "kid") }), status: 401, code: "invalid_client"},
		{name: "jku", form: edited(app1, func(h, _ map[string]any) { h["jku"] = "test-bad-jku" }), status: 401, code: "invalid_client", desc: "registered its keys inline"},
		{name: "jku with a client registered inline", form: edited(app1, func(h, _ map[string]any) { h["jku"] = e.keySrv.jwksURL() }), status: 401, code: "invalid_client", desc: "leave jku out"},
		{name: "jku not the registered jwks_url", form: edited(appURL, func(h, _ map[string]any) { h["jku"] = "test-bad-jku" }), status: 401, code: "invalid_client", desc: "jku is not the jwks_url registered"},
		{name: "jku another server", form: edited(appURL, func(h, _ map[string]any) { h["jku"] = "https://attacker.example/jwks.json" }), status: 401, code: "invalid_client", desc: "jku is not the jwks_url registered"},
		{name: "jwks_url client, unknown kid", form: edited(appURL, func(h, _ map[string]any) { h["kid"] = "no-such-kid" }), status: 401, code: "invalid_client", desc: "jwks_url"},
		{name: "jwks_url client, another client's key", form: edited(appURL, func(h, _ map[string]any) {
			h["kid"], h["sign"] = app1.kid, signWith(app1.key, "ES384")
		}), status: 401, code: "invalid_client"},
		{name: "jwks_url client, signed by a stranger", form: edited(appURL, func(h, _ map[string]any) { h["sign"] = signWith(stranger, "ES384") }), status: 401, code: "invalid_client", desc: "signature"},
		{name: "signed by a stranger's key", form: edited(app1, func(h, _ map[string]any) { h["sign"] = signWith(stranger, "ES384") }), status: 401, code: "invalid_client"},
		{name: "signed by another client's key", form: edited(app1, func(h, _ map[string]any) {
			h["alg"], h["sign"] = "RS384", signWith(app2.key, "RS384")
		}), status: 401, code: "invalid_client"},
		{name: "alg none", form: edited(app1, func(h, _ map[string]any) {
			h["alg"], h["sign"] = "none", signFunc(func(testing.TB, []byte) []byte { return nil })
		}), status: 401, code: "invalid_client"},
		{name: "HS384 with the public key", form: edited(app1, func(h, _ map[string]any) { h["alg"], h["sign"] = "HS384", hs384(app1Pub) }), status: 401, code: "invalid_client"},
		{name: "RS256", form: edited(app2, func(h, _ map[string]any) { h["alg"], h["sign"] = "RS256", signWith(app2.key, "RS256") }), status: 401, code: "invalid_client"},
		{name: "RS384 by a stranger", form: edited(app2, func(h, _ map[string]any) { h["sign"] = signWith(strangerRSA, "RS384") }), status: 401, code: "invalid_client"},
		{name: "expired", form: edited(app1, func(_, cl map[string]any) { cl["exp"] = e.clock().Add(-2 * time.Minute).Unix() }), status: 401, code: "invalid_client"},
		{name: "exp too far ahead", form: edited(app1, func(_, cl map[string]any) { cl["exp"] = e.clock().Add(10 * time.Minute).Unix() }), status: 401, code: "invalid_client"},
		{name: "exp missing", form: edited(app1, func(_, cl map[string]any) { delete(cl, "exp") }), status: 401, code: "invalid_client"},
		{name: "not yet valid", form: edited(app1, func(_, cl map[string]any) { cl["nbf"] = e.clock().Add(3 * time.Minute).Unix() }), status: 401, code: "invalid_client"},
		{name: "jti missing", form: edited(app1, func(_, cl map[string]any) { delete(cl, "jti") }), status: 401, code: "invalid_client"},
		{name: "jti replayed", form: tokenForm(replayed, "system/*.rs"), status: 401, code: "invalid_client"},
		{name: "typ not JWT", form: edited(app1, func(h, _ map[string]any) { h["typ"] = "at+jwt" }), status: 401, code: "invalid_client"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			body := tt.rawBody
			if body == "" {
				body = tt.form.Encode()
			}
			ct := tt.contentType
			switch ct {
			case "":
				ct = formContentType
			case "-":
				ct = ""
			}
			h := http.Header{}
			if ct != "" {
				h.Set("Content-Type", ct)
			}
			rec := serve(e.h, request{method: "POST", target: "/fhir/auth/token", header: h, body: body})
			if rec.Code != tt.status {
				t.Errorf("status = %d, want %d (%s)", rec.Code, tt.status, rec.Body)
			}
			checkOAuthAnswer(t, rec)
			var got map[string]any
			if err := json.Unmarshal(rec.Body.Bytes(), &got); err != nil {
				t.Fatalf("body is not JSON: %s", rec.Body)
			}
			if got["error"] != tt.code {
				t.Errorf("error = %v, want %s (%s)", got["error"], tt.code, got["error_description"])
			}
			desc, _ := got["error_description"].(string)
			if !strings.Contains(desc, tt.desc) {
				t.Errorf("error_description = %q, want it to contain %q", desc, tt.desc)
			}
			for k := range got {
				if k != "error" && k != "error_description" {
					t.Errorf("unexpected member %q in an error answer: %s", k, rec.Body)
				}
			}
			if a := tt.form.Get("client_assertion"); len(a) > 20 && strings.Contains(rec.Body.String(), a) {
				t.Errorf("the answer echoes the assertion")
			}
		})
	}
}

func TestTokenEndpointIssues(t *testing.T) {
	e := newAuthEnv(t)
	tests := []struct {
		client, scope, granted string
	}{
		{"app1", "system/*.rs", "system/*.rs"},
		{"app1", "system/*.read", "system/*.read"},
		{"app2", "system/*.rs", "system/*.rs"}, // RS384, allowed system/*.read
		{"app1", "system/Patient.read system/Observation.rs", "system/Patient.read system/Observation.rs"},
		{"app1", "system/Patient.cruds", "system/Patient.rs"},
		{"narrow", "system/*.rs", "system/Patient.rs"},
		{"narrow", "system/Patient.rs system/Observation.rs", "system/Patient.rs"},
		{"app-url", "system/*.rs", "system/*.rs"}, // keys fetched from its jwks_url
	}
	for _, tt := range tests {
		rec := e.postToken(tokenForm(e.assertion(t, e.clients[tt.client], nil), tt.scope), "application/x-www-form-urlencoded; charset=UTF-8")
		if rec.Code != http.StatusOK {
			t.Errorf("%s %q: %d %s", tt.client, tt.scope, rec.Code, rec.Body)
			continue
		}
		checkOAuthAnswer(t, rec)
		var tr struct {
			AccessToken string `json:"access_token"`
			TokenType   string `json:"token_type"`
			ExpiresIn   *int   `json:"expires_in"`
			Scope       string `json:"scope"`
		}
		if err := json.Unmarshal(rec.Body.Bytes(), &tr); err != nil {
			t.Fatal(err)
		}
		if tr.AccessToken == "" || tr.TokenType != "bearer" || tr.ExpiresIn == nil || *tr.ExpiresIn != 300 || tr.Scope != tt.granted {
			t.Errorf("%s %q: answer %s, want bearer, 300 s, scope %q", tt.client, tt.scope, rec.Body, tt.granted)
		}
		claims, err := e.signer.Verify(tr.AccessToken, e.clock())
		if err != nil || claims.ClientID != tt.client {
			t.Errorf("%s: the token does not verify as the client's: %+v, %v", tt.client, claims, err)
		}
	}
	// GET is not the token endpoint's method.
	if rec := serve(e.h, request{method: "GET", target: "/fhir/auth/token"}); rec.Code != http.StatusMethodNotAllowed {
		t.Errorf("GET token endpoint = %d, want 405", rec.Code)
	}
}

// TestTokenEndpointJWKSURL: a client registered by jwks_url
// (https://hl7.org/fhir/smart-app-launch/client-confidential-asymmetric.html)
// gets tokens with keys fetched from its loopback key server, with or
// without jku; the set is reused within its max-age, fetched again after
// it or for a rotated key; a failing key server is invalid_client naming
// the URL, and the operator's log has the cause.
func TestTokenEndpointJWKSURL(t *testing.T) {
	e := newAuthEnv(t)
	var logs bytes.Buffer
	h := New(Config{Jobs: e.jobs, PublicURL: testPublicURL, Version: "1.2.3-test", Auth: e.auth,
		Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	c := e.clients["app-url"]
	post := func(edit func(h, cl map[string]any)) *httptest.ResponseRecorder {
		t.Helper()
		return serve(h, request{method: "POST", target: "/fhir/auth/token",
			header: http.Header{"Content-Type": {formContentType}}, body: tokenForm(e.assertion(t, c, edit), "system/*.rs").Encode()})
	}
	wantToken := func(what string, rec *httptest.ResponseRecorder) {
		t.Helper()
		if rec.Code != http.StatusOK {
			t.Fatalf("%s: %d %s", what, rec.Code, rec.Body)
		}
		var tr tokenResponse
		if err := json.Unmarshal(rec.Body.Bytes(), &tr); err != nil {
			t.Fatal(err)
		}
		if claims, err := e.signer.Verify(tr.AccessToken, e.clock()); err != nil || claims.ClientID != "app-url" {
			t.Fatalf("%s: token %+v, %v", what, claims, err)
		}
	}
	wantHits := func(want int64) {
		t.Helper()
		if got := e.keySrv.hits.Load(); got != want {
			t.Fatalf("the key server got %d requests, want %d", got, want)
		}
	}

	wantToken("without jku", post(nil))
	wantHits(1)
	wantToken("with jku", post(func(h, _ map[string]any) { h["jku"] = e.keySrv.jwksURL() }))
	wantHits(1) // max-age=60

	// Expired: fetched again, and a failing key server is invalid_client.
	e.advance(61 * time.Second)
	e.keySrv.set(http.StatusInternalServerError, "", nil)
	rec := post(nil)
	checkOAuthAnswer(t, rec)
	if rec.Code != http.StatusUnauthorized || !strings.Contains(rec.Body.String(), `"invalid_client"`) ||
		!strings.Contains(rec.Body.String(), e.keySrv.jwksURL()+" answered HTTP 500") {
		t.Fatalf("key server down: %d %s", rec.Code, rec.Body)
	}
	wantHits(2)
	if !strings.Contains(logs.String(), "token request refused") || !strings.Contains(logs.String(), "cause=") {
		t.Errorf("the refusal is not logged with its cause: %s", logs.String())
	}
	e.keySrv.set(http.StatusOK, "max-age=60", nil)
	wantToken("key server back", post(nil))
	wantHits(3)

	// Rotation: a new key under a new kid, picked up once the refetch
	// interval since the last fetch has passed.
	rotated, entry := newTestClient(t, "app-url", "ES384", []string{"system/*.rs"}, 1)
	set, err := json.Marshal(entry["jwks"])
	if err != nil {
		t.Fatal(err)
	}
	e.keySrv.set(http.StatusOK, "max-age=60", set)
	c = rotated
	rec = post(nil)
	if rec.Code != http.StatusUnauthorized || !strings.Contains(rec.Body.String(), "has no key with kid") {
		t.Fatalf("rotated key right after a fetch: %d %s, want invalid_client (refetch rate limit)", rec.Code, rec.Body)
	}
	wantHits(3)
	e.advance(smart.DefaultJWKSRefetchInterval)
	wantToken("rotated key", post(nil))
	wantHits(4)
}

// TestSmartDiscoveryAndCapabilityStatement: discovery is public JSON
// advertising only backend services, and the CapabilityStatement carries
// the token URL. There is no authorization_endpoint (no app launch), so
// Inferno's optional SMART discovery group, which wants app launch, fails
// by design; code_challenge_methods_supported [S256] is there because
// SMART 2.x lists it as required.
func TestSmartDiscoveryAndCapabilityStatement(t *testing.T) {
	e := newAuthEnv(t)
	// No token, and application/json whatever Accept asks.
	rec := serve(e.h, request{method: "GET", target: "/fhir/.well-known/smart-configuration", header: http.Header{"Accept": {"text/html"}}})
	if rec.Code != http.StatusOK || rec.Header().Get("Content-Type") != contentTypeJSON {
		t.Fatalf("discovery = %d %q %s", rec.Code, rec.Header().Get("Content-Type"), rec.Body)
	}
	var conf map[string]any
	if err := json.Unmarshal(rec.Body.Bytes(), &conf); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{
		"token_endpoint":                                   testTokenURL,
		"grant_types_supported":                            []any{"client_credentials"},
		"token_endpoint_auth_methods_supported":            []any{"private_key_jwt"},
		"token_endpoint_auth_signing_alg_values_supported": []any{"RS384", "ES384"},
		"scopes_supported":                                 []any{"system/*.rs", "system/*.read"},
		"capabilities":                                     []any{"client-confidential-asymmetric", "permission-v1", "permission-v2"},
		"code_challenge_methods_supported":                 []any{"S256"},
	}
	gotJSON, _ := json.Marshal(conf)
	wantJSON, _ := json.Marshal(want)
	if string(gotJSON) != string(wantJSON) {
		t.Errorf("discovery =\n %s\nwant\n %s", gotJSON, wantJSON)
	}

	var cs struct {
		Rest []struct {
			Security struct {
				Service []struct {
					Coding []struct{ System, Code string }
				}
				Extension []struct {
					URL       string
					Extension []struct{ URL, ValueURI string }
				}
			}
		}
	}
	getJSON(t, e.h, "/fhir/metadata?_format=json", &cs) // no token either
	sec := cs.Rest[0].Security
	if len(sec.Service) != 1 || sec.Service[0].Coding[0].Code != "SMART-on-FHIR" ||
		sec.Service[0].Coding[0].System != "http://terminology.hl7.org/CodeSystem/restful-security-service" {
		t.Errorf("security.service = %+v", sec.Service)
	}
	if len(sec.Extension) != 1 || sec.Extension[0].URL != "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris" ||
		len(sec.Extension[0].Extension) != 1 || sec.Extension[0].Extension[0].URL != "token" ||
		sec.Extension[0].Extension[0].ValueURI != testTokenURL {
		t.Errorf("security.extension = %+v", sec.Extension)
	}

	// Without auth: no discovery, no token endpoint, no security section.
	h := newTestHandler(t, newFakeJobs(), nil)
	for _, target := range []string{"/fhir/.well-known/smart-configuration", "/fhir/auth/token"} {
		if rec := serve(h, request{method: "GET", target: target}); rec.Code != http.StatusNotFound {
			t.Errorf("auth off: GET %s = %d, want 404", target, rec.Code)
		}
	}
	rec = serve(h, request{method: "GET", target: "/fhir/metadata"})
	if strings.Contains(rec.Body.String(), `"security":`) { // a member, not the _security search parameter
		t.Errorf("auth off: the CapabilityStatement has a security section")
	}
}

// TestBearerTokens: kick-off, status, cancel and files need a valid
// access token; 401 with a Bearer challenge and an OperationOutcome
// otherwise, and nothing reaches Jobs.
func TestBearerTokens(t *testing.T) {
	e := newAuthEnv(t)
	e.jobs.statuses["job-a"] = export.Status{State: export.Running, Progress: "busy"}
	e.jobs.owners["job-a"] = "app1"
	e.jobs.files["job-a/Patient-1.ndjson"] = []byte("{}\n")

	valid := e.token(t, "app1", "system/*.rs")
	otherServer, err := smart.OpenKeys(filepath.Join(t.TempDir(), "keys"), e.clock, &smart.SignerOptions{Issuer: testPublicURL + "/fhir"})
	if err != nil {
		t.Fatal(err)
	}
	all, _ := smart.ParseScopes("system/*.rs")
	foreign, _, err := otherServer.Issue("app1", all, 0)
	if err != nil {
		t.Fatal(err)
	}
	expired, _, err := e.signer.Issue("app1", all, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	e.advance(2 * time.Minute) // expired is now past its exp
	assertionAsToken := e.assertion(t, e.clients["app1"], nil)
	parts := strings.Split(valid, ".")
	tampered := parts[0] + "." + b64([]byte(`{"iss":"`+testPublicURL+`/fhir","sub":"app2","client_id":"app2","scope":"system/*.rs"}`)) + "." + parts[2]

	routes := []request{
		{method: "GET", target: "/fhir/$export", header: kickoffHeaders()},
		{method: "POST", target: "/fhir/$export", header: postHeaders(), body: `{"resourceType":"Parameters"}`},
		{method: "GET", target: "/fhir/bulkstatus/job-a"},
		{method: "DELETE", target: "/fhir/bulkstatus/job-a"},
		{method: "GET", target: "/fhir/bulkfiles/job-a/Patient-1.ndjson"},
		{method: "HEAD", target: "/fhir/bulkfiles/job-a/Patient-1.ndjson"},
	}
	tests := []struct {
		name, authorization string
		code                string // RFC 6750 error in the challenge; "" for none
	}{
		{name: "no token"},
		{name: "basic auth", authorization: "Basic YXBwMTpzZWNyZXQ="},
		{name: "empty bearer", authorization: "Bearer ", code: "invalid_token"},
		{name: "malformed", authorization: "Bearer not.a.jwt", code: "invalid_token"},
		{name: "garbage", authorization: "Bearer " + strings.Repeat("x", 500), code: "invalid_token"},
		{name: "expired", authorization: "Bearer " + expired, code: "invalid_token"},
		{name: "signed by another server", authorization: "Bearer " + foreign, code: "invalid_token"},
		{name: "tampered claims", authorization: "Bearer " + tampered, code: "invalid_token"},
		{name: "a client assertion", authorization: "Bearer " + assertionAsToken, code: "invalid_token"},
	}
	for _, tt := range tests {
		for _, route := range routes {
			req := route
			req.header = req.header.Clone()
			if req.header == nil {
				req.header = http.Header{}
			}
			if tt.authorization != "" {
				req.header.Set("Authorization", tt.authorization)
			}
			rec := serve(e.h, req)
			name := tt.name + " " + req.method + " " + req.target
			if rec.Code != http.StatusUnauthorized {
				t.Errorf("%s: status %d, want 401 (%s)", name, rec.Code, rec.Body)
				continue
			}
			ch := rec.Header().Get("WWW-Authenticate")
			if !strings.HasPrefix(ch, `Bearer realm="bulkstream"`) {
				t.Errorf("%s: WWW-Authenticate %q", name, ch)
			}
			if tt.code != "" && !strings.Contains(ch, `error="`+tt.code+`"`) || tt.code == "" && strings.Contains(ch, "error=") {
				t.Errorf("%s: WWW-Authenticate %q, want error %q", name, ch, tt.code)
			}
			if req.method != "HEAD" {
				checkOutcome(t, rec, http.StatusUnauthorized, "token")
			}
		}
	}
	if len(e.jobs.kickoffs) != 0 || len(e.jobs.callers) != 0 {
		t.Errorf("unauthenticated requests reached Jobs: %d kick-offs, callers %q", len(e.jobs.kickoffs), e.jobs.callers)
	}

	// The valid token (issued two minutes ago) works everywhere.
	fresh := e.token(t, "app1", "system/*.rs")
	for _, tok := range []string{valid, fresh} {
		rec := serve(e.h, request{method: "GET", target: "/fhir/bulkstatus/job-a", header: http.Header{"Authorization": {"bearer " + tok}}})
		if rec.Code != http.StatusAccepted {
			t.Errorf("status with a valid token = %d %s", rec.Code, rec.Body)
		}
	}
}

// TestJobIsolation: one client's token on another client's job, file or
// cancel is 404, exactly as for a job that does not exist.
func TestJobIsolation(t *testing.T) {
	e := newAuthEnv(t)
	e.jobs.statuses["job-a"] = export.Status{State: export.Running, Progress: "busy"}
	e.jobs.owners["job-a"] = "app1"
	e.jobs.files["job-a/Patient-1.ndjson"] = []byte("{}\n")
	bearer := func(c string) http.Header {
		return http.Header{"Authorization": {"Bearer " + e.token(t, c, "system/*.rs")}}
	}
	b := bearer("app2")
	unknown := serve(e.h, request{method: "GET", target: "/fhir/bulkstatus/no-such-job", header: b})
	checkOutcome(t, unknown, http.StatusNotFound, "no such export job")
	for _, req := range []request{
		{method: "GET", target: "/fhir/bulkstatus/job-a", header: b},
		{method: "DELETE", target: "/fhir/bulkstatus/job-a", header: b},
		{method: "GET", target: "/fhir/bulkfiles/job-a/Patient-1.ndjson", header: b},
	} {
		rec := serve(e.h, req)
		checkOutcome(t, rec, http.StatusNotFound, "no such export job")
		if rec.Body.String() != unknown.Body.String() {
			t.Errorf("%s %s: body differs from an unknown job's: %s", req.method, req.target, rec.Body)
		}
	}
	if !slices.Equal(e.jobs.callers, []string{"app2", "app2", "app2", "app2"}) {
		t.Errorf("Jobs saw callers %q, want app2 each time", e.jobs.callers)
	}
	// Traversal in file names never reaches Jobs, with a valid token too.
	a := bearer("app1")
	for _, target := range []string{
		"/fhir/bulkfiles/job-a/..%2F..%2Fexports%2Fjob-b%2FPatient-1.ndjson",
		"/fhir/bulkfiles/job-a/%2e%2e",
		"/fhir/bulkfiles/job-a/..%5CPatient-1.ndjson",
		"/fhir/bulkfiles/job-a/Patient-1.ndjson%00",
	} {
		rec := serve(e.h, request{method: "GET", target: target, header: a})
		if rec.Code != http.StatusNotFound {
			t.Errorf("GET %s = %d, want 404", target, rec.Code)
		}
	}
	if len(e.jobs.opened) != 0 {
		t.Errorf("traversal names reached OpenFile: %q", e.jobs.opened)
	}
	// The owner sees its job.
	if rec := serve(e.h, request{method: "GET", target: "/fhir/bulkfiles/job-a/Patient-1.ndjson", header: a}); rec.Code != http.StatusOK {
		t.Errorf("owner download = %d %s", rec.Code, rec.Body)
	}
	if rec := serve(e.h, request{method: "DELETE", target: "/fhir/bulkstatus/job-a", header: a}); rec.Code != http.StatusAccepted {
		t.Errorf("owner cancel = %d %s", rec.Code, rec.Body)
	}
}

// TestKickoffAuthorization: the kick-off carries the client, its quota and
// the types its token allows; export's refusals become 403 and 429.
func TestKickoffAuthorization(t *testing.T) {
	e := newAuthEnv(t)
	kick := func(c, scope, query string) *httptest.ResponseRecorder {
		h := kickoffHeaders()
		h.Set("Authorization", "Bearer "+e.token(t, c, scope))
		return serve(e.h, request{method: "GET", target: "/fhir/$export" + query, header: h})
	}
	if rec := kick("app1", "system/*.rs", ""); rec.Code != http.StatusAccepted {
		t.Fatalf("kick-off = %d %s", rec.Code, rec.Body)
	}
	k := e.jobs.lastKickoff(t)
	if k.Client != "app1" || k.MaxJobs != 2 || k.AllowedTypes != nil || k.MaxFinished != 0 {
		t.Errorf("kick-off of app1 = client %q, max jobs %d, types %q, max finished %d; want app1, 2, all, 0 (the server's default)",
			k.Client, k.MaxJobs, k.AllowedTypes, k.MaxFinished)
	}
	if rec := kick("app1", "system/Patient.rs system/Observation.read", "?_type=Patient"); rec.Code != http.StatusAccepted {
		t.Fatalf("kick-off = %d %s", rec.Code, rec.Body)
	}
	if k := e.jobs.lastKickoff(t); !slices.Equal(k.AllowedTypes, []string{"Observation", "Patient"}) {
		t.Errorf("allowed types = %q, want [Observation Patient]", k.AllowedTypes)
	}
	if rec := kick("narrow", "system/*.rs", ""); rec.Code != http.StatusAccepted {
		t.Fatalf("kick-off = %d %s", rec.Code, rec.Body)
	}
	if k := e.jobs.lastKickoff(t); k.Client != "narrow" || k.MaxJobs != 1 || !slices.Equal(k.AllowedTypes, []string{"Patient"}) {
		t.Errorf("kick-off of narrow = %+v", k)
	}

	// max_finished_exports from the registry as it is now.
	for _, n := range []int{7, -1} {
		b, err := os.ReadFile(e.regPath)
		if err != nil {
			t.Fatal(err)
		}
		var reg struct{ Clients []map[string]any }
		if err := json.Unmarshal(b, &reg); err != nil {
			t.Fatal(err)
		}
		reg.Clients[0]["max_finished_exports"] = n // app1
		writeRegistry(t, e.regPath, reg.Clients...)
		if err := e.registry.Reload(); err != nil {
			t.Fatal(err)
		}
		if rec := kick("app1", "system/*.rs", ""); rec.Code != http.StatusAccepted {
			t.Fatalf("kick-off = %d %s", rec.Code, rec.Body)
		}
		if k := e.jobs.lastKickoff(t); k.MaxFinished != n {
			t.Errorf("kick-off of app1 with max_finished_exports %d: Kickoff.MaxFinished = %d", n, k.MaxFinished)
		}
	}

	e.jobs.kickoffErr = &export.ForbiddenError{Types: []string{"Observation"}}
	rec := kick("narrow", "system/Patient.rs", "?_type=Observation")
	checkOutcome(t, rec, http.StatusForbidden, "does not allow exporting Observation")
	if ch := rec.Header().Get("WWW-Authenticate"); !strings.Contains(ch, `error="insufficient_scope"`) || !strings.Contains(ch, `scope="system/Observation.rs"`) {
		t.Errorf("403 WWW-Authenticate = %q", ch)
	}

	e.jobs.kickoffErr = &export.TooManyJobsError{RetryAfter: 3 * time.Second, Reason: export.ReasonClientQuota, Limit: 1}
	rec = kick("narrow", "system/Patient.rs", "")
	checkOutcome(t, rec, http.StatusTooManyRequests, "already has 1 export jobs queued or running, its quota")
	if ra := rec.Header().Get("Retry-After"); ra != "3" {
		t.Errorf("Retry-After = %q, want 3", ra)
	}
}

// TestRemovedClientLosesAccess: after a reload without the client, its
// unexpired tokens stop working at the next request.
func TestRemovedClientLosesAccess(t *testing.T) {
	e := newAuthEnv(t)
	e.jobs.statuses["job-a"] = export.Status{State: export.Running}
	e.jobs.owners["job-a"] = "app2"
	tok := e.token(t, "app2", "system/*.rs")
	get := func() int {
		return serve(e.h, request{method: "GET", target: "/fhir/bulkstatus/job-a", header: http.Header{"Authorization": {"Bearer " + tok}}}).Code
	}
	if code := get(); code != http.StatusAccepted {
		t.Fatalf("before reload: %d", code)
	}
	_, entry := newTestClient(t, "app3", "ES384", []string{"system/*.rs"}, 1)
	writeRegistry(t, e.regPath, entry)
	if err := e.registry.Reload(); err != nil {
		t.Fatal(err)
	}
	if code := get(); code != http.StatusUnauthorized {
		t.Errorf("after removing app2: %d, want 401", code)
	}
}

// scopedExportServer serves e's auth over a real export manager whose
// index holds Patient p1, Observations o1 and o2 and Organizations g1 and
// g2, written an hour ago; a second later o2 and g2 were deleted and p1
// updated. since lies between the two, so a _since=since export has
// Patient output and Observation and Organization deleted files.
func scopedExportServer(t *testing.T, e *authEnv) (h http.Handler, since string) {
	t.Helper()
	x := indextest.Open(t)
	at := time.Now().Add(-time.Hour).UTC()
	var changes []index.Change
	add := func(typ, id string, del bool, at time.Time) {
		c := index.Change{Seq: uint64(len(changes) + 1), Time: at, Type: typ, ID: id, Delete: del}
		if !del {
			c.Body = []byte(`{"resourceType":"` + typ + `","id":"` + id + `","text":{"status":"v` + strconv.Itoa(len(changes)) + `"}}`)
		}
		changes = append(changes, c)
	}
	for _, r := range [][2]string{{"Patient", "p1"}, {"Observation", "o1"}, {"Observation", "o2"}, {"Organization", "g1"}, {"Organization", "g2"}} {
		add(r[0], r[1], false, at)
	}
	later := at.Add(time.Second)
	add("Observation", "o2", true, later)
	add("Organization", "g2", true, later)
	add("Patient", "p1", false, later)
	if _, err := x.Apply(t.Context(), changes, 0); err != nil {
		t.Fatal(err)
	}
	m := startManager(t, x, len(changes))
	return New(Config{Jobs: m, PublicURL: testPublicURL, Version: "test", Auth: e.auth}), at.Add(500 * time.Millisecond).Format(time.RFC3339Nano)
}

// bearerKickoff kicks off an export with tok; query is the part after
// "?" ("" for none).
func bearerKickoff(h http.Handler, tok, query string) *httptest.ResponseRecorder {
	hd := kickoffHeaders()
	hd.Set("Authorization", "Bearer "+tok)
	hd.Add("Prefer", "handling=lenient")
	target := "/fhir/$export"
	if query != "" {
		target += "?" + query
	}
	return serve(h, request{method: "GET", target: target, header: hd})
}

// bearerManifest polls statusURL with tok until the manifest, and returns
// the file URLs by name.
func bearerManifest(t *testing.T, h http.Handler, tok, statusURL string) map[string]string {
	t.Helper()
	var files map[string]string
	deadline := time.Now().Add(20 * time.Second)
	for files == nil {
		rec := serve(h, request{method: "GET", target: local(t, statusURL), header: http.Header{"Authorization": {"Bearer " + tok}}})
		switch rec.Code {
		case http.StatusAccepted:
			if time.Now().After(deadline) {
				t.Fatal("the export did not complete in time")
			}
			time.Sleep(5 * time.Millisecond)
			continue
		case http.StatusOK:
		default:
			t.Fatalf("status = %d %s", rec.Code, rec.Body)
		}
		var m struct{ Output, Deleted, Error []struct{ URL string } }
		if err := json.Unmarshal(rec.Body.Bytes(), &m); err != nil {
			t.Fatal(err)
		}
		files = map[string]string{}
		for _, f := range slices.Concat(m.Output, m.Deleted, m.Error) {
			files[f.URL[strings.LastIndexByte(f.URL, '/')+1:]] = local(t, f.URL)
		}
	}
	return files
}

// TestDownloadNeedsScope: a file is served only to a token whose scopes
// cover its resource type (a deleted file: the type it deletes); the
// job's own error file to its owner whatever the types. Others are 403
// forbidden with an insufficient_scope challenge naming the scope, as the
// Bulk Data test suite's "Rejects a download if the client scopes do not
// cover that resource type" wants.
func TestDownloadNeedsScope(t *testing.T) {
	e := newAuthEnv(t)
	h, since := scopedExportServer(t, e)
	full := e.token(t, "app1", "system/*.rs")
	rec := bearerKickoff(h, full, "_since="+url.QueryEscape(since)+"&_type=Patient,Observation,Organization&_unknown=1")
	if rec.Code != http.StatusAccepted {
		t.Fatalf("kick-off = %d %s", rec.Code, rec.Body)
	}
	files := bearerManifest(t, h, full, rec.Header().Get("Content-Location"))
	for _, name := range []string{"Patient-1.ndjson", "Observation-deleted-1.ndjson", "Organization-deleted-1.ndjson", "error-1.ndjson"} {
		if files[name] == "" {
			t.Fatalf("manifest lacks %s: %v", name, files)
		}
	}
	rec = bearerKickoff(h, full, "_type=Organization,Observation")
	if rec.Code != http.StatusAccepted {
		t.Fatalf("kick-off = %d %s", rec.Code, rec.Body)
	}
	maps.Copy(files, bearerManifest(t, h, full, rec.Header().Get("Content-Location")))

	obs := e.token(t, "app1", "system/Observation.rs")
	get := func(tok, name, method string) *httptest.ResponseRecorder {
		return serve(h, request{method: method, target: files[name], header: http.Header{"Authorization": {"Bearer " + tok}}})
	}
	for name, typ := range map[string]string{"Organization-1.ndjson": "Organization", "Organization-deleted-1.ndjson": "Organization", "Patient-1.ndjson": "Patient"} {
		for _, method := range []string{"GET", "HEAD"} {
			rec := get(obs, name, method)
			if rec.Code != http.StatusForbidden {
				t.Errorf("%s %s with an Observation token = %d, want 403", method, name, rec.Code)
				continue
			}
			if ch := rec.Header().Get("WWW-Authenticate"); !strings.Contains(ch, `error="insufficient_scope"`) || !strings.Contains(ch, `scope="system/`+typ+`.rs"`) {
				t.Errorf("%s %s: WWW-Authenticate %q", method, name, ch)
			}
			if method == "GET" {
				oo := checkOutcome(t, rec, http.StatusForbidden, "does not allow reading "+typ)
				if oo.Issue[0].Code != "forbidden" {
					t.Errorf("%s: issue code %q, want forbidden", name, oo.Issue[0].Code)
				}
			}
		}
	}
	for _, name := range []string{"Observation-1.ndjson", "Observation-deleted-1.ndjson", "error-1.ndjson"} {
		if rec := get(obs, name, "GET"); rec.Code != http.StatusOK || rec.Body.Len() == 0 {
			t.Errorf("GET %s with an Observation token = %d %s, want 200", name, rec.Code, rec.Body)
		}
	}
	for name := range files {
		if rec := get(full, name, "GET"); rec.Code != http.StatusOK {
			t.Errorf("GET %s with a system/*.rs token = %d, want 200", name, rec.Code)
		}
	}
	// Another client's file with a type its token lacks: still 403
	// (decided from the name, before the job is looked up), so the
	// answer tells nothing about the job.
	narrow := e.token(t, "narrow", "system/Patient.rs")
	if rec := get(narrow, "Organization-1.ndjson", "GET"); rec.Code != http.StatusForbidden {
		t.Errorf("narrow client, Organization file of app1's job = %d, want 403", rec.Code)
	}
	if rec := get(narrow, "Patient-1.ndjson", "GET"); rec.Code != http.StatusNotFound {
		t.Errorf("narrow client, Patient file of app1's job = %d, want 404", rec.Code)
	}
}

// TestRegistryNarrowsTokens: after a reload narrows a client's scopes,
// the tokens it already holds get only what both the token and the new
// entry allow, on every route: kick-off (_type and default types),
// downloads and status; with nothing left, 403 everywhere.
func TestRegistryNarrowsTokens(t *testing.T) {
	e := newAuthEnv(t)
	h, _ := scopedExportServer(t, e)
	tok := e.token(t, "app2", "system/Patient.rs system/Observation.rs")
	rec := bearerKickoff(h, tok, "_type=Patient,Observation")
	if rec.Code != http.StatusAccepted {
		t.Fatalf("kick-off = %d %s", rec.Code, rec.Body)
	}
	status := local(t, rec.Header().Get("Content-Location"))
	files := bearerManifest(t, h, tok, rec.Header().Get("Content-Location"))

	// Reload with app2 allowed Patient (and writing Observation) only.
	reload := func(app2Scopes ...string) {
		t.Helper()
		b, err := os.ReadFile(e.regPath)
		if err != nil {
			t.Fatal(err)
		}
		var reg struct{ Clients []map[string]any }
		if err := json.Unmarshal(b, &reg); err != nil {
			t.Fatal(err)
		}
		for _, c := range reg.Clients {
			if c["id"] == "app2" {
				c["scopes"] = app2Scopes
			}
		}
		writeRegistry(t, e.regPath, reg.Clients...)
		if err := e.registry.Reload(); err != nil {
			t.Fatal(err)
		}
	}
	reload("system/Patient.rs", "system/Observation.write")

	rec = bearerKickoff(h, tok, "_type=Observation")
	checkOutcome(t, rec, http.StatusForbidden, "does not allow exporting Observation")
	if rec := serve(h, request{method: "GET", target: files["Observation-1.ndjson"], header: http.Header{"Authorization": {"Bearer " + tok}}}); rec.Code != http.StatusForbidden {
		t.Errorf("Observation download after the reload = %d, want 403", rec.Code)
	}
	if rec := serve(h, request{method: "GET", target: files["Patient-1.ndjson"], header: http.Header{"Authorization": {"Bearer " + tok}}}); rec.Code != http.StatusOK {
		t.Errorf("Patient download after the reload = %d, want 200", rec.Code)
	}
	if rec := serve(h, request{method: "GET", target: status, header: http.Header{"Authorization": {"Bearer " + tok}}}); rec.Code != http.StatusOK {
		t.Errorf("status after the reload = %d, want 200", rec.Code)
	}
	// Without _type: only Patient now.
	rec = bearerKickoff(h, tok, "")
	if rec.Code != http.StatusAccepted {
		t.Fatalf("kick-off without _type = %d %s", rec.Code, rec.Body)
	}
	got := bearerManifest(t, h, tok, rec.Header().Get("Content-Location"))
	if len(got) != 1 || got["Patient-1.ndjson"] == "" {
		t.Errorf("kick-off without _type after the reload exported %v, want Patient only", slices.Sorted(maps.Keys(got)))
	}
	// A Patient export still works end to end.
	rec = bearerKickoff(h, tok, "_type=Patient")
	if rec.Code != http.StatusAccepted {
		t.Fatalf("Patient kick-off = %d %s", rec.Code, rec.Body)
	}
	for name, target := range bearerManifest(t, h, tok, rec.Header().Get("Content-Location")) {
		if rec := serve(h, request{method: "GET", target: target, header: http.Header{"Authorization": {"Bearer " + tok}}}); rec.Code != http.StatusOK {
			t.Errorf("GET %s = %d", name, rec.Code)
		}
	}

	// Nothing of the token left: 403 on every protected route.
	reload("system/Condition.rs")
	for _, req := range []request{
		{method: "GET", target: "/fhir/$export", header: kickoffHeaders()},
		{method: "GET", target: status},
		{method: "DELETE", target: status},
		{method: "GET", target: files["Patient-1.ndjson"]},
	} {
		req.header = req.header.Clone()
		if req.header == nil {
			req.header = http.Header{}
		}
		req.header.Set("Authorization", "Bearer "+tok)
		rec := serve(h, req)
		checkOutcome(t, rec, http.StatusForbidden, "no longer allow reading any resource type")
		if ch := rec.Header().Get("WWW-Authenticate"); !strings.Contains(ch, `error="insufficient_scope"`) {
			t.Errorf("%s %s: WWW-Authenticate %q", req.method, req.target, ch)
		}
	}
	// A new token for what the client may read now works.
	if rec := bearerKickoff(h, e.token(t, "app2", "system/*.rs"), ""); rec.Code != http.StatusAccepted {
		t.Errorf("kick-off with a new token = %d %s", rec.Code, rec.Body)
	}
}
