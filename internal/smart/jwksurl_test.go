package smart

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// keyServer is a client's JWKS endpoint on loopback: it answers what the
// test last set and counts the requests it gets.
type keyServer struct {
	srv  *httptest.Server
	hits atomic.Int64

	mu           sync.Mutex
	status       int
	cacheControl string
	body         string
	gate         chan struct{} // when set, requests wait for it to close
	accepts      []string
}

func newKeyServer(t *testing.T, body string) *keyServer {
	t.Helper()
	ks := &keyServer{status: http.StatusOK, body: body}
	ks.srv = httptest.NewServer(http.HandlerFunc(ks.serve))
	t.Cleanup(ks.srv.Close)
	return ks
}

func (ks *keyServer) serve(w http.ResponseWriter, r *http.Request) {
	ks.hits.Add(1)
	ks.mu.Lock()
	status, cc, body, gate := ks.status, ks.cacheControl, ks.body, ks.gate
	ks.accepts = append(ks.accepts, r.Header.Get("Accept"))
	ks.mu.Unlock()
	if gate != nil {
		select {
		case <-gate:
		case <-r.Context().Done():
			return
		}
	}
	if cc != "" {
		w.Header().Set("Cache-Control", cc)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = io.WriteString(w, body)
}

func (ks *keyServer) set(status int, cacheControl, body string) {
	ks.mu.Lock()
	defer ks.mu.Unlock()
	ks.status, ks.cacheControl, ks.body = status, cacheControl, body
}

// hold makes requests wait until the returned release is called.
func (ks *keyServer) hold(t *testing.T) (release func()) {
	gate := make(chan struct{})
	ks.mu.Lock()
	ks.gate = gate
	ks.mu.Unlock()
	var once sync.Once
	release = func() {
		once.Do(func() {
			ks.mu.Lock()
			ks.gate = nil
			ks.mu.Unlock()
			close(gate)
		})
	}
	t.Cleanup(release) // before the server's Close, which waits for handlers
	return release
}

func (ks *keyServer) url() string { return ks.srv.URL + "/.well-known/jwks.json" }

// jwksOf is a JWK Set of the public halves of key, kid pairs.
func jwksOf(t *testing.T, pairs ...any) string {
	t.Helper()
	var keys []string
	for i := 0; i < len(pairs); i += 2 {
		var pub any
		switch k := pairs[i].(type) {
		case *ecdsa.PrivateKey:
			pub = &k.PublicKey
		case *rsa.PrivateKey:
			pub = &k.PublicKey
		default:
			pub = k
		}
		keys = append(keys, jwkJSON(t, pub, pairs[i+1].(string)))
	}
	return `{"keys":[` + strings.Join(keys, ",") + `]}`
}

// urlFixture: client "url-app" registered by the jwks_url of ks, which
// publishes ec1 (ES384) and rsa1 (RS384); client "inline" registered
// with its key in1 inline; a cache on a fake clock.
type urlFixture struct {
	ks     *keyServer
	reg    *Registry
	ec     *ecdsa.PrivateKey
	rsa    *rsa.PrivateKey
	inline *ecdsa.PrivateKey
	clock  *fakeClock
	cache  *JWKSCache
}

var fixtureRSA = sync.OnceValue(func() *rsa.PrivateKey {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		panic(err)
	}
	return k
})

func newURLFixture(t *testing.T, cacheControl string) *urlFixture {
	t.Helper()
	f := &urlFixture{ec: newECKey(t), rsa: fixtureRSA(), inline: newECKey(t), clock: &fakeClock{t: time.Unix(1_800_000_000, 0)}}
	f.ks = newKeyServer(t, jwksOf(t, f.ec, "ec1", f.rsa, "rsa1"))
	f.ks.set(http.StatusOK, cacheControl, jwksOf(t, f.ec, "ec1", f.rsa, "rsa1"))
	f.reg = urlRegistry(t, f.ks.url(), fmt.Sprintf(`{"id":"inline","jwks":{"keys":[%s]},"scopes":["system/*.rs"]}`, jwkJSON(t, &f.inline.PublicKey, "in1")))
	f.cache = newTestCache(t, &JWKSCacheOptions{Now: f.clock.Now})
	return f
}

func newTestCache(t *testing.T, opts *JWKSCacheOptions) *JWKSCache {
	t.Helper()
	c, err := NewJWKSCache(opts)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// urlRegistry registers "url-app" by jwksURL, plus the extra entries.
func urlRegistry(t *testing.T, jwksURL string, extra ...string) *Registry {
	t.Helper()
	entries := append([]string{fmt.Sprintf(`{"id":"url-app","jwks_url":%q,"scopes":["system/*.rs"]}`, jwksURL)}, extra...)
	reg, err := LoadRegistry(writeFile(t, tempPath(t, "clients.json"), `{"clients":[`+strings.Join(entries, ",")+`]}`))
	if err != nil {
		t.Fatal(err)
	}
	return reg
}

// assertion is a valid assertion of iss at the fixture's time, with the
// header members given (alg and kid at least), signed by sign.
func (f *urlFixture) assertion(t *testing.T, iss string, header map[string]any, sign signFunc) string {
	t.Helper()
	now := f.clock.Now()
	if _, ok := header["typ"]; !ok {
		header["typ"] = "JWT"
	}
	return rawJWS(t, header, map[string]any{"iss": iss, "sub": iss, "aud": testTokenURL,
		"exp": now.Add(4 * time.Minute).Unix(), "iat": now.Unix(), "jti": rand.Text()}, sign)
}

func (f *urlFixture) ecAssertion(t *testing.T) string {
	return f.assertion(t, "url-app", map[string]any{"alg": "ES384", "kid": "ec1"}, es384Raw(f.ec))
}

func (f *urlFixture) verify(ctx context.Context, tok string) (*Client, error) {
	return VerifyAssertion(ctx, f.reg, tok, testTokenURL, f.clock.Now(), memReplay{}, f.cache)
}

func (f *urlFixture) mustVerify(t *testing.T, tok string) {
	t.Helper()
	c, err := f.verify(t.Context(), tok)
	if err != nil {
		t.Fatalf("VerifyAssertion: %v", err)
	}
	if c.ID != "url-app" {
		t.Fatalf("client %q, want url-app", c.ID)
	}
}

func wantHits(t *testing.T, ks *keyServer, want int64) {
	t.Helper()
	if got := ks.hits.Load(); got != want {
		t.Fatalf("the key server got %d requests, want %d", got, want)
	}
}

// waitFor polls cond until it holds or 10 s pass.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestVerifyAssertionJWKSURL(t *testing.T) {
	f := newURLFixture(t, "max-age=300")
	attacker := newKeyServer(t, jwksOf(t, newECKey(t), "ec1"))
	otherURL := newKeyServer(t, jwksOf(t, f.ec, "ec1"))
	ec := map[string]any{"alg": "ES384", "kid": "ec1"}
	with := func(m map[string]any, k string, v any) map[string]any {
		c := map[string]any{}
		for kk, vv := range m {
			c[kk] = vv
		}
		c[k] = v
		return c
	}
	tests := []struct {
		name    string
		iss     string
		header  map[string]any
		sign    signFunc
		wantErr string // "" for success
	}{
		{name: "ES384 without jku", iss: "url-app", header: ec, sign: es384Raw(f.ec)},
		{name: "RS384 without jku", iss: "url-app", header: map[string]any{"alg": "RS384", "kid": "rsa1"}, sign: rs384(f.rsa)},
		{name: "jku equal to the registered URL", iss: "url-app", header: with(ec, "jku", f.ks.url()), sign: es384Raw(f.ec)},
		{name: "RS384 with jku", iss: "url-app", header: map[string]any{"alg": "RS384", "kid": "rsa1", "jku": f.ks.url()}, sign: rs384(f.rsa)},
		{name: "inline client without jku", iss: "inline", header: map[string]any{"alg": "ES384", "kid": "in1"}, sign: es384Raw(f.inline)},

		{name: "jku of another server", iss: "url-app", header: with(ec, "jku", attacker.url()), sign: es384Raw(f.ec), wantErr: `jku is not the jwks_url registered for client "url-app"`},
		{name: "jku of another server with its key", iss: "url-app", header: with(ec, "jku", otherURL.url()), sign: es384Raw(f.ec), wantErr: "jku is not the jwks_url"},
		{name: "jku with a trailing slash", iss: "url-app", header: with(ec, "jku", f.ks.url()+"/"), sign: es384Raw(f.ec), wantErr: "jku is not the jwks_url"},
		{name: "jku in upper case", iss: "url-app", header: with(ec, "jku", strings.ToUpper(f.ks.url())), sign: es384Raw(f.ec), wantErr: "jku is not the jwks_url"},
		{name: "jku not a string", iss: "url-app", header: with(ec, "jku", 42), sign: es384Raw(f.ec), wantErr: "jku is not the jwks_url"},
		{name: "BDT test-bad-jku", iss: "url-app", header: with(ec, "jku", "test-bad-jku"), sign: es384Raw(f.ec), wantErr: "jku is not the jwks_url"},
		{name: "jku with an inline client", iss: "inline", header: map[string]any{"alg": "ES384", "kid": "in1", "jku": f.ks.url()}, sign: es384Raw(f.inline), wantErr: `client "inline" registered its keys inline`},
		{name: "unknown kid", iss: "url-app", header: with(ec, "kid", "nope"), sign: es384Raw(f.ec), wantErr: `the jwks_url of client "url-app" has no key with kid "nope"`},
		{name: "kid whose kty does not fit alg", iss: "url-app", header: map[string]any{"alg": "RS384", "kid": "ec1"}, sign: rs384(f.rsa), wantErr: `no key with kid "ec1" for alg RS384`},
		{name: "signed by a stranger under a published kid", iss: "url-app", header: ec, sign: es384Raw(newECKey(t)), wantErr: "signature does not verify"},
		{name: "inline client's key under the URL client", iss: "url-app", header: with(ec, "kid", "in1"), sign: es384Raw(f.inline), wantErr: `has no key with kid "in1"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := f.verify(t.Context(), f.assertion(t, tc.iss, tc.header, tc.sign))
			if tc.wantErr != "" {
				wantOAuth(t, err, CodeInvalidClient, tc.wantErr)
				return
			}
			if err != nil {
				t.Fatalf("VerifyAssertion: %v", err)
			}
			if c.ID != tc.iss {
				t.Fatalf("client %q, want %q", c.ID, tc.iss)
			}
		})
	}
	// The keys always come from the registered URL: a jku is compared,
	// never fetched.
	wantHits(t, attacker, 0)
	wantHits(t, otherURL, 0)
	f.ks.mu.Lock()
	defer f.ks.mu.Unlock()
	for _, a := range f.ks.accepts {
		if a != "application/json" {
			t.Errorf("Accept %q, want application/json", a)
		}
	}
}

func TestVerifyAssertionJWKSURLWithoutCache(t *testing.T) {
	f := newURLFixture(t, "")
	_, err := VerifyAssertion(t.Context(), f.reg, f.ecAssertion(t), testTokenURL, f.clock.Now(), memReplay{}, nil)
	var oe *OAuthError
	if err == nil || errors.As(err, &oe) || !strings.Contains(err.Error(), "no JWKSCache") {
		t.Fatalf("err = %v, want a plain error (the server's fault)", err)
	}
	wantHits(t, f.ks, 0)
}

// TestJWKSCacheHonoursCacheControl counts the key server's requests across
// verifications: within max-age none, after it one, and never a reuse of
// a response that forbids it.
func TestJWKSCacheHonoursCacheControl(t *testing.T) {
	tests := []struct {
		cacheControl string
		reuse        time.Duration // 0: every verification fetches
	}{
		{"max-age=60", 60 * time.Second},
		{"public, max-age=120", 120 * time.Second},
		{"max-age=86400", MaxJWKSMaxAge}, // capped
		{"", DefaultJWKSMaxAge},
		{"no-store", 0},
		{"no-cache", 0},
		{"max-age=0", 0},
		{"max-age=60, no-cache", 0},
		{"max-age=soon", 0},
	}
	for _, tc := range tests {
		t.Run(tc.cacheControl, func(t *testing.T) {
			f := newURLFixture(t, tc.cacheControl)
			f.mustVerify(t, f.ecAssertion(t))
			wantHits(t, f.ks, 1)
			f.mustVerify(t, f.ecAssertion(t))
			if tc.reuse == 0 {
				wantHits(t, f.ks, 2)
				f.mustVerify(t, f.ecAssertion(t))
				wantHits(t, f.ks, 3)
				return
			}
			wantHits(t, f.ks, 1)
			f.clock.Add(tc.reuse - time.Second)
			f.mustVerify(t, f.ecAssertion(t))
			wantHits(t, f.ks, 1)
			f.clock.Add(time.Second) // the age reaches the limit
			f.mustVerify(t, f.ecAssertion(t))
			wantHits(t, f.ks, 2)
		})
	}
}

func TestFreshness(t *testing.T) {
	now := time.Date(2027, 1, 15, 12, 0, 0, 0, time.UTC)
	date := now.Add(-10 * time.Second).Format(http.TimeFormat)
	tests := []struct {
		name   string
		header http.Header
		want   time.Duration
	}{
		{"nothing", http.Header{}, DefaultJWKSMaxAge},
		{"max-age", http.Header{"Cache-Control": {"max-age=90"}}, 90 * time.Second},
		{"upper case and spaces", http.Header{"Cache-Control": {" Public , MAX-AGE=90 "}}, 90 * time.Second},
		{"quoted", http.Header{"Cache-Control": {`max-age="90"`}}, 90 * time.Second},
		{"two headers", http.Header{"Cache-Control": {"public", "max-age=90"}}, 90 * time.Second},
		{"two max-ages take the shorter", http.Header{"Cache-Control": {"max-age=90, max-age=30"}}, 30 * time.Second},
		{"capped", http.Header{"Cache-Control": {"max-age=7200"}}, MaxJWKSMaxAge},
		{"huge", http.Header{"Cache-Control": {"max-age=999999999999999999"}}, MaxJWKSMaxAge},
		{"less age", http.Header{"Cache-Control": {"max-age=90"}, "Age": {"60"}}, 30 * time.Second},
		{"older than max-age", http.Header{"Cache-Control": {"max-age=90"}, "Age": {"600"}}, 0},
		{"no-store", http.Header{"Cache-Control": {"no-store"}}, 0},
		{"no-cache with field", http.Header{"Cache-Control": {`max-age=90, no-cache="Set-Cookie"`}}, 0},
		{"max-age zero", http.Header{"Cache-Control": {"max-age=0"}}, 0},
		{"negative max-age", http.Header{"Cache-Control": {"max-age=-5"}}, 0},
		{"invalid max-age", http.Header{"Cache-Control": {"max-age=1h"}}, 0},
		{"Expires against Date", http.Header{"Date": {date}, "Expires": {now.Add(110 * time.Second).Format(http.TimeFormat)}}, 120 * time.Second},
		{"Expires without Date", http.Header{"Expires": {now.Add(120 * time.Second).Format(http.TimeFormat)}}, 120 * time.Second},
		{"Expires past", http.Header{"Expires": {now.Add(-time.Minute).Format(http.TimeFormat)}}, 0},
		{"Expires invalid", http.Header{"Expires": {"0"}}, 0},
		{"max-age wins over Expires", http.Header{"Cache-Control": {"max-age=30"}, "Expires": {now.Add(time.Hour).Format(http.TimeFormat)}}, 30 * time.Second},
		{"unrelated directives", http.Header{"Cache-Control": {"public, must-revalidate"}}, DefaultJWKSMaxAge},
	}
	for _, tc := range tests {
		if got := freshness(tc.header, now, DefaultJWKSMaxAge, MaxJWKSMaxAge); got != tc.want {
			t.Errorf("%s: freshness = %v, want %v", tc.name, got, tc.want)
		}
	}
}

// TestJWKSCacheKeyRotation: a kid missing from a fresh cached set makes
// the cache fetch once more, but not within RefetchInterval of the last
// fetch.
func TestJWKSCacheKeyRotation(t *testing.T) {
	f := newURLFixture(t, "max-age=3600")
	f.mustVerify(t, f.ecAssertion(t))
	wantHits(t, f.ks, 1)

	rotated := newECKey(t)
	f.ks.set(http.StatusOK, "max-age=3600", jwksOf(t, rotated, "ec2"))
	next := func() string {
		return f.assertion(t, "url-app", map[string]any{"alg": "ES384", "kid": "ec2"}, es384Raw(rotated))
	}
	// Right after the first fetch: no refetch, the assertion fails.
	_, err := f.verify(t.Context(), next())
	wantOAuth(t, err, CodeInvalidClient, `has no key with kid "ec2"`)
	wantHits(t, f.ks, 1)

	f.clock.Add(DefaultJWKSRefetchInterval)
	f.mustVerify(t, next())
	wantHits(t, f.ks, 2)
	// The new set is cached: ec2 again, no fetch; ec1 is gone from it.
	f.mustVerify(t, next())
	wantHits(t, f.ks, 2)
	_, err = f.verify(t.Context(), f.ecAssertion(t))
	wantOAuth(t, err, CodeInvalidClient, `has no key with kid "ec1"`)
	wantHits(t, f.ks, 2) // within the interval again
}

// TestJWKSCacheRefetchRateLimit: a burst of assertions with random kids
// costs the client's key server one request per RefetchInterval.
func TestJWKSCacheRefetchRateLimit(t *testing.T) {
	f := newURLFixture(t, "max-age=3600")
	f.mustVerify(t, f.ecAssertion(t))
	f.clock.Add(time.Minute)
	burst := func() {
		var wg sync.WaitGroup
		for range 50 {
			wg.Go(func() {
				tok := f.assertion(t, "url-app", map[string]any{"alg": "ES384", "kid": rand.Text()}, es384Raw(f.ec))
				_, err := f.verify(context.Background(), tok)
				var oe *OAuthError
				if !errors.As(err, &oe) || oe.Code != CodeInvalidClient || !strings.Contains(oe.Description, "has no key with kid") {
					t.Errorf("random kid: err = %v, want invalid_client for want of the key", err)
				}
			})
		}
		wg.Wait()
	}
	burst()
	wantHits(t, f.ks, 2) // the first fetch and one refetch
	f.clock.Add(DefaultJWKSRefetchInterval - time.Second)
	burst()
	wantHits(t, f.ks, 2)
	f.clock.Add(time.Second)
	burst()
	wantHits(t, f.ks, 3)
	// The genuine kid still verifies from the cache throughout.
	f.mustVerify(t, f.ecAssertion(t))
	wantHits(t, f.ks, 3)
}

// TestJWKSCacheSharedFetch: verifications that arrive while a fetch of
// their URL is in flight wait for it instead of fetching too, even when
// the response may not be reused (no-store).
func TestJWKSCacheSharedFetch(t *testing.T) {
	f := newURLFixture(t, "no-store")
	release := f.ks.hold(t)
	const n = 20
	errs := make(chan error, n)
	for range n {
		tok := f.ecAssertion(t)
		go func() {
			_, err := f.verify(context.Background(), tok)
			errs <- err
		}()
	}
	waitFor(t, "every verification to wait for the one fetch", func() bool {
		f.cache.mu.Lock()
		defer f.cache.mu.Unlock()
		e := f.cache.entries[f.ks.url()]
		return e != nil && e.call != nil && e.call.waiters == n-1
	})
	release()
	for range n {
		if err := <-errs; err != nil {
			t.Errorf("VerifyAssertion: %v", err)
		}
	}
	wantHits(t, f.ks, 1)
}

// TestJWKSCacheAbandonedFetch: when the request that started a fetch goes
// away, the ones waiting for it fetch again rather than fail with it.
func TestJWKSCacheAbandonedFetch(t *testing.T) {
	f := newURLFixture(t, "max-age=60")
	release := f.ks.hold(t)
	ctx, cancel := context.WithCancel(t.Context())
	leader := make(chan error, 1)
	go func() {
		_, err := f.verify(ctx, f.ecAssertion(t))
		leader <- err
	}()
	waitFor(t, "the first fetch", func() bool { return f.ks.hits.Load() == 1 })
	follower := make(chan error, 1)
	go func() {
		_, err := f.verify(t.Context(), f.ecAssertion(t))
		follower <- err
	}()
	waitFor(t, "the second verification to wait", func() bool {
		f.cache.mu.Lock()
		defer f.cache.mu.Unlock()
		e := f.cache.entries[f.ks.url()]
		return e != nil && e.call != nil && e.call.waiters == 1
	})
	cancel()
	err := <-leader
	var oe *OAuthError
	if err == nil || errors.As(err, &oe) || !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled verification: err = %v, want context.Canceled and no OAuth error", err)
	}
	waitFor(t, "the second fetch", func() bool { return f.ks.hits.Load() == 2 })
	release()
	if err := <-follower; err != nil {
		t.Fatalf("waiting verification: %v", err)
	}
	wantHits(t, f.ks, 2)
}

// TestJWKSFetchFailures: every way the client's key server can fail is
// invalid_client naming the URL and the problem, without key material,
// and nothing is cached: the next verification fetches again.
func TestJWKSFetchFailures(t *testing.T) {
	ec := newECKey(t)
	good := jwksOf(t, ec, "ec1")
	p256, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	private := `{"keys":[` + jwkJSON(t, ec, "ec1") + `]}`
	tests := []struct {
		name, body string
		status     int
		wantErr    string
	}{
		{name: "500", status: 500, body: good, wantErr: "answered HTTP 500, want 200"},
		{name: "404", status: 404, body: "not found", wantErr: "answered HTTP 404"},
		{name: "204", status: 204, wantErr: "answered HTTP 204"},
		{name: "oversize", status: 200, body: `{"keys":[],"padding":"` + strings.Repeat("x", DefaultMaxJWKSBytes) + `"}`, wantErr: fmt.Sprintf("answered more than %d bytes", DefaultMaxJWKSBytes)},
		{name: "not JSON", status: 200, body: "<html>", wantErr: "answered no acceptable JWK Set: not a JSON object"},
		{name: "array", status: 200, body: "[]", wantErr: "not a JSON object with a keys array"},
		{name: "no keys", status: 200, body: `{"keys":[]}`, wantErr: "jwks has no keys"},
		{name: "private key", status: 200, body: private, wantErr: `kid "ec1": private key material ("d") found`},
		{name: "symmetric key", status: 200, body: `{"keys":[{"kty":"oct","kid":"s","k":"c2VjcmV0"}]}`, wantErr: `private key material ("k")`},
		{name: "P-256 key", status: 200, body: jwksOf(t, p256, "ec1"), wantErr: "only P-384"},
		{name: "small RSA key", status: 200, body: jwksOf(t, newRSAKey(t, 1024), "ec1"), wantErr: "1024 bits"},
		{name: "key without kid", status: 200, body: jwksOf(t, ec, ""), wantErr: "missing kid"},
		{name: "conflicting duplicate kid", status: 200, body: `{"keys":[` + jwkJSON(t, &ec.PublicKey, "ec1") + "," + jwkJSON(t, &newECKey(t).PublicKey, "ec1") + `]}`, wantErr: `duplicate kid "ec1"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ks := newKeyServer(t, "")
			ks.set(tc.status, "max-age=600", tc.body)
			f := &urlFixture{ks: ks, reg: urlRegistry(t, ks.url()), ec: ec, clock: &fakeClock{t: time.Unix(1_800_000_000, 0)}}
			f.cache = newTestCache(t, &JWKSCacheOptions{Now: f.clock.Now})
			_, err := f.verify(t.Context(), f.ecAssertion(t))
			wantOAuth(t, err, CodeInvalidClient, tc.wantErr)
			wantOAuth(t, err, CodeInvalidClient, `the keys of client "url-app" could not be fetched: jwks_url `+ks.url())
			if d := b64(privateScalar(t, ec)); strings.Contains(err.Error(), d) {
				t.Fatalf("error %q contains the private key", err)
			}
			var fe *JWKSFetchError
			if !errors.As(err, &fe) || fe.URL != ks.url() {
				t.Fatalf("err = %v, want it to wrap a *JWKSFetchError for the URL", err)
			}
			// Not cached: fixed at once, the next verification succeeds.
			ks.set(http.StatusOK, "max-age=600", good)
			f.mustVerify(t, f.ecAssertion(t))
			wantHits(t, ks, 2)
		})
	}
}

// TestJWKSFetchTransportFailures: timeouts, refused connections and
// redirects.
func TestJWKSFetchTransportFailures(t *testing.T) {
	ec := newECKey(t)
	good := newKeyServer(t, jwksOf(t, ec, "ec1"))
	slow := newKeyServer(t, jwksOf(t, ec, "ec1"))
	slow.hold(t)
	closed := httptest.NewServer(http.NotFoundHandler())
	closed.Close()
	redirect := func(to func(r *http.Request) string) string {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, to(r), http.StatusFound)
		}))
		t.Cleanup(srv.Close)
		return srv.URL + "/jwks.json"
	}
	var hops atomic.Int64
	tlsServer := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = io.WriteString(w, jwksOf(t, ec, "ec1"))
	}))
	t.Cleanup(tlsServer.Close)
	tests := []struct {
		name, url string
		wantErr   string // "" for success
	}{
		{name: "timeout", url: slow.url(), wantErr: "did not answer in time"},
		{name: "connection refused", url: closed.URL + "/jwks.json", wantErr: "could not be fetched (connection failed)"},
		{name: "not TLS", url: strings.Replace(good.url(), "http://127.0.0.1", "https://127.0.0.1", 1), wantErr: "could not be fetched (connection failed)"},
		{name: "untrusted certificate", url: tlsServer.URL + "/jwks.json", wantErr: "its TLS certificate was not accepted"},
		{name: "redirect to plain http elsewhere", url: redirect(func(*http.Request) string { return "http://client.example/jwks.json" }), wantErr: "redirected to a URL that is not allowed"},
		{name: "redirect with userinfo", url: redirect(func(*http.Request) string { return "https://u:p@client.example/jwks.json" }), wantErr: "redirected to a URL that is not allowed"},
		{name: "redirect loop", url: redirect(func(r *http.Request) string { hops.Add(1); return r.URL.Path + "?" + fmt.Sprint(hops.Load()) }), wantErr: "redirected more than 3 times"},
		{name: "redirect between loopback URLs", url: redirect(func(*http.Request) string { return good.url() })},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := &urlFixture{reg: urlRegistry(t, tc.url), ec: ec, clock: &fakeClock{t: time.Unix(1_800_000_000, 0)}}
			// Only the held server needs a short timeout; the others get
			// one no loaded machine reaches, so that a slow TLS handshake
			// (under -race, with other tests running) is not taken for it.
			timeout := 10 * time.Second
			if tc.name == "timeout" {
				timeout = 300 * time.Millisecond
			}
			f.cache = newTestCache(t, &JWKSCacheOptions{Now: f.clock.Now, Client: &http.Client{Timeout: timeout}})
			_, err := f.verify(t.Context(), f.ecAssertion(t))
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("VerifyAssertion: %v", err)
				}
				return
			}
			wantOAuth(t, err, CodeInvalidClient, tc.wantErr)
			if strings.Contains(err.(*OAuthError).Description, "127.0.0.1:") && !strings.Contains(tc.url, "127.0.0.1:") {
				t.Errorf("description %q names an address", err.(*OAuthError).Description)
			}
		})
	}
}

// TestJWKSFetchHTTPS: the https path, with a client that trusts the
// test server's certificate (the registry accepts https on any host).
func TestJWKSFetchHTTPS(t *testing.T) {
	ec := newECKey(t)
	var hits atomic.Int64
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		hits.Add(1)
		w.Header().Set("Cache-Control", "max-age=30")
		_, _ = io.WriteString(w, jwksOf(t, ec, "ec1"))
	}))
	t.Cleanup(srv.Close)
	f := &urlFixture{reg: urlRegistry(t, srv.URL+"/jwks.json"), ec: ec, clock: &fakeClock{t: time.Unix(1_800_000_000, 0)}}
	f.cache = newTestCache(t, &JWKSCacheOptions{Now: f.clock.Now, Client: srv.Client()})
	f.mustVerify(t, f.ecAssertion(t))
	f.mustVerify(t, f.ecAssertion(t))
	if n := hits.Load(); n != 1 {
		t.Fatalf("%d requests, want 1", n)
	}
}

// TestJWKSRedirectToLoopbackFromHTTPS: an https key server must not send
// this server to plain http, loopback included.
func TestJWKSRedirectToLoopbackFromHTTPS(t *testing.T) {
	from, _ := http.NewRequest("GET", "https://client.example/jwks.json", nil)
	to, _ := http.NewRequest("GET", "http://127.0.0.1:8080/admin", nil)
	err := checkJWKSRedirect(to, []*http.Request{from})
	var re *jwksRedirectError
	if !errors.As(err, &re) || !strings.Contains(re.reason, "from https to http") {
		t.Fatalf("checkJWKSRedirect = %v, want a refusal", err)
	}
	loop, _ := http.NewRequest("GET", "http://127.0.0.1:8080/jwks.json", nil)
	if err := checkJWKSRedirect(to, []*http.Request{loop}); err != nil {
		t.Fatalf("loopback to loopback: %v", err)
	}
}

// TestJWKSPublishedSetQuirks: members beside "keys" are ignored and an
// exact repeat of a key is dropped (BDT's published set lists keys twice),
// so such a set verifies.
func TestJWKSPublishedSetQuirks(t *testing.T) {
	ec := newECKey(t)
	pub := jwkJSON(t, &ec.PublicKey, "ec1")
	pubWithOps := strings.Replace(pub, `"kid"`, `"key_ops":["verify"],"ext":true,"alg":"ES384","kid"`, 1)
	ks := newKeyServer(t, `{"keys":[`+pubWithOps+`,`+pubWithOps+`],"issuer":"https://client.example"}`)
	f := &urlFixture{ks: ks, reg: urlRegistry(t, ks.url()), ec: ec, clock: &fakeClock{t: time.Unix(1_800_000_000, 0)}}
	f.cache = newTestCache(t, &JWKSCacheOptions{Now: f.clock.Now})
	f.mustVerify(t, f.ecAssertion(t))
	keys, err := f.cache.Keys(t.Context(), ks.url(), "ec1")
	if err != nil || len(keys) != 1 {
		t.Fatalf("Keys = %d keys, %v; want the one key", len(keys), err)
	}
}

func TestNewJWKSCacheOptions(t *testing.T) {
	for _, o := range []JWKSCacheOptions{
		{MaxBytes: -1},
		{RefetchInterval: -time.Second},
		{DefaultMaxAge: 2 * time.Hour},
		{DefaultMaxAge: time.Minute, MaxAge: 30 * time.Second},
	} {
		if _, err := NewJWKSCache(&o); err == nil {
			t.Errorf("NewJWKSCache(%+v) accepted", o)
		}
	}
	c, err := NewJWKSCache(nil)
	if err != nil {
		t.Fatal(err)
	}
	if c.client.Timeout != DefaultJWKSTimeout || c.maxBytes != DefaultMaxJWKSBytes || c.defaultMaxAge != DefaultJWKSMaxAge ||
		c.maxAge != MaxJWKSMaxAge || c.refetchInterval != DefaultJWKSRefetchInterval || c.client.CheckRedirect == nil {
		t.Fatalf("defaults not applied: %+v", c)
	}
	// The caller's client is not modified.
	hc := &http.Client{Timeout: time.Second}
	if _, err := NewJWKSCache(&JWKSCacheOptions{Client: hc}); err != nil || hc.CheckRedirect != nil {
		t.Fatalf("NewJWKSCache changed the given client (%v)", err)
	}
}

// TestJWKSPublishedSetIgnoresUnusableKeys: a published set may carry keys
// for other purposes (RFC 7517 section 5: ignore what is not understood or
// out of range). They are skipped, the usable key verifies, and an
// assertion naming a skipped key is refused as having no usable key. A
// private key still fails the whole set.
func TestJWKSPublishedSetIgnoresUnusableKeys(t *testing.T) {
	ec := newECKey(t)
	p256, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	encKey := strings.Replace(jwkJSON(t, &newECKey(t).PublicKey, "enc1"), `"kid"`, `"use":"enc","kid"`, 1)
	ps256 := strings.Replace(jwkJSON(t, &fixtureRSA().PublicKey, "ps1"), `"kid"`, `"alg":"PS256","kid"`, 1)
	okp := `{"kty":"OKP","crv":"Ed25519","kid":"ed1","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}`
	set := `{"keys":[` + strings.Join([]string{
		jwkJSON(t, &p256.PublicKey, "p256"),
		jwkJSON(t, &newRSAKey(t, 1024).PublicKey, "rsa1024"),
		jwkJSON(t, &newECKey(t).PublicKey, ""),
		encKey, ps256, okp,
		jwkJSON(t, &ec.PublicKey, "ec1"),
	}, ",") + `]}`
	ks := newKeyServer(t, set)
	f := &urlFixture{ks: ks, reg: urlRegistry(t, ks.url()), ec: ec, clock: &fakeClock{t: time.Unix(1_800_000_000, 0)}}
	f.cache = newTestCache(t, &JWKSCacheOptions{Now: f.clock.Now})
	f.mustVerify(t, f.ecAssertion(t))
	keys, err := f.cache.Keys(t.Context(), ks.url(), "ec1")
	if err != nil || len(keys) != 1 || keys[0].KeyID != "ec1" {
		t.Fatalf("Keys = %v, %v; want only ec1", keys, err)
	}
	// An assertion signed with the skipped P-256 key, under its kid.
	p256Sig := func(tb testing.TB, in []byte) []byte {
		h := sha256.Sum256(in)
		r, s, err := ecdsa.Sign(rand.Reader, p256, h[:])
		if err != nil {
			tb.Fatal(err)
		}
		return append(r.FillBytes(make([]byte, 32)), s.FillBytes(make([]byte, 32))...)
	}
	_, err = f.verify(t.Context(), f.assertion(t, "url-app", map[string]any{"alg": "ES384", "kid": "p256"}, p256Sig))
	wantOAuth(t, err, CodeInvalidClient, `has no key with kid "p256"`)

	// Private key material anywhere in the set still refuses all of it.
	ks.set(http.StatusOK, "no-store", `{"keys":[`+jwkJSON(t, p256, "p256")+`,`+jwkJSON(t, &ec.PublicKey, "ec1")+`]}`)
	f.clock.Add(MaxJWKSMaxAge) // the cached set has expired
	_, err = f.verify(t.Context(), f.ecAssertion(t))
	wantOAuth(t, err, CodeInvalidClient, `kid "p256": private key material ("d") found`)
}
