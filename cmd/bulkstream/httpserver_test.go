package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// serveInProcess runs serve with args in this process until the test
// ends; the returned channel gets serve's result.
func serveInProcess(t *testing.T, args ...string) (cancel context.CancelFunc, done chan error, logs *syncBuffer) {
	t.Helper()
	var c serveConfig
	fs := newFlagSet("serve", io.Discard)
	bindServeFlags(fs, &c)
	if err := parseFlags(fs, args); err != nil {
		t.Fatal(err)
	}
	logs = &syncBuffer{}
	ctx, cancel := context.WithCancel(t.Context())
	done = make(chan error, 1)
	go func() { done <- serve(ctx, c, slog.New(slog.NewTextHandler(logs, nil))) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			done <- err
		case <-time.After(time.Minute):
			t.Error("serve did not stop within a minute")
		}
	})
	return cancel, done, logs
}

// TestServeRefusesToGuessPublicURL: a --listen address that binds every
// interface, without --public-url, is refused with a message asking for
// --public-url (the default public URL would be http://[::]:port, which
// no client can reach); with --public-url it starts.
func TestServeRefusesToGuessPublicURL(t *testing.T) {
	for _, listen := range []string{":0", "0.0.0.0:0", "[::]:0"} {
		cancel, done, _ := serveInProcess(t, "--data-dir", t.TempDir(), "--listen", listen,
			"--nats-listen", anyPort, "--insecure")
		select {
		case err := <-done:
			done <- err
			if err == nil || !strings.Contains(err.Error(), "--public-url") {
				t.Errorf("serve --listen %s without --public-url = %v, want a refusal asking for --public-url", listen, err)
			}
		case <-time.After(30 * time.Second):
			t.Errorf("serve --listen %s without --public-url is still running after 30s, want a refusal", listen)
		}
		cancel()
	}
	for listen, want := range map[string]bool{":1": true, "0.0.0.0:1": true, "[::]:1": true, "127.0.0.1:1": false,
		"192.0.2.1:1": false, "localhost:1": false, "bad": false} {
		if got := unspecifiedHost(listen); got != want {
			t.Errorf("unspecifiedHost(%q) = %v, want %v", listen, got, want)
		}
	}

	// With --public-url it starts, and hands out that URL.
	_, done, logs := serveInProcess(t, "--data-dir", t.TempDir(), "--listen", ":0",
		"--nats-listen", anyPort, "--insecure", "--public-url", "http://bulk.example.org")
	addr := loopbackOf(t, waitServingLog(t, logs, done).HTTP)
	waitServing(t, addr, "/healthz", done)
	resp, err := http.Get("http://" + addr + "/fhir/metadata")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(b), "http://bulk.example.org/fhir") {
		t.Errorf("metadata does not name --public-url:\n%.500s", b)
	}
}

// waitServing waits until GET path on addr answers, failing if serve
// stops first.
func waitServing(t *testing.T, addr, path string, done chan error) {
	t.Helper()
	checkFor(t, time.Minute, 20*time.Millisecond, func() error {
		select {
		case err := <-done:
			done <- err
			t.Fatalf("serve stopped: %v", err)
		default:
		}
		resp, err := http.Get("http://" + addr + path)
		if err != nil {
			return err
		}
		resp.Body.Close()
		return nil
	})
}

func getStatus(t *testing.T, u string) (int, string) {
	t.Helper()
	resp, err := http.Get(u)
	if err != nil {
		t.Fatalf("GET %s: %v", u, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestOpsListen: with --ops-listen, /metrics, /healthz and /readyz are
// served there and are 404 on --listen; /readyz there turns 503
// (shutdown) on SIGTERM while the shutdown delay lasts, and the ops
// listener is closed when serve returns. A non-loopback --ops-listen is
// refused without --insecure.
func TestOpsListen(t *testing.T) {
	cancel, done, serveLogs := serveInProcess(t, "--data-dir", t.TempDir(), "--listen", anyPort, "--nats-listen", anyPort,
		"--ops-listen", anyPort, "--shutdown-delay", "3s", "--shutdown-timeout", "5s")
	served := waitServingLog(t, serveLogs, done)
	addr, ops := served.HTTP, served.Ops
	waitServing(t, ops, "/healthz", done)
	for _, path := range []string{"/metrics", "/healthz", "/readyz"} {
		if code, body := getStatus(t, "http://"+addr+path); code != http.StatusNotFound || !strings.Contains(body, "OperationOutcome") {
			t.Errorf("GET %s on --listen = %d %.200s, want a 404 OperationOutcome", path, code, body)
		}
	}
	checkFor(t, time.Minute, 20*time.Millisecond, func() error {
		if code, body := getStatus(t, "http://"+ops+"/readyz"); code != http.StatusOK {
			return fmt.Errorf("/readyz on --ops-listen = %d %s", code, body)
		}
		return nil
	})
	if code, body := getStatus(t, "http://"+ops+"/metrics"); code != http.StatusOK || !strings.Contains(body, "bulkstream_build_info") {
		t.Errorf("GET /metrics on --ops-listen = %d %.200s, want 200 and the metrics", code, body)
	}
	if code, _ := getStatus(t, "http://"+ops+"/fhir/metadata"); code != http.StatusNotFound {
		t.Errorf("GET /fhir/metadata on --ops-listen = %d, want 404", code)
	}
	if code, _ := getStatus(t, "http://"+addr+"/fhir/metadata"); code != http.StatusOK {
		t.Errorf("GET /fhir/metadata on --listen = %d, want 200", code)
	}

	cancel() // SIGTERM
	checkFor(t, time.Minute, 20*time.Millisecond, func() error {
		code, body := getStatus(t, "http://"+ops+"/readyz")
		if code != http.StatusServiceUnavailable || !strings.Contains(body, "shutdown") {
			return fmt.Errorf("/readyz on --ops-listen after SIGTERM = %d %s, want 503 shutdown", code, body)
		}
		return nil
	})

	// A non-loopback --ops-listen needs --insecure.
	var c serveConfig
	fs := newFlagSet("serve", io.Discard)
	bindServeFlags(fs, &c)
	if err := parseFlags(fs, []string{"--data-dir", t.TempDir(), "--ops-listen", "0.0.0.0:0"}); err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithTimeout(t.Context(), 20*time.Second) // a serve that starts runs until then
	defer stop()
	if err := serve(ctx, c, slog.New(slog.DiscardHandler)); err == nil || !strings.Contains(err.Error(), "--ops-listen") {
		t.Errorf("serve --ops-listen 0.0.0.0:0 without --insecure = %v, want a refusal", err)
	}
	c.Security.Insecure = true
	var logs syncBuffer
	if err := checkListen(c, slog.New(slog.NewTextHandler(&logs, nil))); err != nil || !strings.Contains(logs.String(), "level=WARN") {
		t.Errorf("--ops-listen 0.0.0.0:0 --insecure = %v, logs %q; want accepted with a WARN", err, logs.String())
	}

	// serve returns (after the shutdown delay: wait for it) and the
	// ops listener is closed.
	select {
	case err := <-done:
		done <- err
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(2 * time.Minute):
		t.Fatal("serve did not return")
	}
	if c, err := net.Dial("tcp", ops); err == nil {
		c.Close()
		t.Error("the ops listener still accepts connections after serve returned")
	}
}

// TestServeConnectionLimits: serve's flags reach the API listener: one
// address holding --max-conns-per-ip idle connections gets a 503 for one
// more while another address is served, and a kick-off body sent a byte at
// a time is cut off after --read-body-timeout.
func TestServeConnectionLimits(t *testing.T) {
	s := startServerWith(t, serverOpts{args: []string{"--max-conns-per-ip", "2", "--read-body-timeout", "300ms"}})
	dial := func(src string) net.Conn {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 10 * time.Second}
		c, err := d.Dial("tcp", s.addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		c.SetDeadline(time.Now().Add(time.Minute))
		return c
	}
	get := func(c net.Conn) int {
		fmt.Fprintf(c, "GET /fhir/metadata HTTP/1.1\r\nHost: x\r\n\r\n")
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatalf("read: %v", err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	dial("127.0.0.1")
	dial("127.0.0.1")
	if code := get(dial("127.0.0.1")); code != http.StatusServiceUnavailable {
		t.Errorf("a third connection from 127.0.0.1 with --max-conns-per-ip 2 got %d, want 503", code)
	}
	if code := get(dial("127.0.0.2")); code != http.StatusOK {
		t.Errorf("a connection from 127.0.0.2 got %d, want 200", code)
	}

	// A slow kick-off body: the connection ends before the body does.
	c := dial("127.0.0.3")
	const n = 2000
	fmt.Fprintf(c, "POST /fhir/$export HTTP/1.1\r\nHost: x\r\nAccept: application/fhir+json\r\nPrefer: respond-async\r\n"+
		"Content-Type: application/fhir+json\r\nContent-Length: %d\r\n\r\n", n)
	read := make(chan struct{})
	go func() { io.Copy(io.Discard, c); close(read) }()
	for i := range n {
		select {
		case <-read:
			return // cut off before the body was sent
		case <-time.After(5 * time.Millisecond):
		}
		if _, err := c.Write([]byte{' '}); err != nil {
			return
		}
		if i == n-1 {
			t.Errorf("a kick-off body of %d bytes at one per 5ms was read whole with --read-body-timeout 300ms", n)
		}
	}
}
