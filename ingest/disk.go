package ingest

import (
	"context"
	"time"
)

// diskRoom is how much free space a batch needs above MinFreeBytes, per
// byte of its events: the write-ahead log takes them once, and the
// memtable flush writes them again before the log is freed.
const diskRoom = 2

// diskCheck reports whether the free-space floor is checked.
func (c *Consumer) diskCheck() bool {
	return c.cfg.DiskDir != "" && c.cfg.MinFreeBytes >= 0
}

// diskFree returns the free bytes under DiskDir, ok false when they
// cannot be measured (then ingest does not pause: Pebble's own errors
// stop it, and are retried).
func (c *Consumer) diskFree() (int64, bool) {
	free, ok, err := c.cfg.FreeBytes(c.cfg.DiskDir)
	if err != nil {
		if n, log := c.diskLogs.allow("statfs", time.Now()); log {
			c.log.Warn("cannot measure free disk space; not pausing", "dir", c.cfg.DiskDir, attrError, err, "suppressed", n)
		}
		return 0, false
	}
	return free, ok
}

// batchBytes is the size of b's events.
func batchBytes(b *batch) int64 {
	var n int64
	for _, m := range b.msgs {
		n += int64(len(m.Data()))
	}
	return n
}

// waitDisk blocks, before a batch of size bytes is committed, while the
// free space under DiskDir is below MinFreeBytes plus room for the
// batch, checking again every DiskPoll. Nothing is committed or acked
// meanwhile: the events stay in the stream. It reports whether it
// paused, and ctx's error if ctx ended first.
func (c *Consumer) waitDisk(ctx context.Context, size int64) (bool, error) {
	if !c.diskCheck() {
		return false, nil
	}
	need := c.cfg.MinFreeBytes + diskRoom*size
	free, ok := c.diskFree()
	if !ok || free >= need {
		return false, nil
	}
	c.g.diskPaused.Store(true)
	c.log.Warn("ingest paused: disk space low; nothing is applied until it is freed",
		"dir", c.cfg.DiskDir, "free_bytes", free, "min_free_bytes", c.cfg.MinFreeBytes, "batch_bytes", size, attrSeq, c.dst.AppliedSeq())
	t := time.NewTicker(c.cfg.DiskPoll)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return true, ctx.Err()
		case <-t.C:
		}
		if free, ok = c.diskFree(); !ok || free >= need {
			break
		}
	}
	c.g.diskPaused.Store(false)
	c.log.Info("ingest resumed: disk space available again", "dir", c.cfg.DiskDir, "free_bytes", free, attrSeq, c.dst.AppliedSeq())
	return true, nil
}

// DiskPaused reports whether ingest is paused because the free space
// under Config.DiskDir is below Config.MinFreeBytes.
func (c *Consumer) DiskPaused() bool { return c.g.diskPaused.Load() }
