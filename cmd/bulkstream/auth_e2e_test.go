package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/bulkstream/bulkstream/internal/smart"
)

// e2eClient is a registered client: its id and private JWK.
type e2eClient struct {
	id  string
	key []byte
}

// newClientEntry runs what `bulkstream client keygen` runs and narrows the
// entry's scopes and quota.
func newClientEntry(t *testing.T, id, alg string, scopes []string, maxJobs int) (e2eClient, map[string]any) {
	t.Helper()
	priv, entry, err := smart.GenerateClientKey(id, alg)
	if err != nil {
		t.Fatal(err)
	}
	var e map[string]any
	if err := json.Unmarshal(entry, &e); err != nil {
		t.Fatal(err)
	}
	e["scopes"], e["max_jobs"] = scopes, maxJobs
	return e2eClient{id: id, key: priv}, e
}

func writeClientsFile(t *testing.T, path string, entries ...map[string]any) {
	t.Helper()
	b, err := json.MarshalIndent(map[string]any{"clients": entries}, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// authClient is an HTTP client of the test server with a bearer token.
type authClient struct {
	t     *testing.T
	token string
}

func (c authClient) do(method, u string, h http.Header) (*http.Response, []byte) {
	c.t.Helper()
	req, err := http.NewRequest(method, u, nil)
	if err != nil {
		c.t.Fatal(err)
	}
	for k, v := range h {
		req.Header[k] = v
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp, body
}

func (c authClient) kickoff(base, query string) (*http.Response, []byte) {
	c.t.Helper()
	return c.do("GET", base+"/$export"+query, http.Header{"Accept": {"application/fhir+json"}, "Prefer": {"respond-async"}})
}

// manifestOf polls until the job is done and returns the manifest.
func (c authClient) manifestOf(status string) map[string]any {
	c.t.Helper()
	var m map[string]any
	checkFor(c.t, time.Minute, 10*time.Millisecond, func() error {
		resp, body := c.do("GET", status, nil)
		switch resp.StatusCode {
		case http.StatusAccepted:
			return io.EOF
		case http.StatusOK:
			return json.Unmarshal(body, &m)
		}
		c.t.Fatalf("status %s: %d %s", status, resp.StatusCode, body)
		return nil
	})
	return m
}

// outputs returns a manifest's output types and URLs.
func outputs(m map[string]any) (types []string, urls []string) {
	for _, o := range m["output"].([]any) {
		o := o.(map[string]any)
		if t := o["type"].(string); !slices.Contains(types, t) {
			types = append(types, t)
		}
		urls = append(urls, o["url"].(string))
	}
	slices.Sort(types)
	return types, urls
}

func wantStatus(t *testing.T, what string, resp *http.Response, body []byte, status int) {
	t.Helper()
	if resp.StatusCode != status {
		t.Fatalf("%s: %d %s, want %d", what, resp.StatusCode, body, status)
	}
}

// TestAuthEndToEnd runs bulkstream serve with a clients file: discovery,
// tokens from `bulkstream client token`'s fetchToken, exports with them,
// and every refusal the issue lists.
func TestAuthEndToEnd(t *testing.T) {
	dir := t.TempDir()
	app1, e1 := newClientEntry(t, "app1", "ES384", []string{"system/*.rs"}, 1)
	app2, e2 := newClientEntry(t, "app2", "RS384", []string{"system/*.read"}, 2)
	narrow, e3 := newClientEntry(t, "narrow", "ES384", []string{"system/Patient.rs", "system/Observation.rs"}, 2)
	clientsFile := filepath.Join(dir, "clients.json")
	writeClientsFile(t, clientsFile, e1, e2, e3)
	hup := make(chan os.Signal, 1)
	s := startServerWith(t, serverOpts{args: []string{"--clients", clientsFile}, sighup: hup})

	s.publishSample(t)

	hc := &http.Client{Timeout: 30 * time.Second}
	token := func(c e2eClient, scope string) string {
		t.Helper()
		tok, _, err := fetchToken(t.Context(), hc, s.base, c.id, c.key, scope)
		if err != nil {
			t.Fatalf("token for %s: %v", c.id, err)
		}
		if tok.TokenType != "bearer" || tok.ExpiresIn < 299 || tok.ExpiresIn > 300 {
			t.Errorf("token answer %+v", tok)
		}
		return tok.AccessToken
	}

	// Discovery and metadata need no token.
	anon := authClient{t: t}
	resp, body := anon.do("GET", s.base+"/.well-known/smart-configuration", nil)
	wantStatus(t, "discovery", resp, body, http.StatusOK)
	var conf struct {
		TokenEndpoint string `json:"token_endpoint"`
	}
	if err := json.Unmarshal(body, &conf); err != nil || conf.TokenEndpoint != s.base+"/auth/token" {
		t.Errorf("token_endpoint %q (%v), want %s/auth/token", conf.TokenEndpoint, err, s.base)
	}
	resp, body = anon.do("GET", s.base+"/metadata", nil)
	wantStatus(t, "metadata", resp, body, http.StatusOK)
	if !bytes.Contains(body, []byte(`"valueUri":"`+s.base+`/auth/token"`)) {
		t.Errorf("the CapabilityStatement does not name the token endpoint: %s", body)
	}

	// No token: 401 with a Bearer challenge.
	resp, body = anon.kickoff(s.base, "")
	wantStatus(t, "kick-off without a token", resp, body, http.StatusUnauthorized)
	if ch := resp.Header.Get("WWW-Authenticate"); !strings.HasPrefix(ch, "Bearer ") {
		t.Errorf("WWW-Authenticate %q", ch)
	}

	// app1 exports Patient and Observation with its token.
	a1 := authClient{t: t, token: token(app1, "system/*.rs")}
	resp, body = a1.kickoff(s.base, "?_type=Patient,Observation")
	wantStatus(t, "kick-off", resp, body, http.StatusAccepted)
	jobA := resp.Header.Get("Content-Location")
	m := a1.manifestOf(jobA)
	if m["requiresAccessToken"] != true {
		t.Errorf("requiresAccessToken = %v, want true", m["requiresAccessToken"])
	}
	types, urls := outputs(m)
	if !slices.Equal(types, []string{"Observation", "Patient"}) {
		t.Errorf("output types %v", types)
	}
	resp, body = a1.do("GET", urls[0], nil)
	wantStatus(t, "download", resp, body, http.StatusOK)
	if n := bytes.Count(body, []byte("\n")); n == 0 {
		t.Errorf("downloaded nothing")
	}
	resp, body = anon.do("GET", urls[0], nil)
	wantStatus(t, "download without a token", resp, body, http.StatusUnauthorized)

	// app2 sees nothing of app1's job: 404, as for an unknown job.
	a2 := authClient{t: t, token: token(app2, "system/*.read")}
	resp, body = a2.do("GET", jobA, nil)
	wantStatus(t, "app2 polls app1's job", resp, body, http.StatusNotFound)
	resp, body = a2.do("GET", urls[0], nil)
	wantStatus(t, "app2 downloads app1's file", resp, body, http.StatusNotFound)
	resp, body = a2.do("DELETE", jobA, nil)
	wantStatus(t, "app2 cancels app1's job", resp, body, http.StatusNotFound)
	resp, body = a1.do("GET", urls[0], nil)
	wantStatus(t, "app1's file after app2's cancel", resp, body, http.StatusOK)
	// RS384 (app2) end to end too.
	resp, body = a2.kickoff(s.base, "?_type=Condition")
	wantStatus(t, "app2 kick-off", resp, body, http.StatusAccepted)
	types, urls2 := outputs(a2.manifestOf(resp.Header.Get("Content-Location")))
	if !slices.Equal(types, []string{"Condition"}) {
		t.Errorf("app2 output types %v", types)
	}
	resp, body = a2.do("GET", urls2[0], nil)
	wantStatus(t, "app2 download", resp, body, http.StatusOK)

	// A Patient-only token: _type=Observation is 403; without _type only
	// the granted types are exported.
	pOnly := authClient{t: t, token: token(narrow, "system/Patient.rs")}
	resp, body = pOnly.kickoff(s.base, "?_type=Observation")
	wantStatus(t, "Patient token, _type=Observation", resp, body, http.StatusForbidden)
	if !strings.Contains(string(body), "OperationOutcome") {
		t.Errorf("403 body %s", body)
	}
	both := authClient{t: t, token: token(narrow, "system/*.rs")} // narrowed to Patient and Observation
	resp, body = both.kickoff(s.base, "")
	wantStatus(t, "narrow kick-off without _type", resp, body, http.StatusAccepted)
	if types, _ := outputs(both.manifestOf(resp.Header.Get("Content-Location"))); !slices.Equal(types, []string{"Observation", "Patient"}) {
		t.Errorf("without _type the narrow client got %v, want [Observation Patient]", types)
	}

	// Quota: app1 may have one job queued or running. A full export of
	// the sample takes long enough that a second kick-off right after the
	// first finds it still running; if the first was faster, try again.
	quotaHit := false
	for try := 0; try < 5 && !quotaHit; try++ {
		resp, body = a1.kickoff(s.base, "")
		wantStatus(t, "app1 full export", resp, body, http.StatusAccepted)
		first := resp.Header.Get("Content-Location")
		resp2, body2 := a1.kickoff(s.base, "")
		switch resp2.StatusCode {
		case http.StatusTooManyRequests:
			quotaHit = true
			if resp2.Header.Get("Retry-After") == "" || !strings.Contains(string(body2), "quota") {
				t.Errorf("429 without Retry-After or reason: %v %s", resp2.Header, body2)
			}
			// Another client is not held back by app1's quota.
			resp3, body3 := a2.kickoff(s.base, "?_type=Patient")
			wantStatus(t, "app2 kick-off while app1 is at its quota", resp3, body3, http.StatusAccepted)
		case http.StatusAccepted:
			a1.do("DELETE", resp2.Header.Get("Content-Location"), nil)
		default:
			t.Fatalf("second kick-off: %d %s", resp2.StatusCode, body2)
		}
		a1.do("DELETE", first, nil)
	}
	if !quotaHit {
		t.Errorf("the second concurrent kick-off of app1 (max_jobs 1) was never refused")
	}

	// SIGHUP: a client added to the file can get a token after the reload.
	app4, e4 := newClientEntry(t, "app4", "RS384", []string{"system/Patient.rs"}, 1)
	if _, _, err := fetchToken(t.Context(), hc, s.base, app4.id, app4.key, "system/Patient.rs"); err == nil || !strings.Contains(err.Error(), "invalid_client") {
		t.Fatalf("token for an unregistered client: %v, want invalid_client", err)
	}
	writeClientsFile(t, clientsFile, e1, e2, e3, e4)
	hup <- syscall.SIGHUP
	checkFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		_, _, err := fetchToken(t.Context(), hc, s.base, app4.id, app4.key, "system/Patient.rs")
		return err
	})
	// A broken file is refused and the registry in force stays.
	if err := os.WriteFile(clientsFile, []byte(`{"clients": [`), 0o600); err != nil {
		t.Fatal(err)
	}
	hup <- syscall.SIGHUP
	// The reload runs in serve's goroutine; a broken file must leave app4
	// (and everyone else) able to get tokens, now and after it ran.
	for range 3 {
		token(app4, "system/Patient.rs")
		time.Sleep(20 * time.Millisecond)
	}
}

// TestReloadClients is the SIGHUP handler itself: a good file swaps the
// registry, a bad one keeps the old one and says why.
func TestReloadClients(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "clients.json")
	_, e1 := newClientEntry(t, "a", "ES384", []string{"system/*.rs"}, 1)
	_, e2 := newClientEntry(t, "b", "ES384", []string{"system/*.rs"}, 1)
	writeClientsFile(t, path, e1)
	clients, err := smart.OpenClients(path)
	if err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	writeClientsFile(t, path, e1, e2)
	if err := reloadClients(clients, path, log); err != nil {
		t.Fatal(err)
	}
	if _, ok := clients.Client("b"); !ok || !strings.Contains(logs.String(), "clients=2") {
		t.Errorf("after reload: b registered %v; log %s", ok, logs.String())
	}
	os.WriteFile(path, []byte("not json"), 0o600)
	if err := reloadClients(clients, path, log); err == nil {
		t.Fatal("a broken file was accepted")
	}
	if _, ok := clients.Client("b"); !ok || !strings.Contains(logs.String(), "previous registry stays") {
		t.Errorf("after a failed reload: b registered %v; log %s", ok, logs.String())
	}
}

// TestServeRefusesOpenNonLoopback: without --clients, serve starts only
// on loopback, unless --insecure (logged at WARN).
func TestServeRefusesOpenNonLoopback(t *testing.T) {
	for _, listen := range []string{"0.0.0.0:0", ":0", "[::]:0"} {
		var c serveConfig
		fs := newFlagSet("serve", io.Discard)
		bindServeFlags(fs, &c)
		if err := parseFlags(fs, []string{"--data-dir", t.TempDir(), "--listen", listen}); err != nil {
			t.Fatal(err)
		}
		err := serve(t.Context(), c, slog.New(slog.DiscardHandler))
		if err == nil || !strings.Contains(err.Error(), "not a loopback address") {
			t.Errorf("serve --listen %s without --clients = %v, want a refusal", listen, err)
		}
	}
	for listen, want := range map[string]bool{"127.0.0.1:1": true, "[::1]:1": true, "localhost:1": true, "0.0.0.0:1": false,
		":1": false, "192.0.2.1:1": false} {
		if got := isLoopback(listen); got != want {
			t.Errorf("isLoopback(%q) = %v, want %v", listen, got, want)
		}
	}

	// --insecure starts, and says so at WARN.
	var c serveConfig
	fs := newFlagSet("serve", io.Discard)
	bindServeFlags(fs, &c)
	if err := parseFlags(fs, []string{"--data-dir", t.TempDir(), "--listen", "0.0.0.0:0", "--nats-listen", anyPort, "--insecure",
		"--public-url", "http://bulk.example.org"}); err != nil {
		t.Fatal(err)
	}
	var logs syncBuffer
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- serve(ctx, c, slog.New(slog.NewTextHandler(&logs, nil))) }()
	waitHealthy(t, loopbackOf(t, waitServingLog(t, &logs, done).HTTP))
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(logs.String(), `level=WARN msg="INSECURE`) {
		t.Errorf("--insecure was not logged at WARN:\n%s", logs.String())
	}
}

// TestServeTLS: --tls-cert/--tls-key serve HTTPS, the public URL defaults
// to https://, and TLS 1.1 is refused.
func TestServeTLS(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile, pool := selfSignedCert(t, dir)
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	s := startServerWith(t, serverOpts{args: []string{"--tls-cert", certFile, "--tls-key", keyFile}, scheme: "https", client: client})

	resp, err := client.Get(s.base + "/metadata")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.TLS == nil || resp.TLS.Version < tls.VersionTLS12 {
		t.Fatalf("GET metadata over TLS: %d, TLS %+v", resp.StatusCode, resp.TLS)
	}
	if !bytes.Contains(body, []byte(`"url":"https://`)) {
		t.Errorf("implementation.url is not https: %s", body)
	}

	u, _ := url.Parse(s.base)
	for _, v := range []uint16{tls.VersionTLS10, tls.VersionTLS11} {
		conn, err := tls.Dial("tcp", u.Host, &tls.Config{RootCAs: pool, MinVersion: v, MaxVersion: v})
		if err == nil {
			conn.Close()
			t.Errorf("a TLS %x handshake succeeded; want TLS 1.2 at least", v)
		}
	}
	// Plain HTTP on the TLS port gets no answer from the API.
	if resp, err := http.Get("http://" + u.Host + "/healthz"); err == nil {
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			t.Errorf("plain HTTP on the TLS port answered 200")
		}
	}
}

// selfSignedCert writes a certificate for 127.0.0.1 and its key.
func selfSignedCert(t *testing.T, dir string) (certFile, keyFile string, pool *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "bulkstream test"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
		DNSNames:              []string{"localhost"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool = x509.NewCertPool()
	pool.AddCert(cert)
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile, pool
}

// TestSigningKeyRotation: a signing key older than --key-rotation is
// replaced when serve starts (the schedule follows the key's age, not the
// process's), the old key is kept to verify the tokens it signed, and
// tokens from the new key work.
func TestSigningKeyRotation(t *testing.T) {
	dataDir := t.TempDir()
	keys := filepath.Join(dataDir, "auth", "keys")
	old, err := smart.OpenKeys(keys, func() time.Time { return time.Now().Add(-48 * time.Hour) }, nil)
	if err != nil {
		t.Fatal(err)
	}
	oldKid := old.KeyIDs()[0]
	app, entry := newClientEntry(t, "app", "ES384", []string{"system/*.rs"}, 1)
	clientsFile := filepath.Join(t.TempDir(), "clients.json")
	writeClientsFile(t, clientsFile, entry)
	s := startServerWith(t, serverOpts{dataDir: dataDir, args: []string{"--clients", clientsFile, "--key-rotation", "24h"}})

	var kids []string
	checkFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		files, err := filepath.Glob(filepath.Join(keys, "*.jwk"))
		if err != nil {
			return err
		}
		kids = kids[:0]
		for _, f := range files {
			kids = append(kids, strings.TrimSuffix(filepath.Base(f), ".jwk"))
		}
		if len(kids) != 2 {
			return fmt.Errorf("signing keys %v, want the old one and a new one", kids)
		}
		return nil
	})
	if kids[0] != oldKid || kids[1] <= oldKid {
		t.Fatalf("keys %v: want %s kept and a newer one", kids, oldKid)
	}
	tok, _, err := fetchToken(t.Context(), &http.Client{Timeout: 30 * time.Second}, s.base, app.id, app.key, "system/Patient.rs")
	if err != nil {
		t.Fatal(err)
	}
	hdr, err := base64.RawURLEncoding.DecodeString(strings.Split(tok.AccessToken, ".")[0])
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(hdr), kids[1]) {
		t.Errorf("token header %s not signed by the new key %s", hdr, kids[1])
	}
}

// TestDownloadOutlivesToken: the bearer token is checked when a request
// starts, so a download that began with a valid token finishes after the
// token expires (a large file takes longer than a 5-minute token), while
// any new request with that token is refused and a fresh token resumes.
func TestDownloadOutlivesToken(t *testing.T) {
	const lifetime = time.Second
	dir := t.TempDir()
	app, e := newClientEntry(t, "app", "ES384", []string{"system/*.rs"}, 1)
	clientsFile := filepath.Join(dir, "clients.json")
	writeClientsFile(t, clientsFile, e)
	s := startServerWith(t, serverOpts{args: []string{"--clients", clientsFile, "--token-lifetime", lifetime.String()}})
	s.publishSample(t, "Observation")

	hc := &http.Client{Timeout: 30 * time.Second}
	token := func() string {
		t.Helper()
		tok, _, err := fetchToken(t.Context(), hc, s.base, app.id, app.key, "system/*.rs")
		if err != nil {
			t.Fatal(err)
		}
		return tok.AccessToken
	}
	c := authClient{t: t, token: token()}
	resp, body := c.kickoff(s.base, "?_type=Observation")
	wantStatus(t, "kick-off", resp, body, http.StatusAccepted)
	m := c.manifestOf(resp.Header.Get("Content-Location"))
	out := m["output"].([]any)[0].(map[string]any)
	fileURL, count := out["url"].(string), int(out["count"].(float64))

	// Start the download, read a little, and stall until the token has
	// expired (with the verifier's leeway).
	req, _ := http.NewRequest("GET", fileURL, nil)
	req.Header.Set("Authorization", "Bearer "+c.token)
	dl, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer dl.Body.Close()
	if dl.StatusCode != http.StatusOK {
		t.Fatalf("download: %d", dl.StatusCode)
	}
	r := bufio.NewReader(dl.Body)
	first, err := r.ReadBytes('\n')
	if err != nil {
		t.Fatal(err)
	}
	issued := time.Now()
	time.Sleep(lifetime + smart.TokenLeeway + 500*time.Millisecond)

	// The same token no longer opens anything.
	resp, body = c.do("GET", fileURL, nil)
	wantStatus(t, "a new download with the expired token", resp, body, http.StatusUnauthorized)

	// The download in flight still runs to its last line.
	rest, err := io.ReadAll(r)
	if err != nil {
		t.Fatalf("the download started before the token expired broke off: %v", err)
	}
	lines := 1 + bytes.Count(rest, []byte("\n"))
	if lines != count {
		t.Errorf("download across the token's expiry: %d lines, manifest count %d", lines, count)
	}
	t.Logf("%d lines (%d bytes) downloaded, finished %v after the token was issued with a %v lifetime",
		lines, len(first)+len(rest), time.Since(issued).Round(time.Millisecond), lifetime)

	// A fresh token resumes where a broken download would have left off.
	c.token = token()
	resp, body = c.do("GET", fileURL, http.Header{"Range": {fmt.Sprintf("bytes=%d-", len(first))}})
	wantStatus(t, "resume with a fresh token", resp, body, http.StatusPartialContent)
	if !bytes.Equal(body, rest) {
		t.Errorf("resumed download with a fresh token: %d bytes, want the %d after the first line", len(body), len(rest))
	}
}
