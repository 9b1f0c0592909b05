package httpapi

import (
	"bufio"
	"encoding/json"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// limitedServer serves /healthz behind LimitListener(l) on 127.0.0.1.
func limitedServer(t *testing.T, l ConnLimits) (addr string, ll net.Listener) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ll = LimitListener(ln, l)
	hs := &http.Server{Handler: New(Config{}), ReadHeaderTimeout: time.Minute}
	done := make(chan struct{})
	go func() { defer close(done); hs.Serve(ll) }()
	t.Cleanup(func() { hs.Close(); <-done })
	return ln.Addr().String(), ll
}

// dialFrom connects to addr from the loopback address src (any of
// 127.0.0.0/8 is this host), so that a test has several client IPs.
func dialFrom(t *testing.T, src, addr string) net.Conn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 10 * time.Second}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// healthz sends GET /healthz on c and returns the status code and body.
func healthz(t *testing.T, c net.Conn) (int, string) {
	t.Helper()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := c.Write([]byte("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")); err != nil {
		t.Fatalf("write: %v", err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	defer resp.Body.Close()
	var b strings.Builder
	bufio.NewReader(resp.Body).WriteTo(&b)
	return resp.StatusCode, b.String()
}

// TestConnectionCapPerIP: one client IP holding its cap of idle
// connections gets a quick 503 OperationOutcome for one more, while a
// client from another IP is still served; a freed slot is usable again.
func TestConnectionCapPerIP(t *testing.T) {
	reg := prometheus.NewRegistry()
	addr, _ := limitedServer(t, ConnLimits{Max: 10, MaxPerIP: 3, Registerer: reg})
	var idle []net.Conn
	for range 3 { // connected, never sending a byte
		idle = append(idle, dialFrom(t, "127.0.0.1", addr))
	}
	code, body := healthz(t, dialFrom(t, "127.0.0.1", addr))
	if code != http.StatusServiceUnavailable {
		t.Fatalf("a connection over the per-IP cap got %d %s, want 503", code, body)
	}
	var oo outcome
	if err := json.Unmarshal([]byte(body), &oo); err != nil || oo.ResourceType != "OperationOutcome" ||
		len(oo.Issue) != 1 || oo.Issue[0].Code != "throttled" || !strings.Contains(oo.Issue[0].Diagnostics, "this address") {
		t.Errorf("503 body = %s, want a throttled OperationOutcome naming the address", body)
	}
	if code, body := healthz(t, dialFrom(t, "127.0.0.2", addr)); code != http.StatusOK {
		t.Fatalf("another client IP got %d %s while the first held its cap, want 200", code, body)
	}
	if got := testutil.ToFloat64(mustVec(t, reg, "bulkstream_http_connections_refused_total", "max_conns_per_ip")); got != 1 {
		t.Errorf("refused{max_conns_per_ip} = %v, want 1", got)
	}
	// A slot frees when its connection closes (the server notices the
	// close when its read fails, at once).
	idle[0].Close()
	deadline := time.Now().Add(30 * time.Second)
	for {
		code, _ := healthz(t, dialFrom(t, "127.0.0.1", addr))
		if code == http.StatusOK {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("closing one of the idle connections did not free a slot")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestConnectionCapTotal: past Max, connections from any address are
// refused, and counted by reason.
func TestConnectionCapTotal(t *testing.T) {
	reg := prometheus.NewRegistry()
	addr, _ := limitedServer(t, ConnLimits{Max: 2, Registerer: reg})
	dialFrom(t, "127.0.0.1", addr)
	dialFrom(t, "127.0.0.2", addr)
	code, body := healthz(t, dialFrom(t, "127.0.0.3", addr))
	if code != http.StatusServiceUnavailable || !strings.Contains(body, "too many connections to this server") {
		t.Fatalf("a connection over the total cap got %d %s, want 503", code, body)
	}
	if got := testutil.ToFloat64(mustVec(t, reg, "bulkstream_http_connections_refused_total", "max_conns")); got != 1 {
		t.Errorf("refused{max_conns} = %v, want 1", got)
	}
}

// mustVec finds the counter child of a registered vector by its one label.
func mustVec(t *testing.T, reg *prometheus.Registry, name, label string) prometheus.Collector {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if m.GetLabel()[0].GetValue() == label {
				return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "x", Help: "x"},
					func() float64 { return m.GetCounter().GetValue() })
			}
		}
	}
	t.Fatalf("%s{%s} is not registered", name, label)
	return nil
}
