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
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/bulkstream/bulkstream/httpapi"
	"github.com/bulkstream/bulkstream/internal/smart"
)

// securityConfig is how `serve` protects its API: SMART Backend Services
// authorization (on whenever a clients file is given), TLS, and the
// refusal to serve an open API beyond loopback.
type securityConfig struct {
	Clients       string        // registry file; "" means no authorization
	Insecure      bool          // allow no authorization on a non-loopback address
	TLSCert       string        // PEM certificate chain
	TLSKey        string        // PEM private key
	TokenLifetime time.Duration // access token lifetime
	KeyRotation   time.Duration // signing key rotation period; 0 never

	// sighup, when set (tests), replaces the SIGHUP subscription: a value
	// on it reloads the clients file.
	sighup <-chan os.Signal
}

func bindSecurityFlags(fs *flag.FlagSet, c *securityConfig) {
	fs.StringVar(&c.Clients, "clients", "", "SMART Backend Services client registry (JSON); when given, every export, status and file request needs an access token. Reloaded on SIGHUP")
	fs.BoolVar(&c.Insecure, "insecure", false, "allow serving without --clients on a non-loopback --listen address, and the embedded NATS server without --nats-auth on a non-loopback --nats-listen: anyone who reaches them can export (or read, publish and delete) everything")
	fs.StringVar(&c.TLSCert, "tls-cert", "", "PEM certificate (chain) file: serve HTTPS (TLS 1.2 or later); needs --tls-key")
	fs.StringVar(&c.TLSKey, "tls-key", "", "PEM private key file for --tls-cert")
	fs.DurationVar(&c.TokenLifetime, "token-lifetime", smart.DefaultTokenLifetime, "access token lifetime (more than 0 and at most 1h; above the 5m SMART recommends is logged as a warning)")
	fs.DurationVar(&c.KeyRotation, "key-rotation", 24*time.Hour, "how often a new access-token signing key replaces the old one, which keeps verifying until its tokens expire (0: never; else at least 1m)")
}

// check refuses a configuration that would serve an open API beyond this
// machine, and says loudly when --insecure allows it anyway.
func (c securityConfig) check(listen string, log *slog.Logger) error {
	if (c.TLSCert == "") != (c.TLSKey == "") {
		return errors.New("--tls-cert and --tls-key go together")
	}
	if c.TokenLifetime <= 0 || c.TokenLifetime > smart.MaxTokenLifetime {
		return fmt.Errorf("--token-lifetime %v: want more than 0 and at most %v", c.TokenLifetime, smart.MaxTokenLifetime)
	}
	if c.KeyRotation < 0 || (c.KeyRotation > 0 && c.KeyRotation < time.Minute) {
		return fmt.Errorf("--key-rotation %v: want 0 (never) or at least 1m", c.KeyRotation)
	}
	if c.Clients != "" {
		if c.TokenLifetime > smart.DefaultTokenLifetime {
			log.Warn("--token-lifetime is above the 5 minutes SMART Backend Services recommends", "token_lifetime", c.TokenLifetime)
		}
		if c.TLSCert == "" && !isLoopback(listen) {
			log.Warn("authorization is on but HTTP is not encrypted: serve HTTPS (--tls-cert, --tls-key) or put a TLS proxy in front, "+
				"or tokens and exported data cross the network in clear text", "listen", listen)
		}
		return nil
	}
	if isLoopback(listen) {
		log.Info("authorization is off (no --clients): HTTP serves on a loopback address only", "listen", listen)
		return nil
	}
	if !c.Insecure {
		return fmt.Errorf("--listen %s is not a loopback address and no --clients file is given: anyone who reaches it "+
			"could export every resource; give --clients (SMART Backend Services), listen on 127.0.0.1, "+
			"or pass --insecure if an authenticating proxy guards it", listen)
	}
	log.Warn("INSECURE: authorization is OFF on a non-loopback address (--insecure): anyone who reaches it can export "+
		"every resource and read every job", "listen", listen)
	return nil
}

// isLoopback reports whether listen binds loopback addresses only. An
// empty host (all interfaces) is not loopback; a host name counts only if
// every address it resolves to is loopback.
func isLoopback(listen string) bool {
	host, _, err := net.SplitHostPort(listen)
	if err != nil || host == "" {
		return false
	}
	if ip := net.ParseIP(host); ip != nil {
		return ip.IsLoopback()
	}
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ips, err := net.LookupIP(host)
	if err != nil || len(ips) == 0 {
		return false
	}
	for _, ip := range ips {
		if !ip.IsLoopback() {
			return false
		}
	}
	return true
}

// scheme is the default public URL scheme.
func (c securityConfig) scheme() string {
	if c.TLSCert != "" {
		return "https"
	}
	return "http"
}

// tlsConfig loads the certificate; nil without TLS. TLS 1.2 is the
// minimum (1.3 preferred by Go's defaults); cipher suites are Go's
// defaults, which leave out the broken ones.
func (c securityConfig) tlsConfig() (*tls.Config, error) {
	if c.TLSCert == "" {
		return nil, nil
	}
	cert, err := tls.LoadX509KeyPair(c.TLSCert, c.TLSKey)
	if err != nil {
		return nil, fmt.Errorf("--tls-cert/--tls-key: %w", err)
	}
	return &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert}}, nil
}

// openAuth opens what the token endpoint and the bearer check need, under
// <data-dir>/auth/: the assertion replay file (replay.jsonl) and the
// server's signing keys (keys/). It starts the SIGHUP reloader of the
// clients file. close stops the reloader and closes the replay file.
func openAuth(ctx context.Context, c serveConfig, clients *smart.Clients, fhirBase string, log *slog.Logger) (*httpapi.Auth, func() error, error) {
	dir := filepath.Join(c.DataDir, "auth")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, nil, fmt.Errorf("auth directory: %w", err)
	}
	signer, err := smart.OpenKeys(filepath.Join(dir, "keys"), nil,
		&smart.SignerOptions{Issuer: fhirBase, Lifetime: c.Security.TokenLifetime})
	if err != nil {
		return nil, nil, err
	}
	replay, err := smart.OpenReplayFile(filepath.Join(dir, "replay.jsonl"))
	if err != nil {
		return nil, nil, err
	}
	// The key sets of clients registered by jwks_url. The cache outlives
	// registry reloads (it is keyed by URL), so a SIGHUP does not make
	// every such client's keys be fetched again.
	jwksTransport := newJWKSTransport()
	jwks, err := smart.NewJWKSCache(&smart.JWKSCacheOptions{
		Client: &http.Client{Transport: jwksTransport, Timeout: smart.DefaultJWKSTimeout},
	})
	if err != nil {
		replay.Close()
		return nil, nil, err
	}

	hup := c.Security.sighup
	stopNotify := func() {}
	if hup == nil {
		ch := make(chan os.Signal, 1)
		signal.Notify(ch, syscall.SIGHUP)
		hup, stopNotify = ch, func() { signal.Stop(ch) }
	}
	hctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() {
		// The rotation schedule follows the signing key's creation time,
		// so restarts neither reset nor skip it.
		var rotate <-chan time.Time
		next := func() {
			if c.Security.KeyRotation > 0 {
				t := time.NewTimer(time.Until(signer.SigningKeyCreated().Add(c.Security.KeyRotation)))
				rotate = t.C
			}
		}
		next()
		for {
			select {
			case <-hctx.Done():
				return
			case <-hup:
				_ = reloadClients(clients, c.Security.Clients, log)
			case <-rotate:
				if err := signer.Rotate(); err != nil {
					log.Error("access-token signing key not rotated; retrying in a minute", "error", err)
					rotate = time.After(time.Minute)
					continue
				}
				log.Info("access-token signing key rotated", "kids", signer.KeyIDs())
				next()
			}
		}
	})
	closeAuth := func() error {
		stopNotify()
		cancel()
		wg.Wait()
		jwksTransport.CloseIdleConnections()
		return replay.Close()
	}
	return &httpapi.Auth{Clients: clients, Signer: signer, Replay: replay, JWKS: jwks}, closeAuth, nil
}

// newJWKSTransport is the HTTP transport of jwks_url fetches: every phase
// bounded (the whole request by smart.DefaultJWKSTimeout, and by the token
// request's context), TLS 1.2 or later with the system roots, proxies from
// the environment (HTTPS_PROXY, NO_PROXY), and a few idle connections per
// key server, since the same clients come back every few minutes.
func newJWKSTransport() *http.Transport {
	return &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           (&net.Dialer{Timeout: smart.DefaultJWKSTimeout, KeepAlive: 30 * time.Second}).DialContext,
		TLSClientConfig:       &tls.Config{MinVersion: tls.VersionTLS12},
		TLSHandshakeTimeout:   smart.DefaultJWKSTimeout,
		ResponseHeaderTimeout: smart.DefaultJWKSTimeout,
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          32,
		MaxIdleConnsPerHost:   2,
		IdleConnTimeout:       90 * time.Second,
	}
}

// reloadClients re-reads the clients file (on SIGHUP). Requests in flight
// keep the registry they started with; on error the previous registry
// stays in force.
func reloadClients(clients *smart.Clients, path string, log *slog.Logger) error {
	if err := clients.Reload(); err != nil {
		log.Error("clients file not reloaded; the previous registry stays in force", "file", path, "error", err)
		return err
	}
	log.Info("clients file reloaded", "file", path, "clients", clients.Registry().Len())
	return nil
}
