package smart

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestLoadRegistry(t *testing.T) {
	ec := newECKey(t)
	ecPub := jwkJSON(t, &ec.PublicKey, "k1")
	ecPub2 := jwkJSON(t, &newECKey(t).PublicKey, "k2")
	rsaPub := jwkJSON(t, &newRSAKey(t, 2048).PublicKey, "r1")
	p256, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	client := func(id, keys string) string {
		return fmt.Sprintf(`{"id":%q,"jwks":{"keys":[%s]},"scopes":["system/*.rs"]}`, id, keys)
	}
	reg := func(clients ...string) string { return `{"clients":[` + strings.Join(clients, ",") + `]}` }
	urlClient := func(u string) string {
		return fmt.Sprintf(`{"id":"a","jwks_url":%q,"scopes":["system/*.rs"]}`, u)
	}

	tests := []struct {
		name    string
		file    string
		files   map[string]string // extra files beside the registry
		wantErr string
		check   func(t *testing.T, r *Registry)
	}{
		{name: "inline EC and RSA", file: reg(client("app-1", ecPub+","+rsaPub), `{"id":"b_2.x~y","jwks":{"keys":[`+ecPub2+`]},"scopes":["system/Patient.read","system/Observation.rs"],"max_jobs":5,"max_finished_exports":7}`),
			check: func(t *testing.T, r *Registry) {
				c, ok := r.Client("app-1")
				if !ok {
					t.Fatal("app-1 missing")
				}
				if c.MaxJobs != DefaultMaxJobs || !slices.Equal(c.KeyIDs(), []string{"k1", "r1"}) || !slices.Equal(c.Scopes, []string{"system/*.rs"}) {
					t.Fatalf("app-1 = %+v, keys %q", c, c.KeyIDs())
				}
				if c, _ := r.Client("b_2.x~y"); c == nil || c.MaxJobs != 5 || c.MaxFinished != 7 {
					t.Fatalf("b_2.x~y = %+v, want max_jobs 5, max_finished_exports 7", c)
				}
				if c.MaxFinished != 0 {
					t.Fatalf("app-1 max_finished_exports = %d, want 0 (the server's default)", c.MaxFinished)
				}
				if rs := c.ReadScopes(); !rs.All() {
					t.Fatalf("app-1 ReadScopes = %q, want every type", rs)
				}
				if c, _ := r.Client("b_2.x~y"); !slices.Equal(c.ReadScopes().Types(), []string{"Observation", "Patient"}) {
					t.Fatalf("b_2.x~y ReadScopes = %q", c.ReadScopes().Types())
				}
				if _, ok := r.Client("nobody"); ok {
					t.Fatal("unknown client found")
				}
				if got := r.IDs(); !slices.Equal(got, []string{"app-1", "b_2.x~y"}) {
					t.Fatalf("IDs() = %q", got)
				}
			}},
		{name: "jwks_file relative to the registry", file: reg(`{"id":"f","jwks_file":"keys/f.json","scopes":["system/*.read"]}`),
			files: map[string]string{"keys/f.json": `{"keys":[` + ecPub + `]}`},
			check: func(t *testing.T, r *Registry) {
				if c, ok := r.Client("f"); !ok || !slices.Equal(c.KeyIDs(), []string{"k1"}) {
					t.Fatalf("client f = %+v", c)
				}
			}},
		{name: "jwks_url", file: reg(`{"id":"u","jwks_url":"https://client.example/.well-known/jwks.json?v=2","scopes":["system/*.rs"]}`,
			`{"id":"v","jwks_url":"http://127.0.0.1:8080/jwks.json","scopes":["system/*.rs"]}`,
			`{"id":"w","jwks_url":"http://localhost/jwks.json","scopes":["system/*.rs"]}`,
			`{"id":"x","jwks_url":"http://[::1]:9/jwks.json","scopes":["system/*.rs"]}`,
			`{"id":"y","jwks_url":"http://127.200.0.1/jwks.json","scopes":["system/*.rs"]}`),
			check: func(t *testing.T, r *Registry) {
				c, ok := r.Client("u")
				if !ok || c.JWKSURL != "https://client.example/.well-known/jwks.json?v=2" || c.KeyIDs() != nil {
					t.Fatalf("client u = %+v, keys %q; want the jwks_url and no inline keys", c, c.KeyIDs())
				}
				for _, id := range []string{"v", "w", "x", "y"} {
					if c, ok := r.Client(id); !ok || c.JWKSURL == "" {
						t.Fatalf("loopback http client %s = %+v", id, c)
					}
				}
				if c, _ := r.Client("u"); c.MaxJobs != DefaultMaxJobs {
					t.Fatalf("max_jobs = %d", c.MaxJobs)
				}
			}},
		{name: "empty registry", file: `{"clients":[]}`, check: func(t *testing.T, r *Registry) {
			if r.Len() != 0 {
				t.Fatal("not empty")
			}
		}},

		{name: "not JSON", file: `{"clients":`, wantErr: "unexpected EOF"},
		{name: "trailing data", file: `{"clients":[]} {}`, wantErr: "trailing data"},
		{name: "unknown field", file: reg(`{"id":"a","jwks":{"keys":[` + ecPub + `]},"scopes":["system/*.rs"],"max_job":3}`), wantErr: `unknown field "max_job"`},
		{name: "max_finished_exports -1 is no per-client cap", file: reg(`{"id":"a","jwks":{"keys":[` + ecPub + `]},"scopes":["system/*.rs"],"max_finished_exports":-1}`),
			check: func(t *testing.T, r *Registry) {
				if c, _ := r.Client("a"); c.MaxFinished != -1 {
					t.Fatalf("max_finished_exports = %d, want -1", c.MaxFinished)
				}
			}},
		{name: "max_finished_exports below -1", file: reg(`{"id":"a","jwks":{"keys":[` + ecPub + `]},"scopes":["system/*.rs"],"max_finished_exports":-2}`), wantErr: `client "a": max_finished_exports -2: want a positive cap`},
		{name: "max_finished_exports not a number", file: reg(`{"id":"a","jwks":{"keys":[` + ecPub + `]},"scopes":["system/*.rs"],"max_finished_exports":"5"}`), wantErr: "max_finished_exports"},
		{name: "duplicate id", file: reg(client("a", ecPub), client("a", ecPub2)), wantErr: `duplicate client id "a"`},
		{name: "missing id", file: reg(client("", ecPub)), wantErr: `client "#1": missing id`},
		{name: "id with space", file: reg(client("a b", ecPub)), wantErr: `id has character ' '`},
		{name: "id with slash", file: reg(client("a/b", ecPub)), wantErr: `id has character '/'`},
		{name: "id starting with dot", file: reg(client("..", ecPub)), wantErr: "must not start with '.'"},
		{name: "id too long", file: reg(client(strings.Repeat("a", 129), ecPub)), wantErr: "longer than 128"},
		{name: "private EC key", file: reg(client("a", jwkJSON(t, ec, "k1"))), wantErr: `kid "k1": private key material ("d") found`},
		{name: "private RSA key", file: reg(client("a", jwkJSON(t, newRSAKey(t, 2048), "r9"))), wantErr: `kid "r9": private key material`},
		{name: "symmetric key", file: reg(client("a", `{"kty":"oct","kid":"s","k":"c2VjcmV0"}`)), wantErr: `private key material ("k")`},
		{name: "missing kid", file: reg(client("a", jwkJSON(t, &ec.PublicKey, ""))), wantErr: "key #1: missing kid"},
		{name: "missing kty", file: reg(client("a", `{"kid":"x","crv":"P-384","x":"AA","y":"AA"}`)), wantErr: `kid "x": missing kty`},
		{name: "unsupported kty", file: reg(client("a", `{"kty":"OKP","kid":"x","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}`)), wantErr: `kty "OKP" not supported`},
		{name: "bad EC point", file: reg(client("a", `{"kty":"EC","kid":"x","crv":"P-384","x":"AA","y":"AA"}`)), wantErr: `kid "x": invalid EC key`},
		{name: "P-256 key", file: reg(client("a", jwkJSON(t, &p256.PublicKey, "p"))), wantErr: "only P-384"},
		{name: "small RSA key", file: reg(client("a", jwkJSON(t, &newRSAKey(t, 1024).PublicKey, "small"))), wantErr: "1024 bits: at least 2048"},
		{name: "key alg RS256", file: reg(client("a", strings.Replace(rsaPub, `"kid"`, `"alg":"RS256","kid"`, 1))), wantErr: `alg "RS256"`},
		{name: "key use enc", file: reg(client("a", strings.Replace(ecPub, `"kid"`, `"use":"enc","kid"`, 1))), wantErr: `use "enc"`},
		{name: "duplicate kid in a client", file: reg(client("a", ecPub+","+strings.Replace(ecPub2, `"k2"`, `"k1"`, 1))), wantErr: `duplicate kid "k1"`},
		{name: "no keys", file: reg(client("a", "")), wantErr: "jwks has no keys"},
		{name: "neither jwks nor file", file: reg(`{"id":"a","scopes":["system/*.rs"]}`), wantErr: "no keys: give jwks"},
		{name: "both jwks and file", file: reg(`{"id":"a","jwks":{"keys":[` + ecPub + `]},"jwks_file":"x.json","scopes":["system/*.rs"]}`), wantErr: "both jwks and jwks_file"},
		{name: "both jwks and jwks_url", file: reg(`{"id":"a","jwks":{"keys":[` + ecPub + `]},"jwks_url":"https://c.example/jwks.json","scopes":["system/*.rs"]}`), wantErr: "both jwks and jwks_url"},
		{name: "both jwks_file and jwks_url", file: reg(`{"id":"a","jwks_file":"x.json","jwks_url":"https://c.example/jwks.json","scopes":["system/*.rs"]}`), wantErr: "both jwks_file and jwks_url"},
		{name: "all three key sources", file: reg(`{"id":"a","jwks":{"keys":[` + ecPub + `]},"jwks_file":"x.json","jwks_url":"https://c.example/jwks.json","scopes":["system/*.rs"]}`), wantErr: "jwks, jwks_file, jwks_url all given"},
		{name: "jwks_url http not loopback", file: reg(urlClient("http://client.example/jwks.json")), wantErr: "plain http is accepted only for a loopback host"},
		{name: "jwks_url http private address", file: reg(urlClient("http://10.0.0.1/jwks.json")), wantErr: "plain http is accepted only for a loopback host"},
		{name: "jwks_url http localhost lookalike", file: reg(urlClient("http://localhost.example.com/jwks.json")), wantErr: "plain http is accepted only for a loopback host"},
		{name: "jwks_url other scheme", file: reg(urlClient("ftp://client.example/jwks.json")), wantErr: `scheme "ftp", want https`},
		{name: "jwks_url relative", file: reg(urlClient("/.well-known/jwks.json")), wantErr: "not an absolute https URL"},
		{name: "jwks_url without host", file: reg(urlClient("https:///jwks.json")), wantErr: "not an absolute https URL"},
		{name: "jwks_url opaque", file: reg(urlClient("https:client.example/jwks.json")), wantErr: "not an absolute https URL"},
		{name: "jwks_url userinfo", file: reg(urlClient("https://user:secret@client.example/jwks.json")), wantErr: "must not contain userinfo"},
		{name: "jwks_url fragment", file: reg(urlClient("https://client.example/jwks.json#k1")), wantErr: "must not contain a fragment"},
		{name: "jwks_url empty fragment", file: reg(urlClient("https://client.example/jwks.json#")), wantErr: "must not contain a fragment"},
		{name: "jwks_url too long", file: reg(urlClient("https://client.example/" + strings.Repeat("a", 2048))), wantErr: "longer than 2048 bytes"},
		{name: "jwks_url not a URL", file: reg(urlClient("https://client example/jwks.json")), wantErr: "not a valid URL"},
		{name: "jwks_uri typo", file: reg(`{"id":"a","jwks_uri":"https://c.example/jwks.json","scopes":["system/*.rs"]}`), wantErr: `unknown field "jwks_uri"`},
		{name: "missing jwks_file", file: reg(`{"id":"a","jwks_file":"nope.json","scopes":["system/*.rs"]}`), wantErr: "jwks_file: open"},
		{name: "no scopes", file: reg(`{"id":"a","jwks":{"keys":[` + ecPub + `]},"scopes":[]}`), wantErr: "no scopes"},
		{name: "bad scope", file: reg(`{"id":"a","jwks":{"keys":[` + ecPub + `]},"scopes":["system/Foo.rs"]}`), wantErr: `unknown resource type "Foo"`},
		{name: "user scope", file: reg(`{"id":"a","jwks":{"keys":[` + ecPub + `]},"scopes":["user/*.rs"]}`), wantErr: "only system/ scopes"},
		{name: "max_jobs zero", file: reg(`{"id":"a","jwks":{"keys":[` + ecPub + `]},"scopes":["system/*.rs"],"max_jobs":0}`), wantErr: "max_jobs 0"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			for name, content := range tc.files {
				p := filepath.Join(dir, name)
				if err := mkdirAll(filepath.Dir(p)); err != nil {
					t.Fatal(err)
				}
				writeFile(t, p, content)
			}
			path := writeFile(t, filepath.Join(dir, "clients.json"), tc.file)
			r, err := LoadRegistry(path)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want it to contain %q", err, tc.wantErr)
				}
				if r != nil {
					t.Fatal("registry returned with an error")
				}
				if !strings.Contains(err.Error(), path) && !strings.Contains(err.Error(), "read client registry") {
					t.Fatalf("err %q does not name the file", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tc.check(t, r)
		})
	}
}

func TestLoadRegistryMissingFile(t *testing.T) {
	if _, err := LoadRegistry(tempPath(t, "nope.json")); err == nil {
		t.Fatal("no error for a missing file")
	}
}

func TestClientsReload(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "clients.json")
	k1 := jwkJSON(t, &newECKey(t).PublicKey, "k1")
	writeFile(t, path, `{"clients":[{"id":"a","jwks":{"keys":[`+k1+`]},"scopes":["system/*.rs"]}]}`)
	c, err := OpenClients(path)
	if err != nil {
		t.Fatal(err)
	}
	before := c.Registry()

	// A broken file is refused and the old registry stays.
	entry := `{"id":"a","jwks":{"keys":[` + k1 + `]},"scopes":["system/*.rs"]}`
	writeFile(t, path, `{"clients":[`+entry+`,`+entry+`]}`)
	if err := c.Reload(); err == nil || !strings.Contains(err.Error(), "duplicate client id") {
		t.Fatalf("Reload = %v, want a validation error", err)
	}
	if c.Registry() != before {
		t.Fatal("registry replaced by a broken file")
	}
	if _, ok := c.Client("a"); !ok {
		t.Fatal("client a lost after a failed reload")
	}
	writeFile(t, path, `not json`)
	if err := c.Reload(); err == nil {
		t.Fatal("Reload accepted garbage")
	}
	if _, ok := c.Client("a"); !ok {
		t.Fatal("client a lost after a failed reload")
	}

	// A good file replaces it.
	writeFile(t, path, `{"clients":[{"id":"b","jwks":{"keys":[`+k1+`]},"scopes":["system/*.rs"]}]}`)
	if err := c.Reload(); err != nil {
		t.Fatal(err)
	}
	if _, ok := c.Client("a"); ok {
		t.Fatal("client a still present after reload")
	}
	if _, ok := c.Client("b"); !ok {
		t.Fatal("client b missing after reload")
	}
	// The old snapshot is unchanged for requests that still hold it.
	if _, ok := before.Client("a"); !ok {
		t.Fatal("old snapshot mutated")
	}
}

func TestOpenClientsBroken(t *testing.T) {
	path := writeFile(t, tempPath(t, "clients.json"), `{"clients":[{"id":"a"}]}`)
	if _, err := OpenClients(path); err == nil {
		t.Fatal("OpenClients accepted a broken registry")
	}
}
