package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"time"

	"github.com/bulkstream/bulkstream/internal/bulkclient"
	"github.com/bulkstream/bulkstream/internal/smart"
)

const clientUsage = `bulkstream client: SMART Backend Services client keys and access tokens

usage: bulkstream client <keygen|token> [flags]
       bulkstream client <keygen|token> --help

  keygen --id ID [--alg ES384|RS384] [--out FILE]
        create a signing key for a SMART Backend Services client: the
        private JWK goes to FILE (default ID.jwk, mode 0600, never
        overwritten), the entry for the --clients registry to stdout
  token --url BASE --client-id ID --key FILE [--scope SCOPES]
        get an access token: discover the token endpoint from
        BASE/.well-known/smart-configuration, sign a client assertion with
        the key, print the token response (access_token, expires_in, scope)
`

func runClient(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, clientUsage)
		return errors.New("client: missing subcommand")
	}
	switch args[0] {
	case "keygen":
		return runClientKeygen(args[1:], stdout, stderr)
	case "token":
		return runClientToken(ctx, args[1:], stdout, stderr)
	case "-h", "--help", "help":
		fmt.Fprint(stdout, clientUsage)
		return nil
	default:
		fmt.Fprint(stderr, clientUsage)
		return fmt.Errorf("client: unknown subcommand %q", args[0])
	}
}

// keygenFlags are client keygen's flags.
type keygenFlags struct{ id, alg, out *string }

func bindKeygenFlags(fs *flag.FlagSet) keygenFlags {
	return keygenFlags{
		id:  fs.String("id", "", "client id, as registered in the --clients file (required; 1 to 128 letters, digits and . _ ~ -, not starting with .)"),
		alg: fs.String("alg", "ES384", "signing algorithm: ES384 (P-384) or RS384 (RSA "+strconv.Itoa(smart.ClientRSABits)+" bits)"),
		out: fs.String("out", "", "file for the private key, created with mode 0600 and never overwritten (default <id>.jwk)"),
	}
}

// tokenFlags are client token's flags.
type tokenFlags struct{ base, id, keyFile, scope *string }

func bindTokenFlags(fs *flag.FlagSet) tokenFlags {
	return tokenFlags{
		base:    fs.String("url", "", "FHIR base URL of the server, e.g. https://bulk.example.org/fhir (required)"),
		id:      fs.String("client-id", "", "registered client id (required)"),
		keyFile: fs.String("key", "", "private JWK written by client keygen (required)"),
		scope:   fs.String("scope", "system/*.rs", "requested scopes, space-separated (SMART v1 or v2 system scopes)"),
	}
}

func runClientKeygen(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("client keygen", stderr)
	kf := bindKeygenFlags(fs)
	id, alg, out := kf.id, kf.alg, kf.out
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *id == "" {
		return errors.New("client keygen: --id is required")
	}
	if *out == "" {
		*out = *id + ".jwk"
	}
	priv, entry, err := smart.GenerateClientKey(*id, *alg)
	if err != nil {
		return err
	}
	// O_EXCL: a second keygen must never replace a key a client still uses.
	f, err := os.OpenFile(*out, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("client keygen: %w", err)
	}
	if _, err := f.Write(append(priv, '\n')); err != nil {
		f.Close()
		return fmt.Errorf("client keygen: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("client keygen: %w", err)
	}
	fmt.Fprintf(stderr, "private key written to %s (keep it secret); add this entry to the clients file:\n", *out)
	_, err = fmt.Fprintf(stdout, "%s\n", entry)
	return err
}

func runClientToken(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("client token", stderr)
	tf := bindTokenFlags(fs)
	base, id, keyFile, scope := tf.base, tf.id, tf.keyFile, tf.scope
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *base == "" || *id == "" || *keyFile == "" {
		return errors.New("client token: --url, --client-id and --key are required")
	}
	key, err := os.ReadFile(*keyFile)
	if err != nil {
		return fmt.Errorf("client token: %w", err)
	}
	hc := &http.Client{Timeout: 30 * time.Second}
	_, raw, err := fetchToken(ctx, hc, *base, *id, key, *scope)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(stdout, "%s\n", raw)
	return err
}

// fetchToken is bulkclient.FetchToken: discovery, signed assertion, token
// request; the decoded response and its raw JSON.
func fetchToken(ctx context.Context, hc *http.Client, base, clientID string, key []byte, scope string) (bulkclient.TokenResponse, []byte, error) {
	return bulkclient.FetchToken(ctx, hc, base, clientID, key, scope)
}
