package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/bulkstream/bulkstream/ingest"
)

// TestEmbeddedNATSFullDisk runs serve with the embedded NATS server and
// its whole --data-dir (index and JetStream store) on a 64 MiB tmpfs,
// fills most of the disk from another process, and publishes through the
// embedded server until publishes are refused. It checks that:
//   - publishes are refused with a JetStream error before the disk is
//     full (nats-server would otherwise meet ENOSPC and disable JetStream
//     until a restart), while the process keeps serving and /readyz
//     answers 503 with reason nats_disk;
//   - JetStream stays enabled and every acked publish is applied;
//   - once the space is freed, publishes are accepted again and ingest
//     applies them, with no restart;
//   - when another process fills the disk between two of serve's
//     measurements and the JetStream store meets ENOSPC anyway, serve
//     restarts JetStream once there is room: publishes are accepted and
//     applied again, nothing acked is lost.
//
// Mounting the tmpfs needs root (CI runs as root); without it the test is
// skipped, except under CI=true, where it fails.
func TestEmbeddedNATSFullDisk(t *testing.T) {
	if testing.Short() {
		t.Skip("mounts a tmpfs and runs the binary")
	}
	data := t.TempDir()
	if !mountTmpfs(t, data, 64<<20) {
		t.Skip("needs a tmpfs (root)")
	}
	const (
		mib         = 1 << 20
		ingestFloor = 4 * mib // the embedded server keeps twice it free
		room        = 24 * mib
	)
	p := start(t, "serve", "--data-dir", data, "--listen", anyPort, "--nats-listen", anyPort,
		"--min-free-bytes", fmt.Sprint(ingestFloor), "--export-reserve-bytes", fmt.Sprint(ingestFloor),
		"--ingest-min-free-bytes", fmt.Sprint(ingestFloor), "--ready-max-lag", "0")
	served := p.serving(t)
	addr := served.HTTP
	waitReady(t, addr)
	_, js := connectJS(t, "nats://"+served.NATS)

	// Another process takes all but room of the disk, after the embedded
	// server has sized its own limits on the empty disk.
	fill(t, data, "filler", freeBytes(t, data)-room)

	body := func(i int) []byte {
		return fmt.Appendf(nil, `{"resourceType":"Patient","id":"nd-%06d","text":{"status":"generated","div":"<div xmlns=\"http://www.w3.org/1999/xhtml\">%s</div>"}}`,
			i, strings.Repeat(fmt.Sprintf("%x", i*7919), 500))
	}
	var acked uint64
	publish := func(i int) error {
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
		defer cancel()
		ack, err := js.Publish(ctx, ingest.EncodeSubject(ingest.DefaultSubjectPrefix, "Patient", fmt.Sprintf("nd-%06d", i)), body(i))
		if err == nil {
			acked = ack.Sequence
		}
		return err
	}

	// 1. Publish until the embedded server refuses: with a JetStream
	// error, before the disk is full.
	i, refused := 0, error(nil)
	for ; i < 100000 && refused == nil; i++ {
		refused = publish(i)
	}
	var apiErr *jetstream.APIError
	if !errors.As(refused, &apiErr) {
		t.Fatalf("publish %d with %d bytes free: %v, want a JetStream error refusing it", i, freeBytes(t, data), refused)
	}
	t.Logf("publish %d refused with %d bytes free, %d acked: %v", i, freeBytes(t, data), acked, refused)
	p.alive(t, "after the refused publish")
	for range 3 {
		if err := publish(i); !errors.As(err, &apiErr) {
			t.Fatalf("publish again at the floor: %v, want a JetStream error refusing it", err)
		}
	}
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	if _, err := js.AccountInfo(ctx); err != nil {
		t.Fatalf("JetStream after the refused publishes: %v, want it still enabled", err)
	}
	checkFor(t, 30*time.Second, 50*time.Millisecond, func() error {
		if code, reasons := readyz(addr); code != http.StatusServiceUnavailable || reasons["nats_disk"] == "" {
			return fmt.Errorf("/readyz %d %v, want 503 with reason nats_disk", code, reasons)
		}
		if v := scrape(addr, "bulkstream_nats_disk_refusing"); v != 1 {
			return fmt.Errorf("bulkstream_nats_disk_refusing %v, want 1", v)
		}
		return nil
	})
	// Every acked event is applied: the floor left the index room.
	waitAppliedSeq(t, addr, acked, 30*time.Second)
	getOK(t, "http://"+addr+"/healthz")
	getOK(t, "http://"+addr+"/fhir/metadata")
	if free := freeBytes(t, data); free < ingestFloor {
		t.Errorf("%d bytes free at the floor, below --ingest-min-free-bytes %d", free, ingestFloor)
	}
	p.alive(t, "with publishes refused")

	// 2. The other process frees its space: publishes are accepted again
	// and applied, with no restart.
	if err := os.Remove(filepath.Join(data, "filler")); err != nil {
		t.Fatal(err)
	}
	checkFor(t, 30*time.Second, 50*time.Millisecond, func() error { return publish(i) })
	for n := i + 100; i < n; {
		i++
		if err := publish(i); err != nil {
			t.Fatalf("publish %d after freeing space: %v", i, err)
		}
	}
	waitAppliedSeq(t, addr, acked, 30*time.Second)
	waitReady(t, addr)
	if v := scrape(addr, "bulkstream_nats_disk_refusing"); v != 0 {
		t.Errorf("bulkstream_nats_disk_refusing %v after freeing space, want 0", v)
	}
	p.alive(t, "after freeing space")

	// 3. Another process fills the disk between two of serve's
	// measurements, so a publish meets ENOSPC in the stream's store, which
	// a standalone nats-server does not recover from by itself (every
	// later publish fails with the same error until JetStream reloads the
	// stream). Once the disk has room again, serve restarts JetStream:
	// publishes are accepted and applied, nothing acked is lost.
	const writeErr = "critical write error"
	for try := 0; !strings.Contains(p.stderr.String(), writeErr); try++ {
		if try == 20 {
			t.Fatalf("no ENOSPC in the JetStream store after %d tries of filling the disk and publishing at once", try)
		}
		if try > 0 { // the measurement came first: the publish was refused
			if err := os.Remove(filepath.Join(data, "filler")); err != nil {
				t.Fatal(err)
			}
			checkFor(t, 30*time.Second, 20*time.Millisecond, func() error { return publish(i) })
			i++
		}
		fill(t, data, "filler", -1)
		i++
		err := publish(i)
		t.Logf("publish %d on a full disk: %v", i, err)
	}
	checkFor(t, 10*time.Second, 50*time.Millisecond, func() error {
		p.alive(t, "after ENOSPC in the JetStream store")
		if err := publish(i + 1); err == nil {
			return errors.New("a publish was acked on a full disk")
		}
		return nil
	})
	if err := os.Remove(filepath.Join(data, "filler")); err != nil {
		t.Fatal(err)
	}
	i++
	checkFor(t, 30*time.Second, 50*time.Millisecond, func() error { return publish(i) })
	waitAppliedSeq(t, addr, acked, 30*time.Second)
	waitReady(t, addr)
	p.alive(t, "after JetStream restarted")
	p.stop(t)
	if out := p.stderr.String(); !strings.Contains(out, "embedded NATS refuses publishes") || !strings.Contains(out, "embedded NATS accepts publishes again") {
		t.Errorf("serve's log lacks the refused/accepted lines")
	}
	t.Logf("%d events acked, all applied", acked)
}

// TestNATSDiskGuard drives the embedded server's disk guard with a
// simulated free space (no root needed): at the floor a publish is
// refused with JetStream's "resource limits exceeded for account" (code
// 10002) and the guard reports it; with room again it is accepted; and
// JetStream disabled, or a stream that met ENOSPC, is restarted once the
// disk has room, the stream and its messages intact.
func TestNATSDiskGuard(t *testing.T) {
	const (
		floor                           = 1 << 20
		errCodeAccountResourcesExceeded = 10002 // nats-server's JSAccountResourcesExceededErr
	)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	data := t.TempDir()
	srv, own, err := startEmbeddedNATS(natsConfig{DataDir: data, NATSListen: anyPort}, log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Shutdown(); srv.WaitForShutdown() })
	_, js := connectJS(t, srv.ClientURL(), own...)
	ctx := t.Context()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "T", Subjects: []string{"t.>"}}); err != nil {
		t.Fatal(err)
	}
	var free atomic.Int64
	free.Store(1 << 30)
	g, err := newNATSDiskGuard(srv, filepath.Join(data, "nats"), floor, func(string) (int64, error) { return free.Load(), nil }, prometheus.NewRegistry(), log)
	if err != nil {
		t.Fatal(err)
	}
	msg := make([]byte, 4<<10)
	var acked uint64
	publish := func() error {
		ack, err := js.Publish(ctx, "t.x", msg)
		if err == nil {
			acked = ack.Sequence
		}
		return err
	}
	accepted := func(what string) {
		t.Helper()
		g.check()
		if g.Refusing() || testutil.ToFloat64(g.gauge) != 0 {
			t.Errorf("%s: refusing %v, gauge %v, want not refusing", what, g.Refusing(), testutil.ToFloat64(g.gauge))
		}
		checkFor(t, 10*time.Second, 20*time.Millisecond, func() error { return publish() })
	}
	accepted("with room")

	// At the floor (less room than one message): refused, not acked.
	free.Store(floor + 1000)
	g.check()
	before := acked
	var apiErr *jetstream.APIError
	if err := publish(); !errors.As(err, &apiErr) || apiErr.ErrorCode != errCodeAccountResourcesExceeded {
		t.Fatalf("publish at the floor: %v, want a JetStream error with code %d", err, errCodeAccountResourcesExceeded)
	}
	if !g.Refusing() || testutil.ToFloat64(g.gauge) != 1 {
		t.Errorf("at the floor: refusing %v, gauge %v, want refusing", g.Refusing(), testutil.ToFloat64(g.gauge))
	}
	free.Store(1 << 30)
	accepted("with room again")

	// JetStream disabled (as a clustered server does on ENOSPC): it stays
	// off while the disk is at the floor, and starts again with room.
	if err := srv.ShutdownJetStream(); err != nil {
		t.Fatal(err)
	}
	free.Store(floor - 1)
	g.check()
	if srv.JetStreamEnabled() || !g.Refusing() {
		t.Errorf("JetStream disabled at the floor: enabled %v refusing %v, want it left off and refusing", srv.JetStreamEnabled(), g.Refusing())
	}
	free.Store(1 << 30)
	accepted("after JetStream was disabled")
	if !srv.JetStreamEnabled() {
		t.Fatal("JetStream not enabled again")
	}

	// A stream's store met ENOSPC (nats-server logs a critical write
	// error): JetStream is restarted once there is room.
	g.restarted = time.Time{}
	g.writeErr.Store(true)
	accepted("after a write error")
	if g.writeErr.Load() {
		t.Error("write error not cleared by the restart")
	}
	info, err := js.Stream(ctx, "T")
	if err != nil {
		t.Fatal(err)
	}
	if n := info.CachedInfo().State.Msgs; n != acked || acked <= before {
		t.Errorf("stream T holds %d messages, want the %d acked", n, acked)
	}
}
