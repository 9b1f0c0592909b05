package main

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/goleak"

	"github.com/bulkstream/bulkstream/index"
)

// binPath is the bulkstream binary built once by TestMain, so tests run the
// real process (signals, kill -9, exit codes).
var binPath string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "bulkstream-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binPath = filepath.Join(dir, "bulkstream")
	out, err := exec.Command("go", "build", "-o", binPath, ".").CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "go build: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	if code == 0 {
		// Serve runs in this process in some tests (startServerWith,
		// serveInProcess): nothing it started may outlive them. Idle
		// keep-alive connections of the tests' HTTP clients are not
		// serve's.
		http.DefaultClient.CloseIdleConnections()
		if err := goleak.Find(goleak.IgnoreTopFunction("net/http.(*persistConn).readLoop"),
			goleak.IgnoreTopFunction("net/http.(*persistConn).writeLoop")); err != nil {
			fmt.Fprintf(os.Stderr, "goleak: %v\n", err)
			code = 1
		}
	}
	os.Exit(code)
}

// runNATS starts an in-process JetStream server on a random port that the
// bulkstream subprocesses connect to.
func runNATS(t testing.TB) *server.Server {
	t.Helper()
	s, err := server.NewServer(&server.Options{
		Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: t.TempDir(),
		NoLog: true, NoSigs: true, MaxPayload: 8 << 20,
	})
	if err != nil {
		t.Fatal(err)
	}
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats server not ready")
	}
	t.Cleanup(func() { s.Shutdown(); s.WaitForShutdown() })
	return s
}

// inCI reports whether the tests run in CI (.ci/run sets CI=true), where a
// test that cannot check what it is for (no root for a tmpfs, no
// promtool) fails instead of passing with less checked.
func inCI() bool { return os.Getenv("CI") == "true" }

// missing reports that the test cannot check what it says: in CI that
// fails the test; elsewhere it is logged and the test goes on with less.
func missing(t testing.TB, format string, args ...any) {
	t.Helper()
	if inCI() {
		t.Fatalf("CI=true: "+format, args...)
	}
	t.Logf(format, args...)
}

// skipMissing is missing, then a skip outside CI.
func skipMissing(t testing.TB, format string, args ...any) {
	t.Helper()
	missing(t, format, args...)
	t.SkipNow()
}

// freeAddr picks a free loopback address by listening on port 0 and
// closing the listener: another process may take the port before the test
// uses it. Only for what must know its address before it starts
// (scripts/run.sh checks and prints its ports); serve takes port 0 and
// reports what it bound (servingAddrs).
func freeAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// anyPort is the listen address tests give serve (--listen, --nats-listen,
// --ops-listen): the system picks a free port and serve logs it.
const anyPort = "127.0.0.1:0"

// servingAddrs are the addresses a serve reported it bound, from its log
// lines "embedded nats server started" (listen=), "operations endpoints on
// their own listener" (ops_listen=) and "bulkstream serving" (listen=).
type servingAddrs struct {
	HTTP string // --listen
	NATS string // the embedded NATS server; "" with --nats-url
	Ops  string // --ops-listen; "" without
}

// parseServing reads servingAddrs from a serve log (text or JSON); ok is
// false until the "bulkstream serving" line is there.
func parseServing(logs string) (a servingAddrs, ok bool) {
	for line := range strings.Lines(logs) {
		switch {
		case strings.Contains(line, "embedded nats server started"):
			a.NATS = logAttr(line, "listen")
		case strings.Contains(line, "operations endpoints on their own listener"):
			a.Ops = logAttr(line, "ops_listen")
		case strings.Contains(line, "bulkstream serving"):
			a.HTTP = logAttr(line, "listen")
			return a, a.HTTP != ""
		}
	}
	return a, false
}

// logAttr is the value of key in a slog text or JSON line, or "".
func logAttr(line, key string) string {
	if strings.HasPrefix(line, "{") {
		var m map[string]any
		if json.Unmarshal([]byte(line), &m) != nil {
			return ""
		}
		v, _ := m[key].(string)
		return v
	}
	for f := range strings.FieldsSeq(line) {
		if v, ok := strings.CutPrefix(f, key+"="); ok {
			if u, err := strconv.Unquote(v); err == nil {
				return u
			}
			return v
		}
	}
	return ""
}

// onAddr is the URL u (a status or file URL from a serve that has since
// restarted on another port) on the server at addr.
func onAddr(t testing.TB, u, addr string) string {
	t.Helper()
	pu, err := url.Parse(u)
	if err != nil {
		t.Fatal(err)
	}
	pu.Host = addr
	return pu.String()
}

// loopbackOf is the loopback address with addr's port: where a test
// reaches a listener bound to every interface (0.0.0.0:port, [::]:port).
func loopbackOf(t testing.TB, addr string) string {
	t.Helper()
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	return net.JoinHostPort("127.0.0.1", port)
}

// waitServingLog waits until the serve logging to logs says it is serving
// and returns the addresses it bound; done (the serve's end) failing first
// fails the test.
func waitServingLog(t testing.TB, logs *syncBuffer, done chan error) servingAddrs {
	t.Helper()
	var a servingAddrs
	checkFor(t, 2*time.Minute, 10*time.Millisecond, func() error {
		select {
		case err := <-done:
			done <- err // for whoever waits next
			t.Fatalf("serve stopped before serving: %v\n%s", err, logs)
		default:
		}
		var ok bool
		if a, ok = parseServing(logs.String()); !ok {
			return errors.New("serve has not said it is serving")
		}
		return nil
	})
	return a
}

// serving waits until the serve process p is serving (with --log-level
// info or lower) and returns the addresses it bound.
func (p *proc) serving(t testing.TB) servingAddrs {
	t.Helper()
	return waitServingLog(t, p.stderr, p.done)
}

// proc is a running subprocess: bulkstream, or nats-server
// (startNATSProc).
type proc struct {
	cmd    *exec.Cmd
	stderr *syncBuffer
	done   chan error
}

// syncBuffer is a bytes.Buffer that a test may read while the process's
// output copier writes to it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// start runs the bulkstream binary with args until the test ends.
func start(t testing.TB, args ...string) *proc {
	t.Helper()
	return startBin(t, binPath, args...)
}

// startBin runs bin with args until the test ends; when the test has
// failed, it logs the end of the process's stderr first.
func startBin(t testing.TB, bin string, args ...string) *proc {
	t.Helper()
	p := &proc{cmd: exec.Command(bin, args...), stderr: &syncBuffer{}, done: make(chan error, 1)}
	p.cmd.Stderr = p.stderr
	p.cmd.Env = append(os.Environ(), "GOTRACEBACK=all")
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.done <- p.cmd.Wait() }()
	t.Cleanup(func() {
		if p.cmd.ProcessState != nil {
			return
		}
		if t.Failed() {
			// A hung server says where it hangs: SIGQUIT makes the Go
			// runtime print every goroutine's stack.
			p.cmd.Process.Signal(syscall.SIGQUIT)
			select {
			case err := <-p.done:
				p.done <- err // for the receive below
			case <-time.After(5 * time.Second):
			}
			out := p.stderr.String()
			t.Logf("%s %s stderr (last 64 KB):\n%s", filepath.Base(bin), strings.Join(args, " "), out[max(0, len(out)-64<<10):])
		}
		p.cmd.Process.Kill()
		<-p.done
	})
	return p
}

// stop sends SIGTERM and waits for a clean exit.
func (p *proc) stop(t testing.TB) {
	t.Helper()
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-p.done:
		if err != nil {
			t.Fatalf("%s exited with %v after SIGTERM:\n%s", filepath.Base(p.cmd.Path), err, p.stderr)
		}
	case <-time.After(30 * time.Second):
		p.cmd.Process.Kill()
		t.Fatalf("%s did not stop within 30s of SIGTERM:\n%s", filepath.Base(p.cmd.Path), p.stderr)
	}
}

func (p *proc) kill9() {
	p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
}

// runCmd runs bulkstream to completion and returns its stdout.
func runCmd(t testing.TB, args ...string) string {
	t.Helper()
	var stdout, stderr bytes.Buffer
	cmd := exec.Command(binPath, args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("bulkstream %s: %v\n%s\n%s", strings.Join(args, " "), err, stdout.String(), stderr.String())
	}
	return stdout.String()
}

// metricsClient bounds every scrape: a server that stops answering reads
// as down instead of hanging the test.
var metricsClient = &http.Client{Timeout: 10 * time.Second}

// scrapeAll reads the named (label-less) metrics from one /metrics scrape.
func scrapeAll(addr string, names ...string) map[string]float64 {
	resp, err := metricsClient.Get("http://" + addr + "/metrics")
	if err != nil {
		return nil
	}
	defer resp.Body.Close()
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		name, v, ok := strings.Cut(sc.Text(), " ")
		if !ok {
			continue
		}
		for _, n := range names {
			if name == n {
				out[n], _ = strconv.ParseFloat(v, 64)
			}
		}
	}
	return out
}

// scrape reads one label-less metric; -1 when the server does not answer
// or does not have it.
func scrape(addr, name string) float64 {
	v, ok := scrapeAll(addr, name)[name]
	if !ok {
		return -1
	}
	return v
}

// waitHealthy waits until serve at addr answers /healthz.
func waitHealthy(t testing.TB, addr string) {
	t.Helper()
	checkFor(t, 2*time.Minute, 20*time.Millisecond, func() error {
		resp, err := http.Get("http://" + addr + "/healthz")
		if err != nil {
			return err
		}
		resp.Body.Close()
		return nil
	})
}

// waitAppliedSeq waits until the server at addr reports the applied
// sequence want. It reads ingest's gauge, which the consumer sets after
// counting the batch (applied, no-op, dead-lettered), not the index's,
// which is published before: a test that reads those counters next sees
// the whole batch.
func waitAppliedSeq(t testing.TB, addr string, want uint64, total time.Duration) {
	t.Helper()
	checkFor(t, total, 50*time.Millisecond, func() error {
		if got := scrape(addr, "bulkstream_ingest_applied_sequence"); got != float64(want) {
			return fmt.Errorf("applied sequence %v, want %d", got, want)
		}
		return nil
	})
}

// checkFor polls f until it returns nil or the time is up.
func checkFor(t testing.TB, total, sleep time.Duration, f func() error) {
	t.Helper()
	deadline := time.Now().Add(total)
	var err error
	for time.Now().Before(deadline) {
		if err = f(); err == nil {
			return
		}
		time.Sleep(sleep)
	}
	t.Fatalf("timed out after %v: %v", total, err)
}

// dumpIndex returns a digest of every c/, r/ and m/ key and value, and the
// number of keys, read from the index in dir (the process using it must
// have exited).
func dumpIndex(t testing.TB, dir string) (digest string, keys int) {
	t.Helper()
	x, err := index.Open(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer x.Close()
	h := sha256.New()
	err = x.Dump(func(k, v []byte) error {
		keys++
		fmt.Fprintf(h, "%q=%q\n", k, v)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("%x", h.Sum(nil)), keys
}

// appliedSeq reads m/applied_seq from the index in dir (its process must
// have exited).
func appliedSeq(t testing.TB, dir string) uint64 {
	t.Helper()
	x, err := index.Open(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer x.Close()
	return x.AppliedSeq()
}

// TestCrashLoopIngest (reliability_crash_test.go) kill -9s serve during
// ingest and checks the index against the acked log and a rebuild.

// TestServeEmbeddedDefault runs serve the way `make run` does, with its
// embedded NATS server, publishes through that server, restarts, and checks
// that the data survived and SIGTERM exits cleanly.
func TestServeEmbeddedDefault(t *testing.T) {
	data := t.TempDir()
	args := []string{"serve", "--data-dir", data, "--listen", anyPort, "--nats-listen", anyPort}
	p := start(t, args...)
	a := p.serving(t)
	addr, natsAddr := a.HTTP, a.NATS
	waitHealthy(t, addr)

	lines := sampleLines(t, 500)
	f := filepath.Join(t.TempDir(), "sample.ndjson")
	if err := os.WriteFile(f, lines, 0o644); err != nil {
		t.Fatal(err)
	}
	runCmd(t, "publish", "--nats-url", "nats://"+natsAddr, f)
	waitAppliedSeq(t, addr, 500, 30*time.Second)
	resp, err := http.Get("http://" + addr + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("/readyz = %d, want 200", resp.StatusCode)
	}
	p.stop(t)

	// Restart on the same data dir: the stream and the index are still there.
	p = start(t, args...)
	waitAppliedSeq(t, p.serving(t).HTTP, 500, 30*time.Second)
	p.stop(t)
	if !strings.Contains(p.stderr.String(), "embedded nats server started") {
		t.Errorf("no embedded server log line:\n%s", p.stderr)
	}
}

// TestServeRefusesConflictingStream: an existing stream whose subjects
// differ from the configured ones stops serve with a message naming them.
func TestServeRefusesConflictingStream(t *testing.T) {
	ns := runNATS(t)
	p := start(t, "serve", "--nats-url", ns.ClientURL(), "--data-dir", t.TempDir(), "--listen", anyPort, "--subjects", "fhir.*.*")
	// Wait until it created the stream, then stop it and restart with other subjects.
	p.serving(t)
	p.stop(t)

	cmd := exec.Command(binPath, "serve", "--nats-url", ns.ClientURL(), "--data-dir", t.TempDir(), "--listen", anyPort, "--subjects", "ehr.>")
	out, err := cmd.CombinedOutput()
	if err == nil {
		t.Fatalf("serve started against a conflicting stream:\n%s", out)
	}
	if !strings.Contains(string(out), "subjects") || !strings.Contains(string(out), "FHIR") {
		t.Errorf("error does not name the stream and the field:\n%s", out)
	}
}

// sampleLines returns the first n lines of the Synthea sample.
func sampleLines(t testing.TB, n int) []byte {
	t.Helper()
	out := runCmd(t, "gen", "--sample", genSample, "--scale", "1")
	var b bytes.Buffer
	for l := range strings.Lines(out) {
		if n == 0 {
			break
		}
		b.WriteString(l)
		n--
	}
	return b.Bytes()
}

// connectJS connects to the NATS server at url, closing the connection
// when the test ends, and returns its JetStream handle.
func connectJS(tb testing.TB, url string, opts ...nats.Option) (*nats.Conn, jetstream.JetStream) {
	tb.Helper()
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		tb.Fatal(err)
	}
	return nc, js
}

// kickoffResponse sends the Bulk Data kick-off GET base/$export?query
// (Accept: application/fhir+json, Prefer: respond-async) and returns the
// response with its body read and closed.
func kickoffResponse(tb testing.TB, hc *http.Client, base, query string) (*http.Response, []byte) {
	tb.Helper()
	req, err := http.NewRequest("GET", base+"/$export?"+query, nil)
	if err != nil {
		tb.Fatal(err)
	}
	req.Header.Set("Accept", "application/fhir+json")
	req.Header.Set("Prefer", "respond-async")
	resp, err := hc.Do(req)
	if err != nil {
		tb.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp, body
}

// kickoffExport starts an export and returns its status URL
// (Content-Location); anything but 202 fails the test.
func kickoffExport(tb testing.TB, hc *http.Client, base, query string) string {
	tb.Helper()
	resp, body := kickoffResponse(tb, hc, base, query)
	if resp.StatusCode != http.StatusAccepted {
		tb.Fatalf("kick-off %s: %d %s", query, resp.StatusCode, body)
	}
	return resp.Header.Get("Content-Location")
}

// TestParseServing: the addresses are read from serve's text and JSON
// log lines, and not before the "bulkstream serving" line.
func TestParseServing(t *testing.T) {
	want := servingAddrs{HTTP: "127.0.0.1:43121", NATS: "127.0.0.1:40111", Ops: "[::1]:40222"}
	for format, logs := range map[string]string{
		"text": `time=2026-01-01T00:00:00Z level=INFO msg="embedded nats server started" listen=127.0.0.1:40111 url=nats://127.0.0.1:40111 store=/d/nats auth=false tls=false
time=2026-01-01T00:00:00Z level=INFO msg="operations endpoints on their own listener" ops_listen=[::1]:40222 paths="/metrics /healthz /readyz"
time=2026-01-01T00:00:00Z level=INFO msg="bulkstream serving" listen=127.0.0.1:43121 fhir_base=http://127.0.0.1:43121/fhir
`,
		"json": `{"time":"2026-01-01T00:00:00Z","level":"INFO","msg":"embedded nats server started","listen":"127.0.0.1:40111","url":"nats://127.0.0.1:40111"}
{"time":"2026-01-01T00:00:00Z","level":"INFO","msg":"operations endpoints on their own listener","ops_listen":"[::1]:40222"}
{"time":"2026-01-01T00:00:00Z","level":"INFO","msg":"bulkstream serving","listen":"127.0.0.1:43121"}
`,
	} {
		if got, ok := parseServing(logs); !ok || got != want {
			t.Errorf("%s: parseServing = %+v, %v; want %+v, true", format, got, ok, want)
		}
		before, _, _ := strings.Cut(logs, "bulkstream serving")
		if got, ok := parseServing(before); ok {
			t.Errorf("%s: parseServing before the serving line = %+v, true; want false", format, got)
		}
	}
}
