package main

import (
	"bufio"
	"compress/gzip"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/bulkstream/bulkstream"
	"github.com/bulkstream/bulkstream/internal/atomicfile"
	"github.com/bulkstream/bulkstream/internal/synth"
)

// Output file names under --out (plus ".gz" with --gzip).
const (
	genResourcesFile = "resources.ndjson"
	genUpdatesFile   = "updates.ndjson"
	genDeletesFile   = "deletes.txt"
)

// runGen is `bulkstream gen`: it writes realistic FHIR data of any size,
// the Synthea sample (embedded in the binary, or --sample) multiplied --scale times, every copy with
// fresh ids derived from --seed and all references rewritten to stay
// consistent within the copy (see package internal/synth). The same sample,
// --seed and --scale always give byte-identical output.
//
//	bulkstream gen [--scale N] [--seed S] [--sample PATH] [--gzip] > resources.ndjson
//	bulkstream gen [--scale N] [--seed S] [--sample PATH] [--gzip] --out DIR [--changes K]
//
// Without --out the resources go to stdout as NDJSON. With --out DIR they go
// to DIR/resources.ndjson and, with --changes K, K change events over those
// resources (distinct resources, about 20% deletes) go to
// DIR/updates.ndjson (whole updated resources, same type and id) and
// DIR/deletes.txt (one "Type/id" per line, as `publish --delete` reads).
// --gzip compresses every output and adds ".gz" to the file names. Files
// are written under a temporary name and renamed when complete. A summary
// goes to stderr.
//
// For example, a million resources and 10,000 changes to publish:
//
//	bulkstream gen --scale 26 --changes 10000 --out /tmp/gen
//	bulkstream publish /tmp/gen/resources.ndjson
//	bulkstream publish /tmp/gen/updates.ndjson
//	bulkstream publish --delete /tmp/gen/deletes.txt
func runGen(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("gen", stderr)
	f := bindGenFlags(fs)
	scale, seed, changes, sample, out, gz := f.scale, f.seed, f.changes, f.sample, f.out, f.gzip
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	switch {
	case fs.NArg() > 0:
		return fmt.Errorf("gen: unexpected arguments %q", fs.Args())
	case *scale < 1:
		return fmt.Errorf("gen: --scale %d: want ≥ 1", *scale)
	case *changes < 0:
		return fmt.Errorf("gen: --changes %d: want ≥ 0", *changes)
	case *changes > 0 && *out == "":
		return errors.New("gen: --changes needs --out DIR (resources, updates and deletes go to separate files)")
	}

	start := time.Now()
	s, err := openGenSample(*sample)
	if err != nil {
		return fmt.Errorf("gen: %w", err)
	}
	g := &synth.Generator{Sample: s, Seed: *seed, Scale: *scale}
	if int64(*changes) > g.Len() {
		return fmt.Errorf("gen: --changes %d exceeds the %d generated resources", *changes, g.Len())
	}
	ext := ""
	if *gz {
		ext = ".gz"
	}

	if *out == "" {
		o := newGenOutput(stdout, *gz)
		_, err := g.WriteNDJSON(ctx, o)
		if err = errors.Join(err, o.close()); err != nil {
			return fmt.Errorf("gen: write stdout: %w", err)
		}
		fmt.Fprintf(stderr, "gen: %d resources (%d types, %d copies, seed %d), %s to stdout in %s\n",
			g.Len(), len(s.Types()), g.Scale, g.Seed, genMB(o.n), time.Since(start).Round(time.Millisecond))
		return nil
	}

	if err := os.MkdirAll(*out, 0o755); err != nil {
		return fmt.Errorf("gen: %w", err)
	}
	resPath := filepath.Join(*out, genResourcesFile+ext)
	var resBytes int64
	err = writeGenFiles(*gz, []string{resPath}, func(o []*genOutput) error {
		_, err := g.WriteNDJSON(ctx, o[0])
		resBytes = o[0].n
		return err
	})
	if err != nil {
		return fmt.Errorf("gen: %w", err)
	}
	summary := fmt.Sprintf("gen: %d resources (%d types, %d copies, seed %d), %s to %s",
		g.Len(), len(s.Types()), g.Scale, g.Seed, genMB(resBytes), resPath)

	if *changes > 0 {
		updPath, delPath := filepath.Join(*out, genUpdatesFile+ext), filepath.Join(*out, genDeletesFile+ext)
		var updates, deletes int
		err := writeGenFiles(*gz, []string{updPath, delPath}, func(o []*genOutput) error {
			var line []byte
			return g.Changes(*changes, func(e synth.Event) error {
				if err := ctx.Err(); err != nil {
					return err
				}
				line = e.AppendNDJSON(line[:0])
				w := o[0]
				if e.Op == synth.Delete {
					w = o[1]
					deletes++
				} else {
					updates++
				}
				_, err := w.Write(line)
				return err
			})
		})
		if err != nil {
			return fmt.Errorf("gen: %w", err)
		}
		summary += fmt.Sprintf("; %d changes: %d updates to %s, %d deletes to %s", *changes, updates, updPath, deletes, delPath)
	}
	fmt.Fprintf(stderr, "%s; in %s\n", summary, time.Since(start).Round(time.Millisecond))
	return nil
}

// openGenSample loads the sample at path, or the embedded Synthea sample
// if path is empty, so that gen works from any directory.
func openGenSample(path string) (*synth.Sample, error) {
	if path != "" {
		return synth.OpenSample(path)
	}
	r, _ := bulkstream.Sample()
	s, err := synth.LoadSample(r)
	if err != nil {
		return nil, fmt.Errorf("embedded %s: %w", bulkstream.SampleName, err)
	}
	return s, nil
}

// genFlags are gen's flags.
type genFlags struct {
	scale, changes *int
	seed           *uint64
	sample, out    *string
	gzip           *bool
}

func bindGenFlags(fs *flag.FlagSet) genFlags {
	return genFlags{
		scale:   fs.Int("scale", 1, "copies of the sample to generate, each with fresh ids (at least 1; one copy is "+strconv.Itoa(bulkstream.SampleResources)+" resources)"),
		seed:    fs.Uint64("seed", 1, "seed of the ids and of the changes (any unsigned 64-bit number)"),
		changes: fs.Int("changes", 0, "change events to generate over the resources, about 20% deletes (0 to the number of resources generated; needs --out)"),
		sample:  fs.String("sample", "", "NDJSON sample to multiply, plain or gzip (default: the Synthea sample built into the binary, "+strconv.Itoa(bulkstream.SampleResources)+" resources)"),
		out:     fs.String("out", "", "directory (created if missing) for "+genResourcesFile+", "+genUpdatesFile+" and "+genDeletesFile+" (default: resources to stdout)"),
		gzip:    fs.Bool("gzip", false, "gzip every output, at gzip.BestSpeed (file names get .gz)"),
	}
}

// writeGenFiles creates the files at paths under temporary names, calls
// write with an output for each, and puts them in place (synced, renamed)
// if everything succeeded; otherwise it removes them.
func writeGenFiles(gz bool, paths []string, write func([]*genOutput) error) error {
	var files []*atomicfile.File
	var outs []*genOutput
	defer func() {
		for _, f := range files {
			f.Close() // removes an uncommitted file; after Commit a no-op
		}
	}()
	for _, p := range paths {
		f, err := atomicfile.Create(p, 0o644)
		if err != nil {
			return err
		}
		files = append(files, f)
		outs = append(outs, newGenOutput(f, gz))
	}
	if err := write(outs); err != nil {
		return err
	}
	for i, o := range outs {
		if err := o.close(); err != nil {
			return fmt.Errorf("write %s: %w", paths[i], err)
		}
	}
	for i, f := range files {
		if err := f.Commit(); err != nil {
			return fmt.Errorf("write %s: %w", paths[i], err)
		}
	}
	return nil
}

// genOutput is a buffered, optionally gzipped writer that counts the bytes
// written to it (before compression).
type genOutput struct {
	bw *bufio.Writer
	zw *gzip.Writer // nil without --gzip
	w  io.Writer    // zw or bw
	n  int64
}

func newGenOutput(w io.Writer, gz bool) *genOutput {
	o := &genOutput{bw: bufio.NewWriterSize(w, 1<<20)}
	o.w = o.bw
	if gz {
		// Test data: speed over ratio (default compression runs at a
		// fraction of the generator's speed).
		o.zw, _ = gzip.NewWriterLevel(o.bw, gzip.BestSpeed)
		o.w = o.zw
	}
	return o
}

func (o *genOutput) Write(p []byte) (int, error) {
	n, err := o.w.Write(p)
	o.n += int64(n)
	return n, err
}

// close flushes the output; it does not close the underlying writer.
func (o *genOutput) close() error {
	if o.zw != nil {
		if err := o.zw.Close(); err != nil {
			return err
		}
	}
	return o.bw.Flush()
}

// genMB formats a byte count in MB (10^6 bytes).
func genMB(n int64) string {
	return strings.TrimSuffix(fmt.Sprintf("%.1f", float64(n)/1e6), ".0") + " MB"
}
