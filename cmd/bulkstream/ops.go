package main

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/bulkstream/bulkstream/export"
	"github.com/bulkstream/bulkstream/httpapi"
	"github.com/bulkstream/bulkstream/index"
	"github.com/bulkstream/bulkstream/ingest"
)

// Defaults of the operations flags.
const (
	defaultReadyMaxLag     = time.Minute
	defaultShutdownTimeout = 30 * time.Second
)

// readinessChecks are the /readyz checks: the index is open, the NATS
// connection is up, ingest lags the stream by at most maxLag (0: not
// checked) and is not paused for a low disk, and the server is not
// shutting down.
func readinessChecks(idx *index.Index, nc *nats.Conn, cons ingestState, maxLag time.Duration, stopping *atomic.Bool) map[string]httpapi.Readiness {
	checks := map[string]httpapi.Readiness{
		"index": httpapi.ReadinessFunc(idx.Ready),
		"nats": httpapi.ReadinessFunc(func() error {
			if s := nc.Status(); s != nats.CONNECTED {
				return fmt.Errorf("nats connection %s", s)
			}
			return nil
		}),
		"disk": httpapi.ReadinessFunc(func() error {
			if cons.DiskPaused() {
				return errors.New("ingest paused: the index disk has less free space than --ingest-min-free-bytes")
			}
			return nil
		}),
		"shutdown": httpapi.ReadinessFunc(func() error {
			if stopping.Load() {
				return errShuttingDown
			}
			return nil
		}),
	}
	if maxLag > 0 {
		checks["ingest_lag"] = httpapi.ReadinessFunc(func() error {
			if lag := cons.Lag(); lag > maxLag {
				return fmt.Errorf("ingest lags the stream by %s (--ready-max-lag %s)", lag.Round(time.Millisecond), maxLag)
			}
			return nil
		})
	}
	return checks
}

// readyInfo is what every /readyz answer says besides its checks: how far
// ingest lags the stream (seconds, 0 when caught up) and, in a cluster,
// which replica answers.
func readyInfo(replica string, cons ingestState) func() map[string]any {
	return func() map[string]any {
		info := map[string]any{"ingest_lag_seconds": cons.Lag().Seconds()}
		if replica != "" {
			info["replica"] = replica
		}
		return info
	}
}

// natsDiskReadiness is the /readyz check "nats_disk": not ready while the
// embedded NATS server refuses publishes because its disk is at the floor
// (natsdisk.go).
func natsDiskReadiness(g interface{ Refusing() bool }) httpapi.Readiness {
	return httpapi.ReadinessFunc(func() error {
		if g.Refusing() {
			return errors.New("the embedded NATS server refuses publishes: its disk has less free space than 2 × --ingest-min-free-bytes")
		}
		return nil
	})
}

// checkDiskFloors checks that ingest pauses only below the reserve that
// running exports leave (--ingest-min-free-bytes at most
// --export-reserve-bytes when both are checked), so that exports fail
// before ingest stops.
func checkDiskFloors(ingestMinFree, exportReserve int64) error {
	if ingestMinFree >= 0 && exportReserve >= 0 && ingestMinFree > exportReserve {
		return fmt.Errorf("--ingest-min-free-bytes %d is above --export-reserve-bytes %d: running exports must stop before ingest pauses", ingestMinFree, exportReserve)
	}
	return nil
}

// ingestState is what the ingest checks need of *ingest.Consumer.
type ingestState interface {
	Lag() time.Duration
	DiskPaused() bool
}

var _ ingestState = (*ingest.Consumer)(nil)

// errShuttingDown is the /readyz reason from SIGTERM on: the server is
// going away, whatever the export manager's state.
var errShuttingDown = errors.New("shutting down")

// errDraining refuses a kick-off once draining has begun: it wraps
// export.ErrClosed, which the API answers with 503 and Retry-After.
var errDraining = fmt.Errorf("%w: %w", errShuttingDown, export.ErrClosed)

// drainingJobs refuses kick-offs once shutdown has begun (503 with an
// OperationOutcome and Retry-After, as for a closed manager) while status
// requests and downloads in flight carry on.
type drainingJobs struct {
	httpapi.Jobs
	draining *atomic.Bool
}

func (d drainingJobs) Kickoff(ctx context.Context, k export.Kickoff) (string, error) {
	if d.draining.Load() {
		return "", errDraining
	}
	return d.Jobs.Kickoff(ctx, k)
}

// Wait passes a status request's Prefer: wait on to the manager: httpapi
// holds the request only when its Jobs is an httpapi.Waiter, which the
// embedded interface alone would hide.
func (d drainingJobs) Wait(ctx context.Context, client, id string, dur time.Duration) (export.Status, error) {
	if w, ok := d.Jobs.(httpapi.Waiter); ok {
		return w.Wait(ctx, client, id, dur)
	}
	return d.Jobs.Status(client, id)
}

var _ httpapi.Waiter = drainingJobs{}
