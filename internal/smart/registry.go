package smart

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/go-jose/go-jose/v4"
)

// Registry limits.
const (
	// DefaultMaxJobs is a client's concurrent export quota when its entry
	// has no max_jobs.
	DefaultMaxJobs = 2
	// MinRSABits is the smallest RSA modulus accepted in a client JWKS.
	MinRSABits = 2048

	maxClientIDLen    = 128
	maxRegistryBytes  = 16 << 20
	maxKeysPerClient  = 32
	maxScopesInClient = maxScopeTokens
)

// privateMembers are the JWK members that carry secret key material
// (RFC 7518 section 6: "d" for EC and RSA, the RSA CRT values, "k" for
// symmetric keys, "priv" for ML-DSA). A registry holds public keys only.
var privateMembers = [...]string{"d", "p", "q", "dp", "dq", "qi", "oth", "k", "priv"}

// Client is one registered backend-services client.
type Client struct {
	// ID is the client_id: the iss and sub of its assertions.
	ID string
	// Scopes are the scopes the client may be granted (GrantScopes'
	// allowed list), as written in the registry.
	Scopes []string
	// MaxJobs is the client's concurrent export quota (DefaultMaxJobs when
	// the entry leaves it out).
	MaxJobs int
	// MaxFinished caps the client's own finished exports kept for
	// download (export.Kickoff.MaxFinished): 0, also when the entry leaves
	// max_finished_exports out, means the server's default; -1 means no
	// per-client cap (the server-wide cap still applies).
	MaxFinished int
	// JWKSURL is the client's registered jwks_url, "" when its keys are
	// registered inline (jwks) or by file (jwks_file). The keys behind it
	// are fetched by a JWKSCache when an assertion is verified.
	JWKSURL string

	keys []jose.JSONWebKey // inline or file keys: public RSA (≥ MinRSABits) or EC P-384; nil with JWKSURL
	read Scopes            // the resource types Scopes let it export
}

// ReadScopes is what the client's registered scopes let it export now:
// every request's access is its token's scopes intersected with these
// (Scopes.Intersect), so narrowing a client in the registry and reloading
// narrows its unexpired tokens too.
func (c *Client) ReadScopes() Scopes { return c.read }

// KeyIDs returns the kids of the client's inline or file keys, in file
// order; nil for a client registered by jwks_url (its keys are fetched).
func (c *Client) KeyIDs() []string {
	if c.keys == nil {
		return nil
	}
	ids := make([]string, len(c.keys))
	for i, k := range c.keys {
		ids[i] = k.KeyID
	}
	return ids
}

// Registry is an immutable set of clients loaded from a registry file.
type Registry struct {
	path    string
	clients map[string]*Client
	ids     []string
}

// Client returns the client registered under id.
func (r *Registry) Client(id string) (*Client, bool) {
	c, ok := r.clients[id]
	return c, ok
}

// IDs returns the registered client ids in file order.
func (r *Registry) IDs() []string { return append([]string(nil), r.ids...) }

// Len returns the number of registered clients.
func (r *Registry) Len() int { return len(r.clients) }

// registryFile is the on-disk format.
type registryFile struct {
	Clients []clientEntry `json:"clients"`
}

type clientEntry struct {
	ID       string          `json:"id"`
	JWKS     json.RawMessage `json:"jwks,omitempty"`
	JWKSFile string          `json:"jwks_file,omitempty"`
	JWKSURL  string          `json:"jwks_url,omitempty"`
	Scopes   []string        `json:"scopes"`
	MaxJobs  *int            `json:"max_jobs,omitempty"`
	// MaxFinished is max_finished_exports: see Client.MaxFinished.
	MaxFinished *int `json:"max_finished_exports,omitempty"`
}

type rawJWKS struct {
	Keys []json.RawMessage `json:"keys"`
}

// LoadRegistry reads and validates a client registry file:
//
//	{"clients": [{"id": "app1", "jwks": {"keys": [...]}, "scopes": ["system/*.rs"], "max_jobs": 2},
//	             {"id": "app2", "jwks_file": "app2.jwks.json", "scopes": ["system/Patient.read"]},
//	             {"id": "app3", "jwks_url": "https://app3.example/.well-known/jwks.json", "scopes": ["system/*.rs"]}]}
//
// Each client has a unique id of 1 to 128 characters from [A-Za-z0-9._~-]
// (not starting with '.'), exactly one key source, and at least one scope.
// max_jobs (at least 1) defaults to DefaultMaxJobs; max_finished_exports
// (see Client.MaxFinished) to 0, the server's default.
// The key source is jwks (inline JWK Set), jwks_file (a JWK Set file,
// relative to the registry file's directory) or jwks_url (a JWK
// Set the client publishes, fetched when it authenticates; see
// JWKSCache). A jwks_url is an absolute https URL of at most 2 KiB
// without userinfo or fragment; plain http is accepted only for a loopback
// host (localhost, 127.0.0.0/8, ::1), for tests and local development.
// Inline and file sets need at least one key. Every key has kid (unique
// within the client) and kty; only public RSA keys of at least MinRSABits
// bits and public EC P-384 keys are accepted, because only RS384 and ES384
// are verified. A key with private members (d, p, q, …, k) is refused with
// an error that says so: never put a private key in the registry. Unknown
// fields are errors, so that a typo does not silently change the policy.
// Every error names the file and client.
func LoadRegistry(path string) (*Registry, error) {
	data, err := readCapped(path)
	if err != nil {
		return nil, fmt.Errorf("smart: read client registry: %w", err)
	}
	var f registryFile
	if err := decodeStrict(data, &f); err != nil {
		return nil, fmt.Errorf("smart: client registry %s: %w", path, err)
	}
	r := &Registry{path: path, clients: make(map[string]*Client, len(f.Clients))}
	dir := filepath.Dir(path)
	for i, e := range f.Clients {
		c, err := loadClient(dir, e)
		if err != nil {
			name := e.ID
			if name == "" {
				name = fmt.Sprintf("#%d", i+1)
			}
			return nil, fmt.Errorf("smart: client registry %s: client %q: %w", path, name, err)
		}
		if _, dup := r.clients[c.ID]; dup {
			return nil, fmt.Errorf("smart: client registry %s: duplicate client id %q", path, c.ID)
		}
		r.clients[c.ID] = c
		r.ids = append(r.ids, c.ID)
	}
	return r, nil
}

func loadClient(dir string, e clientEntry) (*Client, error) {
	if err := validateClientID(e.ID); err != nil {
		return nil, err
	}
	c := &Client{ID: e.ID, MaxJobs: DefaultMaxJobs}
	if e.MaxJobs != nil {
		if *e.MaxJobs < 1 {
			return nil, fmt.Errorf("max_jobs %d: want at least 1", *e.MaxJobs)
		}
		c.MaxJobs = *e.MaxJobs
	}
	if e.MaxFinished != nil {
		if *e.MaxFinished < -1 {
			return nil, fmt.Errorf("max_finished_exports %d: want a positive cap, 0 for the server's default or -1 for no per-client cap", *e.MaxFinished)
		}
		c.MaxFinished = *e.MaxFinished
	}
	if len(e.Scopes) == 0 {
		return nil, errors.New("no scopes: list at least one, for example \"system/*.rs\"")
	}
	if len(e.Scopes) > maxScopesInClient {
		return nil, fmt.Errorf("%d scopes: at most %d", len(e.Scopes), maxScopesInClient)
	}
	for _, s := range e.Scopes {
		if _, err := parseScope(s); err != nil {
			var oe *OAuthError
			if errors.As(err, &oe) {
				return nil, errors.New(oe.Description)
			}
			return nil, err
		}
	}
	c.Scopes = append([]string(nil), e.Scopes...)
	read, err := readScopes(c.Scopes)
	if err != nil {
		return nil, err // unreachable: every scope parsed above
	}
	c.read = read

	hasInline := len(bytes.TrimSpace(e.JWKS)) > 0 && string(bytes.TrimSpace(e.JWKS)) != "null"
	var sources []string
	for _, s := range []struct {
		name string
		set  bool
	}{{"jwks", hasInline}, {"jwks_file", e.JWKSFile != ""}, {"jwks_url", e.JWKSURL != ""}} {
		if s.set {
			sources = append(sources, s.name)
		}
	}
	switch len(sources) {
	case 2:
		return nil, fmt.Errorf("both %s and %s: give exactly one key source", sources[0], sources[1])
	case 3:
		return nil, fmt.Errorf("%s all given: give exactly one key source", strings.Join(sources, ", "))
	}
	var jwks []byte
	switch {
	case e.JWKSURL != "":
		if err := validateJWKSURL(e.JWKSURL); err != nil {
			return nil, fmt.Errorf("jwks_url: %w", err)
		}
		c.JWKSURL = e.JWKSURL
		return c, nil
	case hasInline:
		jwks = e.JWKS
	case e.JWKSFile != "":
		p := e.JWKSFile
		if !filepath.IsAbs(p) {
			p = filepath.Join(dir, p)
		}
		b, err := readCapped(p)
		if err != nil {
			return nil, fmt.Errorf("jwks_file: %w", err)
		}
		jwks = b
	default:
		return nil, errors.New("no keys: give jwks (inline JWK Set), jwks_file or jwks_url")
	}
	keys, err := parsePublicJWKS(jwks)
	if err != nil {
		return nil, err
	}
	c.keys = keys
	return c, nil
}

// validateClientID checks the client id charset: it ends up in logs, job
// records and the access token's sub.
func validateClientID(id string) error {
	if id == "" {
		return errors.New("missing id")
	}
	if len(id) > maxClientIDLen {
		return fmt.Errorf("id longer than %d characters", maxClientIDLen)
	}
	if id[0] == '.' {
		return errors.New("id must not start with '.'")
	}
	for i := 0; i < len(id); i++ {
		b := id[i]
		if !('a' <= b && b <= 'z' || 'A' <= b && b <= 'Z' || '0' <= b && b <= '9' || b == '.' || b == '_' || b == '~' || b == '-') {
			return fmt.Errorf("id has character %q: use only letters, digits and . _ ~ -", b)
		}
	}
	return nil
}

// parsePublicJWKS parses a registered (inline or file) JWK Set of public
// signature keys. Unknown members are errors, as everywhere in the
// registry, and so is a repeated kid.
func parsePublicJWKS(data []byte) ([]jose.JSONWebKey, error) {
	var set rawJWKS
	if err := decodeStrict(data, &set); err != nil {
		return nil, fmt.Errorf("jwks: %w", err)
	}
	return publicKeys(set.Keys, false)
}

// publicKeys validates the members of a JWK Set with parsePublicJWK. A
// kid may appear once. A registry's own set (published false) must be all
// usable: a key this server cannot verify with is an operator's mistake.
// A set published at a jwks_url (published true) may also serve other
// purposes, so, as RFC 7517 section 5 says, keys of a type, curve, size,
// alg or use this server does not support, or without a kid, are ignored,
// and a later entry that repeats an earlier one exactly is dropped (some
// published sets list a key twice); at least one usable key must remain.
// Private key material fails any set: it must never be published.
func publicKeys(raws []json.RawMessage, published bool) ([]jose.JSONWebKey, error) {
	if len(raws) == 0 {
		return nil, errors.New("jwks has no keys")
	}
	if len(raws) > maxKeysPerClient {
		return nil, fmt.Errorf("jwks has %d keys: at most %d", len(raws), maxKeysPerClient)
	}
	keys := make([]jose.JSONWebKey, 0, len(raws))
	seen := map[string]int{}
	var ignored []string
	for i, raw := range raws {
		k, err := parsePublicJWK(raw)
		if err != nil {
			if published && !errors.Is(err, errPrivateKey) {
				ignored = append(ignored, fmt.Sprintf("key #%d: %v", i+1, err))
				continue
			}
			return nil, fmt.Errorf("key #%d: %w", i+1, err)
		}
		if j, dup := seen[k.KeyID]; dup {
			if published && sameKey(&keys[j], &k) {
				continue
			}
			return nil, fmt.Errorf("key #%d: duplicate kid %q", i+1, k.KeyID)
		}
		seen[k.KeyID] = len(keys)
		keys = append(keys, k)
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("no key this server can verify with (%s)", strings.Join(ignored, "; "))
	}
	return keys, nil
}

// sameKey reports whether a and b are the same public key with the same
// kid, alg and use.
func sameKey(a, b *jose.JSONWebKey) bool {
	if a.KeyID != b.KeyID || a.Algorithm != b.Algorithm || a.Use != b.Use {
		return false
	}
	type equaler interface{ Equal(crypto.PublicKey) bool }
	ka, ok := a.Key.(equaler)
	return ok && ka.Equal(b.Key)
}

// errPrivateKey marks a JWK with private members: refused in any set.
var errPrivateKey = errors.New("private key material")

func parsePublicJWK(raw json.RawMessage) (jose.JSONWebKey, error) {
	var members map[string]json.RawMessage
	if err := json.Unmarshal(raw, &members); err != nil {
		return jose.JSONWebKey{}, fmt.Errorf("not a JSON object: %w", err)
	}
	kid, _ := jsonString(members["kid"])
	for _, m := range privateMembers {
		if _, ok := members[m]; ok {
			return jose.JSONWebKey{}, fmt.Errorf("kid %q: %w (%q) found: register only the public key (the client keeps the private key)", kid, errPrivateKey, m)
		}
	}
	if kid == "" {
		return jose.JSONWebKey{}, errors.New("missing kid")
	}
	kty, _ := jsonString(members["kty"])
	if kty == "" {
		return jose.JSONWebKey{}, fmt.Errorf("kid %q: missing kty", kid)
	}
	if kty != "RSA" && kty != "EC" {
		return jose.JSONWebKey{}, fmt.Errorf("kid %q: kty %q not supported: use RSA (RS384) or EC P-384 (ES384)", kid, kty)
	}
	var k jose.JSONWebKey
	if err := k.UnmarshalJSON(raw); err != nil {
		return jose.JSONWebKey{}, fmt.Errorf("kid %q: invalid %s key: %w", kid, kty, err)
	}
	if !k.IsPublic() || !k.Valid() {
		return jose.JSONWebKey{}, fmt.Errorf("kid %q: not a valid public key", kid)
	}
	switch pub := k.Key.(type) {
	case *rsa.PublicKey:
		if pub.N.BitLen() < MinRSABits {
			return jose.JSONWebKey{}, fmt.Errorf("kid %q: RSA key has %d bits: at least %d required", kid, pub.N.BitLen(), MinRSABits)
		}
	case *ecdsa.PublicKey:
		if pub.Curve != elliptic.P384() {
			return jose.JSONWebKey{}, fmt.Errorf("kid %q: EC key on curve %s: only P-384 (ES384) is accepted", kid, pub.Curve.Params().Name)
		}
	}
	if k.Algorithm != "" && k.Algorithm != string(jose.RS384) && k.Algorithm != string(jose.ES384) {
		return jose.JSONWebKey{}, fmt.Errorf("kid %q: alg %q: only RS384 and ES384 are verified", kid, k.Algorithm)
	}
	if k.Use != "" && k.Use != "sig" {
		return jose.JSONWebKey{}, fmt.Errorf("kid %q: use %q: want \"sig\"", kid, k.Use)
	}
	return k, nil
}

func jsonString(raw json.RawMessage) (string, bool) {
	var s string
	if raw == nil || json.Unmarshal(raw, &s) != nil {
		return "", false
	}
	return s, true
}

// decodeStrict decodes one JSON value, refusing unknown fields and
// trailing data.
func decodeStrict(data []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if _, err := dec.Token(); err != io.EOF {
		return errors.New("trailing data after the JSON value")
	}
	return nil
}

func readCapped(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxRegistryBytes+1))
	if err != nil {
		return nil, err
	}
	if len(data) > maxRegistryBytes {
		return nil, fmt.Errorf("%s is larger than %d bytes", path, maxRegistryBytes)
	}
	return data, nil
}

// Clients holds the current Registry for concurrent readers and swaps it
// atomically on Reload, so a SIGHUP reload never blocks or drops a request:
// a request that already looked up its client keeps using that snapshot.
type Clients struct {
	path string
	mu   sync.Mutex // serializes Reload
	cur  atomic.Pointer[Registry]
}

// OpenClients loads the registry at path; the error is LoadRegistry's.
func OpenClients(path string) (*Clients, error) {
	r, err := LoadRegistry(path)
	if err != nil {
		return nil, err
	}
	c := &Clients{path: path}
	c.cur.Store(r)
	return c, nil
}

// Registry returns the current registry snapshot.
func (c *Clients) Registry() *Registry { return c.cur.Load() }

// Client looks id up in the current registry.
func (c *Clients) Client(id string) (*Client, bool) { return c.cur.Load().Client(id) }

// Reload reads the registry file again. On error the previous registry
// stays in force and the error says why the new file was refused.
func (c *Clients) Reload() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	r, err := LoadRegistry(c.path)
	if err != nil {
		return err
	}
	c.cur.Store(r)
	return nil
}
