// Package ingesttest runs embedded NATS JetStream servers for tests of
// ingest and of the packages built on it.
package ingesttest

import (
	"net"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Options returns the options of a quiet single-node JetStream server on
// a random port storing in a fresh t.TempDir().
func Options(t testing.TB) *server.Options {
	t.Helper()
	return &server.Options{
		Host:      "127.0.0.1",
		Port:      -1,
		JetStream: true,
		StoreDir:  t.TempDir(),
		NoLog:     true,
		NoSigs:    true,
	}
}

// RunServer starts a server with opts and shuts it down at cleanup.
func RunServer(t testing.TB, opts *server.Options) *server.Server {
	t.Helper()
	s, err := server.NewServer(opts)
	if err != nil {
		t.Fatalf("nats server: %v", err)
	}
	s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		s.Shutdown()
		t.Fatal("nats server not ready for connections")
	}
	t.Cleanup(func() {
		s.Shutdown()
		s.WaitForShutdown()
	})
	return s
}

// Connect connects to s and closes the connection at cleanup. The
// connection reconnects forever, quickly, so restart tests are fast.
func Connect(t testing.TB, s *server.Server) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(s.ClientURL(),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(25*time.Millisecond),
		nats.ReconnectJitter(0, 0),
	)
	if err != nil {
		t.Fatalf("connect to nats: %v", err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// RunJetStream starts a JetStream server and returns it with a client
// connection and a JetStream context on it. Everything is shut down at
// cleanup.
func RunJetStream(t testing.TB) (*server.Server, *nats.Conn, jetstream.JetStream) {
	t.Helper()
	s := RunServer(t, Options(t))
	nc := Connect(t, s)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatalf("jetstream: %v", err)
	}
	return s, nc, js
}

// Restart shuts s down and starts a new server with opts (those s was
// started with) on the same port and store directory, so connected
// clients reconnect to it and streams survive.
func Restart(t testing.TB, s *server.Server, opts *server.Options) *server.Server {
	t.Helper()
	o := opts.Clone()
	o.Port = s.Addr().(*net.TCPAddr).Port
	s.Shutdown()
	s.WaitForShutdown()
	return RunServer(t, o)
}
