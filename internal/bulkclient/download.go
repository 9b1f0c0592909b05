package bulkclient

import (
	"bufio"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/bulkstream/bulkstream/internal/atomicfile"
)

// Kinds of manifest files.
const (
	KindOutput  = "output"
	KindDeleted = "deleted"
	KindError   = "error"
)

// Item is one file of a manifest with the local name Download gives it.
type Item struct {
	Kind string // KindOutput, KindDeleted or KindError
	File
	Name string // file name in the download directory
}

// Items lists every file of m in manifest order (output, deleted, error)
// with its local name: <Type>.<n>.ndjson for outputs, deleted.<n>.ndjson
// and error.<n>.ndjson, n counting from 1 per type or kind.
func (m *Manifest) Items() []Item {
	var items []Item
	seq := map[string]int{}
	add := func(kind string, files []File) {
		for _, f := range files {
			prefix := kind
			if kind == KindOutput {
				prefix = safeType(f.Type)
			}
			seq[prefix]++
			items = append(items, Item{Kind: kind, File: f, Name: fmt.Sprintf("%s.%d.ndjson", prefix, seq[prefix])})
		}
	}
	add(KindOutput, m.Output)
	add(KindDeleted, m.Deleted)
	add(KindError, m.Error)
	return items
}

// safeType keeps a resource type usable as a file name.
func safeType(t string) string {
	if t == "" || t == KindDeleted || t == KindError || strings.IndexFunc(t, func(r rune) bool {
		return !('a' <= r && r <= 'z' || 'A' <= r && r <= 'Z' || '0' <= r && r <= '9')
	}) >= 0 {
		return "output"
	}
	return t
}

// FileResult is a downloaded, verified file.
type FileResult struct {
	Item
	Path    string // local path
	Lines   int64  // non-blank lines (resources)
	Bytes   int64  // bytes on disk (decoded)
	Resumes int    // Range requests that continued the file
}

// CountError is a file whose line count differs from the manifest's.
type CountError struct {
	URL         string
	Lines, Want int64
}

func (e *CountError) Error() string {
	return fmt.Sprintf("%s: %d lines, the manifest says %d", e.URL, e.Lines, e.Want)
}

// Download fetches every file of m into dir (created if missing),
// Config.Parallel at a time, and calls onFile (if not nil, serialized)
// after each one is verified. On the first failure it stops the others
// and returns the error; files already finished stay.
func (c *Client) Download(ctx context.Context, m *Manifest, dir string, onFile func(FileResult)) ([]FileResult, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	items := m.Items()
	results := make([]FileResult, len(items))
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		first   error
		next    atomic.Int64
		workers = min(c.cfg.Parallel, len(items))
	)
	for range workers {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= len(items) || ctx.Err() != nil {
					return
				}
				r, err := c.downloadFile(ctx, items[i], m.RequiresAccessToken, filepath.Join(dir, items[i].Name))
				mu.Lock()
				if err != nil {
					if first == nil {
						first = err
						cancel()
					}
				} else {
					results[i] = r
					if onFile != nil {
						onFile(r)
					}
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if first != nil {
		return nil, first
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return results, nil
}

// errRestart asks for the file from its first byte again.
var errRestart = errors.New("restart download")

// partFile is the .part file of a download. It keeps the size and the
// line count of what has been written, so the file is not read back.
type partFile struct {
	f     *os.File
	size  int64
	lines lineCounter
}

func (p *partFile) Write(b []byte) (int, error) {
	n, err := p.f.Write(b)
	p.size += int64(n)
	p.lines.Write(b[:n])
	return n, err
}

// restart forgets what was written: the next write goes to byte 0.
func (p *partFile) restart() {
	p.size, p.lines = 0, lineCounter{}
}

// downloadFile fetches one file into path.part, resuming with Range after
// a broken body, verifies its line count and renames it to path.
func (c *Client) downloadFile(ctx context.Context, it Item, auth bool, path string) (FileResult, error) {
	r := FileResult{Item: it, Path: path}
	af, err := atomicfile.CreateTemp(path, path+".part", 0o644)
	if err != nil {
		return r, err
	}
	defer af.Close() // removes the .part file unless committed
	pf := &partFile{f: af.OS()}
	for attempt := 1; ; attempt++ {
		resumed := pf.size > 0
		err := c.fetchInto(ctx, it.URL, auth, pf)
		if err == nil {
			if resumed {
				r.Resumes++
			}
			break
		}
		if ctx.Err() != nil {
			return r, ctx.Err()
		}
		var oe *OutcomeError
		if errors.As(err, &oe) && oe.StatusCode != http.StatusRequestedRangeNotSatisfiable {
			return r, fmt.Errorf("download: %w", err) // do has retried what can be
		}
		if errors.Is(err, errRestart) || oe != nil {
			pf.restart()
		} else if resumed {
			r.Resumes++
		}
		if attempt >= c.cfg.MaxAttempts {
			return r, fmt.Errorf("download %s: giving up after %d attempts: %w", it.URL, attempt, err)
		}
		wait := c.backoff(attempt, 0)
		if c.cfg.OnRetry != nil {
			c.cfg.OnRetry("GET "+it.URL, attempt, wait, err)
		}
		if err := sleep(ctx, wait); err != nil {
			return r, err
		}
	}
	if err := af.OS().Truncate(pf.size); err != nil {
		return r, err
	}
	r.Lines, r.Bytes = pf.lines.count(), pf.size
	if it.Count != nil && *it.Count != r.Lines {
		return r, &CountError{URL: it.URL, Lines: r.Lines, Want: *it.Count}
	}
	return r, af.Commit()
}

// fetchInto GETs u and writes the decoded body into dst from offset
// dst.size, which advances by what was written, even on error. With
// dst.size > 0 it asks for the rest with Range on the identity encoding;
// otherwise for the whole file, gzip accepted.
func (c *Client) fetchInto(ctx context.Context, u string, auth bool, dst *partFile) error {
	from := dst.size
	resp, err := c.do(ctx, auth, func(ctx context.Context) (*http.Request, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
		if err != nil {
			return nil, err
		}
		req.Header.Set("Accept", "application/fhir+ndjson")
		if from > 0 {
			// Byte offsets are of the identity representation: a gzip
			// stream's bytes could not be resumed from decoded ones.
			req.Header.Set("Range", fmt.Sprintf("bytes=%d-", from))
			req.Header.Set("Accept-Encoding", "identity")
		} else {
			req.Header.Set("Accept-Encoding", "gzip")
		}
		return req, nil
	})
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	switch {
	case resp.StatusCode == http.StatusPartialContent && from > 0:
		if start, ok := contentRangeStart(resp.Header.Get("Content-Range")); !ok || start != from {
			return fmt.Errorf("%w: Content-Range %q for bytes=%d-", errRestart, resp.Header.Get("Content-Range"), from)
		}
	case resp.StatusCode == http.StatusOK:
		from = 0 // the server ignored Range, or there was none
		dst.restart()
	default:
		return fmt.Errorf("%w: GET %s: unexpected %s", errRestart, u, resp.Status)
	}
	if _, err := dst.f.Seek(from, io.SeekStart); err != nil {
		return err
	}
	body := io.Reader(resp.Body)
	switch enc := strings.ToLower(resp.Header.Get("Content-Encoding")); enc {
	case "", "identity":
	case "gzip", "x-gzip":
		if from > 0 {
			return fmt.Errorf("%w: gzip-encoded range", errRestart)
		}
		zr, err := gzip.NewReader(bufio.NewReader(body))
		if err != nil {
			return fmt.Errorf("GET %s: gzip: %w", u, err)
		}
		body = zr
	default:
		return fmt.Errorf("%w: GET %s: unsupported Content-Encoding %q", errRestart, u, enc)
	}
	if _, err := io.Copy(dst, body); err != nil {
		return fmt.Errorf("GET %s: body cut after %d bytes: %w", u, dst.size, err)
	}
	return nil
}

// contentRangeStart parses the first byte of "bytes first-last/size".
func contentRangeStart(v string) (int64, bool) {
	v, ok := strings.CutPrefix(strings.TrimSpace(v), "bytes ")
	if !ok {
		return 0, false
	}
	first, _, ok := strings.Cut(v, "-")
	if !ok {
		return 0, false
	}
	n, err := strconv.ParseInt(strings.TrimSpace(first), 10, 64)
	return n, err == nil
}

// lineCounter counts the lines written to it that hold more than white
// space; a last line without a newline counts too.
type lineCounter struct {
	n       int64
	content bool // the current line has a non-blank byte
}

func (c *lineCounter) Write(p []byte) (int, error) {
	for _, b := range p {
		switch b {
		case '\n':
			if c.content {
				c.n++
			}
			c.content = false
		case ' ', '\t', '\r':
		default:
			c.content = true
		}
	}
	return len(p), nil
}

func (c *lineCounter) count() int64 {
	if c.content {
		return c.n + 1
	}
	return c.n
}
