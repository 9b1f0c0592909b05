package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/bulkstream/bulkstream/internal/bulkclient"
)

// exportFlags are export's flags.
type exportFlags struct {
	base, types, since, stateFile, until, elements *string
	out, clientID, keyFile, tokenURL, apply        *string
	post, keepJob                                  *bool
	parallel                                       *int
}

func bindExportFlags(fs *flag.FlagSet) exportFlags {
	return exportFlags{
		base:      fs.String("url", "", "FHIR base URL of the server, e.g. https://bulk.example.org/fhir (required)"),
		types:     fs.String("type", "", "resource types to export, comma-separated (_type; default all)"),
		since:     fs.String("since", "", "export changes after this FHIR instant, e.g. 2026-01-02T03:04:05Z (_since; not with --state)"),
		stateFile: fs.String("state", "", "incremental sync: file keeping the last transactionTime, used as the next _since (not with --since)"),
		until:     fs.String("until", "", "export changes before this FHIR instant (_until)"),
		elements:  fs.String("elements", "", "elements to keep, comma-separated (_elements)"),
		post:      fs.Bool("post", false, "kick off with POST and a Parameters body instead of GET"),
		out:       fs.String("out", "export", "directory for the downloaded files and manifest.json"),
		parallel:  fs.Int("parallel", bulkclient.DefaultParallel, "files downloaded at once (at least 1)"),
		clientID:  fs.String("client-id", "", "SMART Backend Services client id (with --key)"),
		keyFile:   fs.String("key", "", "private JWK of the client, from bulkstream client keygen (with --client-id)"),
		tokenURL:  fs.String("token-url", "", "token endpoint (needs --client-id; default: from BASE/.well-known/smart-configuration)"),
		apply:     fs.String("apply", "", "directory of the current-state mirror, one NDJSON per type"),
		keepJob:   fs.Bool("keep-job", false, "do not DELETE the job on the server at the end or on Ctrl-C"),
	}
}

// exportPollMin is the floor on the wait between status polls.
var exportPollMin = time.Second

func runExport(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("export", stderr)
	f := bindExportFlags(fs)
	base, types, since, stateFile, until, elements := f.base, f.types, f.since, f.stateFile, f.until, f.elements
	post, out, parallel, clientID, keyFile, tokenURL, apply, keepJob := f.post, f.out, f.parallel, f.clientID, f.keyFile, f.tokenURL, f.apply, f.keepJob
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	switch {
	case *base == "":
		return errors.New("export: --url is required")
	case *since != "" && *stateFile != "":
		return errors.New("export: --since and --state exclude each other")
	case (*clientID == "") != (*keyFile == ""):
		return errors.New("export: --client-id and --key go together")
	case *tokenURL != "" && *clientID == "":
		return errors.New("export: --token-url needs --client-id and --key")
	case *parallel < 1:
		return fmt.Errorf("export: --parallel %d is not positive", *parallel)
	case fs.NArg() > 0:
		return fmt.Errorf("export: unexpected arguments %q", fs.Args())
	}
	req := bulkclient.Request{Types: splitList(*types), Since: *since, Until: *until, Elements: splitList(*elements), Post: *post}

	var st *syncState
	stateKey := strings.TrimSuffix(*base, "/")
	if len(req.Types) > 0 {
		stateKey += "?_type=" + strings.Join(slices.Sorted(slices.Values(req.Types)), ",")
	}
	if *stateFile != "" {
		var err error
		if st, err = loadState(*stateFile); err != nil {
			return fmt.Errorf("export: %w", err)
		}
		req.Since = st.Servers[stateKey].TransactionTime
	}

	tty := isTerminal(stderr)
	ui := &exportUI{out: stderr, tty: tty}
	cfg := bulkclient.Config{
		BaseURL:    *base,
		PollMin:    exportPollMin,
		Parallel:   *parallel,
		OnProgress: ui.polling,
		OnRetry: func(what string, attempt int, wait time.Duration, err error) {
			ui.linef("export: retry %d of %s in %v: %v", attempt, what, wait.Round(time.Millisecond), err)
		},
	}
	if *clientID != "" {
		key, err := os.ReadFile(*keyFile)
		if err != nil {
			return fmt.Errorf("export: %w", err)
		}
		cfg.Token = &bulkclient.SMARTTokenSource{BaseURL: *base, TokenURL: *tokenURL, ClientID: *clientID, Key: key}
	}
	c, err := bulkclient.New(cfg)
	if err != nil {
		return fmt.Errorf("export: %w", err)
	}

	start := time.Now()
	if req.Since != "" {
		ui.linef("export: changes since %s", req.Since)
	}
	job, err := c.Kickoff(ctx, req)
	if err != nil {
		return fmt.Errorf("export: %w", err)
	}
	ui.linef("export: job %s", job.StatusURL)
	defer func() {
		if *keepJob {
			ui.linef("export: job kept: %s", job.StatusURL)
			return
		}
		// The run's context may be cancelled (Ctrl-C): clean up anyway.
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		if err := job.Cancel(dctx); err != nil {
			ui.linef("export: deleting the job: %v", err)
		}
	}()

	m, err := job.Wait(ctx)
	ui.endLine()
	if err != nil {
		return exportErr(ctx, err)
	}
	if err := clearPrevious(*out); err != nil {
		return fmt.Errorf("export: %w", err)
	}
	ui.total = len(m.Items())
	results, err := c.Download(ctx, m, *out, ui.downloaded)
	ui.endLine()
	if err != nil {
		return exportErr(ctx, err)
	}
	if err := writeFileAtomic(filepath.Join(*out, "manifest.json"), append(bytes.Clone(m.Raw), '\n')); err != nil {
		return fmt.Errorf("export: %w", err)
	}

	sum, err := summarize(results)
	if err != nil {
		return fmt.Errorf("export: %w", err)
	}
	elapsed := time.Since(start)
	sum.print(stdout, m.TransactionTime, elapsed)
	if sum.errors > 0 {
		// A partial success: the state stays, so the next run asks again.
		return fmt.Errorf("export: the server reported %d errors (see the error files in %s); state not advanced", sum.errors, *out)
	}
	if *apply != "" {
		full := req.Since == ""
		if err := applyMirror(*apply, results, full, req.Types); err != nil {
			return fmt.Errorf("export: apply: %w", err)
		}
		fmt.Fprintf(stdout, "mirror %s updated (%s)\n", *apply, map[bool]string{true: "replaced", false: "incremental"}[full])
	}
	if st != nil {
		st.Servers[stateKey] = serverState{TransactionTime: m.TransactionTime, Updated: time.Now().UTC().Format(time.RFC3339)}
		if err := st.save(*stateFile); err != nil {
			return fmt.Errorf("export: %w", err)
		}
	}
	return nil
}

// exportErr says "cancelled" for Ctrl-C rather than a context error.
func exportErr(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return fmt.Errorf("export: cancelled (%w)", ctx.Err())
	}
	return fmt.Errorf("export: %w", err)
}

func splitList(s string) []string {
	var out []string
	for v := range strings.SplitSeq(s, ",") {
		if v = strings.TrimSpace(v); v != "" {
			out = append(out, v)
		}
	}
	return out
}

// exportUI shows polling and download progress on stderr: a redrawn line
// on a terminal, plain lines otherwise.
type exportUI struct {
	out   io.Writer
	tty   bool
	mu    sync.Mutex
	open  bool // a redrawn line is on screen
	total int
	done  int
	bytes int64
}

func (u *exportUI) linef(format string, args ...any) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.open {
		fmt.Fprintln(u.out)
		u.open = false
	}
	fmt.Fprintf(u.out, format+"\n", args...)
}

func (u *exportUI) endLine() {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.open {
		fmt.Fprintln(u.out)
		u.open = false
	}
}

func (u *exportUI) polling(progress string, elapsed time.Duration) {
	if progress == "" {
		progress = "in progress"
	}
	if !u.tty {
		u.linef("export: running %v: %s", elapsed.Round(time.Second), progress)
		return
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	fmt.Fprintf(u.out, "\rexport: running %v: %s\033[K", elapsed.Round(time.Second), progress)
	u.open = true
}

func (u *exportUI) downloaded(r bulkclient.FileResult) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.done++
	u.bytes += r.Bytes
	if !u.tty {
		resumed := ""
		if r.Resumes > 0 {
			resumed = fmt.Sprintf(", resumed %d times", r.Resumes)
		}
		fmt.Fprintf(u.out, "export: %d/%d %s: %d lines, %s%s\n", u.done, u.total, r.Name, r.Lines, humanBytes(r.Bytes), resumed)
		return
	}
	const width = 30
	filled := width * u.done / max(u.total, 1)
	fmt.Fprintf(u.out, "\r[%s%s] %d/%d files, %s\033[K", strings.Repeat("=", filled), strings.Repeat(" ", width-filled), u.done, u.total, humanBytes(u.bytes))
	u.open = true
}

func humanBytes(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}

// exportSummary is what a run fetched.
type exportSummary struct {
	files     int
	bytes     int64
	resources int64
	perType   map[string]int64
	deleted   int64    // deleted entries
	errors    int      // error/fatal issues in the error files
	messages  []string // the first few of them
}

func summarize(results []bulkclient.FileResult) (*exportSummary, error) {
	s := &exportSummary{perType: map[string]int64{}}
	for _, r := range results {
		s.files++
		s.bytes += r.Bytes
		switch r.Kind {
		case bulkclient.KindOutput:
			s.resources += r.Lines
			s.perType[r.Type] += r.Lines
		case bulkclient.KindDeleted:
			err := eachLine(r.Path, func(line []byte) error {
				refs, err := deletedRefs(line)
				s.deleted += int64(len(refs))
				return err
			})
			if err != nil {
				return nil, err
			}
		case bulkclient.KindError:
			err := eachLine(r.Path, func(line []byte) error {
				var oo struct{ Issue []bulkclient.Issue }
				if err := json.Unmarshal(line, &oo); err != nil {
					return fmt.Errorf("%s: %w", r.Path, err)
				}
				for _, is := range oo.Issue {
					if is.Severity != "error" && is.Severity != "fatal" {
						continue
					}
					s.errors++
					if len(s.messages) < 5 {
						s.messages = append(s.messages, is.Message())
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

func (s *exportSummary) print(w io.Writer, txTime string, elapsed time.Duration) {
	fmt.Fprintf(w, "exported %d files, %d resources, %d deleted, %s in %v (%.0f resources/s); transactionTime %s\n",
		s.files, s.resources, s.deleted, humanBytes(s.bytes), elapsed.Round(time.Millisecond),
		float64(s.resources)/max(elapsed.Seconds(), 1e-3), txTime)
	for _, t := range slices.Sorted(maps.Keys(s.perType)) {
		fmt.Fprintf(w, "  %-28s %d\n", t, s.perType[t])
	}
	for _, m := range s.messages {
		fmt.Fprintf(w, "  server error: %s\n", m)
	}
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

// clearPrevious removes the files of the previous run's manifest.json in
// dir, so that dir holds only this run's files.
func clearPrevious(dir string) error {
	b, err := os.ReadFile(filepath.Join(dir, "manifest.json"))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	var m bulkclient.Manifest
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
	return os.Remove(filepath.Join(dir, "manifest.json"))
}

// writeFileAtomic writes b to a temporary file beside path, syncs it and
// renames it over path.
func writeFileAtomic(path string, b []byte) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*.tmp")
	if err != nil {
		return err
	}
	_, err = f.Write(b)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), path)
	}
	if err != nil {
		os.Remove(f.Name())
	}
	return err
}

// syncState is the --state file.
type syncState struct {
	Servers map[string]serverState `json:"servers"` // by base URL (+ ?_type=…)
}

type serverState struct {
	TransactionTime string `json:"transactionTime"`
	Updated         string `json:"updated"`
}

func loadState(path string) (*syncState, error) {
	st := &syncState{Servers: map[string]serverState{}}
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return st, nil
	}
	if err != nil {
		return nil, err
	}
	if err := json.Unmarshal(b, st); err != nil {
		return nil, fmt.Errorf("state file %s: %w", path, err)
	}
	if st.Servers == nil {
		st.Servers = map[string]serverState{}
	}
	return st, nil
}

func (st *syncState) save(path string) error {
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	return writeFileAtomic(path, append(b, '\n'))
}

// applyMirror brings the mirror in dir (one <Type>.ndjson per type) up to
// date with a run's files. A full run (no _since) replaces the types it
// covers (all types without --type); an incremental one drops deleted and
// changed resources from each touched type's file and appends the new
// versions. Each type's file is replaced atomically, so a crash leaves
// every file either old or new; re-applying a run is harmless.
func applyMirror(dir string, results []bulkclient.FileResult, full bool, types []string) error {
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
		case bulkclient.KindOutput:
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
		case bulkclient.KindDeleted:
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
		if safeTypeName(typ) == "" {
			return fmt.Errorf("resource type %q is no file name", typ)
		}
		if err := applyType(dir, typ, outputs[typ], changed[typ], full); err != nil {
			return err
		}
	}
	return nil
}

func safeTypeName(t string) string {
	for _, r := range t {
		if !('a' <= r && r <= 'z' || 'A' <= r && r <= 'Z' || '0' <= r && r <= '9') {
			return ""
		}
	}
	return t
}

// applyType rewrites dir/typ.ndjson: the old lines whose id did not
// change (none when full), then the lines of the output files. An empty
// result removes the file.
func applyType(dir, typ string, outputs []string, changed map[string]bool, full bool) error {
	path := filepath.Join(dir, typ+".ndjson")
	tmp, err := os.CreateTemp(dir, "."+typ+".*.tmp")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // after the rename, a no-op
	w := bufio.NewWriterSize(tmp, 1<<20)
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
			tmp.Close()
			return err
		}
	}
	for _, p := range outputs {
		if err := eachLine(p, write); err != nil {
			tmp.Close()
			return err
		}
	}
	err = w.Flush()
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	if lines == 0 {
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
		return nil
	}
	return os.Rename(tmp.Name(), path)
}
