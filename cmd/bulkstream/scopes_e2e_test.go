package main

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestScopesOnEveryRequest runs serve with a clients file: a file
// download needs a scope covering the file's resource type (the Bulk Data
// test suite's "Rejects a download if the client scopes do not cover that
// resource type"), and after a SIGHUP narrows a client's scopes, its
// unexpired tokens are narrowed too, on kick-offs and downloads.
func TestScopesOnEveryRequest(t *testing.T) {
	dir := t.TempDir()
	app, entry := newClientEntry(t, "app", "ES384", []string{"system/*.rs"}, 4)
	clientsFile := filepath.Join(dir, "clients.json")
	writeClientsFile(t, clientsFile, entry)
	hup := make(chan os.Signal, 1)
	s := startServerWith(t, serverOpts{args: []string{"--clients", clientsFile}, sighup: hup})
	s.publishSample(t, "Patient", "Observation", "Organization")

	hc := &http.Client{Timeout: 30 * time.Second}
	token := func(scope string) authClient {
		t.Helper()
		tok, _, err := fetchToken(t.Context(), hc, s.base, app.id, app.key, scope)
		if err != nil {
			t.Fatalf("token %s: %v", scope, err)
		}
		return authClient{t: t, token: tok.AccessToken}
	}
	full := token("system/*.rs")
	resp, body := full.kickoff(s.base, "?_type=Patient,Observation,Organization")
	wantStatus(t, "kick-off", resp, body, http.StatusAccepted)
	jobStatus := resp.Header.Get("Content-Location")
	types, urls := outputs(full.manifestOf(jobStatus))
	if !slices.Equal(types, []string{"Observation", "Organization", "Patient"}) {
		t.Fatalf("output types %v", types)
	}
	fileOf := func(typ string) string {
		for _, u := range urls {
			if strings.HasSuffix(u, "/"+typ+"-1.ndjson") {
				return u
			}
		}
		t.Fatalf("no %s file in %v", typ, urls)
		return ""
	}

	// An Observation token downloads the Observation file, not the
	// Organization one of the same job, which its client owns.
	obs := token("system/Observation.rs")
	resp, body = obs.do("GET", fileOf("Organization"), nil)
	wantStatus(t, "Organization file with an Observation token", resp, body, http.StatusForbidden)
	if !strings.Contains(string(body), `"code":"forbidden"`) || !strings.Contains(resp.Header.Get("WWW-Authenticate"), `scope="system/Organization.rs"`) {
		t.Errorf("403: %s, WWW-Authenticate %q", body, resp.Header.Get("WWW-Authenticate"))
	}
	resp, body = obs.do("GET", fileOf("Observation"), nil)
	wantStatus(t, "Observation file with an Observation token", resp, body, http.StatusOK)
	// Go's client asked for gzip and decompressed: the weak ETag is the
	// SHA-256 of the file's bytes, recorded when export wrote it.
	sum := sha256.Sum256(body)
	if got, want := resp.Header.Get("ETag"), `W/"`+hex.EncodeToString(sum[:])+`"`; !resp.Uncompressed || got != want {
		t.Errorf("gzip download: uncompressed %v, ETag %q, want %q", resp.Uncompressed, got, want)
	}
	resp, body = obs.do("GET", fileOf("Observation"), http.Header{"Accept-Encoding": {"identity"}})
	wantStatus(t, "identity download", resp, body, http.StatusOK)
	if got, want := resp.Header.Get("ETag"), `"`+hex.EncodeToString(sum[:])+`"`; got != want {
		t.Errorf("identity download: ETag %q, want the digest %q", got, want)
	}

	// A Patient+Observation token, then the registry narrows the client
	// to Patient.
	po := token("system/Patient.rs system/Observation.rs")
	resp, body = po.kickoff(s.base, "?_type=Observation")
	wantStatus(t, "Observation kick-off before the reload", resp, body, http.StatusAccepted)
	po.do("DELETE", resp.Header.Get("Content-Location"), nil)
	entry["scopes"] = []string{"system/Patient.rs"}
	writeClientsFile(t, clientsFile, entry)
	hup <- syscall.SIGHUP
	checkFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		if resp, _ := po.do("GET", fileOf("Observation"), nil); resp.StatusCode != http.StatusForbidden {
			return fmt.Errorf("Observation download after the reload = %d, want 403", resp.StatusCode)
		}
		return nil
	})
	resp, body = po.kickoff(s.base, "?_type=Observation")
	wantStatus(t, "Observation kick-off after the reload", resp, body, http.StatusForbidden)
	resp, body = po.do("GET", jobStatus, nil)
	wantStatus(t, "status after the reload", resp, body, http.StatusOK)
	resp, body = po.kickoff(s.base, "?_type=Patient")
	wantStatus(t, "Patient kick-off after the reload", resp, body, http.StatusAccepted)
	types, urls = outputs(po.manifestOf(resp.Header.Get("Content-Location")))
	if !slices.Equal(types, []string{"Patient"}) {
		t.Fatalf("Patient export after the reload: types %v", types)
	}
	resp, body = po.do("GET", urls[0], nil)
	wantStatus(t, "Patient download after the reload", resp, body, http.StatusOK)
}
