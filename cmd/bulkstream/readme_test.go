package main

import (
	"flag"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/bulkstream/bulkstream/ingest"
)

// readmeSection returns the README's section under heading (a whole
// line, e.g. "## Guarantees"), up to the next heading.
func readmeSection(t *testing.T, heading string) string {
	t.Helper()
	_, section, ok := strings.Cut(readFile(t, "../../README.md"), "\n"+heading+"\n")
	if !ok {
		t.Fatalf("README has no %q section", heading)
	}
	if i := strings.Index(section, "\n#"); i >= 0 {
		section = section[:i]
	}
	return section
}

// TestREADMEListsServeFlags: the README's `serve` configuration table has
// a row for every flag serve takes, and no row for a flag it does not.
func TestREADMEListsServeFlags(t *testing.T) {
	table := readmeSection(t, "### `serve` configuration")
	rows := map[string]bool{}
	for _, m := range regexp.MustCompile("(?m)^\\| `--([a-z0-9-]+)` \\|").FindAllStringSubmatch(table, -1) {
		rows[m[1]] = true
	}
	var c serveConfig
	fs := newFlagSet("serve", io.Discard)
	bindServeFlags(fs, &c)
	n := 0
	fs.VisitAll(func(f *flag.Flag) {
		n++
		if !rows[f.Name] {
			t.Errorf("serve flag --%s has no row in the README's configuration table", f.Name)
		}
		delete(rows, f.Name)
	})
	for name := range rows {
		t.Errorf("the README's configuration table has a row for --%s, which serve does not take", name)
	}
	if n < 20 {
		t.Errorf("serve has %d flags: the flag set was not read", n)
	}
}

// TestREADMEGuaranteesNameRealTests: every test or fuzz target the
// README's Guarantees section cites as proof exists in the module.
func TestREADMEGuaranteesNameRealTests(t *testing.T) {
	section := readmeSection(t, "## Guarantees")
	cited := map[string]bool{}
	for _, m := range regexp.MustCompile("`((?:Test|Fuzz)[A-Za-z0-9_]+)`").FindAllStringSubmatch(section, -1) {
		cited[m[1]] = true
	}
	if len(cited) < 20 {
		t.Fatalf("the Guarantees section cites %d tests: it was not parsed", len(cited))
	}
	defined := map[string]bool{}
	decl := regexp.MustCompile(`(?m)^func ((?:Test|Fuzz)[A-Za-z0-9_]+)\(`)
	err := filepath.WalkDir("../..", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == ".git" || d.Name() == "testdata" || d.Name() == "data") {
			return filepath.SkipDir
		}
		if !strings.HasSuffix(path, "_test.go") {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for _, m := range decl.FindAllStringSubmatch(string(b), -1) {
			defined[m[1]] = true
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for name := range cited {
		if !defined[name] {
			t.Errorf("the README's Guarantees cite %s, which no test file defines", name)
		}
	}
}

// TestREADMEDeadLetterHeaders: the README's event contract names every
// header a dead letter carries (package ingest's HeaderDLQ* constants,
// and the replaced Nats-Msg-Id), and how to install the nats CLI its
// examples use.
func TestREADMEDeadLetterHeaders(t *testing.T) {
	section := readmeSection(t, "## Event contract for publishers")
	for _, h := range []string{
		ingest.HeaderDLQReason, ingest.HeaderDLQDetail, ingest.HeaderDLQSubject, ingest.HeaderDLQSequence,
		ingest.HeaderDLQMsgID, ingest.HeaderDLQTruncated, "Nats-Msg-Id: dlq/",
	} {
		if !strings.Contains(section, "`"+h) {
			t.Errorf("the README's event contract does not name the dead-letter header %s", h)
		}
	}
	if !strings.Contains(section, "go install github.com/nats-io/natscli/nats@v") {
		t.Error("the README's nats CLI examples do not say how to install it")
	}
}
