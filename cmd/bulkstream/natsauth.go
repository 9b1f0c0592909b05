package main

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"regexp"
	"strings"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
	"golang.org/x/crypto/bcrypt"

	"github.com/bulkstream/bulkstream/ingest"
)

// This file is the NATS side of securing bulkstream:
//
//   - the --nats-auth file, turned into nats-server's own authorization
//     options (server.Options Users and Nkeys, each with
//     server.Permissions), so the embedded server enforces it;
//   - bulkstream's own connection to its embedded server: in-process, as
//     an nkey user made at every start whose seed never leaves memory and
//     that the server accepts only over the in-process connection;
//   - the rule that a non-loopback --nats-listen needs --nats-auth (or
//     --insecure), as a non-loopback --listen needs --clients;
//   - the client flags (--nats-creds, --nats-user/--nats-password,
//     --nats-nkey, --nats-ca) of publish, rebuild and serve --nats-url.

// bulkstreamInboxPrefix is the inbox prefix of bulkstream's own
// connections. Pull consumers receive the stream's messages on their
// inbox: a publisher allowed to subscribe to _INBOX.> (to get its
// publish acks) must not be able to read them there.
const bulkstreamInboxPrefix = "_INBOX_bulkstream"

// bulkstreamPermissions is what bulkstream's own NATS user needs: the
// JetStream API (stream, consumer and dead-letter stream management, pull
// fetches, KV and Object Store buckets), acks, dead-letter publishes and
// replies on its own inbox prefix. The README's `bulkstream` role is
// exactly this.
func bulkstreamPermissions() *server.Permissions {
	return &server.Permissions{
		Publish: &server.SubjectPermission{Allow: []string{
			"$JS.API.>", "$JS.ACK.>", ingest.DefaultDLQSubjectPrefix + ".>", "$KV.>", "$O.>",
		}},
		Subscribe: &server.SubjectPermission{Allow: []string{bulkstreamInboxPrefix + ".>"}},
	}
}

// natsAuthFile is the --nats-auth file (JSON). Field names follow
// nats-server's own configuration, so a role carries over to an external
// server's authorization block unchanged.
type natsAuthFile struct {
	Users []natsAuthUser `json:"users"`
}

type natsAuthUser struct {
	User     string `json:"user,omitempty"`
	Password string `json:"password,omitempty"` // bcrypt hash (or, logged at WARN, plain text)
	Nkey     string `json:"nkey,omitempty"`     // public user nkey, U…
	// Permissions: absent means everything (an administrator); present,
	// a direction it leaves out allows nothing.
	Permissions *natsPermissions `json:"permissions,omitempty"`
}

type natsPermissions struct {
	Publish   *natsSubjects `json:"publish,omitempty"`
	Subscribe *natsSubjects `json:"subscribe,omitempty"`
}

type natsSubjects struct {
	Allow []string `json:"allow,omitempty"`
	Deny  []string `json:"deny,omitempty"`
}

// natsAuth is a loaded --nats-auth file in nats-server's terms.
type natsAuth struct {
	users []*server.User
	nkeys []*server.NkeyUser
	plain []string // users whose password is not a bcrypt hash
}

var bcryptPrefix = regexp.MustCompile(`^\$2[abxy]\$\d{2}\$`)

// loadNATSAuth reads and validates a --nats-auth file. Errors name the
// entry and the field, never a password.
func loadNATSAuth(path string) (*natsAuth, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("--nats-auth: %w", err)
	}
	var f natsAuthFile
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&f); err != nil {
		return nil, fmt.Errorf("--nats-auth %s: %w", path, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, fmt.Errorf("--nats-auth %s: data after the JSON object", path)
	}
	if len(f.Users) == 0 {
		return nil, fmt.Errorf("--nats-auth %s: no users: nobody could connect", path)
	}
	a := &natsAuth{}
	seen := map[string]bool{}
	for i, u := range f.Users {
		where := fmt.Sprintf("--nats-auth %s: users[%d]", path, i)
		perms, err := u.Permissions.server()
		if err != nil {
			return nil, fmt.Errorf("%s: permissions.%w", where, err)
		}
		switch {
		case u.Nkey != "" && (u.User != "" || u.Password != ""):
			return nil, fmt.Errorf("%s: give either nkey or user and password, not both", where)
		case u.Nkey != "":
			if !nkeys.IsValidPublicUserKey(u.Nkey) {
				return nil, fmt.Errorf("%s: nkey %q is not a public user nkey (U…; `nk -gen user -pubout`)", where, u.Nkey)
			}
			if seen["nkey "+u.Nkey] {
				return nil, fmt.Errorf("%s: nkey %s appears twice", where, u.Nkey)
			}
			seen["nkey "+u.Nkey] = true
			a.nkeys = append(a.nkeys, &server.NkeyUser{Nkey: u.Nkey, Permissions: perms})
		case u.User == "" || u.Password == "":
			return nil, fmt.Errorf("%s: want user and password, or nkey", where)
		default:
			if strings.ContainsAny(u.User, " \t\r\n") {
				return nil, fmt.Errorf("%s: user %q has white space", where, u.User)
			}
			if seen["user "+u.User] {
				return nil, fmt.Errorf("%s: user %q appears twice", where, u.User)
			}
			seen["user "+u.User] = true
			if bcryptPrefix.MatchString(u.Password) {
				if _, err := bcrypt.Cost([]byte(u.Password)); err != nil {
					return nil, fmt.Errorf("%s: user %q: password looks like a bcrypt hash but is not a valid one", where, u.User)
				}
			} else {
				a.plain = append(a.plain, u.User)
			}
			a.users = append(a.users, &server.User{Username: u.User, Password: u.Password, Permissions: perms})
		}
	}
	return a, nil
}

// server returns p in nats-server's terms: nil (everything) when p is
// absent, and a direction p leaves out (or leaves empty) allows nothing.
func (p *natsPermissions) server() (*server.Permissions, error) {
	if p == nil {
		return nil, nil
	}
	pub, err := p.Publish.server()
	if err != nil {
		return nil, fmt.Errorf("publish.%w", err)
	}
	sub, err := p.Subscribe.server()
	if err != nil {
		return nil, fmt.Errorf("subscribe.%w", err)
	}
	return &server.Permissions{Publish: pub, Subscribe: sub}, nil
}

func (s *natsSubjects) server() (*server.SubjectPermission, error) {
	if s == nil || (len(s.Allow) == 0 && len(s.Deny) == 0) {
		return &server.SubjectPermission{Deny: []string{">"}}, nil
	}
	for _, list := range []struct {
		name string
		subj []string
	}{{"allow", s.Allow}, {"deny", s.Deny}} {
		for _, subj := range list.subj {
			if !validPermSubject(subj) {
				return nil, fmt.Errorf("%s: %q is not a valid subject (tokens separated by '.', '*' a whole token, '>' the last)", list.name, subj)
			}
		}
	}
	return &server.SubjectPermission{Allow: s.Allow, Deny: s.Deny}, nil
}

// validPermSubject reports whether s is a NATS subject, wildcards allowed.
func validPermSubject(s string) bool {
	if s == "" || strings.ContainsAny(s, " \t\r\n") {
		return false
	}
	toks := strings.Split(s, ".")
	for i, t := range toks {
		switch {
		case t == "":
			return false
		case t == ">" && i != len(toks)-1:
			return false
		case t != "*" && t != ">" && strings.ContainsAny(t, "*>"):
			return false
		}
	}
	return true
}

// checkNATS validates the NATS security flags and applies the listener
// rule: the embedded server on a non-loopback --nats-listen needs
// --nats-auth, or insecure (--insecure, logged at WARN). It logs what the
// embedded listener lets in.
func (c natsConfig) checkNATS(insecure bool, log *slog.Logger) error {
	if (c.NATSTLSCert == "") != (c.NATSTLSKey == "") {
		return errors.New("--nats-tls-cert and --nats-tls-key go together")
	}
	if c.NATSURL != "" {
		if c.NATSAuth != "" || c.NATSTLSCert != "" {
			return errors.New("--nats-auth and --nats-tls-cert configure the embedded NATS server; with --nats-url, " +
				"configure authorization and TLS on that server and give bulkstream its credentials (--nats-user, --nats-nkey, --nats-creds, --nats-ca)")
		}
		_, err := c.NATSClient.options()
		return err
	}
	if given := c.NATSClient.given(); len(given) > 0 {
		log.Warn("NATS client credentials ignored: they are for --nats-url; bulkstream connects to its embedded server in-process",
			"flags", strings.Join(given, ","))
	}
	if _, err := c.natsTLSConfig(); err != nil {
		return err
	}
	if c.NATSAuth != "" {
		a, err := loadNATSAuth(c.NATSAuth)
		if err != nil {
			return err
		}
		if len(a.plain) > 0 {
			log.Warn("--nats-auth has plain-text passwords: store bcrypt hashes instead (`nats server passwd`, or `htpasswd -nbB '' PASSWORD`)",
				"users", strings.Join(a.plain, ","))
		}
		log.Info("embedded NATS authorization on", "nats_listen", c.NATSListen, "nats_auth", c.NATSAuth,
			"users", len(a.users)+len(a.nkeys), "tls", c.NATSTLSCert != "")
		if c.NATSTLSCert == "" && !isLoopback(c.NATSListen) {
			log.Warn("embedded NATS authorization is on but not encrypted: give --nats-tls-cert and --nats-tls-key, "+
				"or resources and passwords cross the network in clear text", "nats_listen", c.NATSListen)
		}
		return nil
	}
	if isLoopback(c.NATSListen) {
		log.Info("embedded NATS has no authentication (no --nats-auth): listening on a loopback address only; "+
			"any process on this host can read, publish and delete every resource and the stream", "nats_listen", c.NATSListen)
		return nil
	}
	if !insecure {
		return fmt.Errorf("--nats-listen %s is not a loopback address and no --nats-auth file is given: anyone who reaches it "+
			"could read every resource, publish changes and delete the stream; give --nats-auth (NATS users and permissions), "+
			"listen on 127.0.0.1, or pass --insecure if the network guards it", c.NATSListen)
	}
	log.Warn("INSECURE: the embedded NATS server has no authentication on a non-loopback address (--insecure): anyone who "+
		"reaches it can read every resource, publish changes and delete the stream", "nats_listen", c.NATSListen)
	return nil
}

// natsTLSConfig is the embedded listener's TLS configuration, nil without
// --nats-tls-cert: TLS 1.2 or later, Go's default cipher suites.
func (c natsConfig) natsTLSConfig() (*tls.Config, error) {
	if c.NATSTLSCert == "" {
		return nil, nil
	}
	cert, err := tls.LoadX509KeyPair(c.NATSTLSCert, c.NATSTLSKey)
	if err != nil {
		return nil, fmt.Errorf("--nats-tls-cert/--nats-tls-key: %w", err)
	}
	return &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert}}, nil
}

// internalNATSUser makes bulkstream's own user of its embedded server: a
// fresh nkey whose seed stays in this process, with bulkstreamPermissions,
// accepted over the in-process connection only. It returns the user for
// the server and the option that authenticates as it.
func internalNATSUser() (*server.NkeyUser, nats.Option, error) {
	kp, err := nkeys.CreateUser()
	if err != nil {
		return nil, nil, fmt.Errorf("embedded nats: own nkey: %w", err)
	}
	pub, err := kp.PublicKey()
	if err != nil {
		return nil, nil, fmt.Errorf("embedded nats: own nkey: %w", err)
	}
	u := &server.NkeyUser{
		Nkey:        pub,
		Permissions: bulkstreamPermissions(),
		// jwt.ConnectionTypeInProcess: no network connection can use it.
		AllowedConnectionTypes: map[string]struct{}{"IN_PROCESS": {}},
	}
	return u, nats.Nkey(pub, kp.Sign), nil
}

// natsClientFlags are the credentials a command connects to a NATS server
// with: at most one of a .creds file, a user and password, or an nkey
// seed; and the CA of a server's TLS certificate.
type natsClientFlags struct {
	Creds    string
	User     string
	Password string // never logged; from BULKSTREAM_NATS_PASSWORD too
	Nkey     string // seed file
	CA       string
}

func bindNATSClientFlags(fs *flag.FlagSet, f *natsClientFlags, server string) {
	fs.StringVar(&f.Creds, "nats-creds", "", "NATS credentials file (.creds: user JWT and nkey seed) for "+server)
	fs.StringVar(&f.User, "nats-user", "", "NATS user for "+server+"; needs --nats-password")
	fs.StringVar(&f.Password, "nats-password", "", "password of --nats-user; prefer the environment variable BULKSTREAM_NATS_PASSWORD (not shown by ps)")
	fs.StringVar(&f.Nkey, "nats-nkey", "", "file holding the NATS user nkey seed (SU…) for "+server)
	fs.StringVar(&f.CA, "nats-ca", "", "PEM CA certificate(s) that signed the TLS certificate of "+server)
}

// given names the flags set, for messages (never their values).
func (f natsClientFlags) given() []string {
	var names []string
	for _, v := range []struct{ name, val string }{
		{"--nats-creds", f.Creds}, {"--nats-user", f.User}, {"--nats-password", f.Password}, {"--nats-nkey", f.Nkey}, {"--nats-ca", f.CA},
	} {
		if v.val != "" {
			names = append(names, v.name)
		}
	}
	return names
}

// options turns the flags into nats.go options, checking up front what
// can be checked (files exist, one kind of credential, CA parses).
func (f natsClientFlags) options() ([]nats.Option, error) {
	kinds := 0
	for _, set := range []bool{f.Creds != "", f.User != "" || f.Password != "", f.Nkey != ""} {
		if set {
			kinds++
		}
	}
	if kinds > 1 {
		return nil, errors.New("--nats-creds, --nats-user/--nats-password and --nats-nkey are alternatives: give one")
	}
	var opts []nats.Option
	switch {
	case f.Creds != "":
		if _, err := os.Stat(f.Creds); err != nil {
			return nil, fmt.Errorf("--nats-creds: %w", err)
		}
		opts = append(opts, nats.UserCredentials(f.Creds))
	case f.User != "" || f.Password != "":
		if f.User == "" || f.Password == "" {
			return nil, errors.New("--nats-user and --nats-password go together (the password may come from BULKSTREAM_NATS_PASSWORD)")
		}
		opts = append(opts, nats.UserInfo(f.User, f.Password))
	case f.Nkey != "":
		o, err := nats.NkeyOptionFromSeed(f.Nkey)
		if err != nil {
			return nil, fmt.Errorf("--nats-nkey %s: %w", f.Nkey, err)
		}
		opts = append(opts, o)
	}
	if f.CA != "" {
		b, err := os.ReadFile(f.CA)
		if err != nil {
			return nil, fmt.Errorf("--nats-ca: %w", err)
		}
		if !x509.NewCertPool().AppendCertsFromPEM(b) {
			return nil, fmt.Errorf("--nats-ca %s: no PEM certificate in it", f.CA)
		}
		opts = append(opts, nats.RootCAs(f.CA))
	}
	return opts, nil
}

// natsConnectHint adds what to do to a connection error that credentials
// or a CA would fix.
func natsConnectHint(err error) error {
	if err == nil {
		return nil
	}
	msg := err.Error()
	var unknownCA x509.UnknownAuthorityError
	switch {
	case errors.Is(err, nats.ErrAuthorization) || strings.Contains(strings.ToLower(msg), "authorization violation"):
		return fmt.Errorf("%w (the NATS server requires credentials or refused these: give --nats-user with --nats-password "+
			"or BULKSTREAM_NATS_PASSWORD, --nats-nkey or --nats-creds)", err)
	case errors.As(err, &unknownCA) || strings.Contains(msg, "certificate signed by unknown authority"):
		return fmt.Errorf("%w (give the CA of the NATS server's certificate with --nats-ca)", err)
	case errors.Is(err, nats.ErrSecureConnRequired):
		return fmt.Errorf("%w (the NATS server requires TLS: use a tls:// URL, with --nats-ca for a private CA)", err)
	}
	return err
}
