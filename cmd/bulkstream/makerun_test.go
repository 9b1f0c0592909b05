package main

import (
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/bulkstream/bulkstream"
)

// script is scripts/run.sh (what `make run` runs) running in a process
// group of its own, as under a terminal, so that a test can "press
// Ctrl-C": SIGINT to the whole group.
type script struct {
	cmd            *exec.Cmd
	stdout, stderr *syncBuffer
	done           chan error
}

// startRunScript runs scripts/run.sh with the test's bulkstream binary in
// a fresh temporary directory (not the repository) and the environment
// without any BULKSTREAM_* variable but env.
func startRunScript(t *testing.T, env ...string) *script {
	t.Helper()
	path, err := filepath.Abs("../../scripts/run.sh")
	if err != nil {
		t.Fatal(err)
	}
	s := &script{cmd: exec.Command("bash", path, binPath), stdout: &syncBuffer{}, stderr: &syncBuffer{}, done: make(chan error, 1)}
	s.cmd.Dir = t.TempDir()
	s.cmd.Stdout, s.cmd.Stderr = s.stdout, s.stderr
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "BULKSTREAM_") {
			s.cmd.Env = append(s.cmd.Env, kv)
		}
	}
	s.cmd.Env = append(s.cmd.Env, env...)
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { s.done <- s.cmd.Wait() }()
	t.Cleanup(func() {
		select {
		case err := <-s.done:
			s.done <- err
		default:
			syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
			<-s.done
		}
		if t.Failed() {
			t.Logf("run.sh stdout:\n%s\nrun.sh stderr (last 16 KB):\n%s", s.stdout, tail(s.stderr.String(), 16<<10))
		}
	})
	return s
}

func tail(s string, n int) string { return s[max(0, len(s)-n):] }

// wait waits for the script to exit and returns its exit status.
func (s *script) wait(t *testing.T, timeout time.Duration) int {
	t.Helper()
	select {
	case err := <-s.done:
		s.done <- err
		var ee *exec.ExitError
		switch {
		case err == nil:
			return 0
		case errors.As(err, &ee):
			return ee.ExitCode()
		default:
			t.Fatal(err)
		}
	case <-time.After(timeout):
		t.Fatalf("run.sh still running after %v", timeout)
	}
	return -1
}

// TestMakeRun: `make run` on other ports than 8080 and 4222 (both may be
// taken on a developer's machine), from a directory that is not the
// repository, works end to end: the sample is published to serve's
// embedded NATS server at BULKSTREAM_NATS_LISTEN and ingested, the data
// goes to BULKSTREAM_DATA_DIR, the hints name the addresses in use, and
// Ctrl-C ends it with exit status 0 (no make "Error"). When serve cannot
// start, or an address is taken, it exits nonzero and says why.
func TestMakeRun(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the script, serve and the sample")
	}
	// Fixed ports picked up front (freeAddr), not port 0: run.sh checks
	// that its ports are free before it starts serve, names them in its
	// messages, and publishes to BULKSTREAM_NATS_LISTEN.
	t.Run("other ports, Ctrl-C", func(t *testing.T) {
		httpAddr, natsAddr, data := freeAddr(t), freeAddr(t), t.TempDir()
		s := startRunScript(t, "BULKSTREAM_LISTEN="+httpAddr, "BULKSTREAM_NATS_LISTEN="+natsAddr, "BULKSTREAM_DATA_DIR="+data)
		checkFor(t, 3*time.Minute, 50*time.Millisecond, func() error {
			select {
			case err := <-s.done:
				s.done <- err
				t.Fatalf("run.sh exited (%v) before it said it is running", err)
			default:
			}
			if !strings.Contains(s.stdout.String(), "bulkstream is running") {
				return errors.New("run.sh has not said it is running")
			}
			return nil
		})
		out := s.stdout.String()
		for _, want := range []string{"published " + strconv.Itoa(bulkstream.SampleResources) + " events", "http://" + httpAddr + "/fhir/$export", "nats://" + natsAddr, data} {
			if !strings.Contains(out, want) {
				t.Errorf("run.sh output has no %q", want)
			}
		}
		if stale := regexp.MustCompile(`:(8080|4222)\b|\./data`).FindString(out); stale != "" {
			t.Errorf("run.sh output names %q, not the configured address or directory", stale)
		}
		waitAppliedSeq(t, httpAddr, bulkstream.SampleResources, 2*time.Minute)
		if _, err := os.Stat(filepath.Join(data, "index")); err != nil {
			t.Errorf("no index under BULKSTREAM_DATA_DIR: %v", err)
		}
		if _, err := os.Stat(filepath.Join(s.cmd.Dir, "data")); err == nil {
			t.Error("run.sh created ./data although BULKSTREAM_DATA_DIR is set")
		}

		// Ctrl-C: the terminal sends SIGINT to the whole process group.
		if err := syscall.Kill(-s.cmd.Process.Pid, syscall.SIGINT); err != nil {
			t.Fatal(err)
		}
		if rc := s.wait(t, time.Minute); rc != 0 {
			t.Errorf("run.sh exit status %d after Ctrl-C, want 0", rc)
		}
		if !strings.Contains(s.stderr.String(), "http server stopped") {
			t.Error("serve did not log a clean shutdown")
		}
	})

	t.Run("serve fails", func(t *testing.T) {
		s := startRunScript(t, "BULKSTREAM_LISTEN="+freeAddr(t), "BULKSTREAM_NATS_LISTEN="+freeAddr(t),
			"BULKSTREAM_DATA_DIR="+t.TempDir(), "BULKSTREAM_LOG_FORMAT=xml")
		if rc := s.wait(t, time.Minute); rc == 0 {
			t.Error("run.sh exit status 0 although serve could not start")
		}
		if !strings.Contains(s.stderr.String(), "bulkstream serve exited with status") {
			t.Errorf("run.sh does not say serve exited:\n%s", s.stderr)
		}
	})

	t.Run("address taken", func(t *testing.T) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		s := startRunScript(t, "BULKSTREAM_LISTEN="+ln.Addr().String(), "BULKSTREAM_NATS_LISTEN="+freeAddr(t),
			"BULKSTREAM_DATA_DIR="+t.TempDir())
		if rc := s.wait(t, time.Minute); rc == 0 {
			t.Error("run.sh exit status 0 although its HTTP address is taken")
		}
		for _, want := range []string{ln.Addr().String() + " (BULKSTREAM_LISTEN)", "already in use", "BULKSTREAM_LISTEN=127.0.0.1:8081"} {
			if !strings.Contains(s.stderr.String(), want) {
				t.Errorf("run.sh stderr has no %q:\n%s", want, s.stderr)
			}
		}
	})
}

// TestPublishSampleArgs: publish --sample takes no files and no --delete,
// and says so before connecting anywhere.
func TestPublishSampleArgs(t *testing.T) {
	for name, args := range map[string][]string{
		"with a file":   {"--sample", "resources.ndjson"},
		"with --delete": {"--sample", "--delete"},
	} {
		t.Run(name, func(t *testing.T) {
			var out, errOut strings.Builder
			err := runPublish(t.Context(), append([]string{"--nats-url", "nats://127.0.0.1:1"}, args...), strings.NewReader(""), &out, &errOut)
			if err == nil || !strings.Contains(err.Error(), "--sample") {
				t.Errorf("publish %v: %v, want an error naming --sample", args, err)
			}
		})
	}
}
