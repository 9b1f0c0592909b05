package smart

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/base64"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/go-jose/go-jose/v4"
)

const testTokenURL = "https://bulk.example.org/auth/token"

func newECKey(tb testing.TB) *ecdsa.PrivateKey {
	tb.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	return k
}

func newRSAKey(tb testing.TB, bits int) *rsa.PrivateKey {
	tb.Helper()
	k, err := rsa.GenerateKey(rand.Reader, bits)
	if err != nil {
		tb.Fatal(err)
	}
	return k
}

// jwkJSON marshals key (public or private) as a JWK with kid.
func jwkJSON(tb testing.TB, key any, kid string) string {
	tb.Helper()
	b, err := json.Marshal(jose.JSONWebKey{Key: key, KeyID: kid})
	if err != nil {
		tb.Fatal(err)
	}
	return string(b)
}

func writeFile(tb testing.TB, path, content string) string {
	tb.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		tb.Fatal(err)
	}
	return path
}

// b64 is base64url without padding.
func b64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

// privateScalar is k's private scalar in its fixed-length encoding, as a
// JWK "d" holds it.
func privateScalar(tb testing.TB, k *ecdsa.PrivateKey) []byte {
	tb.Helper()
	d, err := k.Bytes()
	if err != nil {
		tb.Fatal(err)
	}
	return d
}

func mustJSON(tb testing.TB, v any) []byte {
	tb.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

// signFunc signs a JWS signing input (header.payload).
type signFunc func(tb testing.TB, input []byte) []byte

// rawJWS builds a compact JWS by hand, so that tests can produce what no
// well-behaved library would.
func rawJWS(tb testing.TB, header, claims map[string]any, sign signFunc) string {
	tb.Helper()
	input := b64(mustJSON(tb, header)) + "." + b64(mustJSON(tb, claims))
	return input + "." + b64(sign(tb, []byte(input)))
}

func es384Raw(k *ecdsa.PrivateKey) signFunc {
	return func(tb testing.TB, input []byte) []byte {
		h := sha512.Sum384(input)
		r, s, err := ecdsa.Sign(rand.Reader, k, h[:])
		if err != nil {
			tb.Fatal(err)
		}
		out := make([]byte, 96)
		r.FillBytes(out[:48])
		s.FillBytes(out[48:])
		return out
	}
}

func es384DER(k *ecdsa.PrivateKey) signFunc {
	return func(tb testing.TB, input []byte) []byte {
		h := sha512.Sum384(input)
		sig, err := ecdsa.SignASN1(rand.Reader, k, h[:])
		if err != nil {
			tb.Fatal(err)
		}
		return sig
	}
}

func rs384(k *rsa.PrivateKey) signFunc {
	return func(tb testing.TB, input []byte) []byte {
		h := sha512.Sum384(input)
		sig, err := rsa.SignPKCS1v15(rand.Reader, k, crypto.SHA384, h[:])
		if err != nil {
			tb.Fatal(err)
		}
		return sig
	}
}

func rs256(k *rsa.PrivateKey) signFunc {
	return func(tb testing.TB, input []byte) []byte {
		h := sha256.Sum256(input)
		sig, err := rsa.SignPKCS1v15(rand.Reader, k, crypto.SHA256, h[:])
		if err != nil {
			tb.Fatal(err)
		}
		return sig
	}
}

func hs384(secret []byte) signFunc {
	return func(tb testing.TB, input []byte) []byte {
		m := hmac.New(sha512.New384, secret)
		m.Write(input)
		return m.Sum(nil)
	}
}

func noSig(testing.TB, []byte) []byte { return nil }

// wantOAuth fails unless err is an *OAuthError with code whose description
// contains desc.
func wantOAuth(tb testing.TB, err error, code, desc string) {
	tb.Helper()
	var oe *OAuthError
	if !errors.As(err, &oe) {
		tb.Fatalf("err = %v (%T), want *OAuthError %s", err, err, code)
	}
	if oe.Code != code {
		tb.Fatalf("code = %q (%s), want %q", oe.Code, oe.Description, code)
	}
	if !strings.Contains(oe.Description, desc) {
		tb.Fatalf("description = %q, want it to contain %q", oe.Description, desc)
	}
}

func tempPath(tb testing.TB, name string) string {
	tb.Helper()
	return filepath.Join(tb.TempDir(), name)
}

func mkdirAll(dir string) error { return os.MkdirAll(dir, 0o700) }
