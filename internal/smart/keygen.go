package smart

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

// ClientRSABits is the RSA modulus size GenerateClientKey uses for RS384.
const ClientRSABits = 3072

// GenerateClientKey creates a signing key for client id, for
// `bulkstream client keygen --id ID [--alg ES384|RS384]`. alg is "ES384"
// (P-384; also when empty) or "RS384" (RSA, ClientRSABits bits). The kid is
// the key's RFC 7638 SHA-256 thumbprint.
//
// privateJWK is the private key as a JWK with kid, alg and use "sig": the
// client keeps it secret (write it 0600) and signs its assertions with it
// (SignAssertion). publicEntry is the registry entry to add to the clients
// file: {"id", "jwks": {"keys": [public JWK]}, "scopes": ["system/*.rs"],
// "max_jobs": DefaultMaxJobs}; the operator narrows the scopes as needed.
func GenerateClientKey(id, alg string) (privateJWK []byte, publicEntry []byte, err error) {
	if err := validateClientID(id); err != nil {
		return nil, nil, fmt.Errorf("smart: client keygen: %w", err)
	}
	var key crypto.Signer
	switch alg {
	case "", string(jose.ES384):
		alg = string(jose.ES384)
		key, err = ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	case string(jose.RS384):
		key, err = rsa.GenerateKey(rand.Reader, ClientRSABits)
	default:
		return nil, nil, fmt.Errorf("smart: client keygen: alg %q: want ES384 or RS384", alg)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("smart: client keygen: %w", err)
	}
	jwk := jose.JSONWebKey{Key: key, Algorithm: alg, Use: "sig"}
	tp, err := jwk.Thumbprint(crypto.SHA256)
	if err != nil {
		return nil, nil, fmt.Errorf("smart: client keygen: %w", err)
	}
	jwk.KeyID = base64.RawURLEncoding.EncodeToString(tp)
	privateJWK, err = json.MarshalIndent(jwk, "", "  ")
	if err != nil {
		return nil, nil, fmt.Errorf("smart: client keygen: %w", err)
	}
	pub := jwk.Public()
	entry := struct {
		ID      string             `json:"id"`
		JWKS    jose.JSONWebKeySet `json:"jwks"`
		Scopes  []string           `json:"scopes"`
		MaxJobs int                `json:"max_jobs"`
	}{id, jose.JSONWebKeySet{Keys: []jose.JSONWebKey{pub}}, []string{"system/*.rs"}, DefaultMaxJobs}
	publicEntry, err = json.MarshalIndent(entry, "", "  ")
	if err != nil {
		return nil, nil, fmt.Errorf("smart: client keygen: %w", err)
	}
	return privateJWK, publicEntry, nil
}

// SignAssertion builds a client assertion for the token request (the client
// side of VerifyAssertion): a JWT signed with privateJWK (alg from the key:
// its "alg" member, else ES384 for EC P-384 and RS384 for RSA), header typ
// JWT and the key's kid, claims iss = sub = clientID, aud = tokenURL,
// iat = now, exp = now + MaxAssertionLifetime and a random jti.
func SignAssertion(privateJWK []byte, clientID, tokenURL string, now time.Time) (string, error) {
	var jwk jose.JSONWebKey
	if err := jwk.UnmarshalJSON(privateJWK); err != nil {
		return "", fmt.Errorf("smart: sign assertion: read private JWK: %w", err)
	}
	if jwk.KeyID == "" {
		return "", errors.New("smart: sign assertion: private JWK has no kid")
	}
	var alg jose.SignatureAlgorithm
	switch k := jwk.Key.(type) {
	case *ecdsa.PrivateKey:
		if k.Curve != elliptic.P384() {
			return "", errors.New("smart: sign assertion: EC key must be P-384 (ES384)")
		}
		alg = jose.ES384
	case *rsa.PrivateKey:
		alg = jose.RS384
	default:
		return "", errors.New("smart: sign assertion: want an EC P-384 or RSA private JWK")
	}
	if jwk.Algorithm != "" && jwk.Algorithm != string(alg) {
		return "", fmt.Errorf("smart: sign assertion: key alg %q: want %s", jwk.Algorithm, alg)
	}
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: alg, Key: jwk}, (&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		return "", fmt.Errorf("smart: sign assertion: %w", err)
	}
	jti, err := randomID()
	if err != nil {
		return "", err
	}
	tok, err := jwt.Signed(signer).Claims(jwt.Claims{
		Issuer:   clientID,
		Subject:  clientID,
		Audience: jwt.Audience{tokenURL},
		IssuedAt: jwt.NewNumericDate(now),
		Expiry:   jwt.NewNumericDate(now.Add(MaxAssertionLifetime)),
		ID:       jti,
	}).Serialize()
	if err != nil {
		return "", fmt.Errorf("smart: sign assertion: %w", err)
	}
	return tok, nil
}
