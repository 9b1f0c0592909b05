package bulkclient

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/bulkstream/bulkstream/internal/atomicfile"
)

// ManifestFile is the name of the manifest in a download directory.
const ManifestFile = "manifest.json"

// WriteManifest writes the manifest as the server sent it to
// dir/manifest.json, atomically (mode 0600).
func WriteManifest(dir string, m *Manifest) error {
	return atomicfile.WriteFile(filepath.Join(dir, ManifestFile), append(bytes.Clone(m.Raw), '\n'), 0o600)
}

// ClearPrevious removes from dir the files (and .part files) listed by
// the manifest.json of a previous run, then that manifest, so that dir
// holds only the next run's files. A directory without a manifest, or
// with a manifest.json that is not one, is left alone.
func ClearPrevious(dir string) error {
	b, err := os.ReadFile(filepath.Join(dir, ManifestFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	var m Manifest
	if json.Unmarshal(b, &m) != nil {
		return nil // not ours: leave everything alone
	}
	for _, it := range m.Items() {
		for _, p := range []string{it.Name, it.Name + ".part"} {
			if err := os.Remove(filepath.Join(dir, p)); err != nil && !errors.Is(err, os.ErrNotExist) {
				return err
			}
		}
	}
	return os.Remove(filepath.Join(dir, ManifestFile))
}

// Summary is what a run's downloaded files hold.
type Summary struct {
	Files     int
	Bytes     int64
	Resources int64            // lines of the output files
	PerType   map[string]int64 // resources by type
	Deleted   int64            // DELETE entries of the deleted files
	Errors    int              // error and fatal issues of the error files
	Messages  []string         // the first five of them
}

// Summarize reads the deleted and error files of a run and counts.
func Summarize(results []FileResult) (*Summary, error) {
	s := &Summary{PerType: map[string]int64{}}
	for _, r := range results {
		s.Files++
		s.Bytes += r.Bytes
		switch r.Kind {
		case KindOutput:
			s.Resources += r.Lines
			s.PerType[r.Type] += r.Lines
		case KindDeleted:
			err := eachLine(r.Path, func(line []byte) error {
				refs, err := deletedRefs(line)
				s.Deleted += int64(len(refs))
				return err
			})
			if err != nil {
				return nil, err
			}
		case KindError:
			err := eachLine(r.Path, func(line []byte) error {
				var oo struct{ Issue []Issue }
				if err := json.Unmarshal(line, &oo); err != nil {
					return fmt.Errorf("%s: %w", r.Path, err)
				}
				for _, is := range oo.Issue {
					if is.Severity != "error" && is.Severity != "fatal" {
						continue
					}
					s.Errors++
					if len(s.Messages) < 5 {
						s.Messages = append(s.Messages, is.Message())
					}
				}
				return nil
			})
			if err != nil {
				return nil, err
			}
		}
	}
	return s, nil
}

// ApplyMirror brings the mirror in dir (one <Type>.ndjson per resource
// type: the server's current state) up to date with a run's files. A
// full run (no _since) replaces the types it covers: types, or every type
// when types is empty (a type file the run has no output for is removed).
// An incremental run drops the deleted and changed resources from each
// touched type's file and appends the new versions. Each type's file is
// replaced atomically, so a crash leaves every file either old or new,
// and applying a run again is harmless.
func ApplyMirror(dir string, results []FileResult, full bool, types []string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	outputs := map[string][]string{}        // type → output files
	changed := map[string]map[string]bool{} // type → ids in outputs or deleted
	touch := func(typ string) map[string]bool {
		if changed[typ] == nil {
			changed[typ] = map[string]bool{}
		}
		return changed[typ]
	}
	for _, r := range results {
		switch r.Kind {
		case KindOutput:
			outputs[r.Type] = append(outputs[r.Type], r.Path)
			ids := touch(r.Type)
			err := eachLine(r.Path, func(line []byte) error {
				var res struct {
					ResourceType string `json:"resourceType"`
					ID           string `json:"id"`
				}
				if err := json.Unmarshal(line, &res); err != nil || res.ID == "" || res.ResourceType != r.Type {
					return fmt.Errorf("%s: a line that is no %s with an id: %.100s", r.Path, r.Type, line)
				}
				ids[res.ID] = true
				return nil
			})
			if err != nil {
				return err
			}
		case KindDeleted:
			err := eachLine(r.Path, func(line []byte) error {
				refs, err := deletedRefs(line)
				for _, ref := range refs {
					if typ, id, ok := strings.Cut(ref, "/"); ok {
						touch(typ)[id] = true
					}
				}
				return err
			})
			if err != nil {
				return err
			}
		}
	}
	replace := map[string]bool{}
	if full {
		for t := range outputs {
			replace[t] = true
		}
		for _, t := range types {
			replace[t] = true
		}
		if len(types) == 0 { // every existing type file is replaced too
			existing, _ := filepath.Glob(filepath.Join(dir, "*.ndjson"))
			for _, p := range existing {
				replace[strings.TrimSuffix(filepath.Base(p), ".ndjson")] = true
			}
		}
	} else {
		for t := range changed {
			replace[t] = true
		}
	}
	for typ := range replace {
		if !safeTypeName(typ) {
			return fmt.Errorf("resource type %q is no file name", typ)
		}
		if err := applyType(dir, typ, outputs[typ], changed[typ], full); err != nil {
			return err
		}
	}
	return nil
}

// safeTypeName reports whether t is ASCII letters and digits only, so
// t.ndjson is a plain file name in the mirror directory.
func safeTypeName(t string) bool {
	for _, r := range t {
		if !('a' <= r && r <= 'z' || 'A' <= r && r <= 'Z' || '0' <= r && r <= '9') {
			return false
		}
	}
	return true
}

// applyType replaces dir/typ.ndjson with the old lines whose id did not
// change (none when full), then the lines of the output files. An empty
// result removes the file.
func applyType(dir, typ string, outputs []string, changed map[string]bool, full bool) error {
	path := filepath.Join(dir, typ+".ndjson")
	af, err := atomicfile.Create(path, 0o600)
	if err != nil {
		return err
	}
	defer af.Close() // removes the temporary file unless committed
	w := bufio.NewWriterSize(af, 1<<20)
	lines := 0
	write := func(line []byte) error {
		lines++
		w.Write(line)
		return w.WriteByte('\n')
	}
	if !full {
		err := eachLine(path, func(line []byte) error {
			var res struct {
				ID string `json:"id"`
			}
			if err := json.Unmarshal(line, &res); err != nil {
				return fmt.Errorf("%s: %w", path, err)
			}
			if changed[res.ID] {
				return nil
			}
			return write(line)
		})
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
	}
	for _, p := range outputs {
		if err := eachLine(p, write); err != nil {
			return err
		}
	}
	if err := w.Flush(); err != nil {
		return err
	}
	if lines == 0 {
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
		return nil
	}
	return af.Commit()
}

// eachLine calls fn with every non-blank line of the file.
func eachLine(path string, fn func(line []byte) error) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	br := bufio.NewReaderSize(f, 1<<20)
	for {
		line, err := br.ReadBytes('\n')
		if t := bytes.TrimSpace(line); len(t) > 0 {
			if ferr := fn(t); ferr != nil {
				return ferr
			}
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// deletedRefs returns the Type/id of every DELETE entry of a deleted-file
// line (a transaction Bundle).
func deletedRefs(line []byte) ([]string, error) {
	var b struct {
		ResourceType string `json:"resourceType"`
		Entry        []struct {
			Request struct {
				Method string `json:"method"`
				URL    string `json:"url"`
			} `json:"request"`
		} `json:"entry"`
	}
	if err := json.Unmarshal(line, &b); err != nil {
		return nil, fmt.Errorf("deleted file: %w", err)
	}
	if b.ResourceType != "Bundle" {
		return nil, fmt.Errorf("deleted file: a %q line, want Bundle", b.ResourceType)
	}
	var refs []string
	for _, e := range b.Entry {
		if e.Request.Method == "DELETE" {
			refs = append(refs, strings.TrimPrefix(e.Request.URL, "/"))
		}
	}
	return refs, nil
}
