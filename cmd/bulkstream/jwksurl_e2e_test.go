package main

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// TestJWKSURLEndToEnd: `serve` with a client registered by jwks_url (the
// registration style SMART prefers, which lets a client rotate its keys:
// https://hl7.org/fhir/smart-app-launch/client-confidential-asymmetric.html),
// its keys published by a key server on loopback. The client
// gets a token and exports with it; its key set is fetched once within
// its max-age, across a SIGHUP reload too (the cache is keyed by URL);
// a client whose key server fails gets invalid_client.
func TestJWKSURLEndToEnd(t *testing.T) {
	app, entry := newClientEntry(t, "app-url", "ES384", []string{"system/*.rs"}, 1)
	var hits atomic.Int64
	set, err := json.Marshal(entry["jwks"])
	if err != nil {
		t.Fatal(err)
	}
	keySrv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		if r.Header.Get("Accept") != "application/json" {
			t.Errorf("key server: Accept %q", r.Header.Get("Accept"))
		}
		if r.URL.Path != "/app-url/jwks.json" {
			http.Error(w, "no", http.StatusInternalServerError)
			return
		}
		w.Header().Set("Cache-Control", "max-age=300")
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(set)
	}))
	t.Cleanup(keySrv.Close)
	delete(entry, "jwks")
	entry["jwks_url"] = keySrv.URL + "/app-url/jwks.json"

	broken, brokenEntry := newClientEntry(t, "broken", "ES384", []string{"system/*.rs"}, 1)
	delete(brokenEntry, "jwks")
	brokenEntry["jwks_url"] = keySrv.URL + "/broken/jwks.json"

	clientsFile := filepath.Join(t.TempDir(), "clients.json")
	writeClientsFile(t, clientsFile, entry)
	hup := make(chan os.Signal, 1)
	s := startServerWith(t, serverOpts{args: []string{"--clients", clientsFile}, sighup: hup})
	s.publishSample(t)

	hc := &http.Client{Timeout: 30 * time.Second}
	tok, _, err := fetchToken(t.Context(), hc, s.base, app.id, app.key, "system/*.rs")
	if err != nil {
		t.Fatalf("token for the jwks_url client: %v", err)
	}
	if n := hits.Load(); n != 1 {
		t.Fatalf("the key server got %d requests, want 1", n)
	}
	c := authClient{t: t, token: tok.AccessToken}
	resp, body := c.kickoff(s.base, "?_type=Patient")
	wantStatus(t, "kick-off with a jwks_url client's token", resp, body, http.StatusAccepted)
	if types, _ := outputs(c.manifestOf(resp.Header.Get("Content-Location"))); len(types) != 1 || types[0] != "Patient" {
		t.Errorf("output types %v", types)
	}

	// A reload that adds a client keeps the cached set of app-url.
	writeClientsFile(t, clientsFile, entry, brokenEntry)
	hup <- syscall.SIGHUP
	checkFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		_, _, err := fetchToken(t.Context(), hc, s.base, broken.id, broken.key, "system/*.rs")
		if err == nil || !strings.Contains(err.Error(), "invalid_client") {
			t.Fatalf("token for a client whose key server fails: %v, want invalid_client", err)
		}
		if strings.Contains(err.Error(), "answered HTTP 500") {
			return nil // reloaded: broken is known, its key server fails
		}
		return err
	})
	before := hits.Load()
	if _, _, err := fetchToken(t.Context(), hc, s.base, app.id, app.key, "system/*.rs"); err != nil {
		t.Fatalf("token after the reload: %v", err)
	}
	if n := hits.Load(); n != before {
		t.Errorf("the reload dropped the cached key set: %d requests, want %d", n, before)
	}
}
