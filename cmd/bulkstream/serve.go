package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/bulkstream/bulkstream/export"
	"github.com/bulkstream/bulkstream/httpapi"
	"github.com/bulkstream/bulkstream/index"
	"github.com/bulkstream/bulkstream/ingest"
	"github.com/bulkstream/bulkstream/internal/smart"
	"github.com/bulkstream/bulkstream/metrics"
)

// serveConfig is everything `serve` is configured with.
type serveConfig struct {
	natsConfig
	Listen    string
	PublicURL string
	BasePath  string
	LogLevel  string
	LogFormat string
	// ReadyMaxLag is the ingest lag past which /readyz answers 503 (0:
	// not checked). After SIGTERM, /readyz answers 503 at once while
	// everything else is served as usual for ShutdownDelay (so that a load
	// balancer stops sending new requests first); then kick-offs are
	// refused and ShutdownTimeout bounds the wait for requests in flight.
	ReadyMaxLag     time.Duration
	ShutdownDelay   time.Duration
	ShutdownTimeout time.Duration
	Export          export.Config
	Cluster         clusterFlags // where jobs and files are kept (cluster.go)
	Security        securityConfig
	HTTP            httpConfig // timeouts, connection caps, --ops-listen (httpserver.go)
}

// natsConfig is the part of the configuration that `serve` and `rebuild`
// share: where the stream is and what it is called, and how NATS is
// secured (natsauth.go).
type natsConfig struct {
	DataDir     string
	NATSURL     string
	NATSListen  string
	NATSAuth    string          // embedded server's users and permissions file
	NATSTLSCert string          // embedded server's TLS certificate
	NATSTLSKey  string          // and key
	NATSClient  natsClientFlags // credentials for --nats-url
	Ingest      ingest.Config
}

func bindNATSFlags(fs *flag.FlagSet, c *natsConfig) {
	fs.StringVar(&c.DataDir, "data-dir", "./data", "directory for the Pebble index (index/), export files (exports/), the embedded NATS store (nats/) and auth state (auth/); created if missing")
	fs.StringVar(&c.NATSURL, "nats-url", "", "NATS server URL (nats://host:port, tls://… for TLS); empty starts an embedded NATS server with JetStream")
	fs.StringVar(&c.NATSListen, "nats-listen", "127.0.0.1:4222", "host:port of the embedded NATS server; without --nats-auth only a loopback address (see --insecure)")
	fs.StringVar(&c.NATSAuth, "nats-auth", "", "NATS users and permissions file (JSON) the embedded server enforces")
	fs.StringVar(&c.NATSTLSCert, "nats-tls-cert", "", "PEM certificate (chain) file: the embedded NATS server requires TLS (1.2 or later); needs --nats-tls-key")
	fs.StringVar(&c.NATSTLSKey, "nats-tls-key", "", "PEM private key file for --nats-tls-cert")
	bindNATSClientFlags(fs, &c.NATSClient, "--nats-url")
	fs.StringVar(&c.Ingest.Stream, "stream", ingest.DefaultStream, "JetStream stream of change events (a name without '.', '*', '>', '/', '\\' or whitespace)")
	c.Ingest.Subjects = []string{ingest.DefaultSubject}
	fs.Func("subjects", "comma-separated subjects of the stream: NATS subject filters that must not match the dead-letter subjects bulkstream.dlq.<reason> (default "+ingest.DefaultSubject+")", func(s string) error {
		c.Ingest.Subjects = strings.Split(s, ",")
		return nil
	})
	fs.IntVar(&c.Ingest.Replicas, "replicas", 1, "stream replicas when bulkstream creates the stream (1 to 5)")
	fs.DurationVar(&c.Ingest.MaxAge, "max-age", 0, "stream max age when bulkstream creates it (0: keep forever; not negative)")
	fs.Int64Var(&c.Ingest.MaxMsgsPerSubject, "max-msgs-per-subject", 0, "stream messages kept per subject, i.e. per resource (0: unlimited; 1: compacted; not negative)")
	fs.StringVar(&c.Ingest.Durable, "durable", ingest.DefaultDurable, "durable consumer name (without '.', '*', '>', '/', '\\' or whitespace)")
	fs.StringVar(&c.Ingest.DLQStream, "dlq-stream", ingest.DefaultDLQStream, "dead-letter stream, subjects bulkstream.dlq.> (a name other than --stream, without '.', '*', '>', '/', '\\' or whitespace)")
	fs.IntVar(&c.Ingest.BatchSize, "batch-size", ingest.DefaultBatchSize, "events fetched and committed per Pebble batch (1 to 10000)")
	fs.IntVar(&c.Ingest.MaxEventBytes, "max-event-bytes", ingest.DefaultMaxEventBytes, "largest event body accepted, in bytes; larger ones are dead-lettered as too_large (at least 1)")
}

func runServe(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var c serveConfig
	fs := newFlagSet("serve", stderr)
	bindServeFlags(fs, &c)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	log, err := newLogger(stderr, c.LogLevel, c.LogFormat)
	if err != nil {
		return err
	}
	return serve(ctx, c, log)
}

func bindServeFlags(fs *flag.FlagSet, c *serveConfig) {
	bindNATSFlags(fs, &c.natsConfig)
	fs.StringVar(&c.Listen, "listen", "127.0.0.1:8080", "HTTP listen address host:port; without --clients only a loopback address (see --insecure); every interface (:8080) needs --public-url")
	fs.StringVar(&c.PublicURL, "public-url", "", "base URL clients reach this server at, for Content-Location, file URLs and the token endpoint: an absolute http(s) URL without query, fragment or user info (default http://<listen>, https:// with --tls-cert; required when --listen binds every interface)")
	fs.StringVar(&c.BasePath, "base-path", httpapi.DefaultBasePath, "path of the FHIR endpoints ($export, metadata, status and files): a plain path starting with /")
	fs.DurationVar(&c.Export.TTL, "export-ttl", export.DefaultTTL, "how long a finished export's manifest and files stay available (more than 0)")
	fs.IntVar(&c.Export.MaxFinishedJobs, "max-finished-exports", export.DefaultMaxFinishedJobs, "finished exports kept for download, all clients together; past it the oldest of the client holding the most is removed before --export-ttl (at least 1; -1: no cap)")
	fs.IntVar(&c.Export.MaxFinishedJobsPerClient, "max-finished-exports-per-client", export.DefaultMaxFinishedJobsPerClient, "finished exports kept per client (default for clients without max_finished_exports); past it the client's own oldest is removed (at least 1; -1: no cap)")
	fs.IntVar(&c.Export.Workers, "export-workers", export.DefaultWorkers, "export jobs running at once (at least 1)")
	fs.IntVar(&c.Export.MaxActiveJobs, "max-export-jobs", export.DefaultMaxActiveJobs, "queued plus running export jobs; past it kick-off answers 429 with Retry-After (at least 1)")
	fs.Int64Var(&c.Export.FileMaxResources, "file-max-resources", export.DefaultFileMaxResources, "resources per NDJSON file before a new file starts (at least 1)")
	fs.Int64Var(&c.Export.FileMaxBytes, "file-max-bytes", export.DefaultFileMaxBytes, "bytes per NDJSON file before a new file starts (at least 1)")
	fs.Int64Var(&c.Export.MinFreeBytes, "min-free-bytes", export.DefaultMinFreeBytes, "kick-off answers 503 while the export disk has less free space, in bytes (at least --export-reserve-bytes; negative: no check)")
	fs.Int64Var(&c.Export.ExportReserveBytes, "export-reserve-bytes", export.DefaultExportReserveBytes, "a running export fails, its files removed, before the export disk's free space drops below this many bytes (at most --min-free-bytes; negative: no check)")
	fs.StringVar(&c.LogLevel, "log-level", "info", "log level: debug, info, warn or error")
	fs.StringVar(&c.LogFormat, "log-format", "text", "log format: text or json")
	fs.DurationVar(&c.ReadyMaxLag, "ready-max-lag", defaultReadyMaxLag, "/readyz answers 503 while ingest lags the stream by more (0: no lag check)")
	fs.DurationVar(&c.ShutdownDelay, "shutdown-delay", 0, "after SIGTERM, how long /readyz answers 503 (\"shutting down\") while kick-offs are still served, before draining, for load balancers to stop routing here (0: no delay)")
	fs.DurationVar(&c.ShutdownTimeout, "shutdown-timeout", defaultShutdownTimeout, "after the shutdown delay, how long downloads and requests in flight may take before their connections are closed")
	bindSecurityFlags(fs, &c.Security)
	bindClusterFlags(fs, &c.Cluster)
	fs.Int64Var(&c.Ingest.MinFreeBytes, "ingest-min-free-bytes", ingest.DefaultMinFreeBytes, "ingest pauses (events stay in the stream) while the index disk has less free space, in bytes, than this plus twice the batch; the embedded NATS server refuses publishes below twice this (at most --export-reserve-bytes; negative: no check)")
	bindHTTPFlags(fs, &c.HTTP)
}

func newLogger(w io.Writer, level, format string) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level %q: %w", level, err)
	}
	opts := &slog.HandlerOptions{Level: lv}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	default:
		return nil, fmt.Errorf("--log-format %q: want text or json", format)
	}
}

// stack is the NATS side of a running bulkstream: the embedded server (if
// any), the connection and its JetStream handle.
type stack struct {
	srv *server.Server
	nc  *nats.Conn
	js  jetstream.JetStream
}

// connectNATS connects to --nats-url or starts the embedded server.
func connectNATS(c natsConfig, log *slog.Logger) (*stack, error) {
	var st stack
	url := c.NATSURL
	opts := []nats.Option{nats.CustomInboxPrefix(bulkstreamInboxPrefix)}
	if url == "" {
		s, own, err := startEmbeddedNATS(c, log)
		if err != nil {
			return nil, err
		}
		st.srv = s
		log.Info("embedded nats server started", "listen", s.Addr().String(), "url", s.ClientURL(), "store", filepath.Join(c.DataDir, "nats"),
			"auth", c.NATSAuth != "", "tls", c.NATSTLSCert != "")
		url = "nats://" + c.NATSListen // in-process: not dialled
		opts = append(opts, own...)
	} else {
		o, err := c.NATSClient.options()
		if err != nil {
			return nil, err
		}
		opts = append(opts, o...)
	}
	nc, err := ingest.Connect(url, "bulkstream", log, opts...)
	if err != nil {
		st.close()
		return nil, natsConnectHint(err)
	}
	st.nc = nc
	js, err := jetstream.New(nc)
	if err != nil {
		st.close()
		return nil, err
	}
	st.js = js
	return &st, nil
}

// maxHeaderBytes caps the request line and headers (net/http's default is
// 1 MiB): 256 KiB holds a URL of httpapi.MaxURLBytes, which the API
// refuses with a 414 OperationOutcome, and any token.
const maxHeaderBytes = 256 << 10

func (st *stack) close() {
	if st.nc != nil {
		st.nc.Close()
	}
	if st.srv != nil {
		st.srv.Shutdown()
		st.srv.WaitForShutdown()
	}
}

func serve(ctx context.Context, c serveConfig, log *slog.Logger) (err error) {
	if err := c.Security.check(c.Listen, log); err != nil {
		return err
	}
	if err := c.HTTP.check(); err != nil {
		return err
	}
	if err := checkServeValues(c); err != nil {
		return err
	}
	if err := checkDiskFloors(c.Ingest.MinFreeBytes, c.Export.ExportReserveBytes); err != nil {
		return err
	}
	if err := checkListen(c, log); err != nil {
		return err
	}
	if err := c.checkNATS(c.Security.Insecure, log); err != nil {
		return err
	}
	tlsConfig, err := c.Security.tlsConfig()
	if err != nil {
		return err
	}
	// Read the clients file first: a broken one stops serve before any
	// store is opened.
	var clients *smart.Clients
	if c.Security.Clients != "" {
		if clients, err = smart.OpenClients(c.Security.Clients); err != nil {
			return fmt.Errorf("--clients: %w", err)
		}
	}
	if err := os.MkdirAll(c.DataDir, 0o755); err != nil {
		return fmt.Errorf("--data-dir: %w", err)
	}
	reg := metrics.NewRegistry(version, c.Cluster.ReplicaID)
	// rg is what bulkstream's own metrics register with: in a cluster,
	// every series carries the replica's name (the dashboard's replica
	// selector).
	var rg prometheus.Registerer = reg
	if c.Cluster.ReplicaID != "" {
		rg = prometheus.WrapRegistererWith(prometheus.Labels{"replica": c.Cluster.ReplicaID}, reg)
	}

	idx, err := index.Open(filepath.Join(c.DataDir, "index"), &index.Options{Logger: log, Registerer: rg, CompactedStream: c.Ingest.MaxMsgsPerSubject > 0})
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, idx.Close()) }()

	st, err := connectNATS(c.natsConfig, log)
	if err != nil {
		return err
	}
	defer st.close()

	icfg := c.Ingest
	icfg.Durable = c.Cluster.durable(icfg.Durable)
	icfg.Logger, icfg.Registerer = log, rg
	icfg.DiskDir = filepath.Join(c.DataDir, "index") // --ingest-min-free-bytes is checked there
	cons, err := ingest.New(icfg, st.js, idx)
	if err != nil {
		return err
	}
	if err := cons.Start(ctx); err != nil {
		return err
	}
	// The consumer must stop (finishing and acking its batch) before the
	// connection closes and the index closes: deferred calls run in
	// reverse order.
	defer func() { err = errors.Join(err, cons.Close(context.WithoutCancel(ctx))) }()
	var natsDisk *natsDiskGuard // the embedded server's disk floor (natsdisk.go)
	if floor := natsDiskFloor(c.Ingest.MinFreeBytes); st.srv != nil && floor >= 0 {
		if natsDisk, err = startNATSDiskGuard(st.srv, filepath.Join(c.DataDir, "nats"), floor, rg, log); err != nil {
			return err
		}
		defer natsDisk.Close()
	}

	ecfg := c.Export
	ecfg.Dir = filepath.Join(c.DataDir, "exports")
	ecfg.Logger, ecfg.Registerer = log, rg
	ecfg.RequiresAccessToken = clients != nil
	jobStore, fileStore, err := c.Cluster.stores(ctx, st.js, c.Ingest.Replicas, ecfg.TTL, idx)
	if err != nil {
		return err
	}
	ecfg.Files = fileStore
	if c.Cluster.JobStore == jobStoreKV {
		ecfg.Replica, ecfg.Lease = c.Cluster.ReplicaID, c.Cluster.Lease
	}
	jobs, err := export.NewManager(ecfg, export.IndexSource(idx), cons, jobStore)
	if err != nil {
		return err
	}
	if err := jobs.Start(ctx); err != nil {
		return err
	}
	// Export workers stop (checkpointing running jobs) before the index
	// closes, and after HTTP has stopped handing them work.
	defer func() { err = errors.Join(err, jobs.Close(context.WithoutCancel(ctx))) }()

	srv, err := listenHTTP(c, tlsConfig != nil, rg, log)
	if err != nil {
		return err
	}
	publicURL := c.PublicURL
	if publicURL == "" {
		publicURL = c.Security.scheme() + "://" + srv.addr()
	}
	// On SIGTERM, stopping makes /readyz answer 503; --shutdown-delay
	// later, draining makes kick-offs answer 503 too.
	var stopping, draining atomic.Bool
	hcfg := httpapi.Config{
		Metrics:    metrics.Handler(reg),
		Registerer: rg,
		Jobs:       drainingJobs{Jobs: jobs, draining: &draining},
		PublicURL:  publicURL,
		BasePath:   c.BasePath,
		Version:    version,
		Logger:     log,
		Checks:     readinessChecks(idx, st.nc, cons, c.ReadyMaxLag, &stopping),
		ReadyInfo:  readyInfo(c.Cluster.ReplicaID, cons),
	}
	if natsDisk != nil {
		hcfg.Checks["nats_disk"] = natsDiskReadiness(natsDisk)
	}
	srv.configure(&hcfg)
	if clients != nil {
		a, closeAuth, err := openAuth(ctx, c, clients, hcfg.FHIRBase(), log)
		if err != nil {
			srv.closeListeners()
			return err
		}
		defer func() { err = errors.Join(err, closeAuth()) }()
		hcfg.Auth = a
	}
	if err := hcfg.Validate(); err != nil {
		srv.closeListeners()
		return err
	}
	srv.start(hcfg, tlsConfig, log)
	log.Info("bulkstream serving", "listen", srv.addr(), "fhir_base", publicURL+c.BasePath, "data_dir", c.DataDir,
		"version", version, "auth", clients != nil, "tls", tlsConfig != nil)
	if clients != nil && hcfg.Auth != nil {
		log.Info("SMART Backend Services authorization on", "clients_file", c.Security.Clients,
			"clients", clients.Registry().Len(), "token_endpoint", hcfg.TokenURL())
	}

	select {
	case <-ctx.Done():
		log.Info("shutting down", "cause", context.Cause(ctx))
	case err := <-srv.failed():
		return srv.abort(err)
	}
	// Then, in order: report not ready and keep serving for
	// --shutdown-delay, refuse kick-offs, let requests in flight
	// (downloads) finish within --shutdown-timeout, and on return the
	// deferred calls checkpoint running jobs, stop ingest after its batch,
	// close NATS and close the index.
	stopping.Store(true)
	if c.ShutdownDelay > 0 {
		log.Info("not ready; serving until the shutdown delay is over", "shutdown_delay", c.ShutdownDelay)
		select {
		case <-time.After(c.ShutdownDelay):
		case err := <-srv.failed():
			return srv.abort(err)
		}
	}
	draining.Store(true)
	shutCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.ShutdownTimeout)
	defer cancel()
	if err := srv.shutdown(shutCtx, c.ShutdownTimeout, log); err != nil {
		log.Warn("http server stopped with an error", "error", err)
	}
	log.Info("http server stopped")
	return nil
}
