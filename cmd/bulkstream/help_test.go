package main

import (
	"bytes"
	"flag"
	"io"
	"os/exec"
	"regexp"
	"strings"
	"testing"
)

// TestHelp: --help (and -h) on bulkstream and on every command and
// subcommand exits 0 and prints to stdout a one-line summary, a usage
// line, and every flag of the command's FlagSet with a description; the
// flags with validated limits state them.
func TestHelp(t *testing.T) {
	for _, tc := range []struct {
		args  []string
		bind  func(fs *flag.FlagSet) // the command's flags; nil: none
		usage string                 // the usage line starts with this
		// limits: flag name → text its description must contain.
		limits map[string]string
	}{
		{args: []string{"--help"}, usage: "usage: bulkstream <command>"},
		{args: []string{"help"}, usage: "usage: bulkstream <command>"},
		{
			args:  []string{"serve", "--help"},
			bind:  func(fs *flag.FlagSet) { bindServeFlags(fs, new(serveConfig)) },
			usage: "usage: bulkstream serve",
			limits: map[string]string{
				"token-lifetime": "at most 1h", "key-rotation": "at least 1m", "replicas": "1 to 5",
				"batch-size": "1 to 10000", "export-workers": "at least 1", "max-conns-per-ip": "at most --max-conns",
				"export-reserve-bytes": "at most --min-free-bytes", "ingest-min-free-bytes": "at most --export-reserve-bytes",
				"read-header-timeout": "more than 0", "listen": "loopback", "max-finished-exports": "-1: no cap",
			},
		},
		{args: []string{"serve", "-h"}, bind: func(fs *flag.FlagSet) { bindServeFlags(fs, new(serveConfig)) }, usage: "usage: bulkstream serve"},
		{
			args:   []string{"publish", "--help"},
			bind:   func(fs *flag.FlagSet) { bindPublishFlags(fs) },
			usage:  "usage: bulkstream publish",
			limits: map[string]string{"max-in-flight": "at least 1"},
		},
		{
			args:   []string{"gen", "--help"},
			bind:   func(fs *flag.FlagSet) { bindGenFlags(fs) },
			usage:  "usage: bulkstream gen",
			limits: map[string]string{"scale": "at least 1", "changes": "needs --out"},
		},
		{
			args: []string{"rebuild", "--help"},
			bind: func(fs *flag.FlagSet) {
				bindNATSFlags(fs, new(natsConfig))
				fs.String("log-level", "", "")
			},
			usage:  "usage: bulkstream rebuild",
			limits: map[string]string{"batch-size": "1 to 10000"},
		},
		{
			args:   []string{"fetch", "--help"},
			bind:   func(fs *flag.FlagSet) { bindFetchFlags(fs) },
			usage:  "usage: bulkstream fetch",
			limits: map[string]string{"parallel": "at least 1", "since": "not with --state"},
		},
		{args: []string{"client", "--help"}, usage: "usage: bulkstream client <keygen|token>"},
		{
			args:   []string{"client", "keygen", "--help"},
			bind:   func(fs *flag.FlagSet) { bindKeygenFlags(fs) },
			usage:  "usage: bulkstream client keygen",
			limits: map[string]string{"alg": "ES384", "id": "1 to 128"},
		},
		{
			args:  []string{"client", "token", "--help"},
			bind:  func(fs *flag.FlagSet) { bindTokenFlags(fs) },
			usage: "usage: bulkstream client token",
		},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			t.Parallel()
			cmd := exec.Command(binPath, tc.args...)
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			if err := cmd.Run(); err != nil {
				t.Fatalf("exit: %v, want status 0\nstdout:\n%s\nstderr:\n%s", err, stdout.String(), stderr.String())
			}
			if stderr.Len() > 0 {
				t.Errorf("help on stderr, want it on stdout only:\n%s", stderr.String())
			}
			out := stdout.String()
			lines := strings.Split(out, "\n")
			if !regexp.MustCompile(`^bulkstream( [a-z]+)*: \S.{10,}$`).MatchString(lines[0]) {
				t.Errorf("first line %q, want a one-line summary \"bulkstream <command>: what it does\"", lines[0])
			}
			usage := false
			for _, l := range lines[1:min(len(lines), 4)] {
				usage = usage || strings.HasPrefix(l, tc.usage)
			}
			if !usage {
				t.Errorf("no %q line right after the summary:\n%s", tc.usage, out)
			}
			if tc.bind == nil {
				return
			}
			fs := flag.NewFlagSet("", flag.ContinueOnError)
			fs.SetOutput(io.Discard)
			tc.bind(fs)
			n := 0
			fs.VisitAll(func(f *flag.Flag) {
				n++
				desc, ok := flagHelp(out, f.Name)
				switch {
				case !ok:
					t.Errorf("--%s is not in the help", f.Name)
				case strings.TrimSpace(desc) == "":
					t.Errorf("--%s has no description", f.Name)
				}
			})
			if n == 0 {
				t.Fatal("the command's FlagSet has no flags: the test binds the wrong one")
			}
			for name, want := range tc.limits {
				if desc, _ := flagHelp(out, name); !strings.Contains(desc, want) {
					t.Errorf("--%s says %q, want its limit %q in it", name, strings.TrimSpace(desc), want)
				}
			}
		})
	}
}

// flagHelp returns the description of --name in help output: the
// indented lines under the "  --name" line.
func flagHelp(out, name string) (string, bool) {
	lines := strings.Split(out, "\n")
	for i, l := range lines {
		if l != "  --"+name && !strings.HasPrefix(l, "  --"+name+" ") {
			continue
		}
		var desc []string
		for _, d := range lines[i+1:] {
			if !strings.HasPrefix(d, "        ") {
				break
			}
			desc = append(desc, strings.TrimSpace(d))
		}
		return strings.Join(desc, " "), true
	}
	return "", false
}
