package httpapi

import (
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// ConnLimits caps the connections a listener keeps open at once.
type ConnLimits struct {
	// Max caps all connections (0: no cap).
	Max int
	// MaxPerIP caps the connections from one client IP address, so that
	// one host cannot take them all (0: no cap). Behind a proxy every
	// connection comes from the proxy's address.
	MaxPerIP int
	// TLS: the listener's connections speak TLS, so a refused one is
	// closed at once instead of answered with a plain-HTTP 503.
	TLS bool
	// Logger; nil discards.
	Logger *slog.Logger
	// Registerer receives the connection metrics; nil keeps them
	// unregistered.
	Registerer prometheus.Registerer
}

// Validate reports a negative cap, naming the field.
func (l ConnLimits) Validate() error {
	if l.Max < 0 {
		return fmt.Errorf("httpapi: ConnLimits.Max %d must not be negative", l.Max)
	}
	if l.MaxPerIP < 0 {
		return fmt.Errorf("httpapi: ConnLimits.MaxPerIP %d must not be negative", l.MaxPerIP)
	}
	return nil
}

const (
	// refuseTimeout bounds the answer to a refused connection.
	refuseTimeout = time.Second
	// maxRefusing caps the refused connections being answered at once;
	// past it they are closed without an answer.
	maxRefusing = 64
	// refusedRetryAfter is the Retry-After of the 503.
	refusedRetryAfter = 5
	// refusedLogEvery rate-limits the log line about refused connections.
	refusedLogEvery = 30 * time.Second
)

// LimitListener returns ln with the caps of l: Accept hands out
// connections only while they are under both caps; one over a cap is
// answered at once with 503 and an OperationOutcome (or, with TLS, just
// closed) and never reaches the HTTP server, so it can neither queue nor
// hold a slot. A connection frees its slot when it is closed. Close waits
// for the refusals in progress (each takes at most a second). It panics
// when l does not pass Validate.
func LimitListener(ln net.Listener, l ConnLimits) net.Listener {
	if err := l.Validate(); err != nil {
		panic(err)
	}
	if l.Logger == nil {
		l.Logger = slog.New(slog.DiscardHandler)
	}
	ll := &limitListener{
		Listener: ln,
		limits:   l,
		log:      l.Logger.With("component", "http"),
		perIP:    map[string]int{},
		open: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "bulkstream_http_connections_open",
			Help: "HTTP connections open on the API listener.",
		}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bulkstream_http_connections_refused_total",
			Help: "HTTP connections refused at accept, by the cap they were over: max_conns or max_conns_per_ip.",
		}, []string{"reason"}),
		refusing: make(chan struct{}, maxRefusing),
	}
	for _, reason := range []string{reasonMax, reasonPerIP} {
		ll.refused.WithLabelValues(reason)
	}
	if l.Registerer != nil {
		ll.open = register(l.Registerer, ll.open)
		ll.refused = register(l.Registerer, ll.refused)
	}
	return ll
}

const (
	reasonMax   = "max_conns"
	reasonPerIP = "max_conns_per_ip"
)

type limitListener struct {
	net.Listener
	limits   ConnLimits
	log      *slog.Logger
	open     prometheus.Gauge
	refused  *prometheus.CounterVec
	refusing chan struct{} // semaphore of refusals being answered
	wg       sync.WaitGroup
	lastLog  atomic.Int64 // UnixNano of the last "refused" log line
	skipped  atomic.Int64 // refusals not logged since

	mu    sync.Mutex
	total int
	perIP map[string]int
}

func (l *limitListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		ip := remoteIP(c)
		reason := l.admit(ip)
		if reason == "" {
			l.open.Inc()
			return &limitedConn{Conn: c, l: l, ip: ip}, nil
		}
		l.refused.WithLabelValues(reason).Inc()
		l.logRefused(ip, reason)
		l.refuse(c, reason)
	}
}

// admit takes a slot for ip, or says which cap is full.
func (l *limitListener) admit(ip string) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.limits.Max > 0 && l.total >= l.limits.Max {
		return reasonMax
	}
	if l.limits.MaxPerIP > 0 && l.perIP[ip] >= l.limits.MaxPerIP {
		return reasonPerIP
	}
	l.total++
	l.perIP[ip]++
	return ""
}

func (l *limitListener) release(ip string) {
	l.mu.Lock()
	l.total--
	if l.perIP[ip]--; l.perIP[ip] <= 0 {
		delete(l.perIP, ip)
	}
	l.mu.Unlock()
	l.open.Dec()
}

func (l *limitListener) logRefused(ip, reason string) {
	now := time.Now().UnixNano()
	last := l.lastLog.Load()
	if now-last < int64(refusedLogEvery) || !l.lastLog.CompareAndSwap(last, now) {
		l.skipped.Add(1)
		return
	}
	l.log.Warn("HTTP connections refused: over the connection cap", "reason", reason, "remote_ip", ip,
		"max_conns", l.limits.Max, "max_conns_per_ip", l.limits.MaxPerIP, "suppressed", l.skipped.Swap(0))
}

// refuse answers c with a 503 (plain HTTP only), then closes it. The
// answer is written before the request is read; the read side is drained
// for a moment after, so that the request arriving does not make the
// kernel reset the connection before the client has read the answer.
func (l *limitListener) refuse(c net.Conn, reason string) {
	if l.limits.TLS {
		c.Close()
		return
	}
	select {
	case l.refusing <- struct{}{}:
	default:
		c.Close() // too many being answered: no answer
		return
	}
	l.wg.Go(func() { // owned: bounded by refuseTimeout; Close waits for it
		defer func() { <-l.refusing }()
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(refuseTimeout))
		diag := "too many connections to this server; retry later"
		if reason == reasonPerIP {
			diag = "too many connections from this address (at most " + strconv.Itoa(l.limits.MaxPerIP) + "); close idle ones or retry later"
		}
		body := fmt.Sprintf(`{"resourceType":"OperationOutcome","issue":[{"severity":"error","code":"throttled","diagnostics":%q}]}`, diag)
		resp := "HTTP/1.1 503 Service Unavailable\r\n" +
			"Content-Type: " + contentTypeFHIR + "\r\n" +
			"Content-Length: " + strconv.Itoa(len(body)) + "\r\n" +
			"Retry-After: " + strconv.Itoa(refusedRetryAfter) + "\r\n" +
			"Cache-Control: no-store\r\n" +
			"Connection: close\r\n\r\n" + body
		if _, err := c.Write([]byte(resp)); err != nil {
			return
		}
		if cw, ok := c.(interface{ CloseWrite() error }); ok {
			_ = cw.CloseWrite()
		}
		buf := make([]byte, 4<<10)
		for {
			if _, err := c.Read(buf); err != nil {
				return
			}
		}
	})
}

// Close closes the listener and waits for the refusals in progress.
func (l *limitListener) Close() error {
	err := l.Listener.Close()
	l.wg.Wait()
	return err
}

// limitedConn gives its slot back when closed (once).
type limitedConn struct {
	net.Conn
	l      *limitListener
	ip     string
	closed atomic.Bool
}

func (c *limitedConn) Close() error {
	err := c.Conn.Close()
	if c.closed.CompareAndSwap(false, true) {
		c.l.release(c.ip)
	}
	return err
}

// remoteIP is the client's IP address, the key of the per-IP cap.
func remoteIP(c net.Conn) string {
	addr := c.RemoteAddr()
	if addr == nil {
		return ""
	}
	if ta, ok := addr.(*net.TCPAddr); ok {
		return ta.IP.String()
	}
	host, _, err := net.SplitHostPort(addr.String())
	if err != nil {
		return addr.String()
	}
	return host
}
