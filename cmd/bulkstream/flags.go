package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
)

// newFlagSet returns a FlagSet for a subcommand that reports errors instead
// of exiting and writes its help (commandHelp) and errors to stderr; run
// makes stderr stdout when help is asked for.
func newFlagSet(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("bulkstream "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { printHelp(fs.Output(), fs, commandHelp(name)) }
	return fs
}

// parseFlags parses args, then fills every flag not given on the command
// line from the environment variable BULKSTREAM_<NAME> (upper case, '-'
// as '_'), so --nats-url can come from BULKSTREAM_NATS_URL.
func parseFlags(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		return err
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	var err error
	fs.VisitAll(func(f *flag.Flag) {
		if set[f.Name] || err != nil {
			return
		}
		env := "BULKSTREAM_" + strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_"))
		if v, ok := os.LookupEnv(env); ok {
			if e := fs.Set(f.Name, v); e != nil {
				err = fmt.Errorf("%s=%q: %w", env, v, e)
			}
		}
	})
	return err
}

// help is what --help prints about a command before its flags.
type help struct {
	summary string // one line, no final period
	usage   string // usage lines, each starting with "bulkstream "
	about   string // paragraphs, or empty
}

// commandHelp returns the help of a command ("serve", "client keygen").
func commandHelp(name string) help {
	switch name {
	case "serve":
		return help{
			summary: "run the FHIR Bulk Data $export service, fed by NATS JetStream change events",
			usage:   "bulkstream serve [flags]",
			about: `Starts an embedded NATS server with JetStream (unless --nats-url is
given), applies the change events of --stream to the Pebble index under
--data-dir in stream order, and serves the $export API (system, Patient
and Group level), /metrics, /healthz and /readyz over HTTP. SIGHUP reloads --clients;
SIGINT or SIGTERM shuts down cleanly.`,
		}
	case "publish":
		return help{
			summary: "publish NDJSON FHIR resources (or deletes) as change events on NATS JetStream",
			usage: `bulkstream publish [flags] [FILE|- ...]
       bulkstream publish --sample [flags]
       bulkstream publish --delete [flags] [FILE|- ...]`,
			about: `Publishes NDJSON FHIR resources (one per line; files may be gzipped; "-"
or no file is stdin), or with --sample the Synthea sample built into the
binary, as upsert change events on fhir.<Type>.<id>. With --delete, lines
are Type/id and are published as deletes. Lines that are not valid
resources are reported with file:line and skipped; the command then exits
with an error.`,
		}
	case "gen":
		return help{
			summary: "generate realistic FHIR data of any size from the Synthea sample",
			usage: `bulkstream gen [flags] > resources.ndjson
       bulkstream gen --out DIR [--changes K] [flags]`,
			about: `Writes the sample (the Synthea sample built into the binary, or
--sample) multiplied --scale times, with fresh deterministic ids in every
copy and references rewritten to match, as NDJSON to stdout, or with --out
DIR to DIR/` + genResourcesFile + `. --changes K (needs --out) also writes K change
events over those resources: updates to DIR/` + genUpdatesFile + `, deletes as
Type/id lines to DIR/` + genDeletesFile + ` (for publish --delete). Same sample,
--seed and --scale: byte-identical output. Works from any directory.`,
		}
	case "rebuild":
		return help{
			summary: "drop the index and replay the stream into it",
			usage:   "bulkstream rebuild [flags]",
			about: `Replays the stream (--stream, on --nats-url or the embedded server over
--data-dir) into a fresh index and swaps it in; export job records are
carried over. bulkstream serve must not be running on the same --data-dir.`,
		}
	case "fetch":
		return help{
			summary: "run a FHIR Bulk Data $export against any server and download it, one-shot or incremental",
			usage:   "bulkstream fetch --url BASE [flags]",
			about: `Runs a FHIR Bulk Data $export against BASE (bulkstream or any server that
follows the IG): kick-off, polling (with Prefer: wait), parallel downloads
with resume and retries, line counts checked against the manifest. Files
and manifest.json go to --out; a summary goes to stdout.

Incremental sync: --state FILE keeps the last transactionTime per server
(and --type list, level, Group, patients and --type-filter queries) and
uses it as the next _since; it advances only after
every file of the run is downloaded and verified. --apply DIR keeps one
NDJSON file per resource type there, the current state after applying
this run's outputs and deletions (a run without _since replaces it).

Ctrl-C cancels: the job is deleted on the server unless --keep-job.
"bulkstream export" is the deprecated old name of this command.`,
		}
	case "client keygen":
		return help{
			summary: "create a signing key for a SMART Backend Services client",
			usage:   "bulkstream client keygen --id ID [--alg ES384|RS384] [--out FILE]",
			about: `Writes the private JWK to --out (mode 0600, never overwritten) and the
client's entry for the serve --clients registry to stdout.`,
		}
	case "client token":
		return help{
			summary: "get an access token from a SMART Backend Services server",
			usage:   "bulkstream client token --url BASE --client-id ID --key FILE [--scope SCOPES]",
			about: `Discovers the token endpoint from BASE/.well-known/smart-configuration,
signs a client assertion with the key and prints the token response
(access_token, expires_in, scope) to stdout.`,
		}
	}
	return help{summary: name, usage: "bulkstream " + name + " [flags]"}
}

// printHelp writes a command's help: the summary line, the usage, what
// the command does, and every flag with its usage and default.
func printHelp(w io.Writer, fs *flag.FlagSet, h help) {
	fmt.Fprintf(w, "%s: %s\n\nusage: %s\n", fs.Name(), h.summary, h.usage)
	if h.about != "" {
		fmt.Fprintf(w, "\n%s\n", h.about)
	}
	fmt.Fprintf(w, "\nflags (also BULKSTREAM_<FLAG> in the environment, e.g. BULKSTREAM_NATS_URL; the command line wins):\n")
	fs.VisitAll(func(f *flag.Flag) {
		typ, usage := flag.UnquoteUsage(f)
		line := "  --" + f.Name
		if typ != "" {
			line += " " + typ
		}
		fmt.Fprintf(w, "%s\n        %s", line, strings.ReplaceAll(usage, "\n", "\n        "))
		switch f.DefValue {
		case "", "0", "0s", "false", "[]":
		default:
			fmt.Fprintf(w, " (default %s)", f.DefValue)
		}
		fmt.Fprintln(w)
	})
}

// wantsHelp reports whether args (after the command) ask for help: -h,
// -help or --help before a "--".
func wantsHelp(args []string) bool {
	for _, a := range args {
		switch a {
		case "--":
			return false
		case "-h", "-help", "--help":
			return true
		}
	}
	return false
}
