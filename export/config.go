package export

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Defaults for Config.
const (
	DefaultWorkers          = 2
	DefaultMaxActiveJobs    = 8
	DefaultFileMaxResources = 100_000
	DefaultFileMaxBytes     = 256 << 20
	DefaultTTL              = 24 * time.Hour
	DefaultMaxFinishedJobs  = 10_000
	// DefaultMaxFinishedJobsPerClient is each client's own cap.
	DefaultMaxFinishedJobsPerClient = 1000
	DefaultMinFreeBytes             = 256 << 20
	// DefaultExportReserveBytes is the free space running exports leave.
	DefaultExportReserveBytes = 128 << 20
	DefaultMaxCatchUpWait     = 10 * time.Minute
	// DefaultLease and DefaultLeaseGrace: a replica that dies holding a
	// job loses it to another 20 s after its last renewal at most.
	DefaultLease      = 15 * time.Second
	DefaultLeaseGrace = 5 * time.Second
)

// headTimeout bounds the stream-head lookup of a kick-off, which must
// answer quickly even when NATS does not.
const headTimeout = time.Second

// Config configures a Manager. Zero fields get the defaults above.
type Config struct {
	// Dir is the exports root; a job's files are in Dir/<job id>/ (unless
	// Files says otherwise), and the free-space checks measure its
	// filesystem. The manager owns it: directories named like a job id
	// that belong to no job are removed by Start.
	Dir string
	// Files keeps the export files (nil: NewDirStore(Dir)).
	Files FileStore
	// Workers is how many jobs run at once (DefaultWorkers).
	Workers int
	// MaxActiveJobs caps queued plus running jobs; past it Kickoff returns
	// *TooManyJobsError (DefaultMaxActiveJobs). Completed jobs do not count.
	MaxActiveJobs int
	// FileMaxResources and FileMaxBytes split a type's output: a new file
	// starts before the line that would exceed either. A single resource
	// larger than FileMaxBytes gets a file of its own.
	FileMaxResources int64
	FileMaxBytes     int64
	// TTL is how long a completed (or failed) job's manifest and files
	// stay available (DefaultTTL).
	TTL time.Duration
	// MaxFinishedJobs caps the completed and failed jobs kept for
	// download, all clients together: past it finished jobs are removed
	// before their TTL, each time the oldest of the client holding the
	// most, so a client that never deletes its jobs cannot grow memory and
	// disk without bound, nor evict another client's exports while it
	// holds more than that client (DefaultMaxFinishedJobs; the heap a
	// finished job holds is measured by BenchmarkFinishedJobMemory;
	// negative: no cap).
	MaxFinishedJobs int
	// MaxFinishedJobsPerClient caps each client's own finished jobs: past
	// it the client's own oldest finished job is removed. Kickoff.MaxFinished
	// overrides it per client (DefaultMaxFinishedJobsPerClient; negative:
	// no per-client cap).
	MaxFinishedJobsPerClient int
	// MinFreeBytes: Kickoff answers *UnavailableError while the
	// filesystem of Dir has less free space (DefaultMinFreeBytes;
	// negative disables the check).
	MinFreeBytes int64
	// ExportReserveBytes: a running job fails (files removed, a message
	// saying the disk is low) rather than let the free space of Dir drop
	// below it, checked when a file opens and at least every MiB written,
	// so ingest keeps room to commit (DefaultExportReserveBytes; negative
	// disables the check; at most MinFreeBytes when both are checked).
	ExportReserveBytes int64
	// MaxCatchUpWait bounds how long a job waits for ingest to apply the
	// stream head recorded at kick-off before it fails
	// (DefaultMaxCatchUpWait).
	MaxCatchUpWait time.Duration
	// RequiresAccessToken is the manifest's requiresAccessToken.
	RequiresAccessToken bool
	// Logger receives the manager's log lines; nil discards them.
	Logger *slog.Logger
	// Registerer, if set, gets the manager's metrics; Close unregisters
	// them.
	Registerer prometheus.Registerer
	// Now is the wall clock (time.Now); tests replace it. It stamps job
	// creation, completion and expiry, never transactionTime.
	Now func() time.Time

	// Replica names this replica in cluster mode (a JobStore that is a
	// SharedJobStore): the owner written into the jobs it runs. Required
	// in cluster mode; unused otherwise.
	Replica string
	// Lease is how long a cluster-mode job stays this replica's without a
	// renewal (DefaultLease). The owner renews it every Lease/3 and stops
	// the job itself if it could not renew it for Lease - Lease/3; another
	// replica takes the job over once Lease + LeaseGrace have passed
	// since the last renewal.
	Lease time.Duration
	// LeaseGrace is the extra time a lease is honoured, for clock skew
	// between replicas (DefaultLeaseGrace).
	LeaseGrace time.Duration
}

func (c *Config) ensureDefaults() {
	if c.Files == nil && c.Dir != "" {
		c.Files = NewDirStore(c.Dir)
	}
	if c.Workers == 0 {
		c.Workers = DefaultWorkers
	}
	if c.MaxActiveJobs == 0 {
		c.MaxActiveJobs = DefaultMaxActiveJobs
	}
	if c.FileMaxResources == 0 {
		c.FileMaxResources = DefaultFileMaxResources
	}
	if c.FileMaxBytes == 0 {
		c.FileMaxBytes = DefaultFileMaxBytes
	}
	if c.TTL == 0 {
		c.TTL = DefaultTTL
	}
	if c.MaxFinishedJobs == 0 {
		c.MaxFinishedJobs = DefaultMaxFinishedJobs
	}
	if c.MaxFinishedJobsPerClient == 0 {
		c.MaxFinishedJobsPerClient = DefaultMaxFinishedJobsPerClient
	}
	if c.MinFreeBytes == 0 {
		c.MinFreeBytes = DefaultMinFreeBytes
	}
	if c.ExportReserveBytes == 0 {
		c.ExportReserveBytes = DefaultExportReserveBytes
	}
	if c.MaxCatchUpWait == 0 {
		c.MaxCatchUpWait = DefaultMaxCatchUpWait
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Lease == 0 {
		c.Lease = DefaultLease
	}
	if c.LeaseGrace == 0 {
		c.LeaseGrace = DefaultLeaseGrace
	}
}

func (c *Config) validate() error {
	var errs []error
	if c.Dir == "" {
		errs = append(errs, errors.New("export: Config.Dir is required"))
	}
	if c.Workers < 0 {
		errs = append(errs, fmt.Errorf("export: Config.Workers %d must be positive", c.Workers))
	}
	if c.MaxActiveJobs < 0 {
		errs = append(errs, fmt.Errorf("export: Config.MaxActiveJobs %d must be positive", c.MaxActiveJobs))
	}
	if c.FileMaxResources < 0 {
		errs = append(errs, fmt.Errorf("export: Config.FileMaxResources %d must be positive", c.FileMaxResources))
	}
	if c.FileMaxBytes < 0 {
		errs = append(errs, fmt.Errorf("export: Config.FileMaxBytes %d must be positive", c.FileMaxBytes))
	}
	if c.TTL < 0 {
		errs = append(errs, fmt.Errorf("export: Config.TTL %v must be positive", c.TTL))
	}
	if c.MinFreeBytes >= 0 && c.ExportReserveBytes >= 0 && c.ExportReserveBytes > c.MinFreeBytes {
		errs = append(errs, fmt.Errorf("export: Config.ExportReserveBytes %d must not exceed Config.MinFreeBytes %d (--export-reserve-bytes ≤ --min-free-bytes): a kick-off admitted just above the one would fail at once on the other",
			c.ExportReserveBytes, c.MinFreeBytes))
	}
	if c.Lease < 0 || c.LeaseGrace < 0 {
		errs = append(errs, fmt.Errorf("export: Config.Lease %v and Config.LeaseGrace %v must be positive", c.Lease, c.LeaseGrace))
	}
	if c.MaxCatchUpWait < 0 {
		errs = append(errs, fmt.Errorf("export: Config.MaxCatchUpWait %v must be positive", c.MaxCatchUpWait))
	}
	return errors.Join(errs...)
}
