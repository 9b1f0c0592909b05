package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/bulkstream/bulkstream/httpapi"
)

// httpConfig is how `serve` runs its HTTP servers: the API listener's
// timeouts and connection caps, and the optional operations listener.
type httpConfig struct {
	// OpsListen, when set, serves /metrics, /healthz and /readyz there
	// (plain HTTP, no authorization) instead of on --listen.
	OpsListen string

	ReadHeaderTimeout    time.Duration
	ReadBodyTimeout      time.Duration
	WriteTimeout         time.Duration
	DownloadStallTimeout time.Duration
	IdleTimeout          time.Duration
	MaxConns             int
	MaxConnsPerIP        int
}

// Defaults of the HTTP flags. A kick-off body is at most 1 MiB and a token
// request 64 KiB: 30s is 35 KB/s for the largest.
const (
	defaultReadHeaderTimeout    = 10 * time.Second
	defaultReadBodyTimeout      = 30 * time.Second
	defaultWriteTimeout         = time.Minute
	defaultDownloadStallTimeout = time.Minute
	defaultIdleTimeout          = time.Minute
	defaultMaxConns             = 512
	defaultMaxConnsPerIP        = 64
)

func bindHTTPFlags(fs *flag.FlagSet, c *httpConfig) {
	fs.StringVar(&c.OpsListen, "ops-listen", "", "serve /metrics, /healthz and /readyz on this address (plain HTTP, no authorization) instead of --listen; a non-loopback address needs --insecure")
	fs.DurationVar(&c.ReadHeaderTimeout, "read-header-timeout", defaultReadHeaderTimeout, "a request's line and headers must arrive within this (more than 0)")
	fs.DurationVar(&c.ReadBodyTimeout, "read-body-timeout", defaultReadBodyTimeout, "a request body (kick-off POST, token request) must arrive whole within this (more than 0)")
	fs.DurationVar(&c.WriteTimeout, "write-timeout", defaultWriteTimeout, "every answer but a file download must be written within this (more than 0)")
	fs.DurationVar(&c.DownloadStallTimeout, "download-stall-timeout", defaultDownloadStallTimeout, "a file download is cut off when its client takes no bytes (less than 128 KiB) for this long; a long download that keeps moving is not (more than 0)")
	fs.DurationVar(&c.IdleTimeout, "idle-timeout", defaultIdleTimeout, "an idle keep-alive connection is closed after this (more than 0)")
	fs.IntVar(&c.MaxConns, "max-conns", defaultMaxConns, "HTTP connections open at once on --listen; past it new ones get 503 at once (0: no cap)")
	fs.IntVar(&c.MaxConnsPerIP, "max-conns-per-ip", defaultMaxConnsPerIP, "HTTP connections open at once from one client IP; past it its new ones get 503 at once (0: no cap; at most --max-conns; raise it behind a proxy)")
}

// check validates the HTTP flags, naming the one at fault.
func (c httpConfig) check() error {
	for _, d := range []struct {
		flag string
		v    time.Duration
	}{
		{"--read-header-timeout", c.ReadHeaderTimeout},
		{"--read-body-timeout", c.ReadBodyTimeout},
		{"--write-timeout", c.WriteTimeout},
		{"--download-stall-timeout", c.DownloadStallTimeout},
		{"--idle-timeout", c.IdleTimeout},
	} {
		if d.v <= 0 {
			return fmt.Errorf("%s %v: want more than 0", d.flag, d.v)
		}
	}
	if c.MaxConns < 0 {
		return fmt.Errorf("--max-conns %d: want 0 (no cap) or more", c.MaxConns)
	}
	if c.MaxConnsPerIP < 0 {
		return fmt.Errorf("--max-conns-per-ip %d: want 0 (no cap) or more", c.MaxConnsPerIP)
	}
	if c.MaxConns > 0 && c.MaxConnsPerIP > c.MaxConns {
		return fmt.Errorf("--max-conns-per-ip %d: want at most --max-conns %d", c.MaxConnsPerIP, c.MaxConns)
	}
	return nil
}

// checkListen refuses what serve's listeners cannot do safely: guess a
// public URL for an address that binds every interface, or serve the
// unauthenticated operations endpoints beyond loopback without --insecure.
func checkListen(c serveConfig, log *slog.Logger) error {
	if c.PublicURL == "" && unspecifiedHost(c.Listen) {
		return fmt.Errorf("--listen %s binds every interface, so the address clients reach this server at is unknown: "+
			"give --public-url (for example https://fhir.example.org), which every status and file URL starts with", c.Listen)
	}
	if c.HTTP.OpsListen == "" {
		return nil
	}
	if isLoopback(c.HTTP.OpsListen) {
		return nil
	}
	if !c.Security.Insecure {
		return fmt.Errorf("--ops-listen %s is not a loopback address: /metrics, /healthz and /readyz have no authorization "+
			"and /metrics tells resource counts; listen on 127.0.0.1, or pass --insecure if a firewall guards it", c.HTTP.OpsListen)
	}
	log.Warn("INSECURE: /metrics, /healthz and /readyz are served without authorization on a non-loopback address (--insecure)",
		"ops_listen", c.HTTP.OpsListen)
	return nil
}

// unspecifiedHost reports whether listen's host is empty or an unspecified
// address (0.0.0.0, ::): every interface. A malformed address is left to
// net.Listen to report.
func unspecifiedHost(listen string) bool {
	host, _, err := net.SplitHostPort(listen)
	if err != nil {
		return false
	}
	if host == "" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsUnspecified()
}

// httpServers are serve's HTTP servers: the API and, with --ops-listen,
// the operations endpoints.
type httpServers struct {
	c        httpConfig
	apiLn    net.Listener // capped by LimitListener
	opsLn    net.Listener // nil without --ops-listen
	api, ops *http.Server
	errc     chan error // one value per server that stopped serving
	running  int
}

// listenHTTP opens the API listener (with its connection caps) and the
// operations listener.
func listenHTTP(c serveConfig, tlsOn bool, reg prometheus.Registerer, log *slog.Logger) (*httpServers, error) {
	ln, err := net.Listen("tcp", c.Listen)
	if err != nil {
		return nil, fmt.Errorf("--listen: %w", err)
	}
	s := &httpServers{c: c.HTTP, errc: make(chan error, 2)}
	s.apiLn = httpapi.LimitListener(ln, httpapi.ConnLimits{
		Max: c.HTTP.MaxConns, MaxPerIP: c.HTTP.MaxConnsPerIP, TLS: tlsOn, Logger: log, Registerer: reg,
	})
	if c.HTTP.OpsListen != "" {
		if s.opsLn, err = net.Listen("tcp", c.HTTP.OpsListen); err != nil {
			ln.Close()
			return nil, fmt.Errorf("--ops-listen: %w", err)
		}
	}
	return s, nil
}

// addr is the API listener's address.
func (s *httpServers) addr() string { return s.apiLn.Addr().String() }

// closeListeners closes the listeners of servers that never started.
func (s *httpServers) closeListeners() {
	s.apiLn.Close()
	if s.opsLn != nil {
		s.opsLn.Close()
	}
}

// configure sets the timeouts and, with --ops-listen, moves the
// operations endpoints out of the API.
func (s *httpServers) configure(hcfg *httpapi.Config) {
	hcfg.ReadBodyTimeout = s.c.ReadBodyTimeout
	hcfg.WriteTimeout = s.c.WriteTimeout
	hcfg.DownloadStallTimeout = s.c.DownloadStallTimeout
	hcfg.SeparateOps = s.opsLn != nil
}

// newServer is an http.Server with the header and idle timeouts. It has no
// ReadTimeout or WriteTimeout: httpapi sets read and write deadlines per
// request (a server-wide one would cut long downloads off).
func (s *httpServers) newServer(h http.Handler, log *slog.Logger) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: s.c.ReadHeaderTimeout,
		IdleTimeout:       s.c.IdleTimeout,
		MaxHeaderBytes:    maxHeaderBytes, // 431 past it
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		// A request's write deadline must not outlive it: between
		// requests it is cleared, so that nothing net/http writes itself
		// (a 400 for a malformed request, a 431) meets a stale one.
		ConnState: func(c net.Conn, st http.ConnState) {
			if st == http.StateIdle {
				_ = c.SetWriteDeadline(time.Time{})
			}
		},
	}
}

// start serves hcfg's API (over TLS when tlsConfig is set) and the
// operations endpoints.
func (s *httpServers) start(hcfg httpapi.Config, tlsConfig *tls.Config, log *slog.Logger) {
	s.api = s.newServer(httpapi.New(hcfg), log)
	s.api.TLSConfig = tlsConfig
	s.running++
	go func() { // owned: shutdown ends it
		if tlsConfig != nil { // ServeTLS owns TLSConfig from here
			s.errc <- s.api.ServeTLS(s.apiLn, "", "")
		} else {
			s.errc <- s.api.Serve(s.apiLn)
		}
	}()
	if s.opsLn == nil {
		return
	}
	s.ops = s.newServer(httpapi.NewOps(hcfg), log)
	s.running++
	go func() { s.errc <- s.ops.Serve(s.opsLn) }() // owned: shutdown ends it
	log.Info("operations endpoints on their own listener", "ops_listen", s.opsLn.Addr().String(),
		"paths", "/metrics /healthz /readyz")
}

// failed is ready when a server stopped serving on its own.
func (s *httpServers) failed() <-chan error { return s.errc }

// shutdown stops the API server, letting requests in flight finish until
// ctx is done (then closing their connections), and then the operations
// server, which keeps answering /readyz (503) and /metrics until then.
func (s *httpServers) shutdown(ctx context.Context, timeout time.Duration, log *slog.Logger) error {
	var errs []error
	for _, hs := range []*http.Server{s.api, s.ops} {
		if hs == nil {
			continue
		}
		if err := hs.Shutdown(ctx); err != nil {
			if hs == s.api {
				log.Warn("requests still in flight at the shutdown deadline; closing their connections",
					"shutdown_timeout", timeout, "error", err)
			}
			hs.Close()
		}
	}
	for ; s.running > 0; s.running-- {
		if err := <-s.errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// abort closes both servers after one of them stopped serving on its own
// with err (already received from failed).
func (s *httpServers) abort(err error) error {
	s.running--
	for _, hs := range []*http.Server{s.api, s.ops} {
		if hs != nil {
			hs.Close()
		}
	}
	for ; s.running > 0; s.running-- {
		<-s.errc
	}
	return fmt.Errorf("http server: %w", err)
}
