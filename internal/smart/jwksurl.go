package smart

import (
	"cmp"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/go-jose/go-jose/v4"
)

// JWKS URL limits and cache defaults (registration by jwks_url and key
// retrieval:
// https://hl7.org/fhir/smart-app-launch/client-confidential-asymmetric.html).
const (
	// DefaultJWKSTimeout bounds one jwks_url request (connect, TLS,
	// headers and body) when JWKSCacheOptions has no Client.
	DefaultJWKSTimeout = 5 * time.Second
	// DefaultMaxJWKSBytes caps a fetched JWK Set.
	DefaultMaxJWKSBytes = 256 << 10
	// DefaultJWKSMaxAge is how long a key set is reused when its response
	// says nothing about caching: no Cache-Control max-age, no-cache or
	// no-store, and no Expires.
	DefaultJWKSMaxAge = 5 * time.Minute
	// MaxJWKSMaxAge caps the reuse of a key set whatever its
	// Cache-Control allows, so that a key the client withdraws stops
	// verifying within the hour.
	MaxJWKSMaxAge = time.Hour
	// DefaultJWKSRefetchInterval is how often, at most, an assertion
	// whose kid is not in a still-fresh key set makes the cache fetch
	// that URL again (key rotation).
	DefaultJWKSRefetchInterval = 10 * time.Second

	maxJWKSURLLen    = 2 << 10
	maxJWKSRedirects = 3
)

// JWKSCacheOptions configures a JWKSCache. Zero fields take the defaults.
type JWKSCacheOptions struct {
	// Client makes the requests; nil means an http.Client with
	// DefaultJWKSTimeout over Go's default transport. Its CheckRedirect is
	// replaced: at most 3 redirects, each to a URL a registry would accept
	// as a jwks_url, and to plain-http loopback only from a plain-http
	// loopback URL.
	Client *http.Client
	// MaxBytes caps a response body (DefaultMaxJWKSBytes).
	MaxBytes int64
	// DefaultMaxAge is the reuse time of a response without caching
	// headers (DefaultJWKSMaxAge).
	DefaultMaxAge time.Duration
	// MaxAge caps every reuse time (MaxJWKSMaxAge).
	MaxAge time.Duration
	// RefetchInterval limits the fetches caused by unknown kids, per URL
	// (DefaultJWKSRefetchInterval).
	RefetchInterval time.Duration
	// Now is the clock of cache ages and the refetch limit; nil means
	// time.Now.
	Now func() time.Time
}

// JWKSCache fetches and caches the JWK Sets of clients registered by
// jwks_url
// (https://hl7.org/fhir/smart-app-launch/client-confidential-asymmetric.html).
// It is safe for concurrent use and independent of any Registry, so a
// reloaded registry keeps the cache (entries are keyed by URL).
//
// Caching follows the response's Cache-Control and never goes beyond it:
// no-store, no-cache, max-age=0 or an invalid max-age mean the set is used
// for the assertion that fetched it and not again; max-age=N means reuse
// for N seconds (less the Age header), capped at MaxAge; without
// Cache-Control freshness an Expires header is honoured, and without either
// the set is reused for DefaultMaxAge (RFC 9111's heuristic freshness:
// SMART only forbids caching beyond Cache-Control, so without it the choice
// is the server's). A failed fetch is not cached.
//
// When an assertion's kid is not in a fresh cached set the URL is fetched
// again (the client may have rotated its key), but at most once per
// RefetchInterval per URL, so random kids cannot make this server hammer a
// client's key server; within the interval the cached set is used and the
// assertion fails for want of the key. An expired or non-reusable set is
// always fetched again. Concurrent lookups of one URL share one fetch.
type JWKSCache struct {
	client          *http.Client
	maxBytes        int64
	defaultMaxAge   time.Duration
	maxAge          time.Duration
	refetchInterval time.Duration
	now             func() time.Time

	mu      sync.Mutex
	entries map[string]*jwksEntry // by URL; bounded by the URLs ever registered
}

type jwksEntry struct {
	keys      []jose.JSONWebKey // nil when none may be reused
	expires   time.Time         // keys may be reused before this
	lastFetch time.Time         // start of the last fetch
	call      *jwksCall         // the fetch in flight, if any
}

// jwksCall is one fetch that concurrent lookups of its URL wait for.
type jwksCall struct {
	done chan struct{}
	keys []jose.JSONWebKey
	err  error
	// abandoned: the fetching request went away (its context ended), so
	// the waiters should try again rather than share its failure.
	abandoned bool
	waiters   int // lookups that joined it (guarded by JWKSCache.mu; for tests)
}

// NewJWKSCache returns an empty cache. Negative options are errors.
func NewJWKSCache(opts *JWKSCacheOptions) (*JWKSCache, error) {
	var o JWKSCacheOptions
	if opts != nil {
		o = *opts
	}
	if o.MaxBytes < 0 || o.DefaultMaxAge < 0 || o.MaxAge < 0 || o.RefetchInterval < 0 {
		return nil, errors.New("smart: JWKSCacheOptions: negative limit")
	}
	c := &JWKSCache{
		maxBytes:        cmp.Or(o.MaxBytes, DefaultMaxJWKSBytes),
		defaultMaxAge:   cmp.Or(o.DefaultMaxAge, DefaultJWKSMaxAge),
		maxAge:          cmp.Or(o.MaxAge, MaxJWKSMaxAge),
		refetchInterval: cmp.Or(o.RefetchInterval, DefaultJWKSRefetchInterval),
		now:             o.Now,
		entries:         map[string]*jwksEntry{},
	}
	if c.defaultMaxAge > c.maxAge {
		return nil, fmt.Errorf("smart: JWKSCacheOptions: DefaultMaxAge %v above MaxAge %v", c.defaultMaxAge, c.maxAge)
	}
	if c.now == nil {
		c.now = time.Now
	}
	hc := http.Client{Timeout: DefaultJWKSTimeout}
	if o.Client != nil {
		hc = *o.Client
	}
	hc.CheckRedirect = checkJWKSRedirect
	c.client = &hc
	return c, nil
}

// JWKSFetchError is a failed jwks_url fetch: the URL did not answer 200
// with an acceptable JWK Set in time.
type JWKSFetchError struct {
	URL string
	// Reason says what went wrong in terms the client can act on; it is
	// safe to send back (no key material, no internal addresses).
	Reason string
	// Err is the underlying error, if any, for the server's log.
	Err error
}

func (e *JWKSFetchError) Error() string {
	s := "smart: jwks_url " + e.URL + ": " + e.Reason
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

func (e *JWKSFetchError) Unwrap() error { return e.Err }

// Keys returns the public keys published at jwksURL, from the cache when
// they may still be reused and contain kid, otherwise fetched (see
// JWKSCache for when). The keys passed the registry's checks (kid and kty,
// RSA ≥ MinRSABits or EC P-384, no private members); the caller must not
// modify them. A fetch failure is a *JWKSFetchError; if ctx ends first,
// the error is ctx's.
func (c *JWKSCache) Keys(ctx context.Context, jwksURL, kid string) ([]jose.JSONWebKey, error) {
	for {
		c.mu.Lock()
		e := c.entries[jwksURL]
		if e == nil {
			e = &jwksEntry{}
			c.entries[jwksURL] = e
		}
		now := c.now()
		fresh := e.keys != nil && now.Before(e.expires)
		if fresh && hasKid(e.keys, kid) {
			keys := e.keys
			c.mu.Unlock()
			return keys, nil
		}
		if call := e.call; call != nil {
			call.waiters++
			c.mu.Unlock()
			select {
			case <-call.done:
			case <-ctx.Done():
				return nil, fmt.Errorf("smart: fetch jwks_url %s: %w", jwksURL, ctx.Err())
			}
			if call.abandoned {
				continue
			}
			return call.keys, call.err
		}
		if fresh && now.Sub(e.lastFetch) < c.refetchInterval {
			keys := e.keys // unknown kid, refetched recently: no new fetch
			c.mu.Unlock()
			return keys, nil
		}
		call := &jwksCall{done: make(chan struct{})}
		prevFetch := e.lastFetch
		e.call, e.lastFetch = call, now
		c.mu.Unlock()

		keys, ttl, err := c.fetch(ctx, jwksURL, now)

		c.mu.Lock()
		e.call = nil
		switch {
		case err == nil && ttl > 0:
			e.keys, e.expires = keys, now.Add(ttl)
		case err == nil:
			e.keys, e.expires = nil, time.Time{} // no-store and the like: not kept
		case ctx.Err() != nil:
			// This request went away; it was no real attempt.
			e.lastFetch = prevFetch
			call.abandoned = true
		}
		call.keys, call.err = keys, err
		close(call.done)
		c.mu.Unlock()
		return keys, err
	}
}

func hasKid(keys []jose.JSONWebKey, kid string) bool {
	for i := range keys {
		if keys[i].KeyID == kid {
			return true
		}
	}
	return false
}

// fetch GETs jwksURL and returns its keys and how long they may be
// reused, counted from now (the request time, which errs on the short
// side).
func (c *JWKSCache) fetch(ctx context.Context, jwksURL string, now time.Time) ([]jose.JSONWebKey, time.Duration, error) {
	fail := func(reason string, err error) ([]jose.JSONWebKey, time.Duration, error) {
		if ctx.Err() != nil {
			return nil, 0, fmt.Errorf("smart: fetch jwks_url %s: %w", jwksURL, ctx.Err())
		}
		return nil, 0, &JWKSFetchError{URL: jwksURL, Reason: reason, Err: err}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, jwksURL, nil)
	if err != nil {
		return fail("is not a valid request URL", err)
	}
	req.Header.Set("Accept", "application/json")
	resp, err := c.client.Do(req)
	if err != nil {
		return fail(describeFetchError(err), err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4<<10)) // keep the connection reusable
		return fail(fmt.Sprintf("answered HTTP %d, want 200", resp.StatusCode), nil)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, c.maxBytes+1))
	if err != nil {
		return fail(describeFetchError(err), err)
	}
	if int64(len(body)) > c.maxBytes {
		return fail(fmt.Sprintf("answered more than %d bytes", c.maxBytes), nil)
	}
	keys, err := parseFetchedJWKS(body)
	if err != nil {
		return fail("answered no acceptable JWK Set: "+err.Error(), nil)
	}
	return keys, freshness(resp.Header, now, c.defaultMaxAge, c.maxAge), nil
}

// parseFetchedJWKS parses a published JWK Set. Unlike a registry entry
// (RFC 7517 section 5): members other than "keys" are ignored, so are keys
// this server cannot verify with (another kty, curve or alg, RSA under
// MinRSABits, use "enc", no kid), and an exact repeat of a key is dropped
// (some published sets, BDT's among them, list a key twice). A private key
// fails the whole set, and so does a set without one usable key.
func parseFetchedJWKS(data []byte) ([]jose.JSONWebKey, error) {
	var set rawJWKS
	if err := json.Unmarshal(data, &set); err != nil {
		return nil, fmt.Errorf("not a JSON object with a keys array: %w", err)
	}
	return publicKeys(set.Keys, true)
}

// freshness is how long a response may be reused from now on (RFC 9111
// section 4.2, simplified for a private cache): 0 for no-store, no-cache
// or an invalid max-age; max-age less Age; else Expires less Date (or
// now), less Age; else def. Never above limit.
func freshness(h http.Header, now time.Time, def, limit time.Duration) time.Duration {
	var (
		maxAge    int64 = -1
		hasMaxAge bool
	)
	for _, v := range h.Values("Cache-Control") {
		for _, d := range strings.Split(v, ",") {
			name, val, _ := strings.Cut(strings.TrimSpace(d), "=")
			switch strings.ToLower(strings.TrimSpace(name)) {
			case "no-store", "no-cache":
				return 0
			case "max-age":
				n, err := strconv.ParseInt(strings.Trim(strings.TrimSpace(val), `"`), 10, 64)
				if err != nil || n < 0 {
					return 0 // RFC 9111 4.2.1: an invalid max-age means stale
				}
				if !hasMaxAge || n < maxAge {
					maxAge = n
				}
				hasMaxAge = true
			}
		}
	}
	lifetime := def
	switch {
	case hasMaxAge:
		lifetime = seconds(maxAge)
	case len(h.Values("Expires")) > 0:
		exp, err := http.ParseTime(h.Get("Expires"))
		if err != nil {
			return 0 // RFC 9111 5.3: an invalid Expires means already expired
		}
		base := now
		if date, err := http.ParseTime(h.Get("Date")); err == nil {
			base = date
		}
		lifetime = exp.Sub(base)
	}
	if age, err := strconv.ParseInt(strings.TrimSpace(h.Get("Age")), 10, 64); err == nil && age > 0 {
		lifetime -= seconds(age)
	}
	return max(0, min(limit, lifetime))
}

// seconds converts n seconds to a Duration, saturating instead of
// overflowing.
func seconds(n int64) time.Duration {
	const most = int64(1<<63-1) / int64(time.Second)
	return time.Duration(min(n, most)) * time.Second
}

// describeFetchError turns a transport error into a Reason: the kind of
// failure, never the resolved addresses that net errors carry.
func describeFetchError(err error) string {
	var (
		redirect *jwksRedirectError
		netErr   net.Error
		verify   *tls.CertificateVerificationError
		unknown  x509.UnknownAuthorityError
		hostname x509.HostnameError
		invalid  x509.CertificateInvalidError
	)
	switch {
	case errors.As(err, &redirect):
		return redirect.reason
	case errors.As(err, &verify), errors.As(err, &unknown), errors.As(err, &hostname), errors.As(err, &invalid):
		return "its TLS certificate was not accepted"
	case errors.As(err, &netErr) && netErr.Timeout():
		return "did not answer in time"
	}
	return "could not be fetched (connection failed)"
}

type jwksRedirectError struct{ reason string }

func (e *jwksRedirectError) Error() string { return e.reason }

// checkJWKSRedirect allows at most maxJWKSRedirects redirects, each to a
// URL the registry would accept as a jwks_url; plain http (loopback only)
// only when the registered URL was plain http too, so that an https key
// server cannot send this server to its own loopback services.
func checkJWKSRedirect(req *http.Request, via []*http.Request) error {
	if len(via) > maxJWKSRedirects {
		return &jwksRedirectError{fmt.Sprintf("redirected more than %d times", maxJWKSRedirects)}
	}
	if err := validateJWKSURL(req.URL.String()); err != nil {
		return &jwksRedirectError{"redirected to a URL that is not allowed: " + err.Error()}
	}
	if req.URL.Scheme == "http" && via[0].URL.Scheme != "http" {
		return &jwksRedirectError{"redirected from https to http"}
	}
	return nil
}

// validateJWKSURL checks a registered jwks_url (SMART wants it served over
// TLS): an absolute https URL of at most 2 KiB, without userinfo or
// fragment. Plain http is accepted for a loopback host only (localhost,
// 127.0.0.0/8, ::1), which keeps tests and local development simple and
// exposes nothing on the network. The host is not resolved.
func validateJWKSURL(s string) error {
	if len(s) > maxJWKSURLLen {
		return fmt.Errorf("longer than %d bytes", maxJWKSURLLen)
	}
	u, err := url.Parse(s)
	if err != nil {
		return fmt.Errorf("not a valid URL: %w", err)
	}
	if !u.IsAbs() || u.Opaque != "" || u.Host == "" || u.Hostname() == "" {
		return fmt.Errorf("%q is not an absolute https URL", s)
	}
	if u.User != nil {
		return errors.New("must not contain userinfo (user@host): the key set is public and fetched without credentials")
	}
	if u.Fragment != "" || strings.Contains(s, "#") {
		return errors.New("must not contain a fragment (#…)")
	}
	switch u.Scheme {
	case "https":
	case "http":
		if !isLoopbackHost(u.Hostname()) {
			return fmt.Errorf("%q: plain http is accepted only for a loopback host (localhost, 127.0.0.0/8, ::1); use https", s)
		}
	default:
		return fmt.Errorf("%q: scheme %q, want https", s, u.Scheme)
	}
	return nil
}

func isLoopbackHost(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
