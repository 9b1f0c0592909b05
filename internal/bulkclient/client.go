package bulkclient

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Defaults for the zero values of Config.
const (
	DefaultPollMin     = time.Second
	DefaultPollMax     = time.Minute
	DefaultMaxAttempts = 8
	DefaultBackoffMin  = 500 * time.Millisecond
	DefaultBackoffMax  = 30 * time.Second
	DefaultMaxWait     = 2 * time.Minute
	DefaultParallel    = 4
)

// Config configures a Client. Zero values mean the defaults above.
type Config struct {
	// BaseURL is the FHIR base, e.g. https://bulk.example.org/fhir.
	BaseURL string
	// HTTPClient does the requests; nil means a client with no overall
	// timeout (downloads can be long) and a 30s response-header timeout.
	HTTPClient *http.Client
	// Token supplies the bearer token; nil sends none.
	Token TokenSource
	// PollMin and PollMax bound the wait between status polls.
	PollMin, PollMax time.Duration
	// MaxAttempts is how often one request (or one file) is tried.
	MaxAttempts int
	// BackoffMin and BackoffMax bound the exponential retry backoff.
	BackoffMin, BackoffMax time.Duration
	// MaxWait caps a server's Retry-After on retries.
	MaxWait time.Duration
	// Parallel is how many files Download fetches at once.
	Parallel int
	// OnProgress, if set, gets each X-Progress of a running job (may be
	// "" when the server sends none) and the time it has been running.
	OnProgress func(progress string, elapsed time.Duration)
	// OnRetry, if set, is told about each retry before its wait.
	OnRetry func(what string, attempt int, wait time.Duration, err error)
}

// Client runs exports against one server. It is safe for concurrent use.
type Client struct {
	cfg  Config
	base string
	hc   *http.Client
}

// New returns a Client for cfg.
func New(cfg Config) (*Client, error) {
	if cfg.BaseURL == "" {
		return nil, errors.New("bulkclient: no base URL")
	}
	if !strings.HasPrefix(cfg.BaseURL, "http://") && !strings.HasPrefix(cfg.BaseURL, "https://") {
		return nil, fmt.Errorf("bulkclient: base URL %q is not http(s)", cfg.BaseURL)
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&cfg.PollMin, DefaultPollMin)
	def(&cfg.PollMax, DefaultPollMax)
	def(&cfg.BackoffMin, DefaultBackoffMin)
	def(&cfg.BackoffMax, DefaultBackoffMax)
	def(&cfg.MaxWait, DefaultMaxWait)
	if cfg.PollMax < cfg.PollMin {
		cfg.PollMax = cfg.PollMin
	}
	if cfg.BackoffMax < cfg.BackoffMin {
		cfg.BackoffMax = cfg.BackoffMin
	}
	if cfg.MaxAttempts <= 0 {
		cfg.MaxAttempts = DefaultMaxAttempts
	}
	if cfg.Parallel <= 0 {
		cfg.Parallel = DefaultParallel
	}
	hc := cfg.HTTPClient
	if hc == nil {
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.ResponseHeaderTimeout = 30 * time.Second
		hc = &http.Client{Transport: tr}
	}
	return &Client{cfg: cfg, base: strings.TrimSuffix(cfg.BaseURL, "/"), hc: hc}, nil
}

// OutcomeError is an error answer from the server. Its message is the
// diagnostics of the OperationOutcome (or a short excerpt of a body that
// is not one).
type OutcomeError struct {
	Method, URL string
	StatusCode  int
	Status      string
	Issues      []Issue // empty when the body was no OperationOutcome
	Body        string  // the start of a body that was no OperationOutcome
}

// Issue is one OperationOutcome issue.
type Issue struct {
	Severity    string `json:"severity"`
	Code        string `json:"code"`
	Diagnostics string `json:"diagnostics"`
	Details     struct {
		Text string `json:"text"`
	} `json:"details"`
}

// Message is the issue's diagnostics, else its details text, else its code.
func (is Issue) Message() string {
	return cmp.Or(is.Diagnostics, is.Details.Text, is.Code)
}

func (e *OutcomeError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s: %s", e.Method, e.URL, e.Status)
	var msgs []string
	for _, is := range e.Issues {
		if m := is.Message(); m != "" {
			msgs = append(msgs, m)
		}
	}
	if len(msgs) > 0 {
		b.WriteString(": ")
		b.WriteString(strings.Join(msgs, "; "))
	} else if e.Body != "" {
		fmt.Fprintf(&b, ": %s", e.Body)
	}
	return b.String()
}

// transientCodes are the IssueType codes of the transient family
// (https://hl7.org/fhir/R4/valueset-issue-type.html), which the IG asks a
// server to use when a status poll, not the job, failed.
var transientCodes = map[string]bool{
	"transient": true, "lock-error": true, "no-store": true, "exception": true,
	"timeout": true, "incomplete": true, "throttled": true,
}

// retryable reports whether the error answer is worth another try: 429,
// and 5xx unless an OperationOutcome says it is final.
func (e *OutcomeError) retryable() bool {
	switch {
	case e.StatusCode == http.StatusTooManyRequests:
		return true
	case e.StatusCode < 500 || e.StatusCode == http.StatusNotImplemented:
		return false
	case len(e.Issues) == 0:
		return true // a proxy's 502/503/504
	}
	for _, is := range e.Issues {
		if transientCodes[is.Code] {
			return true
		}
	}
	return false
}

// errorFrom reads an error answer and closes its body.
func errorFrom(resp *http.Response) *OutcomeError {
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	e := &OutcomeError{Method: resp.Request.Method, URL: resp.Request.URL.String(), StatusCode: resp.StatusCode, Status: resp.Status}
	var oo struct {
		ResourceType string  `json:"resourceType"`
		Issue        []Issue `json:"issue"`
	}
	if json.Unmarshal(body, &oo) == nil && oo.ResourceType == "OperationOutcome" {
		e.Issues = oo.Issue
		return e
	}
	var oauth struct {
		Error       string `json:"error"`
		Description string `json:"error_description"`
	}
	if json.Unmarshal(body, &oauth) == nil && oauth.Error != "" {
		e.Issues = []Issue{{Code: oauth.Error, Diagnostics: strings.TrimSpace(oauth.Error + " " + oauth.Description)}}
		return e
	}
	s := strings.TrimSpace(string(body))
	if len(s) > 200 {
		s = s[:200] + "…"
	}
	e.Body = s
	return e
}

// retryAfter parses a Retry-After header: delay-seconds or an HTTP-date.
// It returns 0 when there is none or it cannot be parsed.
func retryAfter(h http.Header, now time.Time) time.Duration {
	v := strings.TrimSpace(h.Get("Retry-After"))
	if v == "" {
		return 0
	}
	if s, err := strconv.ParseFloat(v, 64); err == nil {
		if s <= 0 {
			return 0
		}
		return time.Duration(s * float64(time.Second))
	}
	if t, err := http.ParseTime(v); err == nil {
		return max(t.Sub(now), 0)
	}
	return 0
}

// backoff returns the wait before retry number attempt (1-based):
// BackoffMin doubled per attempt, capped at BackoffMax, with jitter, and
// never below the server's Retry-After (itself capped at MaxWait).
func (c *Client) backoff(attempt int, ra time.Duration) time.Duration {
	d := c.cfg.BackoffMin << min(attempt-1, 20)
	if d > c.cfg.BackoffMax || d <= 0 {
		d = c.cfg.BackoffMax
	}
	d = d/2 + rand.N(d/2+1)
	return max(d, min(ra, c.cfg.MaxWait))
}

// sleep waits d or until ctx is done.
func sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// do sends the request built by newReq, retrying connection errors, 429
// and retryable 5xx answers. With auth it sets the bearer token, and on a
// 401 fetches a fresh one once. It returns a response with a 1xx–3xx
// status, or an error (an *OutcomeError for error answers).
func (c *Client) do(ctx context.Context, auth bool, newReq func(ctx context.Context) (*http.Request, error)) (*http.Response, error) {
	refreshed := false
	for attempt := 1; ; attempt++ {
		req, err := newReq(ctx)
		if err != nil {
			return nil, err
		}
		if auth && c.cfg.Token != nil {
			tok, err := c.cfg.Token.Token(ctx)
			if err != nil {
				return nil, err
			}
			req.Header.Set("Authorization", "Bearer "+tok)
		}
		resp, err := c.hc.Do(req)
		var ra time.Duration
		if err == nil {
			if resp.StatusCode < 400 {
				return resp, nil
			}
			ra = retryAfter(resp.Header, time.Now())
			oe := errorFrom(resp)
			if resp.StatusCode == http.StatusUnauthorized && auth && c.cfg.Token != nil && !refreshed {
				if inv, ok := c.cfg.Token.(interface{ Invalidate() }); ok {
					inv.Invalidate()
					refreshed = true
					attempt--
					continue
				}
			}
			if !oe.retryable() {
				return nil, oe
			}
			err = oe
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if attempt >= c.cfg.MaxAttempts {
			return nil, fmt.Errorf("giving up after %d attempts: %w", attempt, err)
		}
		wait := c.backoff(attempt, ra)
		if c.cfg.OnRetry != nil {
			c.cfg.OnRetry(req.Method+" "+req.URL.String(), attempt, wait, err)
		}
		if err := sleep(ctx, wait); err != nil {
			return nil, err
		}
	}
}

// isJSON reports whether a Content-Type is JSON (application/json,
// application/fhir+json, …) or absent.
func isJSON(ct string) bool {
	if ct == "" {
		return true
	}
	mt, _, err := mime.ParseMediaType(ct)
	return err == nil && (mt == "application/json" || strings.HasSuffix(mt, "+json"))
}

// readJSON decodes a (small) JSON response body into v and closes it.
func readJSON(resp *http.Response, v any) ([]byte, error) {
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return nil, err
	}
	if !isJSON(resp.Header.Get("Content-Type")) {
		return nil, fmt.Errorf("%s %s: Content-Type %q, want JSON", resp.Request.Method, resp.Request.URL, resp.Header.Get("Content-Type"))
	}
	d := json.NewDecoder(bytes.NewReader(body))
	if err := d.Decode(v); err != nil {
		return nil, fmt.Errorf("%s %s: %w", resp.Request.Method, resp.Request.URL, err)
	}
	return body, nil
}
