package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestRebuildRefusesWithoutIndex: rebuild on a data dir that holds no
// index (a typo, a fresh machine) says so and creates nothing there, not
// even the embedded NATS server's store.
func TestRebuildRefusesWithoutIndex(t *testing.T) {
	for name, data := range map[string]string{
		"empty":   t.TempDir(),
		"missing": filepath.Join(t.TempDir(), "nope"),
	} {
		t.Run(name, func(t *testing.T) {
			out, err := runBulkstream(t, nil, "rebuild", "--data-dir", data)
			if err == nil {
				t.Fatalf("rebuild succeeded on a data dir without an index:\n%s", out)
			}
			if !strings.Contains(out, "holds no index") {
				t.Errorf("output does not say the data dir holds no index:\n%s", out)
			}
			ents, err := os.ReadDir(data)
			if name == "missing" {
				if !os.IsNotExist(err) {
					t.Errorf("rebuild created %s (%v)", data, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			for _, e := range ents {
				t.Errorf("rebuild created %s in the data dir", e.Name())
			}
		})
	}
}
