package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/bulkstream/bulkstream/index"
	"github.com/bulkstream/bulkstream/ingest"
)

// runRebuild drops the index and replays the stream into a fresh one. The
// commit clock and versionId (the stream sequence of the change) are
// functions of the stream alone, so the result is the index the live
// consumer built, byte for byte, also from a compacted stream (there, a
// resource whose surviving message was a no-op republish gets that
// message's higher sequence and commit time). Job records are carried
// over. bulkstream serve must not be running: the index's lock makes
// rebuild fail if it is.
func runRebuild(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var c natsConfig
	fs := newFlagSet("rebuild", stderr)
	bindNATSFlags(fs, &c)
	logLevel := fs.String("log-level", "info", "debug, info, warn or error")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	log, err := newLogger(stderr, *logLevel, "text")
	if err != nil {
		return err
	}
	dir := filepath.Join(c.DataDir, "index")
	tmp := dir + ".rebuild"
	// Rebuild replaces an index: without one, --data-dir is most likely
	// wrong, and nothing (not even the embedded server's store) is
	// created there.
	if ok, err := index.Exists(dir, nil); err != nil {
		return fmt.Errorf("rebuild: %w", err)
	} else if !ok {
		return fmt.Errorf("rebuild: --data-dir %s holds no index (no %s): give the data dir of the bulkstream serve whose index to rebuild; serve builds a new one by itself", c.DataDir, dir)
	}
	// The embedded server runs while rebuild does: the same listener
	// rule as serve (no --insecure here).
	if err := c.checkNATS(false, log); err != nil {
		return err
	}
	// Open the live index first: Pebble's lock refuses if serve runs.
	old, err := index.Open(dir, &index.Options{Logger: log})
	if err != nil {
		return fmt.Errorf("rebuild: %w (is bulkstream serve running on this data dir?)", err)
	}
	defer old.Close()
	st, err := connectNATS(c, log)
	if err != nil {
		return err
	}
	defer st.close()

	if err := os.RemoveAll(tmp); err != nil {
		return err
	}
	// Deletes are applied as the live consumer applied them, which
	// depends on whether the stream is compacted: ask the stream.
	stream, err := st.js.Stream(ctx, c.Ingest.Stream)
	if err != nil {
		return fmt.Errorf("rebuild: stream %q: %w", c.Ingest.Stream, err)
	}
	compacted := stream.CachedInfo().Config.MaxMsgsPerSubject > 0
	fresh, err := index.Open(tmp, &index.Options{Logger: log, CompactedStream: compacted})
	if err != nil {
		return err
	}
	start := time.Now()
	stats, err := ingest.Replay(ctx, st.js, c.Ingest, fresh, log)
	if err == nil {
		err = old.Jobs(func(id string, rec []byte) error { return fresh.PutJob(id, rec) })
	}
	if err = errors.Join(err, fresh.Close(), old.Close()); err != nil {
		return fmt.Errorf("rebuild: %w", err)
	}
	// Swap: the old index is removed only once the new one is in place.
	trash := dir + ".old"
	if err := os.RemoveAll(trash); err != nil {
		return err
	}
	if err := os.Rename(dir, trash); err != nil {
		return err
	}
	if err := os.Rename(tmp, dir); err != nil {
		return err
	}
	if err := os.RemoveAll(trash); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "rebuilt %s from stream %s: %d messages, %d applied, %d not applicable (dead-lettered when first seen), last sequence %d, %s\n",
		dir, c.Ingest.Stream, stats.Messages, stats.Applied, stats.Rejected, stats.LastSeq, time.Since(start).Round(time.Millisecond))
	return nil
}
