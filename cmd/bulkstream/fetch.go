package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/bulkstream/bulkstream/internal/bulkclient"
)

// fetchFlags are fetch's flags.
type fetchFlags struct {
	base, types, since, stateFile, until, elements *string
	out, clientID, keyFile, tokenURL, apply        *string
	group, patients, associated                    *string
	post, keepJob, patientLevel                    *bool
	parallel                                       *int
	typeFilters                                    *repeatedFlag
}

// repeatedFlag is a flag that may be given more than once; each value is
// kept whole (a _typeFilter query may hold commas of its own).
type repeatedFlag []string

func (r *repeatedFlag) String() string {
	if r == nil {
		return ""
	}
	return strings.Join(*r, " ")
}

func (r *repeatedFlag) Set(v string) error {
	if strings.TrimSpace(v) == "" {
		return errors.New("empty value")
	}
	*r = append(*r, v)
	return nil
}

func bindFetchFlags(fs *flag.FlagSet) fetchFlags {
	typeFilters := new(repeatedFlag)
	fs.Var(typeFilters, "type-filter", "a _typeFilter search query, e.g. 'Observation?category=laboratory' (repeat for more: the queries of one type are ORed, the parameters of one query ANDed; not with --apply and --since or --state)")
	return fetchFlags{
		typeFilters:  typeFilters,
		base:         fs.String("url", "", "FHIR base URL of the server, e.g. https://bulk.example.org/fhir (required)"),
		types:        fs.String("type", "", "resource types to export, comma-separated (_type; default all)"),
		since:        fs.String("since", "", "export changes after this FHIR instant, e.g. 2026-01-02T03:04:05Z (_since; not with --state)"),
		stateFile:    fs.String("state", "", "incremental sync: file keeping the last transactionTime, used as the next _since (not with --since)"),
		until:        fs.String("until", "", "export changes before this FHIR instant (_until)"),
		elements:     fs.String("elements", "", "elements to keep, comma-separated (_elements)"),
		post:         fs.Bool("post", false, "kick off with POST and a Parameters body instead of GET"),
		out:          fs.String("out", "export", "directory for the downloaded files and manifest.json"),
		parallel:     fs.Int("parallel", bulkclient.DefaultParallel, "files downloaded at once (at least 1)"),
		clientID:     fs.String("client-id", "", "SMART Backend Services client id (with --key)"),
		keyFile:      fs.String("key", "", "private JWK of the client, from bulkstream client keygen (with --client-id)"),
		tokenURL:     fs.String("token-url", "", "token endpoint (needs --client-id; default: from BASE/.well-known/smart-configuration)"),
		apply:        fs.String("apply", "", "directory of the current-state mirror, one NDJSON per type"),
		keepJob:      fs.Bool("keep-job", false, "do not DELETE the job on the server at the end or on Ctrl-C"),
		group:        fs.String("group", "", "Group-level export: the compartments of this Group's members ([base]/Group/ID/$export; not with --patient-level)"),
		patientLevel: fs.Bool("patient-level", false, "Patient-level export: every patient's compartment ([base]/Patient/$export; not with --group)"),
		patients:     fs.String("patient", "", "patient ids or Patient/ID references, comma-separated, to narrow a --group or --patient-level export (patient; sent by POST, as the IG defines it)"),
		associated:   fs.String("include-associated-data", "", "includeAssociatedData values, comma-separated, e.g. LatestProvenanceResources (organizeOutputBy is not offered: the files and the --apply mirror are one type per file)"),
	}
}

// fetchConfig is what runFetch takes besides its flags.
type fetchConfig struct {
	// PollMin is the floor on the wait between status polls
	// (bulkclient.Config.PollMin); more than 0.
	PollMin time.Duration
}

// defaultFetchConfig is the configuration of the command line.
func defaultFetchConfig() fetchConfig { return fetchConfig{PollMin: time.Second} }

// runFetch runs a Bulk Data export against a server and downloads it:
// one-shot, or an incremental sync with --state and --apply.
func runFetch(ctx context.Context, args []string, stdout, stderr io.Writer, fc fetchConfig) error {
	fs := newFlagSet("fetch", stderr)
	f := bindFetchFlags(fs)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	switch {
	case *f.base == "":
		return errors.New("fetch: --url is required")
	case *f.since != "" && *f.stateFile != "":
		return errors.New("fetch: --since and --state exclude each other")
	case (*f.clientID == "") != (*f.keyFile == ""):
		return errors.New("fetch: --client-id and --key go together")
	case *f.tokenURL != "" && *f.clientID == "":
		return errors.New("fetch: --token-url needs --client-id and --key")
	case *f.parallel < 1:
		return fmt.Errorf("fetch: --parallel %d is not positive", *f.parallel)
	case fs.NArg() > 0:
		return fmt.Errorf("fetch: unexpected arguments %q", fs.Args())
	case fc.PollMin <= 0:
		return fmt.Errorf("fetch: PollMin %v is not positive", fc.PollMin)
	case *f.group != "" && *f.patientLevel:
		return fmt.Errorf("fetch: --group %s and --patient-level exclude each other (one export level)", *f.group)
	case *f.patients != "" && *f.group == "" && !*f.patientLevel:
		return errors.New("fetch: --patient needs --group or --patient-level (patient is no system-level parameter)")
	case len(*f.typeFilters) > 0 && *f.apply != "" && (*f.since != "" || *f.stateFile != ""):
		// An incremental filtered run leaves out a resource that stopped
		// matching, so the mirror would keep its old version.
		return errors.New("fetch: --type-filter with --apply needs a full run (no --since or --state): an incremental filtered export cannot remove from the mirror a resource that stopped matching")
	}
	req := bulkclient.Request{Types: splitList(*f.types), Since: *f.since, Until: *f.until, Elements: splitList(*f.elements), Post: *f.post,
		Group: *f.group, PatientLevel: *f.patientLevel, Patients: splitList(*f.patients), IncludeAssociatedData: splitList(*f.associated),
		TypeFilters: *f.typeFilters}
	if *f.patients != "" && len(req.Patients) == 0 {
		return fmt.Errorf("fetch: --patient %q names no patient", *f.patients)
	}
	for _, p := range req.Patients {
		if _, err := bulkclient.PatientReference(p); err != nil {
			return fmt.Errorf("fetch: --patient: %w", err)
		}
	}
	if err := req.Validate(); err != nil {
		return fmt.Errorf("fetch: %w", err)
	}

	var st *bulkclient.State
	stateKey := bulkclient.RequestStateKey(*f.base, req)
	if *f.stateFile != "" {
		var err error
		if st, err = bulkclient.LoadState(*f.stateFile); err != nil {
			return fmt.Errorf("fetch: %w", err)
		}
		req.Since = st.Since(stateKey)
	}

	ui := &fetchUI{out: stderr, tty: isTerminal(stderr)}
	cfg := bulkclient.Config{
		BaseURL:    *f.base,
		PollMin:    fc.PollMin,
		Parallel:   *f.parallel,
		OnProgress: ui.polling,
		OnRetry: func(what string, attempt int, wait time.Duration, err error) {
			ui.linef("fetch: retry %d of %s in %v: %v", attempt, what, wait.Round(time.Millisecond), err)
		},
	}
	if *f.clientID != "" {
		key, err := os.ReadFile(*f.keyFile)
		if err != nil {
			return fmt.Errorf("fetch: %w", err)
		}
		cfg.Token = &bulkclient.SMARTTokenSource{BaseURL: *f.base, TokenURL: *f.tokenURL, ClientID: *f.clientID, Key: key}
	}
	c, err := bulkclient.New(cfg)
	if err != nil {
		return fmt.Errorf("fetch: %w", err)
	}

	start := time.Now()
	if req.Since != "" {
		ui.linef("fetch: changes since %s", req.Since)
	}
	job, err := c.Kickoff(ctx, req)
	if err != nil {
		return fmt.Errorf("fetch: %w", err)
	}
	ui.linef("fetch: job %s", job.StatusURL)
	defer func() {
		if *f.keepJob {
			ui.linef("fetch: job kept: %s", job.StatusURL)
			return
		}
		// The run's context may be cancelled (Ctrl-C): clean up anyway.
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		if err := job.Cancel(dctx); err != nil {
			ui.linef("fetch: deleting the job: %v", err)
		}
	}()

	m, err := job.Wait(ctx)
	ui.endLine()
	if err != nil {
		return fetchErr(ctx, err)
	}
	if err := bulkclient.ClearPrevious(*f.out); err != nil {
		return fmt.Errorf("fetch: %w", err)
	}
	ui.total = len(m.Items())
	results, err := c.Download(ctx, m, *f.out, ui.downloaded)
	ui.endLine()
	if err != nil {
		return fetchErr(ctx, err)
	}
	if err := bulkclient.WriteManifest(*f.out, m); err != nil {
		return fmt.Errorf("fetch: %w", err)
	}

	sum, err := bulkclient.Summarize(results)
	if err != nil {
		return fmt.Errorf("fetch: %w", err)
	}
	printSummary(stdout, sum, m.TransactionTime, time.Since(start))
	if sum.Errors > 0 {
		// A partial success: the state stays, so the next run asks again.
		return fmt.Errorf("fetch: the server reported %d errors (see the error files in %s); state not advanced", sum.Errors, *f.out)
	}
	if *f.apply != "" {
		full := req.Since == ""
		if err := bulkclient.ApplyMirror(*f.apply, results, full, req.Types); err != nil {
			return fmt.Errorf("fetch: apply: %w", err)
		}
		fmt.Fprintf(stdout, "mirror %s updated (%s)\n", *f.apply, map[bool]string{true: "replaced", false: "incremental"}[full])
	}
	if st != nil {
		st.Advance(stateKey, m.TransactionTime, time.Now())
		if err := st.Save(*f.stateFile); err != nil {
			return fmt.Errorf("fetch: %w", err)
		}
	}
	return nil
}

// fetchErr says "cancelled" for Ctrl-C rather than a context error.
func fetchErr(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return fmt.Errorf("fetch: cancelled (%w)", ctx.Err())
	}
	return fmt.Errorf("fetch: %w", err)
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

// printSummary writes what a run fetched.
func printSummary(w io.Writer, s *bulkclient.Summary, txTime string, elapsed time.Duration) {
	fmt.Fprintf(w, "exported %d files, %d resources, %d deleted, %s in %v (%.0f resources/s); transactionTime %s\n",
		s.Files, s.Resources, s.Deleted, humanBytes(s.Bytes), elapsed.Round(time.Millisecond),
		float64(s.Resources)/max(elapsed.Seconds(), 1e-3), txTime)
	for _, t := range slices.Sorted(maps.Keys(s.PerType)) {
		fmt.Fprintf(w, "  %-28s %d\n", t, s.PerType[t])
	}
	for _, m := range s.Messages {
		fmt.Fprintf(w, "  server error: %s\n", m)
	}
}

// fetchUI shows polling and download progress on stderr: a redrawn line
// on a terminal, plain lines otherwise.
type fetchUI struct {
	out   io.Writer
	tty   bool
	mu    sync.Mutex
	open  bool // a redrawn line is on screen
	total int
	done  int
	bytes int64
}

func (u *fetchUI) linef(format string, args ...any) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.open {
		fmt.Fprintln(u.out)
		u.open = false
	}
	fmt.Fprintf(u.out, format+"\n", args...)
}

func (u *fetchUI) endLine() {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.open {
		fmt.Fprintln(u.out)
		u.open = false
	}
}

func (u *fetchUI) polling(progress string, elapsed time.Duration) {
	if progress == "" {
		progress = "in progress"
	}
	if !u.tty {
		u.linef("fetch: running %v: %s", elapsed.Round(time.Second), progress)
		return
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	fmt.Fprintf(u.out, "\rfetch: running %v: %s\033[K", elapsed.Round(time.Second), progress)
	u.open = true
}

func (u *fetchUI) downloaded(r bulkclient.FileResult) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.done++
	u.bytes += r.Bytes
	if !u.tty {
		resumed := ""
		if r.Resumes > 0 {
			resumed = fmt.Sprintf(", resumed %d times", r.Resumes)
		}
		fmt.Fprintf(u.out, "fetch: %d/%d %s: %d lines, %s%s\n", u.done, u.total, r.Name, r.Lines, humanBytes(r.Bytes), resumed)
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
