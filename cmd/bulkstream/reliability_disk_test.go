package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/bulkstream/bulkstream/ingest"
)

// mountTmpfs mounts a tmpfs of size bytes on dir and reports whether it
// could (it needs root with CAP_SYS_ADMIN on Linux; in CI, where tests
// run as root, not being able to fails the test). It is unmounted at
// cleanup, after processes started later have been stopped.
func mountTmpfs(t *testing.T, dir string, size int) bool {
	t.Helper()
	if os.Geteuid() != 0 {
		missing(t, "no tmpfs: mounting one needs root")
		return false
	}
	out, err := exec.Command("mount", "-t", "tmpfs", "-o", fmt.Sprintf("size=%d,mode=0755", size), "tmpfs", dir).CombinedOutput()
	if err != nil {
		missing(t, "no tmpfs: cannot mount one here: %v %s", err, out)
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
// Mounting the tmpfs needs root (CI runs as root, and under CI=true the
// test fails without it). Without it the test still runs the low-space
// case (--min-free-bytes above any disk) and the read-only one (mode 0555,
// which binds a non-root process), and skips the full disk.
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

	var addr, base string // the running serve's: each run listens on a port of its own
	run := func(args ...string) *proc {
		t.Helper()
		p := start(t, args...)
		addr = p.serving(t).HTTP
		base = "http://" + addr + "/fhir"
		return p
	}
	// No export reserve: these cases are about what happens without one
	// (TestFullDisk has it).
	serveArgs := []string{"serve", "--nats-url", ns.ClientURL(), "--data-dir", data, "--listen", anyPort, "--export-reserve-bytes", "-1"}
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
	p := run(append(serveArgs, "--min-free-bytes", fmt.Sprint(minFree))...)
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
	p = run(append(serveArgs, "--min-free-bytes", "-1")...)
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
		skipMissing(t, "read-only export directory: root without a tmpfs cannot make one")
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

// freeBytes is the free space of the filesystem holding dir, as an
// unprivileged process sees it.
func freeBytes(t *testing.T, dir string) int64 {
	t.Helper()
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		t.Fatal(err)
	}
	return int64(st.Bavail) * int64(st.Bsize)
}

// fill writes a file of zeros of size bytes in dir (a negative size:
// until the filesystem is full), as another process filling the disk.
func fill(t *testing.T, dir, name string, size int64) {
	t.Helper()
	f, err := os.Create(filepath.Join(dir, name))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 64<<10)
	for n := int64(0); size < 0 || n < size; n += int64(len(buf)) {
		if size >= 0 {
			buf = buf[:min(int64(len(buf)), size-n)]
		}
		if _, err := f.Write(buf); err != nil {
			if size < 0 && errors.Is(err, syscall.ENOSPC) {
				return
			}
			t.Fatalf("fill %s: %v", name, err)
		}
	}
}

// alive fails the test if the serve process has exited.
func (p *proc) alive(t *testing.T, when string) {
	t.Helper()
	select {
	case err := <-p.done:
		p.done <- err
		t.Fatalf("%s: serve exited (%v):\n%s", when, err, p.stderr)
	default:
	}
}

// fullPatient is a Patient of about 1 KB.
func fullPatient(i int) []byte {
	return fmt.Appendf(nil, `{"resourceType":"Patient","id":"full-%05d","active":true,"text":{"status":"generated","div":"<div xmlns=\"http://www.w3.org/1999/xhtml\">%s</div>"}}`,
		i, strings.Repeat("full disk ", 90))
}

// TestFullDisk runs the real binary with its whole --data-dir (index and
// exports) on a 40 MiB tmpfs and the three disk floors scaled down, the
// way a disk fills up in production, and checks that the process never
// dies and no acked event is lost:
//   - full exports run until one would take the disk below
//     --export-reserve-bytes: that job fails with an OperationOutcome and
//     its files are removed, instead of filling the disk;
//   - as more events arrive on a disk below --ingest-min-free-bytes,
//     ingest pauses (/readyz 503 with reason disk, the disk_paused gauge)
//     and kick-offs answer 503, while HTTP keeps serving;
//   - deleting an export through the API frees space and ingest resumes by
//     itself, applying every event published meanwhile;
//   - restarted on a completely full disk, serve comes up serving HTTP
//     (not ready) and an export can be deleted through the API; restarted
//     with room again, it applies everything;
//   - without the ingest floor, ENOSPC in Pebble's write-ahead log marks
//     the index failed (/readyz) instead of ending the process, and a
//     restart with room applies everything.
//
// Mounting the tmpfs needs root (CI runs as root); without it the test is
// skipped, and fails under CI=true.
func TestFullDisk(t *testing.T) {
	if testing.Short() {
		t.Skip("mounts a tmpfs and runs the binary")
	}
	data := t.TempDir()
	if !mountTmpfs(t, data, 40<<20) {
		skipMissing(t, "needs a tmpfs (root)")
	}
	const (
		mib          = 1 << 20
		minFree      = 10 * mib // kick-offs answer 503 below it
		reserve      = 10 * mib // = minFree: an admitted export that does not fit fails
		ingestFloor  = 6 * mib
		firstBatch   = 6000 // ~6 MiB per full export
		secondBatch  = 3000
		exportLimits = 10
	)
	ns := runNATS(t)
	_, js := connectJS(t, ns.ClientURL())
	pub, err := ingest.NewPublisher(js, ingest.PublisherConfig{})
	if err != nil {
		t.Fatal(err)
	}
	published := 0
	publish := func(from, n int) {
		t.Helper()
		ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
		defer cancel()
		for i := range n {
			if err := pub.Upsert(ctx, fullPatient(from+i)); err != nil {
				t.Fatal(err)
			}
		}
		if err := pub.Flush(ctx); err != nil {
			t.Fatal(err)
		}
		published += n
	}
	var addr, base string // the running serve's: each run listens on a port of its own
	run := func(args ...string) *proc {
		t.Helper()
		p := start(t, args...)
		addr = p.serving(t).HTTP
		base = "http://" + addr + "/fhir"
		return p
	}
	args := []string{"serve", "--nats-url", ns.ClientURL(), "--data-dir", data, "--listen", anyPort,
		"--min-free-bytes", fmt.Sprint(minFree), "--export-reserve-bytes", fmt.Sprint(reserve),
		"--ingest-min-free-bytes", fmt.Sprint(ingestFloor), "--ready-max-lag", "0"}

	p := run(args...)
	waitReady(t, addr)
	publish(0, firstBatch)
	waitAppliedSeq(t, addr, uint64(published), time.Minute)

	// 1. Full exports until one does not fit above the reserve.
	var completed []string // status URLs
	failed := false
	for i := 0; i < exportLimits && !failed; i++ {
		resp, body := kickoffResponse(t, http.DefaultClient, base, "_type=Patient")
		if resp.StatusCode != http.StatusAccepted {
			t.Fatalf("kick-off %d with %d bytes free: %d %s", i, freeBytes(t, data), resp.StatusCode, body)
		}
		status := resp.Header.Get("Content-Location")
		code, body := pollExport(t, status, time.Minute)
		switch code {
		case http.StatusOK:
			completed = append(completed, status)
		case http.StatusInternalServerError:
			issue, diag := outcomeIssue(t, "export past the reserve", body)
			t.Logf("export %d failed with %d bytes free: %s: %s", i, freeBytes(t, data), issue, diag)
			if issue != "processing" || !strings.Contains(diag, "disk") {
				t.Errorf("export past the reserve: issue %s %q, want processing naming the disk", issue, diag)
			}
			failed = true
		default:
			t.Fatalf("export %d: %d %s", i, code, body)
		}
	}
	if !failed || len(completed) < 2 {
		t.Fatalf("%d exports completed, failed %v: want at least 2, then one failing at the reserve", len(completed), failed)
	}
	if free := freeBytes(t, data); free < reserve-mib {
		t.Errorf("after the failed export, %d bytes free: below the reserve %d", free, reserve)
	}
	if ents, _ := os.ReadDir(filepath.Join(data, "exports")); len(ents) != len(completed) {
		t.Errorf("export directories %d, want the %d completed ones (the failed one's removed)", len(ents), len(completed))
	}
	p.alive(t, "after the exports")

	// 2. Another process takes the disk to just above the ingest floor,
	// and more events arrive: ingest pauses before the disk is full.
	fill(t, data, "filler", freeBytes(t, data)-(ingestFloor+mib))
	publish(firstBatch, secondBatch)
	checkFor(t, time.Minute, 50*time.Millisecond, func() error {
		if code, reasons := readyz(addr); code != http.StatusServiceUnavailable || reasons["disk"] == "" {
			return fmt.Errorf("/readyz %d %v, want 503 with reason disk", code, reasons)
		}
		if v := scrape(addr, "bulkstream_ingest_disk_paused"); v != 1 {
			return fmt.Errorf("bulkstream_ingest_disk_paused %v, want 1", v)
		}
		return nil
	})
	applied := scrape(addr, "bulkstream_index_applied_sequence")
	t.Logf("ingest paused at sequence %v of %d with %d bytes free", applied, published, freeBytes(t, data))
	if resp, body := kickoffResponse(t, http.DefaultClient, base, "_type=Patient"); resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("kick-off with ingest paused for the disk: %d %s, want 503", resp.StatusCode, body)
	}
	getOK(t, "http://"+addr+"/healthz")
	getOK(t, base+"/metadata")
	p.alive(t, "with ingest paused")

	// 3. Deleting an export frees space: ingest resumes by itself and
	// applies every event.
	resp := get(t, completed[0], http.MethodDelete)
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("DELETE %s: %d", completed[0], resp.StatusCode)
	}
	completed = completed[1:]
	waitAppliedSeq(t, addr, uint64(published), time.Minute)
	waitReady(t, addr)
	p.alive(t, "after ingest resumed")
	p.stop(t)

	// 4. Restarted on a completely full disk, serve comes up serving
	// HTTP, not ready, and an export can be deleted through the API.
	fill(t, data, "filler2", -1)
	p = run(args...)
	waitHealthy(t, addr)
	if code, reasons := readyz(addr); code != http.StatusServiceUnavailable {
		t.Errorf("/readyz on a full disk: %d %v, want 503", code, reasons)
	} else {
		t.Logf("/readyz on a full disk: %d %v", code, reasons)
	}
	if resp, body := kickoffResponse(t, http.DefaultClient, base, "_type=Patient"); resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("kick-off on a full disk: %d %s, want 503", resp.StatusCode, body)
	}
	before := freeBytes(t, data)
	resp = get(t, onAddr(t, completed[0], addr), http.MethodDelete)
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		t.Errorf("DELETE %s on a full disk: %d", completed[0], resp.StatusCode)
	}
	if after := freeBytes(t, data); after < before+4*mib {
		t.Errorf("DELETE of an export on a full disk freed %d bytes", after-before)
	}
	publish(firstBatch+secondBatch, 100)
	p.alive(t, "on a full disk")
	p.stop(t)

	// 5. With room again (the other process's files gone), a restart
	// applies everything.
	for _, f := range []string{"filler", "filler2"} {
		if err := os.Remove(filepath.Join(data, f)); err != nil {
			t.Fatal(err)
		}
	}
	p = run(args...)
	waitAppliedSeq(t, addr, uint64(published), time.Minute)
	waitReady(t, addr)
	p.stop(t)

	// 6. Without the ingest floor, a commit meets the full disk itself
	// (ENOSPC in Pebble's write-ahead log): the index is marked failed,
	// and the process keeps serving; after a restart with room, every
	// event is applied.
	noFloor := append(slices.Clone(args), "--ingest-min-free-bytes", "-1")
	p = run(noFloor...)
	waitReady(t, addr)
	fill(t, data, "filler3", -1)
	publish(firstBatch+secondBatch+100, 500)
	checkFor(t, time.Minute, 50*time.Millisecond, func() error {
		p.alive(t, "after ENOSPC in the write-ahead log")
		if code, reasons := readyz(addr); code != http.StatusServiceUnavailable || !strings.Contains(reasons["index"], "no space") {
			return fmt.Errorf("/readyz %d %v, want 503 with the index failed for lack of space", code, reasons)
		}
		return nil
	})
	getOK(t, "http://"+addr+"/healthz")
	getOK(t, base+"/metadata")
	p.alive(t, "after ENOSPC in the write-ahead log")
	p.stop(t)
	if err := os.Remove(filepath.Join(data, "filler3")); err != nil {
		t.Fatal(err)
	}
	p = run(args...)
	waitAppliedSeq(t, addr, uint64(published), time.Minute)
	waitReady(t, addr)
	p.stop(t)
	t.Logf("%d events published, all applied", published)
}
