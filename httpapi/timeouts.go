package httpapi

import (
	"io"
	"math"
	"net/http"
	"time"
)

// Per-request connection deadlines. The http.Server has no ReadTimeout or
// WriteTimeout: a server-wide read deadline would still be set while a
// handler runs, and a long download would end when it fires; a server-wide
// write deadline would cut off every download longer than it. Instead each
// routed request gets its deadlines here, through http.ResponseController:
//
//   - a request that has a body (a POST kick-off, the token endpoint, or a
//     body nobody asked for) must arrive whole within ReadBodyTimeout from
//     the moment the handler starts; net/http clears the read deadline once
//     the body has been read to its end, so it never outlives the body (a
//     request without a body never gets one);
//   - every route but file downloads must have written its answer within
//     WriteTimeout;
//   - a file download gets a deadline of DownloadStallTimeout that moves
//     forward before every chunk of at most downloadChunk bytes: a client
//     that stops reading (or reads less than downloadChunk per
//     DownloadStallTimeout) is cut off, a long healthy download is not.
//
// A zero (or negative) duration sets no deadline.

// downloadChunk is the most a download writes under one deadline.
const downloadChunk = 128 << 10

// routeKind says which deadlines a route gets.
type routeKind int

const (
	kindJSON     routeKind = iota // small answers: WriteTimeout
	kindDownload                  // file downloads: DownloadStallTimeout, moved forward as bytes go out
)

// withDeadlines sets the connection deadlines of kind on w. A body's read
// deadline needs no clearing here: when the handler reads the body to its
// end, net/http starts its background read (which watches for the client
// going away) and that clears the read deadline, so it never fires while
// the handler works on (TestBodyDeadlineEndsWithBody holds net/http to it).
func (a *api) withDeadlines(w http.ResponseWriter, r *http.Request, kind routeKind) {
	rc := http.NewResponseController(w)
	if d := a.cfg.ReadBodyTimeout; d > 0 && r.Body != nil && r.Body != http.NoBody {
		// An error means the writer cannot set deadlines (a test recorder).
		_ = rc.SetReadDeadline(time.Now().Add(d))
	}
	switch kind {
	case kindDownload:
		if d := a.cfg.DownloadStallTimeout; d > 0 {
			sw := &stallWriter{rc: rc, d: d}
			if rec, ok := w.(*recorder); ok {
				// Under the recorder, which counts what is written and
				// is what the handlers look for.
				sw.ResponseWriter = rec.ResponseWriter
				rec.ResponseWriter = sw
			}
			sw.extend()
		}
	default:
		if d := a.cfg.WriteTimeout; d > 0 {
			_ = rc.SetWriteDeadline(time.Now().Add(d))
		}
	}
}

// stallWriter moves the write deadline forward by d before every chunk of
// at most downloadChunk bytes it writes.
type stallWriter struct {
	http.ResponseWriter
	rc *http.ResponseController
	d  time.Duration
}

func (s *stallWriter) extend() { _ = s.rc.SetWriteDeadline(time.Now().Add(s.d)) }

func (s *stallWriter) Write(p []byte) (int, error) {
	var n int
	for len(p) > 0 {
		c := min(len(p), downloadChunk)
		s.extend()
		m, err := s.ResponseWriter.Write(p[:c])
		n += m
		if err != nil {
			return n, err
		}
		p = p[c:]
	}
	return n, nil
}

// ReadFrom keeps the underlying writer's fast path (sendfile) chunk by
// chunk. A *io.LimitedReader (what http.ServeContent passes) is unwrapped,
// so that each chunk is a single LimitedReader over the file, which
// sendfile recognizes.
func (s *stallWriter) ReadFrom(src io.Reader) (int64, error) {
	rf, ok := s.ResponseWriter.(io.ReaderFrom)
	if !ok {
		return io.CopyBuffer(struct{ io.Writer }{s}, src, make([]byte, 32<<10))
	}
	limit := int64(math.MaxInt64)
	lr, limited := src.(*io.LimitedReader)
	if limited {
		src, limit = lr.R, lr.N
	}
	var total int64
	for limit > 0 {
		c := min(limit, downloadChunk)
		s.extend()
		n, err := rf.ReadFrom(&io.LimitedReader{R: src, N: c})
		total += n
		limit -= n
		if limited {
			lr.N -= n
		}
		if err != nil {
			return total, err
		}
		if n < c {
			return total, nil // the end of src
		}
	}
	return total, nil
}

// Unwrap is for http.ResponseController.
func (s *stallWriter) Unwrap() http.ResponseWriter { return s.ResponseWriter }
