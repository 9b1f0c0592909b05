package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestGracefulShutdown sends SIGTERM to the real binary in the middle of
// ingest, then in the middle of an export with a download in flight, and
// checks each time a clean exit, that the download finished, and a clean
// restart with nothing lost: the index's applied sequence reaches the
// stream's last sequence and the interrupted job resumes to the same
// result as a job that ran undisturbed.
func TestGracefulShutdown(t *testing.T) {
	if testing.Short() {
		t.Skip("builds data and runs the binary")
	}
	ns := runNATS(t)
	gen := t.TempDir()
	runCmd(t, "gen", "--sample", genSample, "--scale", "2", "--seed", "5", "--out", gen)
	resources := filepath.Join(gen, genResourcesFile)
	total := int(countLines(t, resources))

	// Each run listens on a port of its own (serve logs it); a status URL
	// handed out before a restart is moved to the new port (onAddr).
	data := t.TempDir()
	args := []string{"serve", "--nats-url", ns.ClientURL(), "--data-dir", data, "--listen", anyPort,
		"--batch-size", "100", "--shutdown-timeout", "20s"}
	// sigterm stops p, checks that it exited cleanly and logged each
	// step of the shutdown.
	sigterm := func(p *proc) {
		t.Helper()
		p.stop(t)
		for _, line := range []string{"shutting down", "http server stopped", "ingest stopped"} {
			if !strings.Contains(p.stderr.String(), line) {
				t.Errorf("no %q log line:\n%s", line, p.stderr)
			}
		}
	}

	// The first run creates the stream; the events are then published
	// with serve down, so the next run starts with a backlog.
	p := start(t, args...)
	p.serving(t)
	sigterm(p)
	runCmd(t, "publish", "--nats-url", ns.ClientURL(), resources)
	last := streamLastSeq(t, ns.ClientURL())
	if last != uint64(total) {
		t.Fatalf("stream last sequence %d, want %d", last, total)
	}

	// 1. SIGTERM mid-ingest.
	p = start(t, args...)
	addr := p.serving(t).HTTP
	checkFor(t, 30*time.Second, 5*time.Millisecond, func() error {
		if got := scrape(addr, "bulkstream_index_applied_sequence"); got <= 0 {
			return fmt.Errorf("applied sequence %v", got)
		}
		return nil
	})
	sigterm(p)
	mid := appliedSeq(t, filepath.Join(data, "index"))
	t.Logf("SIGTERM with %d of %d events applied", mid, total)
	if mid == uint64(total) {
		t.Error("ingest finished before SIGTERM: the mid-ingest case was not exercised")
	}

	// 2. Restart: ingest resumes and catches up.
	p = start(t, args...)
	addr = p.serving(t).HTTP
	waitAppliedSeq(t, addr, last, 2*time.Minute)
	base := "http://" + addr + "/fhir"
	ref := kickoffExport(t, http.DefaultClient, base, "")
	refFiles := awaitManifest(t, ref, 2*time.Minute)
	var biggest string
	var biggestLen int64
	for _, u := range refFiles {
		resp := get(t, u, "HEAD")
		resp.Body.Close()
		if resp.ContentLength > biggestLen {
			biggest, biggestLen = u, resp.ContentLength
		}
	}

	// 3. SIGTERM mid-export with a download in flight: the download
	// finishes, the job is checkpointed.
	dl := get(t, biggest, "GET")
	defer dl.Body.Close()
	head := make([]byte, 1024)
	if _, err := io.ReadFull(dl.Body, head); err != nil {
		t.Fatal(err)
	}
	job := kickoffExport(t, http.DefaultClient, base, "")
	p.cmd.Process.Signal(syscall.SIGTERM)
	checkFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if !strings.Contains(p.stderr.String(), "shutting down") {
			return fmt.Errorf("no shutdown yet")
		}
		return nil
	})
	rest, err := io.ReadAll(dl.Body)
	if err != nil || int64(len(head)+len(rest)) != biggestLen {
		t.Errorf("download in flight at SIGTERM: %d of %d bytes, %v", len(head)+len(rest), biggestLen, err)
	}
	sigterm(p)
	interrupted := strings.Contains(p.stderr.String(), "export job interrupted by shutdown")
	t.Logf("at SIGTERM: download of %d bytes in flight, job interrupted=%v", biggestLen, interrupted)
	if got := appliedSeq(t, filepath.Join(data, "index")); got != last {
		t.Errorf("applied sequence after shutdown %d, want the stream's %d", got, last)
	}

	// 4. Restart: the job resumes and exports exactly what the
	// undisturbed job did.
	p = start(t, args...)
	addr = p.serving(t).HTTP
	files := awaitManifest(t, onAddr(t, job, addr), 2*time.Minute)
	for i, u := range refFiles {
		refFiles[i] = onAddr(t, u, addr)
	}
	if got, want := exportedLines(t, files), exportedLines(t, refFiles); got != want || want != total {
		t.Errorf("resumed job exported %d resources, want %d (the undisturbed job: %d)", got, total, want)
	}
	sigterm(p)
}

func streamLastSeq(t testing.TB, url string) uint64 {
	t.Helper()
	_, js := connectJS(t, url)
	s, err := js.Stream(t.Context(), "FHIR")
	if err != nil {
		t.Fatal(err)
	}
	return s.CachedInfo().State.LastSeq
}

// get sends method u with the Bulk Data kick-off headers (harmless on
// the other routes); the caller closes the body.
func get(t testing.TB, u, method string) *http.Response {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, u, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Accept", "application/fhir+json")
	req.Header.Set("Prefer", "respond-async")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

// awaitManifest polls a job's status URL until it completes and returns
// its output file URLs; a job that fails fails the test.
func awaitManifest(t testing.TB, status string, total time.Duration) []string {
	t.Helper()
	code, body := pollExport(t, status, total)
	if code != http.StatusOK {
		t.Fatalf("%s: %d %s", status, code, body)
	}
	var m manifest
	if err := json.Unmarshal(body, &m); err != nil {
		t.Fatalf("manifest: %v\n%s", err, body)
	}
	urls := make([]string, len(m.Output))
	for i, o := range m.Output {
		urls[i] = o.URL
	}
	return urls
}

// exportedLines downloads the files at urls and returns their lines.
func exportedLines(t *testing.T, urls []string) int {
	t.Helper()
	n := 0
	for _, u := range urls {
		n += len(download(t, u))
	}
	return n
}

// TestShutdownDelay: with --shutdown-delay, SIGTERM makes /readyz answer
// 503 at once, its shutdown reason "shutting down", while kick-offs are
// still accepted, and the process drains and exits only once the delay is
// over.
func TestShutdownDelay(t *testing.T) {
	const delay = 2 * time.Second
	ns := runNATS(t)
	p := start(t, "serve", "--nats-url", ns.ClientURL(), "--data-dir", t.TempDir(), "--listen", anyPort,
		"--shutdown-delay", delay.String())
	addr := p.serving(t).HTTP
	base := "http://" + addr + "/fhir"
	waitReady(t, addr)
	p.cmd.Process.Signal(syscall.SIGTERM)
	signalled := time.Now()
	checkFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		// The reason is the server's state, not the export manager's
		// ("export: manager closed" while exports still run).
		if code, reasons := readyz(addr); code != http.StatusServiceUnavailable || reasons["shutdown"] != "shutting down" {
			return fmt.Errorf("/readyz after SIGTERM: %d %v, want 503 with shutdown reason %q", code, reasons, "shutting down")
		}
		return nil
	})
	// Still serving: a kick-off is accepted and its job completes.
	if resp, body := kickoffResponse(t, http.DefaultClient, base, ""); resp.StatusCode != http.StatusAccepted {
		t.Errorf("kick-off during the shutdown delay: %d %s, want 202", resp.StatusCode, body)
	} else if code, body := pollExport(t, resp.Header.Get("Content-Location"), delay); code != http.StatusOK {
		t.Errorf("export kicked off during the shutdown delay: %d %s", code, body)
	}
	if since := time.Since(signalled); since >= delay {
		t.Fatalf("the checks took %v, longer than the delay: the test proves nothing", since)
	}
	select {
	case err := <-p.done:
		t.Fatalf("exited %v after SIGTERM, before the %v delay (%v):\n%s", time.Since(signalled), delay, err, p.stderr)
	case <-time.After(delay - time.Since(signalled) - 100*time.Millisecond):
	}
	select {
	case err := <-p.done:
		if err != nil {
			t.Fatalf("exit after SIGTERM: %v\n%s", err, p.stderr)
		}
		t.Logf("exited %v after SIGTERM", time.Since(signalled).Round(time.Millisecond))
	case <-time.After(30 * time.Second):
		t.Fatalf("no exit within 30s of the delay:\n%s", p.stderr)
	}
	if !strings.Contains(p.stderr.String(), "serving until the shutdown delay is over") {
		t.Errorf("no shutdown delay log line:\n%s", p.stderr)
	}
}
