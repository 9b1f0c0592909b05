// Command bulkstream serves a FHIR Bulk Data ($export) endpoint over a
// Pebble index fed by NATS JetStream change events. Subcommands: serve,
// publish, gen, rebuild, fetch (a Bulk Data client; "export" is its old
// name, kept as a deprecated alias for one release), client.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

// version is stamped by the Makefile with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	switch {
	case err == nil:
	case errors.Is(err, flag.ErrHelp):
		os.Exit(2)
	default:
		fmt.Fprintln(os.Stderr, "bulkstream:", err)
		os.Exit(1)
	}
}

const usage = `bulkstream: a FHIR Bulk Data ($export) server fed by NATS JetStream change events

usage: bulkstream <command> [flags]
       bulkstream <command> --help

commands:
  serve     run the export service (embedded NATS unless --nats-url is given)
  publish   publish NDJSON resources (or deletes) as change events
  gen       generate realistic FHIR data from the Synthea sample
  rebuild   drop the index and replay the stream into it
  fetch     run a Bulk Data export against a server and download it (one-shot or incremental sync)
  client    SMART Backend Services client keys and tokens (keygen, token)
  version   print the version

Run 'bulkstream <command> --help' for a command's flags and their limits.
Every flag can also be set through the environment as BULKSTREAM_<FLAG>
(--nats-url is BULKSTREAM_NATS_URL); a flag on the command line wins.
`

// exportDeprecated is what the old name of fetch prints to stderr.
const exportDeprecated = `bulkstream: "export" is deprecated and will be removed in the next release: use "bulkstream fetch" (same flags)`

// run is main without the process: tests call it directly.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return flag.ErrHelp
	}
	cmd, args := args[0], args[1:]
	if wantsHelp(args) {
		// Asked for: help goes to stdout and the exit status is 0.
		stderr = stdout
	}
	err := runCommand(ctx, cmd, args, stdin, stdout, stderr)
	if errors.Is(err, flag.ErrHelp) && wantsHelp(args) {
		return nil
	}
	return err
}

// runCommand runs the command cmd with its args.
func runCommand(ctx context.Context, cmd string, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	switch cmd {
	case "serve":
		return runServe(ctx, args, stdout, stderr)
	case "publish":
		return runPublish(ctx, args, stdin, stdout, stderr)
	case "gen":
		return runGen(ctx, args, stdout, stderr)
	case "rebuild":
		return runRebuild(ctx, args, stdout, stderr)
	case "client":
		return runClient(ctx, args, stdout, stderr)
	case "fetch":
		return runFetch(ctx, args, stdout, stderr, defaultFetchConfig())
	case "export":
		fmt.Fprintln(stderr, exportDeprecated)
		return runFetch(ctx, args, stdout, stderr, defaultFetchConfig())
	case "version", "--version":
		fmt.Fprintln(stdout, "bulkstream", version)
		return nil
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	default:
		fmt.Fprint(stderr, usage)
		return fmt.Errorf("unknown command %q", cmd)
	}
}
