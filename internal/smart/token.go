package smart

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

// Access token defaults and limits.
const (
	// DefaultTokenLifetime is the access token lifetime: SMART Backend
	// Services recommends 300 s and says it SHOULD NOT exceed that
	// (https://hl7.org/fhir/smart-app-launch/backend-services.html).
	DefaultTokenLifetime = 5 * time.Minute
	// MaxTokenLifetime bounds SignerOptions.Lifetime.
	MaxTokenLifetime = time.Hour
	// DefaultIssuer is the access token iss when SignerOptions.Issuer is
	// empty.
	DefaultIssuer = "bulkstream"
	// TokenLeeway is the clock tolerance when verifying our own access
	// tokens: the signer and the verifier are the same process or fleet.
	TokenLeeway = 5 * time.Second

	accessTokenType = "at+jwt" // RFC 9068
	maxTokenLen     = 8 << 10
	keyFileExt      = ".jwk"
	kidTimeLayout   = "20060102T150405Z"
)

// kidPattern is the server key id: its creation time (UTC, to the second)
// and 8 random hex digits. Key files are named <kid>.jwk.
var kidPattern = regexp.MustCompile(`^[0-9]{8}T[0-9]{6}Z-[0-9a-f]{8}$`)

// SignerOptions configures a Signer. A nil *SignerOptions is valid.
type SignerOptions struct {
	// Issuer is the iss of issued tokens, checked by Verify. Default
	// DefaultIssuer; the HTTP wiring should pass the server's public base
	// URL.
	Issuer string
	// Lifetime is the default and maximum access token lifetime. Default
	// DefaultTokenLifetime; at most MaxTokenLifetime.
	Lifetime time.Duration
}

func (o *SignerOptions) ensureDefaults() {
	if o.Issuer == "" {
		o.Issuer = DefaultIssuer
	}
	if o.Lifetime == 0 {
		o.Lifetime = DefaultTokenLifetime
	}
}

func (o *SignerOptions) validate() error {
	if o.Lifetime < time.Second || o.Lifetime > MaxTokenLifetime {
		return fmt.Errorf("smart: token lifetime %s: want 1s to %s", o.Lifetime, MaxTokenLifetime)
	}
	return nil
}

// Signer issues and verifies access tokens with server keys kept in a
// directory. It is safe for concurrent use.
//
// Keys are ES384 (P-384) private JWKs in <dir>/<kid>.jwk, mode 0600; kids
// sort by creation time. The newest key signs; every key in the directory
// verifies. Rotate adds a newer key and deletes the keys whose tokens have
// all expired (see Rotate).
type Signer struct {
	dir      string
	now      func() time.Time
	issuer   string
	lifetime time.Duration

	mu   sync.RWMutex
	keys []*serverKey // oldest first; the last one signs

	// verified remembers the claims of access tokens whose signature
	// already checked out, by SHA-256 of the token, so that a client
	// polling status or downloading many files pays the ES384
	// verification (about 0.5 ms) once per token, not once per request.
	// Time checks still run on every call. Bounded by maxVerified.
	vmu      sync.Mutex
	verified map[[sha256.Size]byte]verifiedToken
}

// verifiedToken is an entry of Signer.verified: the claims and the key
// that signed them, which must still be loaded for a hit to count.
type verifiedToken struct {
	claims AccessClaims
	kid    string
}

// maxVerified bounds Signer.verified; at the bound, expired entries are
// dropped, and if none were, the whole cache.
const maxVerified = 4096

type serverKey struct {
	kid     string
	created time.Time
	priv    *ecdsa.PrivateKey
	signer  jose.Signer
}

// AccessClaims are the verified contents of an access token.
type AccessClaims struct {
	Issuer   string
	ClientID string // sub
	Scopes   Scopes
	IssuedAt time.Time
	Expiry   time.Time
	ID       string // jti
}

type accessClaims struct {
	Iss      string           `json:"iss"`
	Sub      string           `json:"sub"`
	ClientID string           `json:"client_id"`
	Scope    string           `json:"scope"`
	Exp      *jwt.NumericDate `json:"exp"`
	Iat      *jwt.NumericDate `json:"iat"`
	Jti      string           `json:"jti"`
}

// OpenKeys opens the server key directory dir (created 0700 if missing)
// and loads every <kid>.jwk in it; when there is none it creates the first
// key. now is the clock (nil means time.Now); opts may be nil.
//
// Loading fails closed: a .jwk file with a bad name, a key that is not a
// private ES384 P-384 JWK, a kid that does not match the file name, or a
// file readable by group or others is an error.
func OpenKeys(dir string, now func() time.Time, opts *SignerOptions) (*Signer, error) {
	var o SignerOptions
	if opts != nil {
		o = *opts
	}
	o.ensureDefaults()
	if err := o.validate(); err != nil {
		return nil, err
	}
	if now == nil {
		now = time.Now
	}
	if dir == "" {
		return nil, errors.New("smart: key directory required")
	}
	s := &Signer{dir: dir, now: now, issuer: o.Issuer, lifetime: o.Lifetime}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("smart: key directory: %w", err)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("smart: key directory: %w", err)
	}
	for _, e := range entries {
		name := e.Name()
		if !strings.HasSuffix(name, keyFileExt) || strings.HasPrefix(name, ".") || e.IsDir() {
			continue
		}
		k, err := loadServerKey(filepath.Join(dir, name))
		if err != nil {
			return nil, err
		}
		s.keys = append(s.keys, k)
	}
	slices.SortFunc(s.keys, func(a, b *serverKey) int { return strings.Compare(a.kid, b.kid) })
	if len(s.keys) == 0 {
		if _, err := s.addKey(); err != nil {
			return nil, err
		}
	}
	return s, nil
}

func loadServerKey(path string) (*serverKey, error) {
	kid := strings.TrimSuffix(filepath.Base(path), keyFileExt)
	if !kidPattern.MatchString(kid) {
		return nil, fmt.Errorf("smart: server key %s: file name is not <kid>.jwk (kid like 20060102T150405Z-0a1b2c3d)", path)
	}
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("smart: server key: %w", err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("smart: server key %s has mode %04o: want 0600 (chmod 600)", path, fi.Mode().Perm())
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("smart: server key: %w", err)
	}
	var jwk jose.JSONWebKey
	if err := jwk.UnmarshalJSON(data); err != nil {
		return nil, fmt.Errorf("smart: server key %s: not a JWK", path)
	}
	priv, ok := jwk.Key.(*ecdsa.PrivateKey)
	if !ok || priv.Curve != elliptic.P384() || !jwk.Valid() {
		return nil, fmt.Errorf("smart: server key %s: want an EC P-384 private key", path)
	}
	if jwk.KeyID != kid || (jwk.Algorithm != "" && jwk.Algorithm != string(jose.ES384)) {
		return nil, fmt.Errorf("smart: server key %s: kid or alg does not match (want kid %q, alg ES384)", path, kid)
	}
	created, _ := time.Parse(kidTimeLayout, kid[:len(kidTimeLayout)])
	return newServerKey(kid, created, priv)
}

func newServerKey(kid string, created time.Time, priv *ecdsa.PrivateKey) (*serverKey, error) {
	signer, err := jose.NewSigner(
		jose.SigningKey{Algorithm: jose.ES384, Key: jose.JSONWebKey{Key: priv, KeyID: kid, Algorithm: string(jose.ES384), Use: "sig"}},
		(&jose.SignerOptions{}).WithType(accessTokenType),
	)
	if err != nil {
		return nil, fmt.Errorf("smart: server key %s: %w", kid, err)
	}
	return &serverKey{kid: kid, created: created, priv: priv, signer: signer}, nil
}

// addKey creates, writes and appends a new signing key; s.mu must be held
// for writing (or s not yet shared).
func (s *Signer) addKey() (*serverKey, error) {
	created := s.now().UTC().Truncate(time.Second)
	if n := len(s.keys); n > 0 && !created.After(s.keys[n-1].created) {
		created = s.keys[n-1].created.Add(time.Second) // kids stay ordered
	}
	var rnd [4]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		return nil, err
	}
	kid := created.Format(kidTimeLayout) + "-" + hex.EncodeToString(rnd[:])
	priv, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("smart: generate server key: %w", err)
	}
	data, err := json.Marshal(jose.JSONWebKey{Key: priv, KeyID: kid, Algorithm: string(jose.ES384), Use: "sig"})
	if err != nil {
		return nil, fmt.Errorf("smart: encode server key: %w", err)
	}
	if err := writeFileAtomic(filepath.Join(s.dir, kid+keyFileExt), data, 0o600); err != nil {
		return nil, fmt.Errorf("smart: write server key: %w", err)
	}
	k, err := newServerKey(kid, created, priv)
	if err != nil {
		return nil, err
	}
	s.keys = append(s.keys, k)
	return k, nil
}

// Rotate makes a new key the signing key and deletes the keys that can no
// longer have a valid token: a key stops signing when its successor is
// created, so every token it signed has expired Lifetime (+ TokenLeeway)
// after that; from then on the key is removed from memory and disk. With
// rotation every R, at most about ceil(Lifetime/R)+1 keys exist. Call it on
// a schedule or on an operator signal; verification keeps working
// throughout.
func (s *Signer) Rotate() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, err := s.addKey(); err != nil {
		return err
	}
	now := s.now()
	var errs []error
	keep := s.keys[:0:0]
	for i, k := range s.keys {
		if i < len(s.keys)-1 && !now.Before(s.keys[i+1].created.Add(s.lifetime+TokenLeeway)) {
			if err := os.Remove(filepath.Join(s.dir, k.kid+keyFileExt)); err != nil && !errors.Is(err, os.ErrNotExist) {
				errs = append(errs, fmt.Errorf("smart: delete retired server key: %w", err))
			}
			continue
		}
		keep = append(keep, k)
	}
	s.keys = keep
	return errors.Join(errs...)
}

// KeyIDs returns the kids of the loaded keys, oldest first; the last one
// signs.
func (s *Signer) KeyIDs() []string {
	s.mu.RLock()
	defer s.mu.RUnlock()
	ids := make([]string, len(s.keys))
	for i, k := range s.keys {
		ids[i] = k.kid
	}
	return ids
}

// SigningKeyCreated returns when the current signing key was created, so
// a rotation schedule can survive restarts.
func (s *Signer) SigningKeyCreated() time.Time {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.keys[len(s.keys)-1].created
}

// Lifetime returns the default and maximum token lifetime.
func (s *Signer) Lifetime() time.Duration { return s.lifetime }

// Issuer returns the iss of issued tokens.
func (s *Signer) Issuer() string { return s.issuer }

// Issue signs an access token for clientID with the granted scopes. ttl ≤ 0
// means Lifetime; a ttl above Lifetime is an error (key retirement relies on
// that bound). It returns the compact JWS (ES384, typ at+jwt, the signing
// kid) with claims iss, sub and client_id (the client id), scope, iat, exp
// and a random jti, and the expiry (whole seconds, as in the token).
func (s *Signer) Issue(clientID string, scopes Scopes, ttl time.Duration) (token string, exp time.Time, err error) {
	if validateClientID(clientID) != nil {
		return "", time.Time{}, fmt.Errorf("smart: issue token: bad client id %q", clientID)
	}
	if scopes.String() == "" {
		return "", time.Time{}, errors.New("smart: issue token: no scopes")
	}
	if ttl <= 0 {
		ttl = s.lifetime
	}
	if ttl > s.lifetime {
		return "", time.Time{}, fmt.Errorf("smart: issue token: ttl %s exceeds the lifetime %s", ttl, s.lifetime)
	}
	jti, err := randomID()
	if err != nil {
		return "", time.Time{}, err
	}
	now := s.now()
	exp = time.Unix(now.Add(ttl).Unix(), 0)
	s.mu.RLock()
	var k *serverKey
	if n := len(s.keys); n > 0 {
		k = s.keys[n-1]
	}
	s.mu.RUnlock()
	if k == nil {
		return "", time.Time{}, ErrNoKeys
	}
	token, err = jwt.Signed(k.signer).Claims(accessClaims{
		Iss:      s.issuer,
		Sub:      clientID,
		ClientID: clientID,
		Scope:    scopes.String(),
		Iat:      jwt.NewNumericDate(now),
		Exp:      jwt.NewNumericDate(exp),
		Jti:      jti,
	}).Serialize()
	if err != nil {
		return "", time.Time{}, fmt.Errorf("smart: sign access token: %w", err)
	}
	return token, exp, nil
}

// Verify checks an access token and returns its claims: compact JWS, alg
// ES384, typ at+jwt, kid of a loaded server key, valid signature, iss =
// Issuer, sub present, iat not after now + TokenLeeway, exp present and
// after now − TokenLeeway, scope well formed. Every rejection is an
// *OAuthError with Code "invalid_token" (RFC 6750), for a 401 with
// WWW-Authenticate: Bearer error="invalid_token".
func (s *Signer) Verify(token string, now time.Time) (*AccessClaims, error) {
	if token == "" {
		return nil, invalidToken("no access token")
	}
	sum := sha256.Sum256([]byte(token))
	s.vmu.Lock()
	v, ok := s.verified[sum]
	s.vmu.Unlock()
	if ok && !s.hasKey(v.kid) { // retired since: verify afresh (and fail)
		ok = false
	}
	if !ok {
		claims, kid, err := s.verifySigned(token)
		if err != nil {
			return nil, err
		}
		v = verifiedToken{*claims, kid}
		s.remember(sum, v, now)
	}
	c := v.claims
	switch {
	case !now.Before(c.Expiry.Add(TokenLeeway)):
		return nil, invalidToken("access token has expired")
	case c.IssuedAt.After(now.Add(TokenLeeway)):
		return nil, invalidToken("access token is not valid yet")
	}
	return &c, nil
}

func (s *Signer) hasKey(kid string) bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	for _, k := range s.keys {
		if k.kid == kid {
			return true
		}
	}
	return false
}

func (s *Signer) remember(sum [sha256.Size]byte, v verifiedToken, now time.Time) {
	s.vmu.Lock()
	defer s.vmu.Unlock()
	if s.verified == nil {
		s.verified = make(map[[sha256.Size]byte]verifiedToken)
	}
	if len(s.verified) >= maxVerified {
		for k, e := range s.verified {
			if !now.Before(e.claims.Expiry.Add(TokenLeeway)) {
				delete(s.verified, k)
			}
		}
		if len(s.verified) >= maxVerified {
			clear(s.verified)
		}
	}
	s.verified[sum] = v
}

// verifySigned does every check of Verify but the time ones.
func (s *Signer) verifySigned(token string) (*AccessClaims, string, error) {
	if token == "" {
		return nil, "", invalidToken("no access token")
	}
	if len(token) > maxTokenLen {
		return nil, "", invalidToken("access token is too large")
	}
	jws, err := jose.ParseSignedCompact(token, []jose.SignatureAlgorithm{jose.ES384})
	if err != nil {
		return nil, "", invalidToken("malformed access token")
	}
	if len(jws.Signatures) != 1 {
		return nil, "", invalidToken("malformed access token")
	}
	h := jws.Signatures[0].Header
	if typ, _ := h.ExtraHeaders[jose.HeaderType].(string); typ != accessTokenType {
		return nil, "", invalidToken("not an access token (typ)")
	}
	s.mu.RLock()
	var key *serverKey
	for _, k := range s.keys {
		if k.kid == h.KeyID {
			key = k
			break
		}
	}
	s.mu.RUnlock()
	if key == nil {
		return nil, "", invalidToken("access token signed by an unknown key")
	}
	payload, err := jws.Verify(&key.priv.PublicKey)
	if err != nil {
		return nil, "", invalidToken("access token signature does not verify")
	}
	var c accessClaims
	if err := json.Unmarshal(payload, &c); err != nil {
		return nil, "", invalidToken("malformed access token claims")
	}
	switch {
	case c.Iss != s.issuer:
		return nil, "", invalidToken("access token issuer is not this server")
	case c.Sub == "":
		return nil, "", invalidToken("access token has no sub")
	case c.Exp == nil || c.Iat == nil:
		return nil, "", invalidToken("access token has no exp or iat")
	}
	scopes, err := ParseScopes(c.Scope)
	if err != nil || scopes.String() == "" {
		return nil, "", invalidToken("access token scope is malformed")
	}
	return &AccessClaims{
		Issuer:   c.Iss,
		ClientID: c.Sub,
		Scopes:   scopes,
		IssuedAt: c.Iat.Time(),
		Expiry:   c.Exp.Time(),
		ID:       c.Jti,
	}, key.kid, nil
}

// randomID returns 128 random bits, base64url encoded.
func randomID() (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("smart: random: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(b[:]), nil
}
