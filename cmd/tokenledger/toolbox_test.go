package main

import (
	"bytes"
	"encoding/json"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// runFail runs a command that must fail: it returns stdout and stderr and
// checks the exit is non-zero and the error is one line.
func runFail(t *testing.T, bin string, env []string, stdin string, args ...string) (string, string) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdin = strings.NewReader(stdin)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if err == nil {
		t.Fatalf("%s: succeeded, want a failure\nstdout: %s", strings.Join(args, " "), stdout.Bytes())
	}
	if cmd.ProcessState.ExitCode() == 0 {
		t.Fatalf("%s: exit 0", strings.Join(args, " "))
	}
	msg := strings.TrimRight(stderr.String(), "\n")
	if strings.Count(msg, "\n") != 0 || !strings.HasPrefix(msg, "tokenledger: ") {
		t.Fatalf("%s: want a one-line error, got %q", strings.Join(args, " "), msg)
	}
	return stdout.String(), msg
}

// runIn is runCLI with stdin.
func runIn(t *testing.T, bin string, env []string, stdin string, args ...string) []byte {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdin = strings.NewReader(stdin)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s: %v\nstdout: %s\nstderr: %s", strings.Join(args, " "), err, stdout.Bytes(), stderr.Bytes())
	}
	return stdout.Bytes()
}

func decode[T any](t *testing.T, b []byte) T {
	t.Helper()
	var v T
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatalf("not JSON: %v: %s", err, b)
	}
	return v
}

// eventually polls f until it holds: client changes reach the service by
// its watch of the clients bucket.
func eventually(t *testing.T, what string, f func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if f() {
			return
		}
	}
	t.Fatalf("%s: did not happen within 10s", what)
}

// Every command against a real server, with the JSON each prints.
func TestToolbox(t *testing.T) {
	bin := buildBinary(t)
	d := startServe(t, bin, nil, "--listen", "127.0.0.1:0", "--data", t.TempDir())
	url := []string{"TOKENLEDGER_NATS_URL=" + d.url}

	runCLI(t, bin, url, "client", "create", "--id", "web")
	runCLI(t, bin, url, "client", "create", "--id", "other")
	gw := decode[map[string]any](t, runCLI(t, bin, url, "client", "create", "--id", "api-gw", "--scope", "read"))
	secret, _ := gw["client_secret"].(string)
	if gw["client_id"] != "api-gw" || !strings.HasPrefix(secret, "tlcs_") {
		t.Fatalf("client create: %v", gw)
	}
	secretFile := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(secretFile, []byte(secret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	creds := append(url, "TOKENLEDGER_CLIENT_ID=api-gw", "TOKENLEDGER_CLIENT_SECRET_FILE="+secretFile)

	issued := decode[tokenResponse](t, runCLI(t, bin, creds, "issue", "--subject", "alice"))
	bob := decode[tokenResponse](t, runCLI(t, bin, creds, "issue", "--subject", "bob"))

	keys := decode[struct {
		Keys []struct{ Kid, Use string } `json:"keys"`
	}](t, runCLI(t, bin, url, "jwks"))
	if len(keys.Keys) == 0 || keys.Keys[0].Kid == "" {
		t.Fatalf("jwks: %+v", keys)
	}

	// The token from stdin, the secret from a file.
	in := decode[map[string]any](t, runIn(t, bin, creds, issued.AccessToken+"\n", "introspect", "--token-file", "-"))
	if in["active"] != true || in["sub"] != "alice" || in["sid"] != issued.FamilyID {
		t.Fatalf("introspect: %v", in)
	}
	// The secret from stdin.
	in = decode[map[string]any](t, runIn(t, bin, append(url, "TOKENLEDGER_TOKEN="+issued.RefreshToken), secret,
		"introspect", "--client-id", "api-gw", "--client-secret-file", "-"))
	if in["active"] != true || in["token_type"] != "refresh_token" {
		t.Fatalf("introspect refresh token: %v", in)
	}

	type sessionsOut struct {
		Families []struct {
			FamilyID string `json:"family_id"`
			ClientID string `json:"client_id"`
		} `json:"families"`
	}
	s := decode[sessionsOut](t, runCLI(t, bin, creds, "sessions", "--subject", "alice"))
	if len(s.Families) != 1 || s.Families[0].FamilyID != issued.FamilyID {
		t.Fatalf("sessions: %+v", s)
	}
	s = decode[sessionsOut](t, runCLI(t, bin, url, "admin", "sessions", "--subject", "alice"))
	if len(s.Families) != 1 || s.Families[0].ClientID != "api-gw" {
		t.Fatalf("admin sessions: %+v", s)
	}

	r := decode[map[string]any](t, runCLI(t, bin, append(creds, "TOKENLEDGER_TOKEN="+issued.RefreshToken), "revoke"))
	if r["revoked"] != true {
		t.Fatalf("revoke: %v", r)
	}
	in = decode[map[string]any](t, runCLI(t, bin, append(creds, "TOKENLEDGER_TOKEN="+issued.RefreshToken), "introspect"))
	if len(in) != 1 || in["active"] != false {
		t.Fatalf("introspect after revoke: %v", in)
	}

	// A selector in the environment is ignored by admin revoke.
	_, msg := runFail(t, bin, append(url, "TOKENLEDGER_SUBJECT=bob"), "", "admin", "revoke", "--reason", "x")
	if !strings.Contains(msg, "exactly one") {
		t.Fatalf("admin revoke without a selector: %s", msg)
	}
	ar := decode[map[string]int](t, runCLI(t, bin, url, "admin", "revoke", "--subject", "bob", "--reason", "offboarding"))
	if ar["revoked_families"] != 1 {
		t.Fatalf("admin revoke: %v", ar)
	}
	out, msg := runFail(t, bin, append(creds, "TOKENLEDGER_REFRESH_TOKEN="+bob.RefreshToken), "", "refresh")
	if decode[map[string]string](t, []byte(out))["error"] != "invalid_grant" || !strings.Contains(msg, "invalid_grant") {
		t.Fatalf("refresh of a revoked family: %s / %s", out, msg)
	}
	dg := decode[struct {
		Seq    uint64 `json:"seq"`
		Digest string `json:"digest"`
	}](t, runCLI(t, bin, url, "admin", "digest"))
	if dg.Seq == 0 || dg.Digest == "" {
		t.Fatalf("admin digest: %+v", dg)
	}

	// A wrong secret and an unknown client: invalid_client on stdout, one
	// line on stderr, a non-zero exit.
	for _, env := range [][]string{
		append(url, "TOKENLEDGER_CLIENT_ID=api-gw", "TOKENLEDGER_CLIENT_SECRET=tlcs_wrong"),
		append(url, "TOKENLEDGER_CLIENT_ID=nobody", "TOKENLEDGER_CLIENT_SECRET=tlcs_wrong"),
	} {
		for _, args := range [][]string{
			{"introspect", "--token", "x"}, {"revoke", "--token", "x"}, {"sessions", "--subject", "alice"}, {"issue", "--subject", "alice"},
		} {
			out, msg := runFail(t, bin, env, "", args...)
			if decode[map[string]string](t, []byte(out))["error"] != "invalid_client" || !strings.Contains(msg, "(401)") || strings.Contains(msg, "tlcs_wrong") {
				t.Fatalf("%v: stdout %s, stderr %s", args, out, msg)
			}
		}
	}

	// Client administration: no secret is printed again.
	list := runCLI(t, bin, url, "client", "list")
	_ = out
	if bytes.Contains(list, []byte("secret")) {
		t.Fatalf("client list shows a secret: %s", list)
	}
	clients := decode[[]map[string]any](t, list)
	if len(clients) != 3 || clients[0]["client_id"] != "api-gw" {
		t.Fatalf("client list: %s", list)
	}
	show := runCLI(t, bin, url, "client", "show", "--id", "api-gw")
	if bytes.Contains(show, []byte("secret")) || decode[map[string]any](t, show)["client_id"] != "api-gw" {
		t.Fatalf("client show: %s", show)
	}
	if _, msg := runFail(t, bin, url, "", "client", "show", "--id", "nobody"); !strings.Contains(msg, "no such client") {
		t.Fatalf("show unknown: %s", msg)
	}

	issueAs := func(secret string) bool {
		cmd := exec.Command(bin, "issue", "--client-id", "api-gw", "--subject", "carol")
		cmd.Env = append(os.Environ(), append(url, "TOKENLEDGER_CLIENT_SECRET="+secret)...)
		return cmd.Run() == nil
	}
	rot := decode[map[string]string](t, runCLI(t, bin, url, "client", "rotate-secret", "--id", "api-gw"))
	if rot["client_id"] != "api-gw" || !strings.HasPrefix(rot["client_secret"], "tlcs_") || rot["client_secret"] == secret {
		t.Fatalf("rotate-secret: %v", rot)
	}
	eventually(t, "the old secret fails", func() bool { return !issueAs(secret) })
	if !issueAs(rot["client_secret"]) {
		t.Fatal("the rotated secret does not authenticate")
	}

	dis := decode[map[string]any](t, runCLI(t, bin, url, "client", "disable", "--id", "api-gw"))
	if dis["disabled"] != true {
		t.Fatalf("disable: %v", dis)
	}
	eventually(t, "a disabled client fails", func() bool { return !issueAs(rot["client_secret"]) })
	runCLI(t, bin, url, "client", "enable", "--id", "api-gw")
	eventually(t, "an enabled client authenticates", func() bool { return issueAs(rot["client_secret"]) })

	del := decode[map[string]any](t, runCLI(t, bin, url, "client", "delete", "--id", "api-gw"))
	if del["deleted"] != true {
		t.Fatalf("delete: %v", del)
	}
	eventually(t, "a deleted client fails", func() bool { return !issueAs(rot["client_secret"]) })
	if _, msg := runFail(t, bin, url, "", "client", "delete", "--id", "api-gw"); !strings.Contains(msg, "no such client") {
		t.Fatalf("delete twice: %s", msg)
	}
}

// A server that is not there: one line, non-zero exit, for every command.
func TestNoServer(t *testing.T) {
	bin := buildBinary(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	env := []string{"TOKENLEDGER_NATS_URL=nats://" + addr, "TOKENLEDGER_CLIENT_ID=web", "TOKENLEDGER_CLIENT_SECRET=tlcs_x", "TOKENLEDGER_TOKEN=x"}
	for _, args := range [][]string{
		{"jwks"}, {"introspect"}, {"revoke"}, {"sessions", "--subject", "a"}, {"issue", "--subject", "a"},
		{"refresh", "--refresh-token", "tlr_x"}, {"admin", "sessions", "--subject", "a"}, {"admin", "revoke", "--subject", "a", "--reason", "r"},
		{"admin", "digest"}, {"client", "list"}, {"client", "create", "--id", "x"}, {"client", "show", "--id", "x"},
	} {
		_, msg := runFail(t, bin, env, "", args...)
		if !strings.Contains(msg, "no NATS server answers at nats://"+addr) {
			t.Fatalf("%v: %s", args, msg)
		}
	}
}

// -h and --help on every command exit 0 with its usage; --version works.
func TestHelpAndVersion(t *testing.T) {
	bin := buildBinary(t)
	for _, args := range [][]string{
		{}, {"serve"}, {"worker"}, {"issue"}, {"refresh"}, {"revoke"}, {"introspect"}, {"jwks"}, {"sessions"},
		{"admin"}, {"admin", "revoke"}, {"admin", "sessions"}, {"admin", "digest"},
		{"client"}, {"client", "create"}, {"client", "list"}, {"client", "show"}, {"client", "rotate-secret"},
		{"client", "disable"}, {"client", "enable"}, {"client", "delete"},
		{"audit"}, {"audit", "replay"}, {"audit", "verify"}, {"audit", "at"}, {"audit", "diff"}, {"bench"},
	} {
		for _, h := range []string{"-h", "--help"} {
			cmd := exec.Command(bin, append(args, h)...)
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			if err := cmd.Run(); err != nil {
				t.Fatalf("%v %s: %v: %s", args, h, err, stderr.Bytes())
			}
			if !strings.Contains(strings.ToLower(stderr.String()), "usage") {
				t.Fatalf("%v %s printed no usage: %s", args, h, stderr.Bytes())
			}
		}
	}
	for _, args := range [][]string{{"--version"}, {"version"}} {
		if out := runCLI(t, bin, nil, args...); !strings.HasPrefix(string(out), "tokenledger ") {
			t.Fatalf("%v: %s", args, out)
		}
	}
	if _, msg := runFail(t, bin, nil, "", "audit", "nope"); !strings.Contains(msg, `unknown audit command "nope"`) {
		t.Fatalf("unknown audit command: %s", msg)
	}
}

// Startup and connection errors name their cause and what sets it.
func TestStartupErrors(t *testing.T) {
	bin := buildBinary(t)

	t.Run("port in use", func(t *testing.T) {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		start := time.Now()
		_, msg := runFail(t, bin, nil, "", "serve", "--listen", l.Addr().String(), "--data", t.TempDir())
		if !strings.Contains(msg, "address already in use") || !strings.Contains(msg, "--listen") {
			t.Fatalf("port in use: %s", msg)
		}
		if time.Since(start) > 5*time.Second {
			t.Fatalf("took %s", time.Since(start))
		}
	})
	t.Run("data directory not writable", func(t *testing.T) {
		if os.Geteuid() == 0 {
			// root writes anywhere: a file where the directory should be.
			file := filepath.Join(t.TempDir(), "file")
			os.WriteFile(file, nil, 0o600)
			_, msg := runFail(t, bin, nil, "", "serve", "--listen", "127.0.0.1:0", "--data", filepath.Join(file, "data"))
			if !strings.Contains(msg, "--data") {
				t.Fatalf("data under a file: %s", msg)
			}
			return
		}
		dir := t.TempDir()
		os.Chmod(dir, 0o500)
		_, msg := runFail(t, bin, nil, "", "serve", "--listen", "127.0.0.1:0", "--data", dir)
		if !strings.Contains(msg, "not writable") {
			t.Fatalf("read-only data: %s", msg)
		}
	})

	t.Run("example config placeholders", func(t *testing.T) {
		_, msg := runFail(t, bin, nil, "", "serve", "--listen", "127.0.0.1:0", "--data", t.TempDir(), "--config", "../../config/tokenledger.example.json")
		if !strings.Contains(msg, "placeholder") || !strings.Contains(msg, "tokenledger client new-secret") {
			t.Fatalf("example config: %s", msg)
		}
		ns := decode[map[string]string](t, runCLI(t, bin, nil, "client", "new-secret"))
		if !strings.HasPrefix(ns["client_secret"], "tlcs_") || len(ns["secret_sha256"]) != 64 {
			t.Fatalf("new-secret: %v", ns)
		}
	})

	// A server with users and permissions (the shipped config, with TLS and
	// accounts, has a test of its own: permissions_test.go).
	pw := map[string]string{"TOKENLEDGER": "pw-tokenledger", "SERVICE": "pw-service"}
	conf := filepath.Join(t.TempDir(), "nats.conf")
	if err := os.WriteFile(conf, []byte(`jetstream {}
authorization {
  users = [
    {user: tokenledger, password: "`+pw["TOKENLEDGER"]+`"}
    {user: service, password: "`+pw["SERVICE"]+`", permissions: {publish: {allow: ["tokens.*"]}, subscribe: {allow: ["_INBOX.>"]}}}
  ]
}
`), 0o600); err != nil {
		t.Fatal(err)
	}
	opts, err := server.ProcessConfigFile(conf)
	if err != nil {
		t.Fatal(err)
	}
	opts.Host, opts.Port, opts.StoreDir = "127.0.0.1", server.RANDOM_PORT, t.TempDir()
	opts.NoLog, opts.NoSigs = true, true
	srv, err := server.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	srv.Start()
	t.Cleanup(srv.Shutdown)
	if !srv.ReadyForConnections(10 * time.Second) {
		t.Fatal("server not ready")
	}
	url := "TOKENLEDGER_NATS_URL=" + srv.ClientURL()

	t.Run("wrong password", func(t *testing.T) {
		_, msg := runFail(t, bin, []string{url, "TOKENLEDGER_KEK=MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="}, "",
			"serve", "--user", "tokenledger", "--password", "wrong")
		if !strings.Contains(msg, "TOKENLEDGER_PASSWORD") || !strings.Contains(strings.ToLower(msg), "authorization violation") {
			t.Fatalf("wrong password: %s", msg)
		}
		_, msg = runFail(t, bin, []string{url}, "", "jwks")
		if !strings.Contains(msg, "--user") || !strings.Contains(msg, "--creds") || !strings.Contains(msg, "--nkey") {
			t.Fatalf("no credentials: %s", msg)
		}
	})
	t.Run("permission denied names the subject", func(t *testing.T) {
		env := []string{url, "TOKENLEDGER_USER=service", "TOKENLEDGER_PASSWORD=" + pw["SERVICE"]}
		_, msg := runFail(t, bin, env, "", "client", "create", "--id", "x")
		if !strings.Contains(msg, "permission denied") || !strings.Contains(msg, `"$JS.API.`) {
			t.Fatalf("client create without permission: %s", msg)
		}
		_, msg = runFail(t, bin, env, "", "admin", "revoke", "--subject", "a", "--reason", "r")
		if !strings.Contains(msg, `"tokens.admin.revoke"`) {
			t.Fatalf("admin revoke without permission: %s", msg)
		}
	})
}
