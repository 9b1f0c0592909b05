package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"compress/gzip"

	"github.com/bulkstream/bulkstream"
	"github.com/bulkstream/bulkstream/ingest"
	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/term"
)

// maxRejectsShown caps the rejected lines listed in the summary.
const maxRejectsShown = 20

func runPublish(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := newFlagSet("publish", stderr)
	f := bindPublishFlags(fs)
	natsURL, natsCreds, del, maxInFlight, sample := f.natsURL, f.natsCreds, f.delete, f.maxInFlight, f.sample
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	files := fs.Args()
	switch {
	case *sample && len(files) > 0:
		return fmt.Errorf("publish: --sample publishes the built-in sample: no file arguments (got %q)", files)
	case *sample && *del:
		return errors.New("publish: --sample and --delete exclude each other")
	case len(files) == 0 && !*sample:
		files = []string{"-"}
	}
	if *maxInFlight < 1 {
		return fmt.Errorf("publish: --max-in-flight %d is not positive", *maxInFlight)
	}

	natsOpts, err := natsCreds.options()
	if err != nil {
		return fmt.Errorf("publish: %w", err)
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	nc, err := ingest.Connect(*natsURL, "bulkstream publish", log, natsOpts...)
	if err != nil {
		return fmt.Errorf("publish: %w", natsConnectHint(err))
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return fmt.Errorf("publish: %w", err)
	}
	pub, err := ingest.NewPublisher(js, ingest.PublisherConfig{MaxInFlight: *maxInFlight})
	if err != nil {
		return fmt.Errorf("publish: %w", err)
	}

	// Inputs, opened up front so a missing file fails before publishing.
	var inputs []*input
	defer func() {
		for _, in := range inputs {
			in.close()
		}
	}()
	var total int64 // bytes of regular files; 0 if unknown
	if *sample {
		r, size := bulkstream.Sample()
		in, err := newInput("built-in "+bulkstream.SampleName, r, nil, size)
		if err != nil {
			return fmt.Errorf("publish: %w", err)
		}
		inputs = append(inputs, in)
		total = size
	}
	for _, name := range files {
		in, err := openInput(name, stdin)
		if err != nil {
			return fmt.Errorf("publish: %w", err)
		}
		inputs = append(inputs, in)
		if in.size > 0 && total >= 0 {
			total += in.size
		} else if in.size <= 0 {
			total = -1
		}
	}

	pr := &progress{out: stderr, total: max(total, 0), start: time.Now(), pub: pub, tty: isTerminal(stderr)}
	for _, in := range inputs {
		pr.inputs = append(pr.inputs, &in.counter)
	}
	stop := pr.run()

	var rejects []string
	var nRejected int
	var runErr error
	for _, in := range inputs {
		err := in.each(func(lineNo int, line []byte) error {
			var err error
			if *del {
				typ, id, ok := strings.Cut(string(line), "/")
				if !ok {
					err = &ingest.RejectError{Reason: "bad_line", Detail: "want Type/id"}
				} else {
					err = pub.Delete(ctx, typ, id)
				}
			} else {
				err = pub.Upsert(ctx, line)
			}
			var rej *ingest.RejectError
			if errors.As(err, &rej) {
				nRejected++
				pr.rejected.Add(1)
				if len(rejects) < maxRejectsShown {
					rejects = append(rejects, fmt.Sprintf("%s:%d: %s: %s", in.name, lineNo, rej.Reason, rej.Detail))
				}
				return nil
			}
			return err
		})
		if err != nil {
			runErr = fmt.Errorf("publish: %s: %w", in.name, err)
			break
		}
	}
	flushErr := pub.Flush(ctx)
	stop()

	st := pub.Stats()
	elapsed := time.Since(pr.start)
	fmt.Fprintf(stdout, "published %d events (%d duplicates) in %v (%.0f/s); %d retried, %d failed; %d lines rejected\n",
		st.Published, st.Duplicates, elapsed.Round(time.Millisecond), float64(st.Published)/max(elapsed.Seconds(), 1e-3),
		st.Retried, st.Failed, nRejected)
	for _, r := range rejects {
		fmt.Fprintln(stdout, "  rejected", r)
	}
	if nRejected > len(rejects) {
		fmt.Fprintf(stdout, "  … and %d more rejected lines\n", nRejected-len(rejects))
	}
	switch {
	case runErr != nil:
		return errors.Join(runErr, flushErr)
	case flushErr != nil:
		return fmt.Errorf("publish: %w", flushErr)
	case nRejected > 0:
		return fmt.Errorf("publish: %d lines rejected", nRejected)
	}
	return nil
}

// publishFlags are publish's flags.
type publishFlags struct {
	natsURL     *string
	natsCreds   *natsClientFlags
	delete      *bool
	maxInFlight *int
	sample      *bool
}

func bindPublishFlags(fs *flag.FlagSet) publishFlags {
	f := publishFlags{natsCreds: new(natsClientFlags)}
	f.natsURL = fs.String("nats-url", "nats://127.0.0.1:4222", "NATS server URL (tls://… for TLS); make run passes serve's --nats-listen")
	bindNATSClientFlags(fs, f.natsCreds, "the NATS server")
	f.delete = fs.Bool("delete", false, "lines are Type/id; publish deletes")
	f.maxInFlight = fs.Int("max-in-flight", ingest.DefaultMaxInFlight, "most publishes awaiting their ack (at least 1)")
	f.sample = fs.Bool("sample", false, "publish the Synthea sample built into the binary ("+strconv.Itoa(bulkstream.SampleResources)+" resources) instead of files; not with --delete or files")
	return f
}

// input is one NDJSON source.
type input struct {
	name    string
	size    int64 // of a regular file, else 0
	f       io.Closer
	r       *bufio.Reader
	counter atomic.Int64 // bytes read from the file (compressed)
}

func openInput(name string, stdin io.Reader) (*input, error) {
	if name == "-" {
		return newInput("stdin", stdin, nil, 0)
	}
	f, err := os.Open(name)
	if err != nil {
		return nil, err
	}
	var size int64
	if fi, err := f.Stat(); err == nil && fi.Mode().IsRegular() {
		size = fi.Size()
	}
	return newInput(name, f, f, size)
}

// newInput reads NDJSON, plain or gzip, from src; f (if not nil) is closed
// with the input, size is src's length in bytes (0 if unknown).
func newInput(name string, src io.Reader, f io.Closer, size int64) (*input, error) {
	in := &input{name: name, f: f, size: size}
	br := bufio.NewReaderSize(countingReader{src, &in.counter}, 1<<20)
	if magic, _ := br.Peek(2); len(magic) == 2 && magic[0] == 0x1f && magic[1] == 0x8b {
		zr, err := gzip.NewReader(br)
		if err != nil {
			in.close()
			return nil, fmt.Errorf("%s: %w", in.name, err)
		}
		br = bufio.NewReaderSize(zr, 1<<20)
	}
	in.r = br
	return in, nil
}

func (in *input) close() {
	if in.f != nil {
		in.f.Close()
	}
}

// each calls fn with every non-blank line (trimmed, a fresh slice).
func (in *input) each(fn func(lineNo int, line []byte) error) error {
	for n := 1; ; n++ {
		line, err := in.r.ReadBytes('\n')
		if t := bytes.TrimSpace(line); len(t) > 0 {
			if ferr := fn(n, t); ferr != nil {
				return ferr
			}
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("line %d: %w", n, err)
		}
	}
}

type countingReader struct {
	r io.Reader
	n *atomic.Int64
}

func (c countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n.Add(int64(n))
	return n, err
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// progress reports publishing progress on stderr: a redrawn bar on a
// terminal, a plain line every 2s otherwise.
type progress struct {
	out      io.Writer
	tty      bool
	total    int64 // input bytes, 0 if unknown
	inputs   []*atomic.Int64
	start    time.Time
	pub      *ingest.Publisher
	rejected atomic.Int64
}

func (p *progress) run() (stop func()) {
	every := 2 * time.Second
	if p.tty {
		every = 200 * time.Millisecond
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-t.C:
				p.report()
			case <-done:
				if p.tty {
					p.report()
					fmt.Fprintln(p.out)
				}
				return
			}
		}
	}()
	return func() {
		close(done)
		wg.Wait()
	}
}

func (p *progress) report() {
	st := p.pub.Stats()
	el := time.Since(p.start)
	rate := float64(st.Published) / max(el.Seconds(), 1e-3)
	counts := fmt.Sprintf("%d published, %d in flight, %d rejected, %.0f/s", st.Published, st.InFlight, p.rejected.Load(), rate)
	if !p.tty {
		fmt.Fprintf(p.out, "publish: %s\n", counts)
		return
	}
	if p.total <= 0 {
		fmt.Fprintf(p.out, "\r%s   ", counts)
		return
	}
	var read int64
	for _, c := range p.inputs {
		read += c.Load()
	}
	frac := min(1, float64(read)/float64(p.total))
	const width = 30
	filled := int(frac * width)
	fmt.Fprintf(p.out, "\r[%s%s] %3.0f%% %s   ", strings.Repeat("=", filled), strings.Repeat(" ", width-filled), 100*frac, counts)
}
