package httpapi

import (
	"bufio"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bulkstream/bulkstream/export"
)

// diskJobs serves one file from disk (job "job-1") and answers kick-offs
// through kickoff.
type diskJobs struct {
	path    string
	kickoff func(ctx context.Context) error
}

func (j *diskJobs) Kickoff(ctx context.Context, k export.Kickoff) (string, error) {
	if j.kickoff != nil {
		if err := j.kickoff(ctx); err != nil {
			return "", err
		}
	}
	return "job-1", nil
}
func (j *diskJobs) Status(client, id string) (export.Status, error) {
	return export.Status{}, export.ErrNotFound
}
func (j *diskJobs) Cancel(client, id string) error { return export.ErrNotFound }
func (j *diskJobs) OpenFile(client, id, name string) (export.File, error) {
	if id != "job-1" || name != "Patient-1.ndjson" {
		return nil, export.ErrNotFound
	}
	f, err := os.Open(j.path)
	if err != nil {
		return nil, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	return diskFile{File: f, fi: fi}, nil
}

type diskFile struct {
	*os.File
	fi os.FileInfo
}

func (f diskFile) Size() int64        { return f.fi.Size() }
func (f diskFile) ModTime() time.Time { return f.fi.ModTime() }
func (f diskFile) Digest() string     { return "" }

// timeoutServer is a real HTTP server (real TCP connections) over New(cfg)
// with a file of size bytes to download; closed receives every connection
// the server has closed.
type timeoutServer struct {
	*httptest.Server
	jobs   *diskJobs
	size   int64
	closed chan struct{}
}

func newTimeoutServer(t *testing.T, cfg Config, size int64) *timeoutServer {
	t.Helper()
	path := filepath.Join(t.TempDir(), "Patient-1.ndjson")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.CopyN(f, rand.Reader, size); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	s := &timeoutServer{jobs: &diskJobs{path: path}, size: size, closed: make(chan struct{}, 100)}
	if cfg.Jobs == nil {
		cfg.Jobs = s.jobs
	}
	cfg.PublicURL = testPublicURL
	s.Server = httptest.NewUnstartedServer(New(cfg))
	s.Config.ConnState = func(_ net.Conn, st http.ConnState) {
		if st == http.StateClosed {
			s.closed <- struct{}{}
		}
	}
	s.Start()
	t.Cleanup(s.Close)
	return s
}

func (s *timeoutServer) dial(t *testing.T) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", s.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// slowBody sends a request whose declared body of 300 bytes comes one
// byte every 5 ms, until the server ends the connection; it reports whether
// the server did so before the whole body was sent, and the server's
// answer, if any.
func slowBody(t *testing.T, c net.Conn, method, target, contentType string) (cutOff bool, answer string) {
	t.Helper()
	const n = 300
	fmt.Fprintf(c, "%s %s HTTP/1.1\r\nHost: x\r\nContent-Type: %s\r\nAccept: application/fhir+json\r\n"+
		"Prefer: respond-async\r\nContent-Length: %d\r\n\r\n", method, target, contentType, n)
	read := make(chan string, 1)
	go func() {
		b, _ := io.ReadAll(c) // until the server closes
		read <- string(b)
	}()
	for range n {
		select {
		case answer = <-read:
			return true, answer
		case <-time.After(5 * time.Millisecond):
		}
		if _, err := c.Write([]byte{'{'}); err != nil {
			return true, <-read
		}
	}
	c.(*net.TCPConn).CloseWrite()
	return false, <-read
}

// TestSlowRequestBodyCutOff: a request body trickling in a byte at a time
// is cut off ReadBodyTimeout after the handler starts (400, connection
// closed), on the kick-off, the token endpoint, and a route that does not
// read bodies at all; without ReadBodyTimeout the same client is served
// to the end of its body.
func TestSlowRequestBodyCutOff(t *testing.T) {
	const d = 200 * time.Millisecond
	open := newTimeoutServer(t, Config{ReadBodyTimeout: d}, 1)
	withAuth := newTimeoutServer(t, Config{ReadBodyTimeout: d, Auth: newAuthEnv(t).auth, Jobs: &diskJobs{}}, 1)
	for _, tc := range []struct {
		s                  *timeoutServer
		method, target, ct string
	}{
		{open, http.MethodPost, "/fhir/$export", "application/fhir+json"},
		{withAuth, http.MethodPost, "/fhir/auth/token", "application/x-www-form-urlencoded"},
		{open, http.MethodPost, "/fhir/metadata", "application/fhir+json"}, // 405: the body is never read
	} {
		cutOff, answer := slowBody(t, tc.s.dial(t), tc.method, tc.target, tc.ct)
		if !cutOff {
			t.Errorf("%s %s: the slow body was read to its end; answer %.200q", tc.method, tc.target, answer)
		}
	}
	if t.Failed() {
		return
	}
	// The control: no body timeout, the same client is read to the end.
	s := newTimeoutServer(t, Config{}, 1)
	if cutOff, answer := slowBody(t, s.dial(t), http.MethodPost, "/fhir/$export", "application/fhir+json"); cutOff {
		t.Errorf("without ReadBodyTimeout the slow body was cut off: %.200q", answer)
	}
}

// TestBodyDeadlineEndsWithBody: once a body has been read, its deadline
// (cleared by net/http when its background read starts)
// neither fails nor cancels the rest of the request, however long that
// takes.
func TestBodyDeadlineEndsWithBody(t *testing.T) {
	const d = 100 * time.Millisecond
	s := newTimeoutServer(t, Config{ReadBodyTimeout: d}, 1)
	s.jobs.kickoff = func(ctx context.Context) error {
		select {
		case <-time.After(5 * d):
			return nil
		case <-ctx.Done():
			return errors.New("request context cancelled after the body was read")
		}
	}
	req, _ := http.NewRequest(http.MethodPost, s.URL+"/fhir/$export", strings.NewReader(`{"resourceType":"Parameters"}`))
	req.Header.Set("Content-Type", "application/fhir+json")
	req.Header.Set("Accept", "application/fhir+json")
	req.Header.Set("Prefer", "respond-async")
	resp, err := s.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("kick-off = %d %s, want 202", resp.StatusCode, body)
	}
}

// getFile sends a download request on c and reads the response header.
func getFile(t *testing.T, c net.Conn) io.Reader {
	t.Helper()
	fmt.Fprintf(c, "GET /fhir/bulkfiles/job-1/Patient-1.ndjson HTTP/1.1\r\nHost: x\r\n\r\n")
	br := bufio.NewReaderSize(c, 64<<10)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK || resp.ContentLength <= 0 {
		t.Fatalf("download = %d, length %d", resp.StatusCode, resp.ContentLength)
	}
	return resp.Body
}

// TestDownloadStallCutOff: a client that stops reading a download much
// larger than the socket buffers is cut off after DownloadStallTimeout; a
// client reading steadily gets the whole file even though the download
// lasts many times DownloadStallTimeout; and WriteTimeout, which bounds
// the JSON routes, does not apply to downloads.
func TestDownloadStallCutOff(t *testing.T) {
	// A stall timeout of a second: the steady reader below must not look
	// stalled when a busy CI machine starves it of CPU for a few hundred
	// milliseconds (at 300 ms it did).
	const stall = time.Second
	const size = 64 << 20
	s := newTimeoutServer(t, Config{DownloadStallTimeout: stall, WriteTimeout: stall}, size)

	// The stalled reader: the headers, then nothing until the server has
	// closed the connection; what is left to read is less than the file.
	c := s.dial(t)
	body := getFile(t, c)
	select {
	case <-s.closed:
	case <-time.After(time.Minute):
		t.Fatal("the server kept a stalled download open for a minute")
	}
	n, _ := io.Copy(io.Discard, body)
	if n >= size {
		t.Fatalf("the stalled reader still got the whole file (%d bytes)", n)
	}

	// The steady reader: 256 KiB every 20 ms, so the download takes
	// several stall timeouts, and is never more than one behind.
	c = s.dial(t)
	body = getFile(t, c)
	start := time.Now()
	var got int64
	buf := make([]byte, 256<<10)
	for {
		m, err := io.ReadFull(body, buf)
		got += int64(m)
		if err != nil {
			break
		}
		time.Sleep(20 * time.Millisecond) // the client's pace, not a wait for the server
	}
	if got != size {
		t.Fatalf("steady reader got %d of %d bytes in %v", got, size, time.Since(start))
	}
	if d := time.Since(start); d < 2*stall {
		t.Logf("the download took %v, less than twice the stall timeout: the check proved little", d)
	}
}
