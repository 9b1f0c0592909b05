package main

import (
	"errors"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/bulkstream/bulkstream/internal/diskspace"
)

// natsDiskPoll is how often the embedded server's disk is measured.
const natsDiskPoll = 250 * time.Millisecond

// natsDiskFloor is the free space the embedded JetStream store leaves on
// its disk, derived from --ingest-min-free-bytes: twice it, so that once
// publishes are refused the index still has --ingest-min-free-bytes of
// room to apply what the stream already holds before ingest pauses.
// Negative: no guard.
func natsDiskFloor(ingestMinFree int64) int64 {
	if ingestMinFree < 0 {
		return -1
	}
	return 2 * ingestMinFree
}

// natsDiskGuard keeps the embedded NATS server from filling its disk.
// nats-server does not recover from ENOSPC while storing a message by
// itself (see below), so the guard never lets it get there: it
// keeps the account's JetStream storage limit at what the streams store
// now plus the free space above the floor, so a publish that would take
// the disk below the floor is refused with a JetStream error (not acked,
// nothing lost) and accepted again once space is freed.
//
// Should the disk fill anyway (another process writing between two
// measurements), a standalone nats-server does not recover by itself: a
// stream that met ENOSPC keeps failing every publish with that error
// ("critical write error") until JetStream reloads it, and a clustered
// one disables JetStream. The guard, seeing either, restarts JetStream
// (streams and consumers reload from disk) once the disk has room again.
type natsDiskGuard struct {
	srv      *server.Server
	storeDir string // what StoreDir the server was started with
	floor    int64
	log      *slog.Logger
	free     func(dir string) (int64, error)

	refusing atomic.Bool
	writeErr atomic.Bool // nats-server logged a store write error
	gauge    prometheus.Gauge

	limit     int64     // last account limit set (loop goroutine only)
	restarted time.Time // last JetStream restart (loop goroutine only)

	stop     chan struct{}
	done     chan struct{}
	stopOnce sync.Once
}

// startNATSDiskGuard starts the guard of s, whose JetStream stores under
// storeDir, keeping floor bytes free; it replaces s's logger (log) to see
// store write errors. Close stops it.
func startNATSDiskGuard(s *server.Server, storeDir string, floor int64, reg prometheus.Registerer, log *slog.Logger) (*natsDiskGuard, error) {
	g, err := newNATSDiskGuard(s, storeDir, floor, diskFree, reg, log)
	if err != nil {
		return nil, err
	}
	g.check()
	go g.run() // owned: Close stops it and waits
	return g, nil
}

// newNATSDiskGuard is startNATSDiskGuard measuring free space with free,
// without starting the loop.
func newNATSDiskGuard(s *server.Server, storeDir string, floor int64, free func(string) (int64, error), reg prometheus.Registerer, log *slog.Logger) (*natsDiskGuard, error) {
	g := &natsDiskGuard{
		srv: s, storeDir: storeDir, floor: floor, log: log.With("component", "nats-disk"), free: free,
		gauge: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "bulkstream_nats_disk_refusing",
			Help: "1 while the embedded NATS server refuses publishes because its disk is near the floor (2 × --ingest-min-free-bytes)",
		}),
		limit: -2, // unset
		stop:  make(chan struct{}),
		done:  make(chan struct{}),
	}
	if err := reg.Register(g.gauge); err != nil {
		return nil, err
	}
	s.SetLoggerV2(natsLogger{l: log.With("component", "nats-server"), onError: func(msg string) {
		if m := strings.ToLower(msg); strings.Contains(m, "critical write error") &&
			(strings.Contains(m, "no space left") || strings.Contains(m, "quota exceeded")) {
			g.writeErr.Store(true)
		}
	}}, false, false, false)
	return g, nil
}

// Refusing reports whether publishes are being refused for the disk.
func (g *natsDiskGuard) Refusing() bool { return g.refusing.Load() }

// Close stops the guard and waits for it.
func (g *natsDiskGuard) Close() {
	g.stopOnce.Do(func() { close(g.stop) })
	<-g.done
}

func (g *natsDiskGuard) run() {
	defer close(g.done)
	t := time.NewTicker(natsDiskPoll)
	defer t.Stop()
	for {
		select {
		case <-g.stop:
			return
		case <-t.C:
			g.check()
		}
	}
}

// check measures the disk once and sets the limit.
func (g *natsDiskGuard) check() {
	free, err := g.free(g.storeDir)
	if err != nil {
		g.log.Debug("cannot measure free disk space", "dir", g.storeDir, "error", err)
		return
	}
	room := free - g.floor
	if g.writeErr.Load() || !g.srv.JetStreamEnabled() {
		if room <= 0 || time.Since(g.restarted) < natsRestartEvery {
			g.setRefusing(true, free)
			return
		}
		g.restarted = time.Now()
		g.log.Warn("JetStream met a full disk; restarting it now that the disk has room", "free_bytes", free, "floor_bytes", g.floor)
		g.writeErr.Store(false)
		if err := g.srv.ShutdownJetStream(); err != nil {
			g.log.Error("cannot stop JetStream", "error", err)
			return
		}
		if err := g.srv.EnableJetStream(&server.JetStreamConfig{StoreDir: g.storeDir}); err != nil {
			g.log.Error("cannot start JetStream again", "error", err)
			return
		}
		g.limit = -2
	}
	acc := g.srv.GlobalAccount()
	if acc == nil || !acc.JetStreamEnabled() {
		return
	}
	stored := int64(acc.JetStreamUsage().Store)
	limit := max(stored+room, 0)
	if cfg := g.srv.JetStreamConfig(); cfg != nil && cfg.MaxStore > 0 {
		limit = min(limit, cfg.MaxStore-1) // the account limit must stay below the server's
	}
	if limit != g.limit {
		l := server.JetStreamAccountLimits{MaxMemory: -1, MaxStore: limit, MaxStreams: -1, MaxConsumers: -1,
			MaxAckPending: -1, MemoryMaxStreamBytes: -1, StoreMaxStreamBytes: -1}
		if err := acc.UpdateJetStreamLimits(map[string]server.JetStreamAccountLimits{"": l}); err != nil {
			g.log.Debug("cannot set the JetStream storage limit", "limit_bytes", limit, "error", err)
		} else {
			g.limit = limit
		}
	}
	// Refusing: not even a small event fits above the floor any more.
	g.setRefusing(room < natsRefuseMargin, free)
}

// diskFree is diskspace.Free for the guard, which needs a figure: on an
// OS that cannot tell, it leaves the JetStream limits alone.
func diskFree(dir string) (int64, error) {
	free, ok, err := diskspace.Free(dir)
	if err == nil && !ok {
		err = errors.New("free disk space cannot be measured on this OS")
	}
	return free, err
}

// natsRestartEvery is the least time between two JetStream restarts.
const natsRestartEvery = 5 * time.Second

// natsRefuseMargin: with less room above the floor, publishes are
// reported as refused (events of a few KiB may still fit).
const natsRefuseMargin = 64 << 10

func (g *natsDiskGuard) setRefusing(on bool, free int64) {
	if g.refusing.Swap(on) == on {
		return
	}
	if on {
		g.gauge.Set(1)
		g.log.Warn("embedded NATS refuses publishes: its disk is at the floor; free space (e.g. delete exports) and they are accepted again",
			"dir", g.storeDir, "free_bytes", free, "floor_bytes", g.floor)
		return
	}
	g.gauge.Set(0)
	g.log.Info("embedded NATS accepts publishes again", "dir", g.storeDir, "free_bytes", free, "floor_bytes", g.floor)
}
