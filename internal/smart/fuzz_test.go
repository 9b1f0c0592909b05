package smart

import (
	"errors"
	"fmt"
	"path/filepath"
	"testing"
	"time"
)

// FuzzVerifyAssertion feeds arbitrary assertions to VerifyAssertion: it must
// not panic, and every rejection must be an invalid_client *OAuthError.
// Only re-encodings of the seeded genuine assertion can pass (base64
// decoding tolerates line breaks and non-canonical trailing bits), so an
// accepted input must at least resolve to the seeded client.
func FuzzVerifyAssertion(f *testing.F) {
	ec := newECKey(f)
	dir := f.TempDir()
	path := writeFile(f, filepath.Join(dir, "clients.json"),
		fmt.Sprintf(`{"clients":[{"id":"app","jwks":{"keys":[%s]},"scopes":["system/*.rs"]}]}`, jwkJSON(f, &ec.PublicKey, "k1")))
	reg, err := LoadRegistry(path)
	if err != nil {
		f.Fatal(err)
	}
	now := time.Unix(1_800_000_000, 0)
	header := map[string]any{"alg": "ES384", "kid": "k1", "typ": "JWT"}
	claims := map[string]any{"iss": "app", "sub": "app", "aud": testTokenURL, "exp": now.Add(time.Minute).Unix(), "jti": "seed"}
	genuine := rawJWS(f, header, claims, es384Raw(ec))
	for _, s := range []string{
		genuine,
		rawJWS(f, map[string]any{"alg": "none", "kid": "k1"}, claims, noSig),
		rawJWS(f, map[string]any{"alg": "HS384", "kid": "k1"}, claims, hs384([]byte("k"))),
		rawJWS(f, header, claims, es384DER(ec)),
		rawJWS(f, map[string]any{"alg": "ES384", "kid": "k1", "jku": "x", "crit": []string{"b64"}, "b64": false}, claims, es384Raw(ec)),
		"", ".", "..", "a.b.c", "e30.e30.", `{"payload":"e30","signatures":[]}`,
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, assertion string) {
		c, err := VerifyAssertion(t.Context(), reg, assertion, testTokenURL, now, memReplay{}, nil)
		if err == nil {
			if c == nil || c.ID != "app" {
				t.Fatalf("accepted %q", assertion)
			}
			return
		}
		var oe *OAuthError
		if !errors.As(err, &oe) || oe.Code != CodeInvalidClient || c != nil {
			t.Fatalf("err = %v (client %v), want invalid_client", err, c)
		}
	})
}

// memReplay never remembers anything, so the fuzzer can replay the genuine
// seed.
type memReplay struct{}

func (memReplay) Seen(string, string, time.Time) (bool, error) { return false, nil }
