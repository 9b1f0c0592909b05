package smart

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
)

func mustScopes(t *testing.T, s string) Scopes {
	t.Helper()
	sc, err := ParseScopes(s)
	if err != nil {
		t.Fatal(err)
	}
	return sc
}

func headerKid(t *testing.T, token string) string {
	t.Helper()
	jws, err := jose.ParseSignedCompact(token, []jose.SignatureAlgorithm{jose.ES384})
	if err != nil {
		t.Fatal(err)
	}
	return jws.Signatures[0].Header.KeyID
}

func TestSignerIssueVerify(t *testing.T) {
	clock := &fakeClock{t: time.Unix(1_800_000_000, 0)}
	dir := filepath.Join(t.TempDir(), "keys")
	s, err := OpenKeys(dir, clock.Now, &SignerOptions{Issuer: "https://bulk.example.org"})
	if err != nil {
		t.Fatal(err)
	}
	if n := len(s.KeyIDs()); n != 1 {
		t.Fatalf("%d keys after first open, want 1", n)
	}
	fi, err := os.Stat(filepath.Join(dir, s.KeyIDs()[0]+".jwk"))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode %v (%v), want 0600", fi.Mode().Perm(), err)
	}
	now := clock.Now()
	tok, exp, err := s.Issue("app-1", mustScopes(t, "system/Patient.rs system/Observation.read"), 0)
	if err != nil {
		t.Fatal(err)
	}
	if want := now.Add(DefaultTokenLifetime); !exp.Equal(want) {
		t.Fatalf("exp = %v, want %v", exp, want)
	}
	c, err := s.Verify(tok, now)
	if err != nil {
		t.Fatal(err)
	}
	if c.ClientID != "app-1" || c.Issuer != "https://bulk.example.org" || !c.Expiry.Equal(exp) || c.ID == "" ||
		!c.Scopes.Allows("Patient") || !c.Scopes.Allows("Observation") || c.Scopes.Allows("Condition") {
		t.Fatalf("claims = %+v", c)
	}
	if c.Scopes.String() != "system/Patient.rs system/Observation.read" {
		t.Fatalf("scope = %q", c.Scopes.String())
	}

	other, err := OpenKeys(filepath.Join(t.TempDir(), "k"), clock.Now, &SignerOptions{Issuer: "https://bulk.example.org"})
	if err != nil {
		t.Fatal(err)
	}
	strangerTok, _, err := other.Issue("app-1", mustScopes(t, "system/*.rs"), 0)
	if err != nil {
		t.Fatal(err)
	}
	sameDirOtherIssuer, err := OpenKeys(dir, clock.Now, &SignerOptions{Issuer: "someone-else"})
	if err != nil {
		t.Fatal(err)
	}
	wrongIssTok, _, err := sameDirOtherIssuer.Issue("app-1", mustScopes(t, "system/*.rs"), 0)
	if err != nil {
		t.Fatal(err)
	}
	parts := strings.Split(tok, ".")
	tampered := parts[0] + "." + b64(mustJSON(t, map[string]any{"iss": "https://bulk.example.org", "sub": "app-2", "scope": "system/*.rs", "exp": exp.Unix(), "iat": now.Unix()})) + "." + parts[2]
	hmacTok := rawJWS(t, map[string]any{"alg": "HS384", "kid": s.KeyIDs()[0], "typ": "at+jwt"},
		map[string]any{"iss": "https://bulk.example.org", "sub": "app-1", "scope": "system/*.rs", "exp": exp.Unix(), "iat": now.Unix()}, hs384([]byte("x")))
	noneTok := rawJWS(t, map[string]any{"alg": "none", "kid": s.KeyIDs()[0], "typ": "at+jwt"},
		map[string]any{"iss": "https://bulk.example.org", "sub": "app-1", "scope": "system/*.rs", "exp": exp.Unix(), "iat": now.Unix()}, noSig)
	assertion, err := SignAssertion([]byte(jwkJSON(t, newECKey(t), "k")), "app-1", testTokenURL, now)
	if err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name    string
		token   string
		at      time.Time
		wantErr string
	}{
		{name: "valid", token: tok, at: now},
		{name: "valid just before exp + leeway", token: tok, at: exp.Add(TokenLeeway - time.Second)},
		{name: "expired", token: tok, at: exp.Add(TokenLeeway), wantErr: "expired"},
		{name: "not yet valid", token: tok, at: now.Add(-TokenLeeway - time.Second), wantErr: "not valid yet"},
		{name: "unknown key", token: strangerTok, at: now, wantErr: "unknown key"},
		{name: "wrong issuer", token: wrongIssTok, at: now, wantErr: "issuer"},
		{name: "tampered claims", token: tampered, at: now, wantErr: "signature does not verify"},
		{name: "HS384", token: hmacTok, at: now, wantErr: "malformed"},
		{name: "alg none", token: noneTok, at: now, wantErr: "malformed"},
		{name: "client assertion is not an access token", token: assertion, at: now, wantErr: "typ"},
		{name: "garbage", token: "abc.def", at: now, wantErr: "malformed"},
		{name: "empty", token: "", at: now, wantErr: "no access token"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := s.Verify(tc.token, tc.at)
			if tc.wantErr != "" {
				wantOAuth(t, err, CodeInvalidToken, tc.wantErr)
				if c != nil {
					t.Fatal("claims returned with an error")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestSignerIssueErrors(t *testing.T) {
	s, err := OpenKeys(t.TempDir(), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if s.Issuer() != DefaultIssuer || s.Lifetime() != DefaultTokenLifetime {
		t.Fatalf("defaults: issuer %q lifetime %s", s.Issuer(), s.Lifetime())
	}
	sc := mustScopes(t, "system/*.rs")
	if _, _, err := s.Issue("app", sc, DefaultTokenLifetime+time.Second); err == nil {
		t.Error("ttl over the lifetime accepted")
	}
	if _, _, err := s.Issue("", sc, 0); err == nil {
		t.Error("empty client id accepted")
	}
	if _, _, err := s.Issue("app", Scopes{}, 0); err == nil {
		t.Error("empty scopes accepted")
	}
	tok, exp, err := s.Issue("app", sc, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Verify(tok, exp.Add(TokenLeeway)); err == nil {
		t.Error("short-ttl token valid after its exp")
	}
	if _, err := OpenKeys(t.TempDir(), nil, &SignerOptions{Lifetime: 2 * time.Hour}); err == nil {
		t.Error("lifetime over MaxTokenLifetime accepted")
	}
}

func TestSignerRotate(t *testing.T) {
	clock := &fakeClock{t: time.Unix(1_800_000_000, 0)}
	dir := t.TempDir()
	s, err := OpenKeys(dir, clock.Now, nil)
	if err != nil {
		t.Fatal(err)
	}
	sc := mustScopes(t, "system/*.rs")
	first := s.KeyIDs()[0]
	oldTok, _, err := s.Issue("app", sc, 0)
	if err != nil {
		t.Fatal(err)
	}

	clock.Add(time.Minute)
	if err := s.Rotate(); err != nil {
		t.Fatal(err)
	}
	ids := s.KeyIDs()
	if len(ids) != 2 || ids[0] != first {
		t.Fatalf("keys after rotation = %q, want [%s, new]", ids, first)
	}
	second := ids[1]
	newTok, _, err := s.Issue("app", sc, 0)
	if err != nil {
		t.Fatal(err)
	}
	if got := headerKid(t, newTok); got != second {
		t.Fatalf("new token signed by %q, want the new key %q", got, second)
	}
	if _, err := s.Verify(oldTok, clock.Now()); err != nil {
		t.Fatalf("token of the old key no longer verifies: %v", err)
	}

	// Reopening loads both keys; the newest still signs.
	s2, err := OpenKeys(dir, clock.Now, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(s2.KeyIDs(), ids) {
		t.Fatalf("reopened keys = %q, want %q", s2.KeyIDs(), ids)
	}
	if _, err := s2.Verify(oldTok, clock.Now()); err != nil {
		t.Fatalf("old token after reopen: %v", err)
	}
	tok2, _, err := s2.Issue("app", sc, 0)
	if err != nil {
		t.Fatal(err)
	}
	if got := headerKid(t, tok2); got != second {
		t.Fatalf("reopened signer signs with %q, want %q", got, second)
	}

	// Rotating again right away keeps every key: the first key's tokens
	// may still be live.
	if err := s.Rotate(); err != nil {
		t.Fatal(err)
	}
	if n := len(s.KeyIDs()); n != 3 {
		t.Fatalf("%d keys, want 3 (same-second rotation must still order kids)", n)
	}
	// Once the lifetime (+ leeway) has passed since the second key took
	// over, the first key is retired from memory and disk; the second,
	// replaced a second later, stays a second longer.
	clock.Add(DefaultTokenLifetime + TokenLeeway)
	if err := s.Rotate(); err != nil {
		t.Fatal(err)
	}
	ids = s.KeyIDs()
	if slices.Contains(ids, first) || !slices.Contains(ids, second) {
		t.Fatalf("keys = %q: want %s retired and %s kept", ids, first, second)
	}
	if _, err := os.Stat(filepath.Join(dir, first+".jwk")); !os.IsNotExist(err) {
		t.Fatalf("retired key file still on disk: %v", err)
	}
	_, err = s.Verify(oldTok, clock.Now().Add(-DefaultTokenLifetime))
	wantOAuth(t, err, CodeInvalidToken, "unknown key")
	if _, err := s.Verify(newTok, clock.Now().Add(-DefaultTokenLifetime)); err != nil {
		t.Fatalf("token of a kept key: %v", err)
	}
	clock.Add(time.Second)
	if err := s.Rotate(); err != nil {
		t.Fatal(err)
	}
	if ids := s.KeyIDs(); slices.Contains(ids, second) || len(ids) != 3 {
		t.Fatalf("keys = %q, want %s retired and 3 left", ids, second)
	}
	_, err = s.Verify(newTok, clock.Now().Add(-DefaultTokenLifetime))
	wantOAuth(t, err, CodeInvalidToken, "unknown key")
}

func TestOpenKeysRejects(t *testing.T) {
	good := t.TempDir()
	s, err := OpenKeys(good, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	kid := s.KeyIDs()[0]
	keyData, err := os.ReadFile(filepath.Join(good, kid+".jwk"))
	if err != nil {
		t.Fatal(err)
	}
	rsaJWK := jwkJSON(t, newRSAKey(t, 2048), "20260101T000000Z-00000000")
	pubJWK := jwkJSON(t, &newECKey(t).PublicKey, "20260101T000000Z-00000000")

	tests := []struct {
		name, file, content string
		mode                os.FileMode
		wantErr             string
	}{
		{name: "world-readable", file: kid + ".jwk", content: string(keyData), mode: 0o644, wantErr: "want 0600"},
		{name: "bad name", file: "mykey.jwk", content: string(keyData), mode: 0o600, wantErr: "file name is not <kid>.jwk"},
		{name: "kid mismatch", file: "20260101T000000Z-00000000.jwk", content: string(keyData), mode: 0o600, wantErr: "kid or alg does not match"},
		{name: "RSA key", file: "20260101T000000Z-00000000.jwk", content: rsaJWK, mode: 0o600, wantErr: "EC P-384 private key"},
		{name: "public key", file: "20260101T000000Z-00000000.jwk", content: pubJWK, mode: 0o600, wantErr: "EC P-384 private key"},
		{name: "garbage", file: "20260101T000000Z-00000000.jwk", content: "{", mode: 0o600, wantErr: "not a JWK"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			p := filepath.Join(dir, tc.file)
			if err := os.WriteFile(p, []byte(tc.content), tc.mode); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(p, tc.mode); err != nil {
				t.Fatal(err)
			}
			_, err := OpenKeys(dir, nil, nil)
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("err = %v, want it to contain %q", err, tc.wantErr)
			}
		})
	}
}

// TestVerifyCacheKeepsTimeChecks: the second Verify of a token is served
// from the cache of verified signatures, but expiry and iat are still
// checked against the caller's now; the cache stays bounded.
func TestVerifyCacheKeepsTimeChecks(t *testing.T) {
	s, err := OpenKeys(t.TempDir(), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	sc, err := ParseScopes("system/*.rs")
	if err != nil {
		t.Fatal(err)
	}
	tok, exp, err := s.Issue("app", sc, 0)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	for range 2 {
		c, err := s.Verify(tok, now)
		if err != nil || c.ClientID != "app" {
			t.Fatalf("Verify = %+v, %v", c, err)
		}
	}
	if len(s.verified) != 1 {
		t.Fatalf("cache holds %d tokens, want 1", len(s.verified))
	}
	_, err = s.Verify(tok, exp.Add(TokenLeeway))
	wantOAuth(t, err, CodeInvalidToken, "expired")
	_, err = s.Verify(tok, now.Add(-time.Hour))
	wantOAuth(t, err, CodeInvalidToken, "not valid yet")
	// A cached token's signature bytes changed is another token: verified
	// afresh, and refused.
	b := []byte(tok)
	if b[len(b)-10] == 'A' {
		b[len(b)-10] = 'B'
	} else {
		b[len(b)-10] = 'A'
	}
	_, err = s.Verify(string(b), now)
	wantOAuth(t, err, CodeInvalidToken, "signature")

	for i := range maxVerified + 10 {
		var sum [32]byte
		sum[0], sum[1] = byte(i), byte(i>>8)
		s.remember(sum, verifiedToken{claims: AccessClaims{Expiry: now.Add(time.Minute)}}, now)
	}
	if n := len(s.verified); n > maxVerified {
		t.Fatalf("cache grew to %d entries, bound %d", n, maxVerified)
	}
}
