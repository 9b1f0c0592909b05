package main

import (
	"flag"
	"io"
	"regexp"
	"strings"
	"testing"
)

// TestREADMEListsServeFlags: the README's `serve` configuration table has
// a row for every flag serve takes, and no row for a flag it does not.
func TestREADMEListsServeFlags(t *testing.T) {
	readme := readFile(t, "../../README.md")
	_, table, ok := strings.Cut(readme, "### `serve` configuration")
	if !ok {
		t.Fatal("README has no \"### `serve` configuration\" section")
	}
	if i := strings.Index(table, "\n#"); i >= 0 {
		table = table[:i]
	}
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
