package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"
	"golang.org/x/crypto/bcrypt"
)

// readmeNATSBlock returns the first fenced block of the README's NATS
// section that contains marker.
func readmeNATSBlock(t *testing.T, marker string) string {
	t.Helper()
	section := readmeSection(t, "### NATS")
	for _, m := range regexp.MustCompile("(?s)```[a-z]*\n(.*?)```").FindAllStringSubmatch(section, -1) {
		if strings.Contains(m[1], marker) {
			return m[1]
		}
	}
	t.Fatalf("the README's NATS section has no block with %q", marker)
	return ""
}

// natsCreds are the secrets of the users in writeNATSAuth's file.
type natsCreds struct {
	pubPassword, adminPassword string
	nkeySeedFile               string
}

// writeNATSAuth writes the README's sample --nats-auth file with real
// secrets: the publisher's and the admin's passwords (bcrypt) and the nkey
// user's public key, whose seed it writes next to it.
func writeNATSAuth(t *testing.T, dir string) (string, natsCreds) {
	t.Helper()
	var f natsAuthFile
	dec := json.NewDecoder(strings.NewReader(readmeNATSBlock(t, `"users"`)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&f); err != nil {
		t.Fatalf("the README's --nats-auth sample: %v", err)
	}
	kp, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := kp.PublicKey()
	seed, _ := kp.Seed()
	c := natsCreds{pubPassword: "pub-" + rand16(t), adminPassword: "admin-" + rand16(t), nkeySeedFile: filepath.Join(dir, "publisher.nk")}
	if err := os.WriteFile(c.nkeySeedFile, seed, 0o600); err != nil {
		t.Fatal(err)
	}
	hash := func(pw string) string {
		h, err := bcrypt.GenerateFromPassword([]byte(pw), bcrypt.MinCost)
		if err != nil {
			t.Fatal(err)
		}
		return string(h)
	}
	var roles []string
	for i := range f.Users {
		u := &f.Users[i]
		switch {
		case u.Nkey != "":
			u.Nkey = pub
			roles = append(roles, "nkey")
		case u.User == "publisher":
			u.Password = hash(c.pubPassword)
			roles = append(roles, u.User)
		case u.User == "admin":
			u.Password = hash(c.adminPassword)
			roles = append(roles, u.User)
		}
	}
	if !slices.Equal(roles, []string{"publisher", "nkey", "admin"}) {
		t.Fatalf("the README's --nats-auth sample has roles %v, want publisher, nkey, admin", roles)
	}
	b, err := json.Marshal(f)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "nats-auth.json")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return path, c
}

func rand16(t *testing.T) string {
	t.Helper()
	kp, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := kp.PublicKey()
	return pub[1:17]
}

// runBulkstream runs the bulkstream binary with extra environment and
// returns its combined output and exit error.
func runBulkstream(t *testing.T, env []string, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(binPath, args...)
	cmd.Env = append(os.Environ(), env...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.String(), err
}

// asyncErrors collects a connection's asynchronous errors (permission
// violations arrive that way).
func asyncErrors() (nats.Option, <-chan error) {
	ch := make(chan error, 256)
	return nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
		select {
		case ch <- err:
		default:
		}
	}), ch
}

// waitViolation waits for the server's permission violation on subject.
func waitViolation(t *testing.T, errs <-chan error, what, subject string) {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		select {
		case err := <-errs:
			msg := strings.ToLower(err.Error())
			if strings.Contains(msg, "permissions violation") && strings.Contains(err.Error(), `"`+subject+`"`) {
				return
			}
			t.Logf("async error while waiting for %s: %v", what, err)
		case <-timeout:
			t.Errorf("the publisher could %s (%s): no permissions violation", what, subject)
			return
		}
	}
}

// TestServeRefusesOpenNATSListener: like --listen, a non-loopback
// --nats-listen without --nats-auth stops serve with an error naming the
// flag and the fixes; --insecure starts it with a WARN, and the log says
// truthfully what each listener lets in.
func TestServeRefusesOpenNATSListener(t *testing.T) {
	_, entry := newClientEntry(t, "analytics", "ES384", []string{"system/*.rs"}, 2)
	clients := filepath.Join(t.TempDir(), "clients.json")
	writeClientsFile(t, clients, entry)
	for _, tc := range []struct {
		natsListen string
		more       []string
	}{
		{"0.0.0.0:0", nil},
		{":0", nil},
		{"0.0.0.0:0", []string{"--clients", clients}}, // HTTP authorization does not cover NATS
	} {
		natsListen := tc.natsListen
		var c serveConfig
		fs := newFlagSet("serve", io.Discard)
		bindServeFlags(fs, &c)
		if err := parseFlags(fs, append([]string{"--data-dir", t.TempDir(), "--listen", anyPort, "--nats-listen", natsListen}, tc.more...)); err != nil {
			t.Fatal(err)
		}
		err := serveOrRefuse(t, c)
		if err == nil {
			t.Fatalf("serve --nats-listen %s %v without --nats-auth started", natsListen, tc.more)
		}
		for _, want := range []string{"--nats-listen " + natsListen, "not a loopback address", "--nats-auth", "--insecure"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("serve --nats-listen %s: error %q does not say %q", natsListen, err, want)
			}
		}
	}

	var c serveConfig
	fs := newFlagSet("serve", io.Discard)
	bindServeFlags(fs, &c)
	if err := parseFlags(fs, []string{"--data-dir", t.TempDir(), "--listen", anyPort, "--nats-listen", "0.0.0.0:0", "--insecure"}); err != nil {
		t.Fatal(err)
	}
	var logs syncBuffer
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- serve(ctx, c, slog.New(slog.NewTextHandler(&logs, nil))) }()
	waitHealthy(t, waitServingLog(t, &logs, done).HTTP)
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	out := logs.String()
	if !strings.Contains(out, `level=WARN msg="INSECURE: the embedded NATS server has no authentication`) ||
		!strings.Contains(out, "nats_listen=0.0.0.0:0") {
		t.Errorf("--insecure with an open NATS listener was not logged at WARN with its address:\n%s", out)
	}
	if strings.Contains(out, "serving on a loopback address only") {
		t.Errorf("the log claims loopback-only serving while NATS listens on 0.0.0.0:\n%s", out)
	}
	if !strings.Contains(out, "HTTP serves on a loopback address only") {
		t.Errorf("the log does not say that only HTTP is on loopback:\n%s", out)
	}
}

// serveOrRefuse runs serve in this process until it either returns (its
// error) or answers /healthz on the address it logs (then it is stopped:
// nil).
func serveOrRefuse(t *testing.T, c serveConfig) error {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	done := make(chan error, 1)
	var logs syncBuffer
	go func() { done <- serve(ctx, c, slog.New(slog.NewTextHandler(&logs, nil))) }()
	for {
		select {
		case err := <-done:
			if err == nil {
				return errors.New("serve returned nil before it was stopped")
			}
			return err
		case <-time.After(20 * time.Millisecond):
		}
		a, ok := parseServing(logs.String())
		if !ok {
			continue
		}
		if resp, err := http.Get("http://" + a.HTTP + "/healthz"); err == nil {
			resp.Body.Close()
			cancel()
			if err := <-done; err != nil {
				t.Errorf("serve stopped with %v", err)
			}
			return nil
		}
	}
}

// TestNATSAuthPermissions runs serve with the README's --nats-auth sample
// on a non-loopback --nats-listen (allowed: authentication is on) and
// checks what each role can do against the real embedded server:
// unauthenticated and wrong-password connections are refused; the
// publisher publishes (and its events are applied, bad ones
// dead-lettered) but cannot subscribe to the stream's subjects, read
// messages, create consumers, delete or purge the stream or delete the
// consumer, nor see what bulkstream fetches on its inbox; publish works
// with --nats-user/--nats-password and --nats-nkey and fails clearly
// without credentials; rebuild works with --nats-auth.
func TestNATSAuthPermissions(t *testing.T) {
	dir := t.TempDir()
	authFile, creds := writeNATSAuth(t, dir)
	data := t.TempDir()
	args := []string{"serve", "--data-dir", data, "--listen", anyPort, "--nats-listen", "0.0.0.0:0", "--nats-auth", authFile}
	p := start(t, args...)
	served := p.serving(t)
	addr, natsURL := served.HTTP, "nats://"+loopbackOf(t, served.NATS)
	waitHealthy(t, addr)

	// No credentials, wrong password: refused.
	if nc, err := nats.Connect(natsURL); err == nil {
		nc.Close()
		t.Fatal("an unauthenticated connection was accepted")
	} else if !errors.Is(err, nats.ErrAuthorization) {
		t.Errorf("unauthenticated connection: %v, want an authorization violation", err)
	}
	if nc, err := nats.Connect(natsURL, nats.UserInfo("publisher", "wrong")); err == nil {
		nc.Close()
		t.Fatal("a wrong password was accepted")
	}

	// publish without credentials fails and says which flags to give; with
	// a wrong password it fails without printing the password.
	f := filepath.Join(dir, "sample.ndjson")
	if err := os.WriteFile(f, sampleLines(t, 20), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := runBulkstream(t, nil, "publish", "--nats-url", natsURL, f)
	if err == nil || !strings.Contains(out, "Authorization Violation") || !strings.Contains(out, "--nats-user") {
		t.Errorf("publish without credentials: %v\n%s\nwant a failure naming the credential flags", err, out)
	}
	const wrong = "not-the-password-0451"
	out, err = runBulkstream(t, []string{"BULKSTREAM_NATS_PASSWORD=" + wrong}, "publish", "--nats-url", natsURL, "--nats-user", "publisher", f)
	if err == nil || strings.Contains(out, wrong) {
		t.Errorf("publish with a wrong password: %v, output shows the password: %v\n%s", err, strings.Contains(out, wrong), out)
	}

	// The publisher role, connected the way any client connects.
	errOpt, errs := asyncErrors()
	pnc, pjs := connectJS(t, natsURL, nats.UserInfo("publisher", creds.pubPassword), errOpt)
	// Allowed: its inbox. Everything bulkstream fetches must stay out of it.
	snoop, err := pnc.SubscribeSync("_INBOX.>")
	if err != nil {
		t.Fatal(err)
	}
	if err := pnc.Flush(); err != nil {
		t.Fatal(err)
	}

	// publish with --nats-user (password from the environment) and with
	// --nats-nkey (deletes of the same resources): 20 + 20 events applied.
	out, err = runBulkstream(t, []string{"BULKSTREAM_NATS_PASSWORD=" + creds.pubPassword}, "publish", "--nats-url", natsURL, "--nats-user", "publisher", f)
	if err != nil {
		t.Fatalf("publish --nats-user publisher: %v\n%s", err, out)
	}
	if strings.Contains(out, creds.pubPassword) {
		t.Errorf("publish printed the password:\n%s", out)
	}
	waitAppliedSeq(t, addr, 20, 30*time.Second)
	var deletes bytes.Buffer
	for l := range bytes.Lines(sampleLines(t, 20)) {
		var r struct{ ResourceType, ID string }
		if err := json.Unmarshal(l, &r); err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&deletes, "%s/%s\n", r.ResourceType, r.ID)
	}
	g := filepath.Join(dir, "deletes.txt")
	if err := os.WriteFile(g, deletes.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := runBulkstream(t, nil, "publish", "--delete", "--nats-url", natsURL, "--nats-nkey", creds.nkeySeedFile, g); err != nil {
		t.Fatalf("publish --nats-nkey: %v\n%s", err, out)
	}
	waitAppliedSeq(t, addr, 40, 30*time.Second)

	// The publisher's own JetStream publishes: one applied, one
	// dead-lettered (bulkstream's own user publishes the dead letter).
	ctx := t.Context()
	if _, err := pjs.Publish(ctx, "fhir.Patient.nats-auth-1", []byte(`{"resourceType":"Patient","id":"nats-auth-1"}`)); err != nil {
		t.Fatalf("the publisher cannot publish a change event: %v", err)
	}
	if _, err := pjs.Publish(ctx, "fhir.Patient.nats-auth-2", []byte(`not json`)); err != nil {
		t.Fatalf("the publisher cannot publish a change event: %v", err)
	}
	waitAppliedSeq(t, addr, 42, 30*time.Second)

	// Denied: reading the stream, changing or deleting streams and
	// consumers, writing dead letters.
	if _, err := pnc.SubscribeSync("fhir.>"); err != nil {
		t.Fatal(err)
	}
	waitViolation(t, errs, "subscribe to the stream's subjects", "fhir.>")
	for _, d := range []struct{ what, subject, body string }{
		{"read a message", "$JS.API.STREAM.MSG.GET.FHIR", `{"seq":1}`},
		{"read a message directly", "$JS.API.DIRECT.GET.FHIR", `{"seq":1}`},
		{"create a consumer", "$JS.API.CONSUMER.CREATE.FHIR.spy", `{"stream_name":"FHIR","config":{"name":"spy","ack_policy":"none"}}`},
		{"read stream info", "$JS.API.STREAM.INFO.FHIR", ``},
		{"delete the consumer", "$JS.API.CONSUMER.DELETE.FHIR.bulkstream", ``},
		{"delete the stream", "$JS.API.STREAM.DELETE.FHIR", ``},
		{"purge the stream", "$JS.API.STREAM.PURGE.FHIR", ``},
		{"delete the dead-letter stream", "$JS.API.STREAM.DELETE.FHIR_DLQ", ``},
		{"write a dead letter", "bulkstream.dlq.forged", `x`},
	} {
		if err := pnc.PublishRequest(d.subject, pnc.NewInbox(), []byte(d.body)); err != nil {
			t.Fatal(err)
		}
		waitViolation(t, errs, d.what, d.subject)
	}
	// The snooping subscription saw the publisher's acks, and no resource.
	acks, leaked := 0, 0
	for {
		m, err := snoop.NextMsg(200 * time.Millisecond)
		if err != nil {
			break
		}
		if bytes.Contains(m.Data, []byte("resourceType")) || bytes.Contains(m.Data, []byte("not json")) {
			if leaked++; leaked == 1 {
				t.Errorf("the publisher read an event bulkstream fetched, on %s: %.80s", m.Subject, m.Data)
			}
		}
		if bytes.Contains(m.Data, []byte(`"stream":"FHIR"`)) {
			acks++
		}
	}
	if leaked > 1 {
		t.Errorf("… %d events in all", leaked)
	}
	if acks == 0 {
		t.Errorf("the publisher's _INBOX.> subscription saw none of its acks: the snooping check proves nothing")
	}

	// The administrator sees everything intact: streams, consumer, the
	// dead letter; no consumer "spy".
	_, ajs := connectJS(t, natsURL, nats.UserInfo("admin", creds.adminPassword))
	st, err := ajs.Stream(ctx, "FHIR")
	if err != nil {
		t.Fatalf("stream FHIR: %v", err)
	}
	if n := st.CachedInfo().State.Msgs; n != 42 {
		t.Errorf("stream FHIR holds %d messages, want 42", n)
	}
	if _, err := st.Consumer(ctx, "bulkstream"); err != nil {
		t.Errorf("consumer bulkstream: %v", err)
	}
	if _, err := st.Consumer(ctx, "spy"); !errors.Is(err, jetstream.ErrConsumerNotFound) {
		t.Errorf("consumer spy: %v, want not found", err)
	}
	if dlq, err := ajs.Stream(ctx, "FHIR_DLQ"); err != nil || dlq.CachedInfo().State.Msgs != 1 {
		t.Errorf("FHIR_DLQ: %v, want 1 dead letter", err)
	}
	p.stop(t)
	if strings.Contains(p.stderr.String(), creds.pubPassword) {
		t.Errorf("serve logged a password")
	}

	// rebuild runs the embedded server with the same file and replays the
	// stream as bulkstream's own user.
	out, err = runBulkstream(t, nil, "rebuild", "--data-dir", data, "--nats-listen", "0.0.0.0:0", "--nats-auth", authFile)
	if err != nil || !strings.Contains(out, "41 applied") {
		t.Errorf("rebuild --nats-auth: %v\n%s", err, out)
	}
}

// TestNATSTLS: --nats-tls-cert/--nats-tls-key make the embedded listener
// require TLS 1.2 or later; publish connects with --nats-ca, and without
// it fails saying so.
func TestNATSTLS(t *testing.T) {
	dir := t.TempDir()
	authFile, creds := writeNATSAuth(t, dir)
	certFile, keyFile, pool := selfSignedCert(t, dir)
	p := start(t, "serve", "--data-dir", t.TempDir(), "--listen", anyPort, "--nats-listen", anyPort, "--nats-auth", authFile,
		"--nats-tls-cert", certFile, "--nats-tls-key", keyFile)
	served := p.serving(t)
	addr, natsAddr := served.HTTP, served.NATS
	waitHealthy(t, addr)

	f := filepath.Join(dir, "sample.ndjson")
	if err := os.WriteFile(f, sampleLines(t, 10), 0o644); err != nil {
		t.Fatal(err)
	}
	env := []string{"BULKSTREAM_NATS_PASSWORD=" + creds.pubPassword}
	out, err := runBulkstream(t, env, "publish", "--nats-url", "tls://"+natsAddr, "--nats-user", "publisher", f)
	if err == nil || !strings.Contains(out, "--nats-ca") {
		t.Errorf("publish to a private-CA TLS server without --nats-ca: %v\n%s\nwant a failure naming --nats-ca", err, out)
	}
	// The password as a flag this time (the environment works too, above).
	if out, err := runBulkstream(t, nil, "publish", "--nats-url", "tls://"+natsAddr, "--nats-ca", certFile,
		"--nats-user", "publisher", "--nats-password", creds.pubPassword, f); err != nil {
		t.Fatalf("publish over TLS: %v\n%s", err, out)
	}
	waitAppliedSeq(t, addr, 10, 30*time.Second)

	nc, err := nats.Connect("tls://"+natsAddr, nats.UserInfo("publisher", creds.pubPassword), nats.Secure(&tls.Config{RootCAs: pool}))
	if err != nil {
		t.Fatal(err)
	}
	cs, err := nc.TLSConnectionState()
	nc.Close()
	if err != nil || cs.Version < tls.VersionTLS12 {
		t.Errorf("TLS connection state %v, %x; want TLS 1.2 or later", err, cs.Version)
	}
	if nc, err := nats.Connect("tls://"+natsAddr, nats.UserInfo("publisher", creds.pubPassword),
		nats.Secure(&tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS11, MaxVersion: tls.VersionTLS11})); err == nil {
		nc.Close()
		t.Errorf("a TLS 1.1 connection was accepted")
	}
}

// TestServeExternalNATSWithREADMERoles runs an external nats-server with
// the README's authorization block and serve --nats-url as its bulkstream
// user: the role is what bulkstream needs (streams, consumer, fetch, acks,
// dead letters), and it equals bulkstreamPermissions.
func TestServeExternalNATSWithREADMERoles(t *testing.T) {
	dir := t.TempDir()
	conf := filepath.Join(dir, "nats.conf")
	if err := os.WriteFile(conf, []byte(readmeNATSBlock(t, "authorization {")), 0o600); err != nil {
		t.Fatal(err)
	}
	opts, err := server.ProcessConfigFile(conf)
	if err != nil {
		t.Fatalf("the README's authorization block: %v", err)
	}
	passwords := map[string]string{"bulkstream": "bs-" + rand16(t), "publisher": "pub-" + rand16(t)}
	for _, u := range opts.Users {
		pw, ok := passwords[u.Username]
		if !ok {
			t.Fatalf("the README's authorization block has user %q", u.Username)
		}
		h, err := bcrypt.GenerateFromPassword([]byte(pw), bcrypt.MinCost)
		if err != nil {
			t.Fatal(err)
		}
		u.Password = string(h)
		if u.Username == "bulkstream" {
			want := bulkstreamPermissions()
			if !slices.Equal(u.Permissions.Publish.Allow, want.Publish.Allow) || !slices.Equal(u.Permissions.Subscribe.Allow, want.Subscribe.Allow) {
				t.Errorf("the README's bulkstream role %+v %+v differs from bulkstreamPermissions %+v %+v",
					u.Permissions.Publish, u.Permissions.Subscribe, want.Publish, want.Subscribe)
			}
		}
	}
	if len(opts.Users) != 2 {
		t.Fatalf("the README's authorization block has %d users, want bulkstream and publisher", len(opts.Users))
	}
	opts.Host, opts.Port, opts.JetStream, opts.StoreDir, opts.NoLog, opts.NoSigs = "127.0.0.1", -1, true, t.TempDir(), true, true
	ns, err := server.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	go ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats server not ready")
	}
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })

	// Without credentials serve stops at once and says which flags to give.
	out, err := runBulkstream(t, []string{"BULKSTREAM_NATS_PASSWORD="}, "serve", "--data-dir", t.TempDir(), "--listen", anyPort, "--nats-url", ns.ClientURL())
	if err == nil || !strings.Contains(out, "Authorization Violation") || !strings.Contains(out, "--nats-user") {
		t.Errorf("serve --nats-url without credentials: %v\n%s\nwant a refusal naming the credential flags", err, out)
	}
	t.Setenv("BULKSTREAM_NATS_PASSWORD", passwords["bulkstream"])
	p := start(t, "serve", "--data-dir", t.TempDir(), "--listen", anyPort, "--nats-url", ns.ClientURL(), "--nats-user", "bulkstream")
	addr := p.serving(t).HTTP
	waitHealthy(t, addr)
	f := filepath.Join(dir, "sample.ndjson")
	if err := os.WriteFile(f, sampleLines(t, 10), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := runBulkstream(t, []string{"BULKSTREAM_NATS_PASSWORD=" + passwords["publisher"]}, "publish",
		"--nats-url", ns.ClientURL(), "--nats-user", "publisher", f); err != nil {
		t.Fatalf("publish: %v\n%s", err, out)
	}
	_, pjs := connectJS(t, ns.ClientURL(), nats.UserInfo("publisher", passwords["publisher"]))
	if _, err := pjs.Publish(t.Context(), "fhir.Patient.bad", []byte("not json")); err != nil {
		t.Fatal(err)
	}
	waitAppliedSeq(t, addr, 11, 30*time.Second)
	if got := scrape(addr, `bulkstream_ingest_events_dead_lettered_total{reason="not_json"}`); got != 1 {
		t.Errorf("dead letters: %v, want 1", got)
	}
	p.stop(t)
	if strings.Contains(p.stderr.String(), passwords["bulkstream"]) {
		t.Errorf("serve logged its NATS password")
	}
}

// TestLoadNATSAuthRefusesBadFiles: every mistake in a --nats-auth file
// stops serve with an error naming the entry and the field, never a
// password; a direction left out of permissions allows nothing.
func TestLoadNATSAuthRefusesBadFiles(t *testing.T) {
	kp, _ := nkeys.CreateUser()
	pub, _ := kp.PublicKey()
	const secret = "s3cret-do-not-print"
	for _, tc := range []struct{ file, want string }{
		{`{"users":[]}`, "no users"},
		{`{"users":[{"user":"a","password":"` + secret + `","role":"x"}]}`, `unknown field "role"`},
		{`{"users":[{"user":"a"}]}`, "users[0]: want user and password, or nkey"},
		{`{"users":[{"user":"a","password":"p","nkey":"` + pub + `"}]}`, "users[0]: give either nkey or user and password"},
		{`{"users":[{"nkey":"SUABC"}]}`, "users[0]: nkey \"SUABC\" is not a public user nkey"},
		{`{"users":[{"user":"a","password":"p"},{"user":"a","password":"q"}]}`, `users[1]: user "a" appears twice`},
		{`{"users":[{"user":"a","password":"$2a$11$` + secret + `"}]}`, `users[0]: user "a": password looks like a bcrypt hash but is not`},
		{`{"users":[{"user":"a","password":"p","permissions":{"publish":{"allow":["fhir.>.x"]}}}]}`, `users[0]: permissions.publish.allow: "fhir.>.x" is not a valid subject`},
		{`{"users":[{"user":"a","password":"p","permissions":{"subscribe":{"deny":["a..b"]}}}]}`, `users[0]: permissions.subscribe.deny`},
		{`{"users":[{"user":"a","password":"p"}]} {}`, "data after"},
	} {
		path := filepath.Join(t.TempDir(), "auth.json")
		if err := os.WriteFile(path, []byte(tc.file), 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := loadNATSAuth(path)
		if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "--nats-auth") {
			t.Errorf("%s: %v, want an error with %q", tc.file, err, tc.want)
		}
		if err != nil && strings.Contains(err.Error(), secret) {
			t.Errorf("%s: the error shows the password: %v", tc.file, err)
		}
	}

	path := filepath.Join(t.TempDir(), "auth.json")
	good := `{"users":[{"user":"pub","password":"plain","permissions":{"publish":{"allow":["fhir.>"]}}},{"nkey":"` + pub + `"}]}`
	if err := os.WriteFile(path, []byte(good), 0o600); err != nil {
		t.Fatal(err)
	}
	a, err := loadNATSAuth(path)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(a.plain, []string{"pub"}) {
		t.Errorf("plain-text password users %v, want [pub]", a.plain)
	}
	if p := a.users[0].Permissions; p == nil || !slices.Equal(p.Subscribe.Deny, []string{">"}) || len(p.Subscribe.Allow) != 0 {
		t.Errorf("a left-out subscribe direction gives %+v, want deny >", p.Subscribe)
	}
	if a.nkeys[0].Nkey != pub || a.nkeys[0].Permissions != nil {
		t.Errorf("nkey user %+v, want %s with full permissions", a.nkeys[0], pub)
	}
}

// TestNATSClientFlags: the client credential flags are alternatives, the
// password comes from BULKSTREAM_NATS_PASSWORD, and no error shows it.
func TestNATSClientFlags(t *testing.T) {
	const secret = "s3cret-from-env"
	parse := func(args ...string) natsClientFlags {
		var f natsClientFlags
		fs := flag.NewFlagSet("t", flag.ContinueOnError)
		fs.SetOutput(io.Discard)
		bindNATSClientFlags(fs, &f, "the server")
		if err := parseFlags(fs, args); err != nil {
			t.Fatal(err)
		}
		return f
	}
	t.Setenv("BULKSTREAM_NATS_PASSWORD", secret)
	if f := parse("--nats-user", "u"); f.Password != secret {
		t.Fatalf("--nats-password from BULKSTREAM_NATS_PASSWORD = %q", f.Password)
	} else if opts, err := f.options(); err != nil || len(opts) != 1 {
		t.Errorf("--nats-user with the password from the environment: %d options, %v", len(opts), err)
	}
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(ca, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{}, "--nats-user and --nats-password go together"}, // password alone (from env)
		{[]string{"--nats-user", "u", "--nats-nkey", "x.nk"}, "alternatives"},
		{[]string{"--nats-creds", "missing.creds"}, "alternatives"},
		{[]string{"--nats-user", "u", "--nats-ca", ca}, "--nats-ca " + ca + ": no PEM certificate"},
	} {
		_, err := parse(tc.args...).options()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: %v, want %q", tc.args, err, tc.want)
		}
		if err != nil && strings.Contains(err.Error(), secret) {
			t.Errorf("%v: the error shows the password: %v", tc.args, err)
		}
	}
	os.Unsetenv("BULKSTREAM_NATS_PASSWORD")
	if _, err := parse("--nats-creds", "missing.creds").options(); err == nil || !strings.Contains(err.Error(), "--nats-creds") {
		t.Errorf("a missing .creds file: %v", err)
	}
	if _, err := parse("--nats-nkey", "missing.nk").options(); err == nil || !strings.Contains(err.Error(), "--nats-nkey") {
		t.Errorf("a missing seed file: %v", err)
	}
}

// TestCheckNATSFlags: the embedded server's security flags are refused
// with --nats-url (that server is configured elsewhere), TLS flags go
// together, client credentials given for the embedded server are ignored
// with a WARN that names the flags and never the password, and a
// non-loopback listener with --nats-auth but no TLS is logged at WARN.
func TestCheckNATSFlags(t *testing.T) {
	authFile, _ := writeNATSAuth(t, t.TempDir())
	const secret = "pw-never-logged"
	for _, tc := range []struct {
		c    natsConfig
		want string
	}{
		{natsConfig{NATSURL: "nats://x:4222", NATSAuth: authFile}, "--nats-auth and --nats-tls-cert configure the embedded NATS server"},
		{natsConfig{NATSURL: "nats://x:4222", NATSTLSCert: "c", NATSTLSKey: "k"}, "configure the embedded NATS server"},
		{natsConfig{NATSListen: "127.0.0.1:1", NATSTLSCert: "c"}, "--nats-tls-cert and --nats-tls-key go together"},
		{natsConfig{NATSURL: "nats://x:4222", NATSClient: natsClientFlags{Password: secret}}, "--nats-user and --nats-password go together"},
		{natsConfig{NATSListen: "127.0.0.1:1", NATSAuth: filepath.Join(t.TempDir(), "missing.json")}, "--nats-auth"},
	} {
		err := tc.c.checkNATS(false, slog.New(slog.DiscardHandler))
		if err == nil || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), secret) {
			t.Errorf("%+v: %v, want %q", tc.c, err, tc.want)
		}
	}

	var logs syncBuffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	c := natsConfig{NATSListen: "127.0.0.1:1", NATSClient: natsClientFlags{User: "u", Password: secret}}
	if err := c.checkNATS(false, log); err != nil {
		t.Fatal(err)
	}
	c = natsConfig{NATSListen: "0.0.0.0:1", NATSAuth: authFile}
	if err := c.checkNATS(false, log); err != nil {
		t.Fatal(err)
	}
	out := logs.String()
	if !strings.Contains(out, `level=WARN msg="NATS client credentials ignored`) || !strings.Contains(out, "--nats-user,--nats-password") {
		t.Errorf("client credentials for the embedded server were not reported at WARN:\n%s", out)
	}
	if !strings.Contains(out, `level=WARN msg="embedded NATS authorization is on but not encrypted`) {
		t.Errorf("a non-loopback listener without TLS was not reported at WARN:\n%s", out)
	}
	if strings.Contains(out, secret) {
		t.Errorf("the log shows the password:\n%s", out)
	}
}
