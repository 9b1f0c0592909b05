package smart

import (
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/x509"
	"errors"
	"fmt"
	"maps"
	"os"
	"strings"
	"testing"
	"time"
)

// assertionFixture is a registry with an EC client, an RSA client and a
// third client, plus their private keys.
type assertionFixture struct {
	reg              *Registry
	ec, other        *ecdsa.PrivateKey
	rsa              *rsa.PrivateKey
	ecPub, rsaPubDER []byte
}

func newAssertionFixture(t *testing.T) *assertionFixture {
	t.Helper()
	f := &assertionFixture{ec: newECKey(t), other: newECKey(t), rsa: newRSAKey(t, 2048)}
	dir := t.TempDir()
	path := writeFile(t, dir+"/clients.json", fmt.Sprintf(`{"clients":[
		{"id":"app-ec","jwks":{"keys":[%s]},"scopes":["system/*.rs"]},
		{"id":"app-rsa","jwks":{"keys":[%s]},"scopes":["system/*.read"]},
		{"id":"other","jwks":{"keys":[%s]},"scopes":["system/Patient.rs"]}]}`,
		jwkJSON(t, &f.ec.PublicKey, "ec1"), jwkJSON(t, &f.rsa.PublicKey, "rsa1"), jwkJSON(t, &f.other.PublicKey, "other1")))
	reg, err := LoadRegistry(path)
	if err != nil {
		t.Fatal(err)
	}
	f.reg = reg
	f.ecPub = []byte(jwkJSON(t, &f.ec.PublicKey, "ec1"))
	der, err := x509.MarshalPKIXPublicKey(&f.rsa.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	f.rsaPubDER = der
	return f
}

func TestVerifyAssertion(t *testing.T) {
	f := newAssertionFixture(t)
	now := time.Unix(1_800_000_000, 0)
	stranger := newECKey(t)

	ecHeader := map[string]any{"alg": "ES384", "kid": "ec1", "typ": "JWT"}
	rsaHeader := map[string]any{"alg": "RS384", "kid": "rsa1", "typ": "JWT"}
	claims := func(iss string) map[string]any {
		return map[string]any{"iss": iss, "sub": iss, "aud": testTokenURL, "exp": now.Add(4 * time.Minute).Unix(), "iat": now.Unix()}
	}
	with := func(m map[string]any, kv ...any) map[string]any {
		m = maps.Clone(m)
		for i := 0; i < len(kv); i += 2 {
			if kv[i+1] == nil {
				delete(m, kv[i].(string))
			} else {
				m[kv[i].(string)] = kv[i+1]
			}
		}
		return m
	}
	tamper := func(tok string) string {
		parts := strings.Split(tok, ".")
		parts[1] = b64(mustJSON(t, with(claims("app-ec"), "jti", "tampered", "exp", now.Add(5*time.Minute).Unix())))
		return strings.Join(parts, ".")
	}

	tests := []struct {
		name    string
		header  map[string]any
		claims  map[string]any
		sign    signFunc
		mangle  func(string) string
		raw     string // used instead of building a JWS when set
		want    string // client id on success
		wantErr string // substring of the invalid_client description
	}{
		{name: "ES384 ok", header: ecHeader, claims: claims("app-ec"), sign: es384Raw(f.ec), want: "app-ec"},
		{name: "RS384 ok", header: rsaHeader, claims: claims("app-rsa"), sign: rs384(f.rsa), want: "app-rsa"},
		{name: "aud array ok", header: ecHeader, claims: with(claims("app-ec"), "aud", []string{"x", testTokenURL}), sign: es384Raw(f.ec), want: "app-ec"},
		{name: "BDT kty header and no typ ok", header: with(ecHeader, "kty", "EC", "typ", nil), claims: claims("app-ec"), sign: es384Raw(f.ec), want: "app-ec"},
		{name: "exp at the 5 min + skew limit ok", header: ecHeader, claims: with(claims("app-ec"), "exp", now.Add(MaxAssertionLifetime+ClockSkew).Unix()), sign: es384Raw(f.ec), want: "app-ec"},
		// The window the README states, in literal numbers: exp at most
		// 5 minutes ahead plus 60 s of clock skew, at most 60 s past.
		{name: "exp 6 min ahead ok", header: ecHeader, claims: with(claims("app-ec"), "exp", now.Add(6*time.Minute).Unix()), sign: es384Raw(f.ec), want: "app-ec"},
		{name: "exp 59 s past ok", header: ecHeader, claims: with(claims("app-ec"), "exp", now.Add(-59*time.Second).Unix()), sign: es384Raw(f.ec), want: "app-ec"},
		{name: "exp just passed within skew ok", header: ecHeader, claims: with(claims("app-ec"), "exp", now.Add(-30*time.Second).Unix()), sign: es384Raw(f.ec), want: "app-ec"},

		{name: "alg none", header: with(ecHeader, "alg", "none"), claims: claims("app-ec"), sign: noSig, wantErr: `alg "none" is not allowed`},
		{name: "HS384 with the public JWK as secret", header: with(ecHeader, "alg", "HS384"), claims: claims("app-ec"), sign: hs384(f.ecPub), wantErr: `alg "HS384" is not allowed`},
		{name: "HS384 with the RSA public key DER as secret", header: with(rsaHeader, "alg", "HS384"), claims: claims("app-rsa"), sign: hs384(f.rsaPubDER), wantErr: `alg "HS384" is not allowed`},
		{name: "RS256", header: with(rsaHeader, "alg", "RS256"), claims: claims("app-rsa"), sign: rs256(f.rsa), wantErr: `alg "RS256" is not allowed`},
		{name: "ES256 header", header: with(ecHeader, "alg", "ES256"), claims: claims("app-ec"), sign: es384Raw(f.ec), wantErr: `alg "ES256" is not allowed`},
		{name: "ES384 DER signature", header: ecHeader, claims: claims("app-ec"), sign: es384DER(f.ec), wantErr: "signature does not verify"},
		{name: "signed by a stranger's key under a known kid", header: ecHeader, claims: claims("app-ec"), sign: es384Raw(stranger), wantErr: "signature does not verify"},
		{name: "tampered payload", header: ecHeader, claims: claims("app-ec"), sign: es384Raw(f.ec), mangle: tamper, wantErr: "signature does not verify"},
		{name: "signature stripped", header: ecHeader, claims: claims("app-ec"), sign: noSig, wantErr: "signature does not verify"},
		{name: "no kid", header: with(ecHeader, "kid", nil), claims: claims("app-ec"), sign: es384Raw(f.ec), wantErr: "no kid"},
		{name: "unknown kid", header: with(ecHeader, "kid", "nope"), claims: claims("app-ec"), sign: es384Raw(f.ec), wantErr: `no registered key with kid "nope"`},
		{name: "kid of another client", header: with(ecHeader, "kid", "other1"), claims: claims("app-ec"), sign: es384Raw(f.other), wantErr: `no registered key with kid "other1"`},
		{name: "kid whose kty does not fit alg", header: with(rsaHeader, "kid", "ec1"), claims: claims("app-ec"), sign: rs384(f.rsa), wantErr: `no registered key with kid "ec1" for alg RS384`},
		// The SMART Bulk Data test suite (github.com/smart-on-fhir/bulk-data-tests) sends this jku.
		{name: "jku with a client registered inline", header: with(ecHeader, "jku", "test-bad-jku"), claims: claims("app-ec"), sign: es384Raw(f.ec), wantErr: `jku, but client "app-ec" registered its keys inline`},
		{name: "jku URL with a client registered inline", header: with(ecHeader, "jku", "https://client.example/jwks.json"), claims: claims("app-ec"), sign: es384Raw(f.ec), wantErr: "registered its keys inline, not by jwks_url: leave jku out"},
		{name: "typ not JWT", header: with(ecHeader, "typ", "at+jwt"), claims: claims("app-ec"), sign: es384Raw(f.ec), wantErr: "typ"},
		{name: "unknown iss", header: ecHeader, claims: claims("nobody"), sign: es384Raw(f.ec), wantErr: `unknown client "nobody"`},
		{name: "no iss", header: ecHeader, claims: with(claims("app-ec"), "iss", nil), sign: es384Raw(f.ec), wantErr: "no iss"},
		{name: "iss of another client signed with own key", header: ecHeader, claims: claims("other"), sign: es384Raw(f.ec), wantErr: `client "other" has no registered key with kid "ec1"`},
		{name: "sub differs", header: ecHeader, claims: with(claims("app-ec"), "sub", "app-rsa"), sign: es384Raw(f.ec), wantErr: "sub must equal iss"},
		{name: "no sub", header: ecHeader, claims: with(claims("app-ec"), "sub", nil), sign: es384Raw(f.ec), wantErr: "sub must equal iss"},
		{name: "bad aud", header: ecHeader, claims: with(claims("app-ec"), "aud", "test-bad-aud-value"), sign: es384Raw(f.ec), wantErr: "aud must be the token endpoint"},
		{name: "aud with trailing slash", header: ecHeader, claims: with(claims("app-ec"), "aud", testTokenURL+"/"), sign: es384Raw(f.ec), wantErr: "aud must be the token endpoint"},
		{name: "no aud", header: ecHeader, claims: with(claims("app-ec"), "aud", nil), sign: es384Raw(f.ec), wantErr: "no aud"},
		{name: "no exp", header: ecHeader, claims: with(claims("app-ec"), "exp", nil), sign: es384Raw(f.ec), wantErr: "no exp"},
		{name: "exp too far", header: ecHeader, claims: with(claims("app-ec"), "exp", now.Add(MaxAssertionLifetime+ClockSkew+time.Second).Unix()), sign: es384Raw(f.ec), wantErr: "more than 5 minutes ahead (plus 60 s allowed for clock skew)"},
		{name: "exp 6 min 1 s ahead", header: ecHeader, claims: with(claims("app-ec"), "exp", now.Add(6*time.Minute+time.Second).Unix()), sign: es384Raw(f.ec), wantErr: "more than 5 minutes ahead"},
		{name: "exp 60 s past", header: ecHeader, claims: with(claims("app-ec"), "exp", now.Add(-60*time.Second).Unix()), sign: es384Raw(f.ec), wantErr: "expired"},
		{name: "expired", header: ecHeader, claims: with(claims("app-ec"), "exp", now.Add(-ClockSkew).Unix()), sign: es384Raw(f.ec), wantErr: "expired"},
		{name: "not yet valid", header: ecHeader, claims: with(claims("app-ec"), "nbf", now.Add(2*time.Minute).Unix()), sign: es384Raw(f.ec), wantErr: "nbf"},
		{name: "iat in the future", header: ecHeader, claims: with(claims("app-ec"), "iat", now.Add(2*time.Minute).Unix()), sign: es384Raw(f.ec), wantErr: "iat"},
		{name: "no jti", header: ecHeader, claims: with(claims("app-ec"), "jti", nil), sign: es384Raw(f.ec), wantErr: "no jti"},
		{name: "jti too long", header: ecHeader, claims: with(claims("app-ec"), "jti", strings.Repeat("j", 257)), sign: es384Raw(f.ec), wantErr: "jti is longer"},
		{name: "exp not a number", header: ecHeader, claims: with(claims("app-ec"), "exp", "soon"), sign: es384Raw(f.ec), wantErr: "not a JSON object with valid registered claims"},
		{name: "not a JWS", raw: "invalid test value", wantErr: "not a compact JWS"},
		{name: "empty", raw: "", wantErr: "empty"},
		{name: "too large", raw: strings.Repeat("a", maxAssertionLen+1), wantErr: "too large"},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tok := tc.raw
			if tc.header != nil {
				c := maps.Clone(tc.claims)
				if _, ok := c["jti"]; !ok && tc.wantErr != "no jti" {
					c["jti"] = fmt.Sprintf("jti-%d", i)
				}
				tok = rawJWS(t, tc.header, c, tc.sign)
				if tc.mangle != nil {
					tok = tc.mangle(tok)
				}
			}
			replay, err := OpenReplayFile(tempPath(t, "replay"))
			if err != nil {
				t.Fatal(err)
			}
			defer replay.Close()
			client, err := VerifyAssertion(t.Context(), f.reg, tok, testTokenURL, now, replay, nil)
			if tc.wantErr != "" {
				wantOAuth(t, err, CodeInvalidClient, tc.wantErr)
				if n := replay.len(); n != 0 {
					t.Errorf("replay cache has %d entries after a rejected assertion, want 0", n)
				}
				return
			}
			if err != nil {
				t.Fatalf("VerifyAssertion: %v", err)
			}
			if client.ID != tc.want {
				t.Fatalf("client = %q, want %q", client.ID, tc.want)
			}
		})
	}
}

func TestVerifyAssertionReplay(t *testing.T) {
	f := newAssertionFixture(t)
	now := time.Unix(1_800_000_000, 0)
	path := tempPath(t, "replay")
	replay, err := OpenReplayFile(path)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { replay.Close() }()
	header := map[string]any{"alg": "ES384", "kid": "ec1", "typ": "JWT"}
	claims := map[string]any{"iss": "app-ec", "sub": "app-ec", "aud": testTokenURL, "exp": now.Add(4 * time.Minute).Unix(), "jti": "once"}

	// A forged assertion carrying the jti must not burn it: the replay
	// check runs only after the signature verified.
	forged := rawJWS(t, header, claims, es384Raw(newECKey(t)))
	if _, err := VerifyAssertion(t.Context(), f.reg, forged, testTokenURL, now, replay, nil); err == nil {
		t.Fatal("forged assertion accepted")
	}
	tok := rawJWS(t, header, claims, es384Raw(f.ec))
	if _, err := VerifyAssertion(t.Context(), f.reg, tok, testTokenURL, now, replay, nil); err != nil {
		t.Fatalf("first use: %v", err)
	}
	_, err = VerifyAssertion(t.Context(), f.reg, tok, testTokenURL, now.Add(time.Second), replay, nil)
	wantOAuth(t, err, CodeInvalidClient, "already used")

	// The same jti from another client is a different entry.
	other := rawJWS(t, map[string]any{"alg": "ES384", "kid": "other1"}, map[string]any{"iss": "other", "sub": "other", "aud": testTokenURL, "exp": now.Add(4 * time.Minute).Unix(), "jti": "once"}, es384Raw(f.other))
	if _, err := VerifyAssertion(t.Context(), f.reg, other, testTokenURL, now, replay, nil); err != nil {
		t.Fatalf("same jti, other client: %v", err)
	}

	// Still refused after a restart.
	if err := replay.Close(); err != nil {
		t.Fatal(err)
	}
	replay, err = OpenReplayFile(path)
	if err != nil {
		t.Fatal(err)
	}
	_, err = VerifyAssertion(t.Context(), f.reg, tok, testTokenURL, now.Add(time.Minute), replay, nil)
	wantOAuth(t, err, CodeInvalidClient, "already used")
}

type failingReplay struct{}

func (failingReplay) Seen(string, string, time.Time) (bool, error) {
	return false, errors.New("disk full")
}

func TestVerifyAssertionReplayCacheFailure(t *testing.T) {
	f := newAssertionFixture(t)
	now := time.Unix(1_800_000_000, 0)
	tok := rawJWS(t, map[string]any{"alg": "ES384", "kid": "ec1"},
		map[string]any{"iss": "app-ec", "sub": "app-ec", "aud": testTokenURL, "exp": now.Add(time.Minute).Unix(), "jti": "x"}, es384Raw(f.ec))
	client, err := VerifyAssertion(t.Context(), f.reg, tok, testTokenURL, now, failingReplay{}, nil)
	var oe *OAuthError
	if err == nil || errors.As(err, &oe) || client != nil {
		t.Fatalf("got (%v, %v), want a non-OAuth error and no client (fail closed, server's fault)", client, err)
	}
}

func TestVerifyAssertionDescriptionsLeakNoKeys(t *testing.T) {
	f := newAssertionFixture(t)
	now := time.Unix(1_800_000_000, 0)
	replay, err := OpenReplayFile(tempPath(t, "replay"))
	if err != nil {
		t.Fatal(err)
	}
	defer replay.Close()
	secrets := []string{b64(privateScalar(t, f.ec)), b64(f.ec.X.Bytes()), b64(f.rsa.N.Bytes()[:32])}
	for _, tok := range []string{
		rawJWS(t, map[string]any{"alg": "ES384", "kid": "ec1"}, map[string]any{"iss": "app-ec"}, es384DER(f.ec)),
		rawJWS(t, map[string]any{"alg": "HS384", "kid": "rsa1"}, map[string]any{"iss": "app-rsa"}, hs384(f.rsaPubDER)),
		rawJWS(t, map[string]any{"alg": "RS384", "kid": "rsa1"}, map[string]any{"iss": "app-rsa", "sub": "x"}, rs384(f.rsa)),
	} {
		_, err := VerifyAssertion(t.Context(), f.reg, tok, testTokenURL, now, replay, nil)
		if err == nil {
			t.Fatal("accepted")
		}
		for _, s := range secrets {
			if strings.Contains(err.Error(), s) {
				t.Fatalf("error %q contains key material", err)
			}
		}
	}
}

// TestREADMEStatesAssertionWindow: the README's token-endpoint refusals
// state the exp window VerifyAssertion enforces, clock skew included.
func TestREADMEStatesAssertionWindow(t *testing.T) {
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	readme := strings.Join(strings.Fields(string(b)), " ")
	for _, want := range []string{
		fmt.Sprintf("`exp` %d s or more in the past", int(ClockSkew/time.Second)),
		fmt.Sprintf("`exp` at most %d minutes ahead is allowed, plus %d s of clock skew: %d minutes in all",
			int(MaxAssertionLifetime/time.Minute), int(ClockSkew/time.Second), int((MaxAssertionLifetime+ClockSkew)/time.Minute)),
	} {
		if !strings.Contains(readme, want) {
			t.Errorf("README does not say %q", want)
		}
	}
}
