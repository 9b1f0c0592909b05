package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"regexp"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/bulkstream/bulkstream/export"
	"github.com/bulkstream/bulkstream/ingest"
	"github.com/bulkstream/bulkstream/jsstore"
)

// Where serve keeps export jobs and files: by default in this replica's
// data directory (jobs in Pebble, files under exports/); in cluster mode
// in JetStream, so that every replica serves every job (see the README,
// "Running several replicas").
const (
	jobStorePebble   = "pebble"
	jobStoreKV       = "kv"
	fileStoreLocal   = "local"
	fileStoreObjects = "objectstore"

	defaultJobsBucket  = "bulkstream_jobs"
	defaultFilesBucket = "bulkstream_files"
	// filesBucketSlack is how much longer than --export-ttl the Object
	// Store keeps a file part: replicas remove expired exports
	// themselves; the bucket's age limit removes what no replica was left
	// to remove. A part's age counts from its write, and a job's TTL from
	// its completion, so the slack must exceed the longest export run.
	filesBucketSlack = 24 * time.Hour
)

// clusterFlags say where export jobs and files are kept.
type clusterFlags struct {
	ReplicaID   string
	JobStore    string
	FileStore   string
	JobsBucket  string
	FilesBucket string
	Lease       time.Duration
}

func bindClusterFlags(fs *flag.FlagSet, c *clusterFlags) {
	fs.StringVar(&c.ReplicaID, "replica-id", "", "this replica's stable name in a cluster (letters, digits, '-' and '_'; at most 64): the owner of the export jobs it runs, and its durable consumer bulkstream-<id> unless --durable is given; required by --job-store kv")
	fs.StringVar(&c.JobStore, "job-store", jobStorePebble, "where export jobs are kept: pebble (this replica's index) or kv (a JetStream KV bucket every replica shares; needs --replica-id and --file-store objectstore)")
	fs.StringVar(&c.FileStore, "file-store", fileStoreLocal, "where export files are kept: local (<data-dir>/exports) or objectstore (a JetStream Object Store bucket every replica reads)")
	fs.StringVar(&c.JobsBucket, "jobs-bucket", defaultJobsBucket, "KV bucket of --job-store kv")
	fs.StringVar(&c.FilesBucket, "files-bucket", defaultFilesBucket, "Object Store bucket of --file-store objectstore")
	fs.DurationVar(&c.Lease, "job-lease", export.DefaultLease, "with --job-store kv, how long a replica holds a running job without renewing it; another replica takes the job over once it has passed (plus 5 s for clock skew)")
}

var replicaIDPattern = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

// check refuses combinations that cannot work: shared jobs whose files
// only one replica can read, or a cluster member without a name.
func (c clusterFlags) check() error {
	var errs []error
	if c.ReplicaID != "" && !replicaIDPattern.MatchString(c.ReplicaID) {
		errs = append(errs, fmt.Errorf("--replica-id %q: use 1 to 64 letters, digits, '-' or '_'", c.ReplicaID))
	}
	switch c.JobStore {
	case jobStorePebble:
	case jobStoreKV:
		if c.ReplicaID == "" {
			errs = append(errs, errors.New("--job-store kv needs --replica-id: the replicas sharing the jobs must tell themselves apart"))
		}
		if c.FileStore != fileStoreObjects {
			errs = append(errs, errors.New("--job-store kv needs --file-store objectstore: a job shared by every replica must have files every replica can serve"))
		}
	default:
		errs = append(errs, fmt.Errorf("--job-store %q: want %s or %s", c.JobStore, jobStorePebble, jobStoreKV))
	}
	if c.FileStore != fileStoreLocal && c.FileStore != fileStoreObjects {
		errs = append(errs, fmt.Errorf("--file-store %q: want %s or %s", c.FileStore, fileStoreLocal, fileStoreObjects))
	}
	if c.Lease <= 0 {
		errs = append(errs, fmt.Errorf("--job-lease %v: must be more than 0", c.Lease))
	}
	return errors.Join(errs...)
}

// durable is the consumer name of replica id when --durable was left at
// its default.
func (c clusterFlags) durable(set string) string {
	if c.ReplicaID == "" || set != ingest.DefaultDurable {
		return set
	}
	return ingest.DefaultDurable + "-" + c.ReplicaID
}

// stores opens the job and file stores the flags ask for: local ones
// need nothing (local is the index, files nil means the export directory).
func (c clusterFlags) stores(ctx context.Context, js jetstream.JetStream, replicas int, ttl time.Duration, local export.JobStore) (export.JobStore, export.FileStore, error) {
	jobs := local
	var files export.FileStore
	if c.FileStore == fileStoreObjects {
		fs, err := jsstore.NewFileStore(ctx, js, jsstore.FileOptions{
			Bucket: c.FilesBucket, Replicas: replicas, MaxAge: ttl + filesBucketSlack,
		})
		if err != nil {
			return nil, nil, fmt.Errorf("--file-store objectstore: %w", err)
		}
		files = fs
	}
	if c.JobStore == jobStoreKV {
		kv, err := jsstore.NewJobStore(ctx, js, jsstore.JobOptions{Bucket: c.JobsBucket, Replicas: replicas})
		if err != nil {
			return nil, nil, fmt.Errorf("--job-store kv: %w", err)
		}
		jobs = kv
	}
	return jobs, files, nil
}
