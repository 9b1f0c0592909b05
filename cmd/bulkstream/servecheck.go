package main

import (
	"errors"
	"fmt"
)

// checkServeValues refuses flag values that the packages would otherwise
// silently replace or misread: export.Config and ingest.Config treat 0 as
// "use the default", which is right for a library zero value and wrong for
// a user who typed --min-free-bytes 0 to mean "no floor". Each error names
// the flag and what it accepts, as --help does.
func checkServeValues(c serveConfig) error {
	var errs []error
	bad := func(flag string, v any, want string) {
		errs = append(errs, fmt.Errorf("--%s %v: %s", flag, v, want))
	}
	e := c.Export
	if e.TTL <= 0 {
		bad("export-ttl", e.TTL, "must be more than 0")
	}
	for _, f := range []struct {
		name string
		v    int
	}{{"max-finished-exports", e.MaxFinishedJobs}, {"max-finished-exports-per-client", e.MaxFinishedJobsPerClient}} {
		if f.v < 1 && f.v != -1 {
			bad(f.name, f.v, "must be at least 1, or -1 for no cap")
		}
	}
	if e.Workers < 1 {
		bad("export-workers", e.Workers, "must be at least 1")
	}
	if e.MaxActiveJobs < 1 {
		bad("max-export-jobs", e.MaxActiveJobs, "must be at least 1")
	}
	if e.FileMaxResources < 1 {
		bad("file-max-resources", e.FileMaxResources, "must be at least 1")
	}
	if e.FileMaxBytes < 1 {
		bad("file-max-bytes", e.FileMaxBytes, "must be at least 1")
	}
	for _, f := range []struct {
		name string
		v    int64
	}{{"min-free-bytes", e.MinFreeBytes}, {"export-reserve-bytes", e.ExportReserveBytes}, {"ingest-min-free-bytes", c.Ingest.MinFreeBytes}} {
		if f.v == 0 {
			bad(f.name, f.v, "give a positive number of bytes, or a negative one for no check")
		}
	}
	if c.ReadyMaxLag < 0 {
		bad("ready-max-lag", c.ReadyMaxLag, "must not be negative (0: no lag check)")
	}
	if c.ShutdownDelay < 0 {
		bad("shutdown-delay", c.ShutdownDelay, "must not be negative (0: no delay)")
	}
	if c.ShutdownTimeout <= 0 {
		bad("shutdown-timeout", c.ShutdownTimeout, "must be more than 0")
	}
	if err := c.Cluster.check(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}
