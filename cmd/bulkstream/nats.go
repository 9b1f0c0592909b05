package main

import (
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"strconv"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// startEmbeddedNATS runs an in-process NATS server with JetStream storing
// under <data-dir>/nats and listening on --nats-listen (host:port), so
// that other processes (publishers, the nats CLI) can reach it (port 0:
// any free one, which s.Addr reports); with
// --nats-auth it enforces those users and permissions, with
// --nats-tls-cert it requires TLS. It returns the options of bulkstream's
// own connection to it: in-process (no TLS, no network), and with
// --nats-auth as a user made for this run only (internalNATSUser).
func startEmbeddedNATS(c natsConfig, log *slog.Logger) (*server.Server, []nats.Option, error) {
	host, portStr, err := net.SplitHostPort(c.NATSListen)
	if err != nil {
		return nil, nil, fmt.Errorf("--nats-listen %q: %w", c.NATSListen, err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil {
		return nil, nil, fmt.Errorf("--nats-listen %q: bad port: %w", c.NATSListen, err)
	}
	if port == 0 {
		// Any free port, as for net.Listen: nats-server reads 0 as its
		// default port (4222) and -1 as any. serve logs the one bound.
		port = server.RANDOM_PORT
	}
	opts := &server.Options{
		ServerName: "bulkstream-embedded",
		Host:       host,
		Port:       port,
		JetStream:  true,
		StoreDir:   filepath.Join(c.DataDir, "nats"),
		NoSigs:     true,
		// Events carry whole resources; NATS' default 1 MiB payload cap
		// would dead-letter nothing but refuse large publishes outright.
		MaxPayload: 8 << 20,
	}
	var own []nats.Option
	if c.NATSAuth != "" {
		a, err := loadNATSAuth(c.NATSAuth)
		if err != nil {
			return nil, nil, err
		}
		self, auth, err := internalNATSUser()
		if err != nil {
			return nil, nil, err
		}
		opts.Users, opts.Nkeys = a.users, append(a.nkeys, self)
		own = append(own, auth)
	}
	if opts.TLSConfig, err = c.natsTLSConfig(); err != nil {
		return nil, nil, err
	}
	if opts.TLSConfig != nil {
		opts.TLS, opts.TLSTimeout = true, 5
	}
	s, err := server.NewServer(opts)
	if err != nil {
		return nil, nil, fmt.Errorf("embedded nats: %w", err)
	}
	s.SetLoggerV2(natsLogger{l: log.With("component", "nats-server")}, false, false, false)
	go s.Start() // owned: Shutdown stops it, WaitForShutdown waits for it
	if !s.ReadyForConnections(30 * time.Second) {
		s.Shutdown()
		return nil, nil, fmt.Errorf("embedded nats: not ready for connections on %s after 30s", c.NATSListen)
	}
	return s, append(own, nats.InProcessServer(s)), nil
}

// natsLogger adapts nats-server's logger to slog. onError, if set, sees
// every error line first.
type natsLogger struct {
	l       *slog.Logger
	onError func(msg string)
}

func (n natsLogger) Noticef(format string, v ...any) { n.l.Info(fmt.Sprintf(format, v...)) }
func (n natsLogger) Warnf(format string, v ...any)   { n.l.Warn(fmt.Sprintf(format, v...)) }
func (n natsLogger) Fatalf(format string, v ...any)  { n.l.Error(fmt.Sprintf(format, v...)) }
func (n natsLogger) Errorf(format string, v ...any) {
	msg := fmt.Sprintf(format, v...)
	if n.onError != nil {
		n.onError(msg)
	}
	n.l.Error(msg)
}
func (n natsLogger) Debugf(format string, v ...any) { n.l.Debug(fmt.Sprintf(format, v...)) }
func (n natsLogger) Tracef(format string, v ...any) {}
