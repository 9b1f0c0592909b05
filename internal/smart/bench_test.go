package smart

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha512"
	"fmt"
	"path/filepath"
	"testing"
	"time"
)

// The token endpoint costs one assertion verification, one replay-file
// insert (an fsync) and one Issue; every protected request costs one
// access-token Verify. Each is measured next to its limit, the bare
// signature operation of crypto/ecdsa or crypto/rsa (BenchmarkRaw*).

// benchRegistry registers one client with a fresh alg key and returns the
// registry and the client's private JWK.
func benchRegistry(b *testing.B, alg string) (*Registry, []byte) {
	b.Helper()
	priv, entry, err := GenerateClientKey("bench", alg)
	if err != nil {
		b.Fatal(err)
	}
	path := writeFile(b, filepath.Join(b.TempDir(), "clients.json"), `{"clients":[`+string(entry)+`]}`)
	reg, err := LoadRegistry(path)
	if err != nil {
		b.Fatal(err)
	}
	return reg, priv
}

// neverSeen is a ReplayCache that remembers nothing, so one assertion can
// be verified b.N times: BenchmarkReplayFile measures the cache itself.
type neverSeen struct{}

func (neverSeen) Seen(string, string, time.Time) (bool, error) { return false, nil }

func BenchmarkVerifyAssertion(b *testing.B) {
	for _, alg := range []string{"ES384", "RS384"} {
		b.Run(alg, func(b *testing.B) {
			reg, priv := benchRegistry(b, alg)
			now := time.Now()
			a, err := SignAssertion(priv, "bench", testTokenURL, now)
			if err != nil {
				b.Fatal(err)
			}
			for b.Loop() {
				if _, err := VerifyAssertion(b.Context(), reg, a, testTokenURL, now, neverSeen{}, nil); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "verifications/s")
		})
	}
}

func BenchmarkSignAssertion(b *testing.B) {
	for _, alg := range []string{"ES384", "RS384"} {
		b.Run(alg, func(b *testing.B) {
			_, priv := benchRegistry(b, alg)
			now := time.Now()
			for b.Loop() {
				if _, err := SignAssertion(priv, "bench", testTokenURL, now); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "signatures/s")
		})
	}
}

// BenchmarkReplayFile is one fresh jti per op: an append and an fsync.
func BenchmarkReplayFile(b *testing.B) {
	rf, err := OpenReplayFile(filepath.Join(b.TempDir(), "replay.jsonl"))
	if err != nil {
		b.Fatal(err)
	}
	defer rf.Close()
	exp := time.Now().Add(time.Hour)
	i := 0
	for b.Loop() {
		i++
		seen, err := rf.Seen("bench", fmt.Sprint("jti-", i), exp)
		if err != nil || seen {
			b.Fatal(seen, err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "inserts/s")
}

func benchSigner(b *testing.B) (*Signer, Scopes) {
	b.Helper()
	s, err := OpenKeys(b.TempDir(), nil, nil)
	if err != nil {
		b.Fatal(err)
	}
	sc, err := ParseScopes("system/*.rs")
	if err != nil {
		b.Fatal(err)
	}
	return s, sc
}

func BenchmarkIssue(b *testing.B) {
	s, sc := benchSigner(b)
	for b.Loop() {
		if _, _, err := s.Issue("bench", sc, 0); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "tokens/s")
}

// BenchmarkVerifyAccessToken is the check every protected request pays:
// "first" is a token's first request (ES384 verification), "cached" every
// later one (the signature is remembered; only the time checks run).
func BenchmarkVerifyAccessToken(b *testing.B) {
	for _, cached := range []bool{false, true} {
		name := "first"
		if cached {
			name = "cached"
		}
		b.Run(name, func(b *testing.B) {
			s, sc := benchSigner(b)
			tok, _, err := s.Issue("bench", sc, 0)
			if err != nil {
				b.Fatal(err)
			}
			now := time.Now()
			for b.Loop() {
				if !cached {
					s.vmu.Lock()
					clear(s.verified)
					s.vmu.Unlock()
				}
				if _, err := s.Verify(tok, now); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "verifications/s")
		})
	}
}

// The limits: the signature operations alone, on a SHA-384 digest.

func BenchmarkRawECDSAP384Sign(b *testing.B) {
	k := newECKey(b)
	h := sha512.Sum384([]byte("header.payload"))
	for b.Loop() {
		if _, _, err := ecdsa.Sign(rand.Reader, k, h[:]); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "signatures/s")
}

func BenchmarkRawECDSAP384Verify(b *testing.B) {
	k := newECKey(b)
	h := sha512.Sum384([]byte("header.payload"))
	r, s, err := ecdsa.Sign(rand.Reader, k, h[:])
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if !ecdsa.Verify(&k.PublicKey, h[:], r, s) {
			b.Fatal("bad signature")
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "verifications/s")
}

func BenchmarkRawRSA3072Verify(b *testing.B) {
	k := newRSAKey(b, ClientRSABits)
	h := sha512.Sum384([]byte("header.payload"))
	sig, err := rsa.SignPKCS1v15(rand.Reader, k, crypto.SHA384, h[:])
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if err := rsa.VerifyPKCS1v15(&k.PublicKey, crypto.SHA384, h[:], sig); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "verifications/s")
}
