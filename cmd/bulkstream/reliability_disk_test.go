package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bulkstream/bulkstream/ingest"
)

// mountTmpfs mounts a tmpfs of size bytes on dir and reports whether it
// could (it needs root with CAP_SYS_ADMIN on Linux). It is unmounted at
// cleanup, after processes started later have been stopped.
func mountTmpfs(t *testing.T, dir string, size int) bool {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Logf("no tmpfs: mounting one needs root")
		return false
	}
	out, err := exec.Command("mount", "-t", "tmpfs", "-o", fmt.Sprintf("size=%d,mode=0755", size), "tmpfs", dir).CombinedOutput()
	if err != nil {
		t.Logf("no tmpfs: cannot mount one here: %v %s", err, out)
		return false
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", "-l", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v %s", dir, err, out)
		}
	})
	return true
}

// remount changes the mount options of dir (e.g. "ro", "rw").
func remount(t *testing.T, dir, opt string) {
	t.Helper()
	if out, err := exec.Command("mount", "-o", "remount,"+opt, dir).CombinedOutput(); err != nil {
		t.Fatalf("remount %s %s: %v %s", opt, dir, err, out)
	}
}

// outcome decodes an OperationOutcome body and returns its first issue.
func outcomeIssue(t *testing.T, what string, body []byte) (code, diagnostics string) {
	t.Helper()
	var oo struct {
		ResourceType string
		Issue        []struct{ Severity, Code, Diagnostics string }
	}
	if err := json.Unmarshal(body, &oo); err != nil || oo.ResourceType != "OperationOutcome" || len(oo.Issue) == 0 {
		t.Fatalf("%s: not an OperationOutcome with an issue (%v): %s", what, err, body)
	}
	return oo.Issue[0].Code, oo.Issue[0].Diagnostics
}

// getOK checks that GET u answers 200.
func getOK(t *testing.T, u string) {
	t.Helper()
	resp, err := http.Get(u)
	if err != nil {
		t.Fatalf("GET %s: %v", u, err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("GET %s: %d %s", u, resp.StatusCode, b)
	}
}

// jobFails polls the job at status until it ends, and checks that it
// failed with a 500 OperationOutcome whose issue is "processing" (start a
// new export later) with diagnostics containing want.
func jobFails(t *testing.T, what, status, want string) {
	t.Helper()
	code, body := pollExport(t, status, 30*time.Second)
	if code != http.StatusInternalServerError {
		t.Fatalf("%s: %d %s, want 500 with an OperationOutcome", what, code, body)
	}
	issue, diag := outcomeIssue(t, what, body)
	t.Logf("%s: status %d %s: %s", what, code, issue, diag)
	if issue != "processing" || !strings.Contains(diag, want) {
		t.Errorf("%s: issue %s %q, want processing with %q", what, issue, diag, want)
	}
}

// TestDiskTrouble puts <data-dir>/exports on a 64 KiB tmpfs and checks
// three kinds of disk trouble against the real binary:
//   - low free space (--min-free-bytes above the tmpfs size): kick-off
//     answers 503 with an OperationOutcome and Retry-After;
//   - a full disk while writing: the job fails with an OperationOutcome
//     naming the lack of disk space, and its partial files are removed;
//   - a read-only export directory: the job fails with an OperationOutcome
//     saying the directory is not writable;
//
// and that meanwhile the service keeps serving (/healthz, /readyz,
// metadata, exports that fit) and ingest keeps applying.
//
// Mounting the tmpfs needs root (CI runs as root). Without it the test
// still runs the low-space case (--min-free-bytes above any disk) and the
// read-only one (mode 0555, which binds a non-root process), and skips the
// full disk.
func TestDiskTrouble(t *testing.T) {
	if testing.Short() {
		t.Skip("mounts a tmpfs and runs the binary")
	}
	data := t.TempDir()
	exports := filepath.Join(data, "exports")
	if err := os.Mkdir(exports, 0o750); err != nil {
		t.Fatal(err)
	}
	const fsSize = 64 << 10
	mounted := mountTmpfs(t, exports, fsSize)
	minFree := 2 * fsSize
	if !mounted {
		minFree = 1 << 60
	}
	// readOnly makes the export directory read-only, or writable again.
	// Root ignores mode bits, so as root the filesystem itself is made
	// read-only.
	var readOnly func(bool)
	switch {
	case mounted:
		readOnly = func(ro bool) { remount(t, exports, map[bool]string{true: "ro", false: "rw"}[ro]) }
	case os.Geteuid() != 0:
		readOnly = func(ro bool) {
			if err := os.Chmod(exports, map[bool]os.FileMode{true: 0o555, false: 0o750}[ro]); err != nil {
				t.Fatal(err)
			}
		}
	}

	ns := runNATS(t)
	_, js := connectJS(t, ns.ClientURL())
	pub, err := ingest.NewPublisher(js, ingest.PublisherConfig{})
	if err != nil {
		t.Fatal(err)
	}
	published := 0
	publish := func(n int, body func(i int) []byte) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		for i := range n {
			if err := pub.Upsert(ctx, body(i)); err != nil {
				t.Fatal(err)
			}
		}
		if err := pub.Flush(ctx); err != nil {
			t.Fatal(err)
		}
		published += n
	}

	addr := freeAddr(t)
	base := "http://" + addr + "/fhir"
	serveArgs := []string{"serve", "--nats-url", ns.ClientURL(), "--data-dir", data, "--listen", addr}
	applied := func(want int) {
		t.Helper()
		waitAppliedSeq(t, addr, uint64(want), 30*time.Second)
	}
	stillServing := func() {
		t.Helper()
		getOK(t, "http://"+addr+"/healthz")
		getOK(t, "http://"+addr+"/readyz")
		getOK(t, base+"/metadata")
	}

	// 1. Low free space: the kick-off is refused up front.
	p := start(t, append(serveArgs, "--min-free-bytes", fmt.Sprint(minFree))...)
	waitReady(t, addr)
	const patients = 2000 // ~250 KB of NDJSON: does not fit in 64 KiB
	publish(patients, reliabilityPatient)
	applied(published)
	resp, body := kickoffResponse(t, http.DefaultClient, base, "_type=Patient")
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
		t.Errorf("kick-off with low disk: %d Retry-After %q, want 503 with Retry-After", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
	code, diag := outcomeIssue(t, "kick-off with low disk", body)
	t.Logf("low disk: kick-off %d %s: %s", resp.StatusCode, code, diag)
	if !strings.Contains(diag, "disk space") {
		t.Errorf("kick-off with low disk: diagnostics %q do not name the disk space", diag)
	}
	stillServing()
	p.stop(t)

	// 2. Full disk while writing: the free-space check is off, so the
	// job starts and runs out of space.
	p = start(t, append(serveArgs, "--min-free-bytes", "-1")...)
	waitReady(t, addr)
	orgs := func(i int) []byte {
		return fmt.Appendf(nil, `{"resourceType":"Organization","id":"disk-org-%03d","name":"Org %d"}`, i, i)
	}
	if mounted {
		status := kickoffExport(t, http.DefaultClient, base, "_type=Patient")
		// Ingest carries on while the job fails.
		publish(100, orgs)
		jobFails(t, "export on a full disk", status, "disk space")
		if ents, err := os.ReadDir(exports); err != nil || len(ents) != 0 {
			t.Errorf("partial export files left on the full disk: %v %v", ents, err)
		}
	} else {
		t.Log("full disk: skipped without a tmpfs")
		publish(100, orgs)
	}
	applied(published)
	stillServing()
	// An export that fits works on the same disk.
	code2, body := pollExport(t, kickoffExport(t, http.DefaultClient, base, "_type=Organization"), 30*time.Second)
	if code2 != 200 {
		t.Fatalf("small export after the full disk: %d %s", code2, body)
	}
	if ids := exportedIDs(t, body); len(ids) != 100 {
		t.Errorf("small export after the full disk: %d organizations, want 100", len(ids))
	}

	// 3. Read-only export directory.
	if readOnly == nil {
		t.Skip("read-only export directory: root without a tmpfs cannot make one")
	}
	readOnly(true)
	status := kickoffExport(t, http.DefaultClient, base, "_type=Organization")
	publish(50, func(i int) []byte { return orgs(100 + i) })
	jobFails(t, "export to a read-only directory", status, "not writable")
	applied(published)
	stillServing()
	readOnly(false)
	code2, body = pollExport(t, kickoffExport(t, http.DefaultClient, base, "_type=Organization"), 30*time.Second)
	if code2 != 200 {
		t.Fatalf("export after the directory is writable again: %d %s", code2, body)
	}
	if ids := exportedIDs(t, body); len(ids) != 150 {
		t.Errorf("export after the directory is writable again: %d organizations, want 150", len(ids))
	}
	p.stop(t)
	t.Logf("%d events published and applied across the disk faults", published)
}
