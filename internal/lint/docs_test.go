package lint

import (
	"bufio"
	"bytes"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// outsideRef matches a comment or doc line that leans on text the
// repository does not hold: the team's notes kept next to the checkout
// (the conformance checklist, named in capitals with or without its .md
// and section numbers; the style and design notes; the directory holding
// them) and issue-tracker numbers. A reader of the repository alone can
// follow neither, so the repository cites the FHIR Bulk Data Access IG,
// SMART App Launch or the RFC by URL and says the reason in words.
// TestOutsideRefPattern lists examples.
//
// Precise on purpose: an RFC section number and an OperationOutcome
// "issue" (no number after it) are fine.
var outsideRef = regexp.MustCompile(
	`\bSPEC\b` + // the checklist, by name, whatever follows
		`|\bSTYLE\.md\b|\bDESIGN\.md\b` + // the style and design notes
		`|(\.\./|/work/)shared\b` + // the directory they live in
		`|\b[Ii]ssue #?[0-9]+\b`) // tracker numbers, with or without #

// TestDocsStandAlone fails, naming file:line, on every git-tracked file of
// the module whose text points outside the repository (see outsideRef).
// BENCHMARKS.md (generated, it records measurements against the goals they
// were set for) and testdata/ (inputs, not prose) are skipped.
func TestDocsStandAlone(t *testing.T) {
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	files := trackedFiles(t, root)
	if len(files) < 50 {
		t.Fatalf("found only %d files under %s: the listing is broken", len(files), root)
	}
	checked := 0
	for _, rel := range files {
		if skipDocsCheck(rel) {
			continue
		}
		data, err := os.ReadFile(filepath.Join(root, filepath.FromSlash(rel)))
		if err != nil {
			if os.IsNotExist(err) {
				continue // deleted in the working tree, not yet in the index
			}
			t.Fatal(err)
		}
		if bytes.IndexByte(data[:min(len(data), 8000)], 0) >= 0 {
			continue // binary
		}
		checked++
		for n, line := range lines(data) {
			if m := outsideRef.FindString(line); m != "" {
				t.Errorf("%s:%d: %q points outside the repository (cite the IG/RFC by URL and say why in words): %s",
					rel, n+1, m, strings.TrimSpace(line))
			}
		}
	}
	if checked == 0 {
		t.Fatal("no file checked")
	}
}

// TestOutsideRefPattern pins what outsideRef flags and what it leaves
// alone. The flagged examples are assembled so that this file itself
// passes TestDocsStandAlone.
func TestOutsideRefPattern(t *testing.T) {
	spec, is, sh, md := "SP"+"EC", "is"+"sue", "sha"+"red", ".m"+"d"
	for _, s := range []string{
		spec + " 6", "(" + spec + " 11 ambiguity 3; BDT", spec + md + " 2.2", spec + " section 8", spec + " and",
		"as " + is + " 3 asks", "(" + is + " 7)", "I" + is[1:] + " 12", is + " #4",
		"`../" + sh + "/STYLE" + md + "` section 7", "DESIGN" + md, "/work/" + sh + "/x",
	} {
		if !outsideRef.MatchString(s) {
			t.Errorf("not flagged: %q", s)
		}
	}
	for _, s := range []string{
		"RFC 9110 section 8.8.3", "one OperationOutcome issue per ignored parameter", `issue code "processing"`,
		"issue[0].diagnostics", "the registry is shared by the steps", "spec-conformant", "SPECIAL 3",
		"https://hl7.org/fhir/uv/bulkdata/export.html", "tis" + "sue 3",
	} {
		if outsideRef.MatchString(s) {
			t.Errorf("flagged: %q", s)
		}
	}
}

// skipDocsCheck reports whether a repository path is exempt.
func skipDocsCheck(rel string) bool {
	if filepath.Base(rel) == "BENCHMARKS.md" {
		return true
	}
	for _, dir := range strings.Split(filepath.ToSlash(filepath.Dir(rel)), "/") {
		if dir == "testdata" {
			return true
		}
	}
	return false
}

// trackedFiles lists the repository's files relative to root: `git
// ls-files` in a checkout, else a walk that skips what git would not track
// (hidden directories, bin/, data/).
func trackedFiles(t *testing.T, root string) []string {
	t.Helper()
	if _, err := os.Stat(filepath.Join(root, ".git")); err == nil {
		cmd := exec.Command("git", "ls-files", "-z")
		cmd.Dir = root
		out, err := cmd.Output()
		if err == nil {
			var files []string
			for _, f := range bytes.Split(out, []byte{0}) {
				if len(f) > 0 {
					files = append(files, string(f))
				}
			}
			return files
		}
		t.Logf("git ls-files: %v; walking the tree instead", err)
	}
	var files []string
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if name := d.Name(); path != root && (strings.HasPrefix(name, ".") || name == "bin" || name == "data") {
				return filepath.SkipDir
			}
			return nil
		}
		rel, err := filepath.Rel(root, path)
		if err != nil {
			return err
		}
		files = append(files, filepath.ToSlash(rel))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return files
}

// lines splits data into lines without their line endings.
func lines(data []byte) []string {
	var out []string
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 64*1024), 16*1024*1024)
	for sc.Scan() {
		out = append(out, sc.Text())
	}
	return out
}
