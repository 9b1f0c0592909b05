package smart

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
)

// TestClientKeyEndToEnd runs the whole flow for both algorithms: keygen,
// registry entry, signed assertion, verification, scopes, access token.
func TestClientKeyEndToEnd(t *testing.T) {
	dir := t.TempDir()
	type client struct{ id, alg string }
	clients := []client{{"ec-client", "ES384"}, {"rsa-client", "RS384"}, {"default-client", ""}}
	private := map[string][]byte{}
	var entries []json.RawMessage
	for _, c := range clients {
		priv, entry, err := GenerateClientKey(c.id, c.alg)
		if err != nil {
			t.Fatalf("GenerateClientKey(%s, %q): %v", c.id, c.alg, err)
		}
		var m map[string]any
		if err := json.Unmarshal(priv, &m); err != nil {
			t.Fatal(err)
		}
		wantAlg := c.alg
		if wantAlg == "" {
			wantAlg = "ES384"
		}
		if m["kid"] == "" || m["alg"] != wantAlg || m["use"] != "sig" || m["d"] == nil {
			t.Fatalf("private JWK %s: want kid, alg %s, use sig and d", priv, wantAlg)
		}
		if strings.Contains(string(entry), `"d"`) {
			t.Fatalf("registry entry contains private material: %s", entry)
		}
		private[c.id] = priv
		entries = append(entries, entry)
	}
	reg := mustJSON(t, map[string]any{"clients": entries})
	path := writeFile(t, filepath.Join(dir, "clients.json"), string(reg))
	registry, err := LoadRegistry(path)
	if err != nil {
		t.Fatalf("LoadRegistry of keygen entries: %v", err)
	}
	signer, err := OpenKeys(filepath.Join(dir, "server-keys"), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	replay, err := OpenReplayFile(filepath.Join(dir, "replay"))
	if err != nil {
		t.Fatal(err)
	}
	defer replay.Close()
	now := time.Now()
	for _, c := range clients {
		t.Run(c.id, func(t *testing.T) {
			assertion, err := SignAssertion(private[c.id], c.id, testTokenURL, now)
			if err != nil {
				t.Fatal(err)
			}
			jws, err := jose.ParseSignedCompact(assertion, assertionAlgs)
			if err != nil {
				t.Fatal(err)
			}
			if h := jws.Signatures[0].Header; h.KeyID == "" || h.ExtraHeaders[jose.HeaderType] != "JWT" {
				t.Fatalf("assertion header = %+v, want kid and typ JWT", h)
			}
			got, err := VerifyAssertion(t.Context(), registry, assertion, testTokenURL, now, replay, nil)
			if err != nil {
				t.Fatalf("VerifyAssertion: %v", err)
			}
			if got.ID != c.id || got.MaxJobs != DefaultMaxJobs {
				t.Fatalf("client = %+v", got)
			}
			// A second assertion has a fresh jti.
			again, err := SignAssertion(private[c.id], c.id, testTokenURL, now)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := VerifyAssertion(t.Context(), registry, again, testTokenURL, now, replay, nil); err != nil {
				t.Fatalf("second assertion: %v", err)
			}
			if _, err := VerifyAssertion(t.Context(), registry, again, testTokenURL, now, replay, nil); err == nil {
				t.Fatal("replayed assertion accepted")
			}
			// Another client's id with this key is refused.
			other := "ec-client"
			if c.id == other {
				other = "rsa-client"
			}
			forged, err := SignAssertion(private[c.id], other, testTokenURL, now)
			if err != nil {
				t.Fatal(err)
			}
			_, err = VerifyAssertion(t.Context(), registry, forged, testTokenURL, now, replay, nil)
			wantOAuth(t, err, CodeInvalidClient, "has no registered key")

			granted, err := GrantScopes("system/Patient.read system/Observation.rs", got.Scopes)
			if err != nil {
				t.Fatal(err)
			}
			scopes, err := ParseScopes(strings.Join(granted, " "))
			if err != nil {
				t.Fatal(err)
			}
			tok, _, err := signer.Issue(got.ID, scopes, 0)
			if err != nil {
				t.Fatal(err)
			}
			claims, err := signer.Verify(tok, now)
			if err != nil {
				t.Fatal(err)
			}
			if claims.ClientID != c.id || !claims.Scopes.Allows("Patient") || claims.Scopes.Allows("Group") {
				t.Fatalf("claims = %+v", claims)
			}
		})
	}
}

func TestGenerateClientKeyErrors(t *testing.T) {
	for _, tc := range []struct{ id, alg, want string }{
		{"ok", "RS256", `alg "RS256"`},
		{"ok", "HS384", `alg "HS384"`},
		{"", "ES384", "missing id"},
		{"a b", "ES384", "character"},
	} {
		if _, _, err := GenerateClientKey(tc.id, tc.alg); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("GenerateClientKey(%q, %q) = %v, want an error containing %q", tc.id, tc.alg, err, tc.want)
		}
	}
}

func TestSignAssertionErrors(t *testing.T) {
	ec := newECKey(t)
	for _, tc := range []struct{ name, jwk, want string }{
		{"public key", jwkJSON(t, &ec.PublicKey, "k"), "want an EC P-384 or RSA private JWK"},
		{"no kid", jwkJSON(t, ec, ""), "no kid"},
		{"garbage", "{", "read private JWK"},
		{"alg mismatch", strings.Replace(jwkJSON(t, ec, "k"), `"kid"`, `"alg":"RS384","kid"`, 1), `key alg "RS384"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := SignAssertion([]byte(tc.jwk), "c", testTokenURL, time.Now()); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want it to contain %q", err, tc.want)
			}
		})
	}
}
