package main

import (
	"context"
	"io"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// TestServeRefusesAmbiguousValues: a flag value that the packages would
// silently replace by their default (0 means "default" in export.Config
// and ingest.Config) or that makes no sense (a negative delay) stops
// serve with an error naming the flag, before anything is opened; the
// documented values pass.
func TestServeRefusesAmbiguousValues(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string // "" = accepted
	}{
		{nil, ""},
		{[]string{"--min-free-bytes", "0"}, "--min-free-bytes 0"},
		{[]string{"--min-free-bytes", "-1", "--export-reserve-bytes", "-1", "--ingest-min-free-bytes", "-1"}, ""},
		{[]string{"--export-reserve-bytes", "0"}, "--export-reserve-bytes 0"},
		{[]string{"--ingest-min-free-bytes", "0"}, "--ingest-min-free-bytes 0"},
		{[]string{"--export-ttl", "0s"}, "--export-ttl 0s"},
		{[]string{"--export-ttl", "-1h"}, "--export-ttl -1h0m0s"},
		{[]string{"--max-finished-exports", "0"}, "--max-finished-exports 0"},
		{[]string{"--max-finished-exports", "-1", "--max-finished-exports-per-client", "-1"}, ""},
		{[]string{"--max-finished-exports-per-client", "-2"}, "--max-finished-exports-per-client -2"},
		{[]string{"--export-workers", "0"}, "--export-workers 0"},
		{[]string{"--max-export-jobs", "0"}, "--max-export-jobs 0"},
		{[]string{"--file-max-resources", "0"}, "--file-max-resources 0"},
		{[]string{"--file-max-bytes", "-5"}, "--file-max-bytes -5"},
		{[]string{"--ready-max-lag", "-1s"}, "--ready-max-lag -1s"},
		{[]string{"--ready-max-lag", "0s"}, ""},
		{[]string{"--shutdown-delay", "-1s"}, "--shutdown-delay -1s"},
		{[]string{"--shutdown-timeout", "0s"}, "--shutdown-timeout 0s"},
		{[]string{"--job-store", "kv"}, "--job-store kv needs --replica-id"},
		{[]string{"--job-store", "kv", "--replica-id", "a"}, "--job-store kv needs --file-store objectstore"},
		{[]string{"--job-store", "kv", "--replica-id", "a", "--file-store", "objectstore"}, ""},
		{[]string{"--file-store", "objectstore"}, ""},
		{[]string{"--job-store", "etcd"}, `--job-store "etcd"`},
		{[]string{"--file-store", "s3"}, `--file-store "s3"`},
		{[]string{"--replica-id", "a.b"}, `--replica-id "a.b"`},
		{[]string{"--replica-id", "replica-2"}, ""},
		{[]string{"--job-lease", "0s"}, "--job-lease 0s"},
	} {
		var c serveConfig
		fs := newFlagSet("serve", io.Discard)
		bindServeFlags(fs, &c)
		if err := parseFlags(fs, tc.args); err != nil {
			t.Fatalf("%v: %v", tc.args, err)
		}
		err := checkServeValues(c)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%v: refused: %v", tc.args, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%v: error %v, want one naming %q", tc.args, err, tc.want)
		}
	}
}

// TestServeChecksValues: serve itself refuses such a value before it
// opens anything in the data dir.
func TestServeChecksValues(t *testing.T) {
	data := t.TempDir()
	// Without the check serve would start and run: the timeout ends it.
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, binPath, "serve", "--data-dir", data, "--listen", "127.0.0.1:0",
		"--nats-listen", "127.0.0.1:0", "--min-free-bytes", "0").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "--min-free-bytes 0") {
		t.Fatalf("serve --min-free-bytes 0: %v\n%s", err, out)
	}
	if ents, err := os.ReadDir(data); err != nil || len(ents) > 0 {
		t.Errorf("serve created %v in the data dir before refusing (%v)", ents, err)
	}
}

// TestReplicaDurable: a replica's consumer is named after it unless
// --durable says otherwise, so replicas never share (and split) one.
func TestReplicaDurable(t *testing.T) {
	for _, tc := range []struct {
		replica, durable, want string
	}{
		{"", "bulkstream", "bulkstream"},
		{"a", "bulkstream", "bulkstream-a"},
		{"a", "mine", "mine"},
	} {
		if got := (clusterFlags{ReplicaID: tc.replica}).durable(tc.durable); got != tc.want {
			t.Errorf("replica %q, --durable %q: %q, want %q", tc.replica, tc.durable, got, tc.want)
		}
	}
}
