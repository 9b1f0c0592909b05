package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/bulkstream/bulkstream/ingest"
)

// natsServerBin is a standalone nats-server built once per test binary
// from the module in go.mod, next to binPath (TestMain removes it).
var natsServerBin struct {
	once sync.Once
	path string
	err  error
}

func natsServerPath(t testing.TB) string {
	t.Helper()
	natsServerBin.once.Do(func() {
		p := filepath.Join(filepath.Dir(binPath), "nats-server")
		out, err := exec.Command("go", "build", "-o", p, "github.com/nats-io/nats-server/v2").CombinedOutput()
		if err != nil {
			natsServerBin.err = fmt.Errorf("go build nats-server: %v\n%s", err, out)
			return
		}
		natsServerBin.path = p
	})
	if natsServerBin.err != nil {
		t.Fatal(natsServerBin.err)
	}
	return natsServerBin.path
}

// startNATSProc runs a standalone nats-server with JetStream on addr
// (host:port; port 0: any free one) storing in store, waits until
// JetStream answers, and returns the address it listens on (from its
// "Listening for client connections on" log line).
func startNATSProc(t testing.TB, addr, store string) (*proc, string) {
	t.Helper()
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	if port == "0" {
		port = "-1" // nats-server's "any port"; 0 is its default, 4222
	}
	n := startBin(t, natsServerPath(t), "-a", host, "-p", port, "-js", "-sd", store, "-n", "reliability")
	const listening = "Listening for client connections on "
	checkFor(t, 20*time.Second, 50*time.Millisecond, func() error {
		select {
		case err := <-n.done:
			n.done <- err
			t.Fatalf("nats-server exited: %v\n%s", err, n.stderr)
		default:
		}
		_, after, ok := strings.Cut(n.stderr.String(), listening)
		if !ok {
			return errors.New("nats-server has not said where it listens")
		}
		addr, _, _ = strings.Cut(after, "\n")
		addr = strings.TrimSpace(addr)
		nc, err := nats.Connect("nats://"+addr, nats.NoReconnect())
		if err != nil {
			return err
		}
		defer nc.Close()
		js, err := jetstream.New(nc)
		if err != nil {
			return err
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_, err = js.AccountInfo(ctx)
		return err
	})
	return n, addr
}

// readyz returns /readyz's status code and reasons (nil when it does not
// answer).
func readyz(addr string) (int, map[string]string) {
	resp, err := http.Get("http://" + addr + "/readyz")
	if err != nil {
		return 0, nil
	}
	defer resp.Body.Close()
	var body struct{ Reasons map[string]string }
	json.NewDecoder(resp.Body).Decode(&body)
	return resp.StatusCode, body.Reasons
}

// waitReady waits until /readyz answers 200.
func waitReady(t testing.TB, addr string) {
	t.Helper()
	checkFor(t, 30*time.Second, 20*time.Millisecond, func() error {
		if code, reasons := readyz(addr); code != 200 {
			return fmt.Errorf("/readyz %d %v", code, reasons)
		}
		return nil
	})
}

// pollExport polls a status URL until the job is finished and returns the
// final status code and body (200 with a manifest, or an error outcome).
func pollExport(t testing.TB, status string, total time.Duration) (int, []byte) {
	t.Helper()
	var code int
	var body []byte
	checkFor(t, total, 20*time.Millisecond, func() error {
		resp, err := http.Get(status)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		body, _ = io.ReadAll(resp.Body)
		code = resp.StatusCode
		if code == http.StatusAccepted {
			return fmt.Errorf("still running: %s", resp.Header.Get("X-Progress"))
		}
		return nil
	})
	return code, body
}

// exportedIDs downloads every output file of a manifest and returns the
// Type/id of each resource; a resource exported twice fails the test.
func exportedIDs(t *testing.T, body []byte) map[string]bool {
	t.Helper()
	var m manifest
	if err := json.Unmarshal(body, &m); err != nil {
		t.Fatalf("manifest: %v\n%s", err, body)
	}
	ids := map[string]bool{}
	for key := range downloadOutputs(t, m) {
		ids[key] = true
	}
	return ids
}

func reliabilityPatient(i int) []byte {
	return fmt.Appendf(nil, `{"resourceType":"Patient","id":"rel-%05d","active":true,"name":[{"family":"Outage","given":["P%d"]}]}`, i, i)
}

// TestBrokerOutage runs serve against a standalone nats-server, stops the
// broker for a few seconds while a publisher keeps publishing and an
// export is kicked off, restarts it on the same store and address, and
// checks: /readyz reports the outage (with the nats reason) and the
// recovery, ingest resumes by itself and counts the reconnect, the export
// kicked off during the outage completes, and nothing is lost (applied sequence = stream last
// sequence = events published; a final export holds exactly the published
// resources).
func TestBrokerOutage(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a broker outage of several seconds")
	}
	const outage = 10 * time.Second
	store := t.TempDir()
	ns, natsAddr := startNATSProc(t, anyPort, store)
	natsURL := "nats://" + natsAddr

	p := start(t, "serve", "--nats-url", natsURL, "--data-dir", t.TempDir(), "--listen", anyPort, "--batch-size", "50")
	addr := p.serving(t).HTTP
	base := "http://" + addr + "/fhir"
	waitReady(t, addr)

	// The publisher reconnects quickly and forever, and retries each
	// publish (same Nats-Msg-Id) long enough to ride out the outage.
	_, js := connectJS(t, natsURL, nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond), nats.ReconnectJitter(0, 0))
	pub, err := ingest.NewPublisher(js, ingest.PublisherConfig{AckTimeout: time.Second, MaxRetries: 40})
	if err != nil {
		t.Fatal(err)
	}

	// A steady publisher: one new Patient every 5 ms until told to stop.
	var sent atomic.Int64
	stopPub := make(chan struct{})
	pubDone := make(chan error, 1)
	go func() {
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		for i := 0; ; i++ {
			select {
			case <-stopPub:
				pubDone <- nil
				return
			case <-tick.C:
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			err := pub.Upsert(ctx, reliabilityPatient(i))
			cancel()
			if err != nil {
				pubDone <- fmt.Errorf("upsert %d: %w", i, err)
				return
			}
			sent.Store(int64(i + 1))
		}
	}()
	defer func() {
		select {
		case <-stopPub:
		default:
			close(stopPub)
		}
	}()

	// Ingest runs before the outage.
	checkFor(t, 20*time.Second, 20*time.Millisecond, func() error {
		if got := scrape(addr, "bulkstream_index_applied_sequence"); got < 200 {
			return fmt.Errorf("applied sequence %v, want ≥ 200 before the outage", got)
		}
		return nil
	})

	ns.stop(t)
	down := time.Now()
	sentAtStop := sent.Load()

	// /readyz reports the outage, naming the nats connection.
	var reasons map[string]string
	checkFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		var code int
		code, reasons = readyz(addr)
		if code != http.StatusServiceUnavailable || !strings.Contains(reasons["nats"], "nats connection") {
			return fmt.Errorf("/readyz during the outage: %d %v", code, reasons)
		}
		return nil
	})
	t.Logf("outage: /readyz 503 after %v: %v", time.Since(down).Round(time.Millisecond), reasons)
	if got := scrape(addr, "bulkstream_ingest_nats_connected"); got != 0 {
		t.Errorf("bulkstream_ingest_nats_connected = %v during the outage, want 0", got)
	}
	if resp, err := http.Get("http://" + addr + "/healthz"); err != nil || resp.StatusCode != 200 {
		t.Fatalf("/healthz during the outage: %v %v", resp, err)
	} else {
		resp.Body.Close()
	}

	// Nothing is applied while the broker is down, once the batch that
	// was in flight when it stopped (fetched before, committed after) has
	// committed; an export kicked off now (the stream head cannot be
	// read) covers what is applied.
	var appliedDown float64
	checkFor(t, 10*time.Second, 300*time.Millisecond, func() error {
		if got := scrape(addr, "bulkstream_index_applied_sequence"); got != appliedDown {
			appliedDown = got
			return fmt.Errorf("applied sequence still moving: %v", got)
		}
		return nil
	})
	duringStatus := kickoffExport(t, http.DefaultClient, base, "_type=Patient")
	duringCode, duringBody := pollExport(t, duringStatus, 30*time.Second)
	duringDone := time.Since(down)
	if got := scrape(addr, "bulkstream_index_applied_sequence"); got != appliedDown {
		t.Errorf("applied sequence moved during the outage: %v → %v", appliedDown, got)
	}

	time.Sleep(time.Until(down.Add(outage)))
	if code, _ := readyz(addr); code != http.StatusServiceUnavailable {
		t.Errorf("/readyz = %d at the end of the outage, want 503", code)
	}
	sentDuring := sent.Load() - sentAtStop
	// On the same address on purpose: serve reconnects to the URL it was
	// given, as it would to a broker restarted in place.
	startNATSProc(t, natsAddr, store) // stopped by its t.Cleanup
	up := time.Now()
	t.Logf("broker down for %v; %d events published during the outage", up.Sub(down).Round(time.Millisecond), sentDuring)

	// Recovery: /readyz answers 200 again without any restart of serve.
	waitReady(t, addr)
	t.Logf("recovery: /readyz 200 %v after the broker restarted", time.Since(up).Round(time.Millisecond))
	if got := scrape(addr, "bulkstream_ingest_nats_connected"); got != 1 {
		t.Errorf("bulkstream_ingest_nats_connected = %v after the recovery, want 1", got)
	}
	if got := scrape(addr, "bulkstream_ingest_nats_reconnects_total"); got < 1 {
		t.Errorf("bulkstream_ingest_nats_reconnects_total = %v after the broker came back, want ≥ 1", got)
	}

	// Keep publishing after the restart, then stop and settle every ack.
	checkFor(t, 30*time.Second, 20*time.Millisecond, func() error {
		if got := scrape(addr, "bulkstream_index_applied_sequence"); got <= appliedDown {
			return fmt.Errorf("ingest has not resumed: applied sequence %v", got)
		}
		return nil
	})
	time.Sleep(500 * time.Millisecond)
	close(stopPub)
	if err := <-pubDone; err != nil {
		t.Fatal(err)
	}
	total := int(sent.Load())
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	flushErr := pub.Flush(ctx)
	st := pub.Stats()
	t.Logf("publisher: %d sent, %d acked (%d duplicates), %d retried attempts, %d failed", total, st.Published, st.Duplicates, st.Retried, st.Failed)
	if flushErr != nil {
		// Publish everything again: the Nats-Msg-Id of each resource drops
		// the ones already stored, so only acked events count.
		t.Logf("republishing after failed publishes: %v", flushErr)
		pub2, err := ingest.NewPublisher(js, ingest.PublisherConfig{})
		if err != nil {
			t.Fatal(err)
		}
		for i := range total {
			if err := pub2.Upsert(ctx, reliabilityPatient(i)); err != nil {
				t.Fatal(err)
			}
		}
		if err := pub2.Flush(ctx); err != nil {
			t.Fatal(err)
		}
	}

	// Nothing lost: the stream holds each event once, and the index
	// applied all of it.
	s, err := js.Stream(ctx, ingest.DefaultStream)
	if err != nil {
		t.Fatal(err)
	}
	last := s.CachedInfo().State.LastSeq
	if last != uint64(total) || s.CachedInfo().State.Msgs != uint64(total) {
		t.Errorf("stream: last sequence %d, %d messages; want %d events, each once", last, s.CachedInfo().State.Msgs, total)
	}
	waitAppliedSeq(t, addr, last, 30*time.Second)
	if dlq, err := js.Stream(ctx, ingest.DefaultDLQStream); err == nil && dlq.CachedInfo().State.Msgs != 0 {
		t.Errorf("%d events dead-lettered", dlq.CachedInfo().State.Msgs)
	}

	// The export kicked off during the outage completed, with what was
	// applied when it ran (it ran during the outage if it finished then).
	if duringCode != http.StatusOK {
		t.Fatalf("export kicked off during the outage: %d %s", duringCode, duringBody)
	}
	ids := exportedIDs(t, duringBody)
	switch {
	case duringDone < up.Sub(down) && len(ids) != int(appliedDown):
		t.Errorf("export during the outage: %d resources, want the %v applied", len(ids), appliedDown)
	case len(ids) < int(appliedDown) || len(ids) > total:
		t.Errorf("export during the outage: %d resources, want %v to %d", len(ids), appliedDown, total)
	}
	for i := range len(ids) {
		if !ids[fmt.Sprintf("Patient/rel-%05d", i)] {
			t.Errorf("export during the outage lacks Patient/rel-%05d but has %d resources", i, len(ids))
			break
		}
	}
	t.Logf("export kicked off during the outage: completed %v after the broker stopped, %d resources", duringDone.Round(time.Millisecond), len(ids))

	// A full export after recovery holds exactly what was published.
	code, body := pollExport(t, kickoffExport(t, http.DefaultClient, base, "_type=Patient"), 30*time.Second)
	if code != http.StatusOK {
		t.Fatalf("export after recovery: %d %s", code, body)
	}
	ids = exportedIDs(t, body)
	if len(ids) != total {
		t.Errorf("export after recovery: %d resources, want %d", len(ids), total)
	}
	for i := range total {
		if !ids[fmt.Sprintf("Patient/rel-%05d", i)] {
			t.Errorf("export after recovery lacks Patient/rel-%05d", i)
			break
		}
	}

	p.stop(t)
	log := p.stderr.String()
	for _, want := range []string{"nats disconnected", "nats reconnected"} {
		if !strings.Contains(log, want) {
			t.Errorf("serve log lacks %q", want)
		}
	}
	t.Logf("checked %d events (%d published during the outage), stream last sequence %d", total, sentDuring, last)
}
