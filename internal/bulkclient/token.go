package bulkclient

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/bulkstream/bulkstream/internal/smart"
)

// TokenSource supplies bearer tokens. A source that also has an
// Invalidate() method gets it called after a 401, before one retry.
type TokenSource interface {
	Token(ctx context.Context) (string, error)
}

// TokenResponse is the token endpoint's success answer (SMART Backend
// Services, RFC 6749 section 5.1).
type TokenResponse struct {
	AccessToken string `json:"access_token"`
	TokenType   string `json:"token_type"`
	ExpiresIn   int    `json:"expires_in"`
	Scope       string `json:"scope"`
}

// SMARTTokenSource gets tokens with the SMART Backend Services
// client-credentials flow and keeps one until shortly before it expires.
type SMARTTokenSource struct {
	HTTPClient *http.Client // nil: a client with a 30s timeout
	BaseURL    string       // FHIR base, for .well-known/smart-configuration
	TokenURL   string       // skips discovery when set
	ClientID   string
	Key        []byte // private JWK (bulkstream client keygen)
	Scope      string // default system/*.rs
	Now        func() time.Time

	mu      sync.Mutex
	token   string
	refresh time.Time // fetch a new token from then on
}

// Token returns the cached token, or a fresh one when it is about to
// expire: a minute before, or after 4/5 of a shorter lifetime.
func (s *SMARTTokenSource) Token(ctx context.Context) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now
	if s.Now != nil {
		now = s.Now
	}
	if s.token != "" && now().Before(s.refresh) {
		return s.token, nil
	}
	hc := s.HTTPClient
	if hc == nil {
		hc = &http.Client{Timeout: 30 * time.Second}
	}
	if s.TokenURL == "" {
		u, err := DiscoverTokenURL(ctx, hc, s.BaseURL)
		if err != nil {
			return "", err
		}
		s.TokenURL = u
	}
	scope := s.Scope
	if scope == "" {
		scope = "system/*.rs"
	}
	t0 := now()
	tok, _, err := RequestToken(ctx, hc, s.TokenURL, s.ClientID, s.Key, scope, t0)
	if err != nil {
		return "", err
	}
	life := time.Duration(tok.ExpiresIn) * time.Second
	if life <= 0 {
		life = 5 * time.Minute
	}
	s.token, s.refresh = tok.AccessToken, t0.Add(life-min(time.Minute, life/5))
	return s.token, nil
}

// Invalidate drops the cached token.
func (s *SMARTTokenSource) Invalidate() {
	s.mu.Lock()
	s.token = ""
	s.mu.Unlock()
}

// FetchToken runs the client-credentials flow against the server at
// base: discovery, signed assertion, token request. It returns the
// decoded response and its raw JSON.
func FetchToken(ctx context.Context, hc *http.Client, base, clientID string, key []byte, scope string) (TokenResponse, []byte, error) {
	tokenURL, err := DiscoverTokenURL(ctx, hc, base)
	if err != nil {
		return TokenResponse{}, nil, err
	}
	return RequestToken(ctx, hc, tokenURL, clientID, key, scope, time.Now())
}

// RequestToken signs a client assertion for tokenURL and exchanges it for
// an access token.
func RequestToken(ctx context.Context, hc *http.Client, tokenURL, clientID string, key []byte, scope string, now time.Time) (TokenResponse, []byte, error) {
	var tok TokenResponse
	assertion, err := smart.SignAssertion(key, clientID, tokenURL, now)
	if err != nil {
		return tok, nil, err
	}
	form := url.Values{
		"grant_type":            {"client_credentials"},
		"client_assertion_type": {smart.AssertionType},
		"client_assertion":      {assertion},
		"scope":                 {scope},
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, tokenURL, strings.NewReader(form.Encode()))
	if err != nil {
		return tok, nil, err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "application/json")
	resp, err := hc.Do(req)
	if err != nil {
		return tok, nil, fmt.Errorf("token request: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return tok, nil, fmt.Errorf("token request: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		var oe struct {
			Error       string `json:"error"`
			Description string `json:"error_description"`
		}
		if json.Unmarshal(body, &oe) == nil && oe.Error != "" {
			return tok, nil, fmt.Errorf("token request: %s %s: %s", resp.Status, oe.Error, oe.Description)
		}
		return tok, nil, fmt.Errorf("token request: %s", resp.Status)
	}
	if err := json.Unmarshal(body, &tok); err != nil || tok.AccessToken == "" {
		return tok, nil, fmt.Errorf("token request: unexpected answer %.200q", body)
	}
	return tok, body, nil
}

// DiscoverTokenURL reads token_endpoint from base's SMART configuration.
func DiscoverTokenURL(ctx context.Context, hc *http.Client, base string) (string, error) {
	u := strings.TrimSuffix(base, "/") + "/.well-known/smart-configuration"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return "", err
	}
	req.Header.Set("Accept", "application/json")
	resp, err := hc.Do(req)
	if err != nil {
		return "", fmt.Errorf("discovery: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("discovery: GET %s: %s", u, resp.Status)
	}
	var conf struct {
		TokenEndpoint string `json:"token_endpoint"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&conf); err != nil {
		return "", fmt.Errorf("discovery: %s: %w", u, err)
	}
	if conf.TokenEndpoint == "" {
		return "", fmt.Errorf("discovery: %s has no token_endpoint", u)
	}
	return conf.TokenEndpoint, nil
}
