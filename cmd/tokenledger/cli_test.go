package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// buildBinary compiles tokenledger into the test's temporary directory. Each
// test that calls it builds again (the build cache makes that quick).
func buildBinary(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "tokenledger")
	cmd := exec.Command("go", "build", "-o", bin, ".")
	cmd.Stderr = os.Stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("go build: %v", err)
	}
	return bin
}

// daemon is a running `tokenledger serve` process.
type daemon struct {
	cmd *exec.Cmd
	url string
	mu  sync.Mutex
	log []string // every line serve wrote to stderr
}

// logged reports whether serve has logged a line containing s.
func (d *daemon) logged(s string) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, l := range d.log {
		if strings.Contains(l, s) {
			return true
		}
	}
	return false
}

// startServe runs `tokenledger serve` with args and waits for its log line
// saying where the embedded server listens (or that the service is ready).
func startServe(t *testing.T, bin string, env []string, args ...string) *daemon {
	t.Helper()
	cmd := exec.Command(bin, append([]string{"serve"}, args...)...)
	cmd.Env = append(os.Environ(), env...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	d := &daemon{cmd: cmd}
	ready := make(chan error, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		sent := false
		var other []string
		for sc.Scan() {
			d.mu.Lock()
			d.log = append(d.log, sc.Text())
			d.mu.Unlock()
			var line struct {
				Msg string `json:"msg"`
				URL string `json:"url"`
			}
			if json.Unmarshal(sc.Bytes(), &line) != nil {
				if !strings.HasPrefix(sc.Text(), "  ") { // skip flag usage
					other = append(other, sc.Text())
				}
				continue
			}
			if line.URL != "" && d.url == "" {
				d.url = line.URL
			}
			if line.Msg == "service ready" && !sent {
				ready <- nil
				sent = true
			}
		}
		if !sent {
			ready <- fmt.Errorf("serve exited before it was ready: %s", strings.Join(other, "\n"))
		}
	}()
	select {
	case err := <-ready:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("serve did not become ready within 30s")
	}
	t.Cleanup(func() { d.stop(t) })
	return d
}

// stop sends SIGTERM and waits for a clean exit.
func (d *daemon) stop(t *testing.T) {
	if d.cmd.ProcessState != nil {
		return
	}
	_ = d.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- d.cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("serve exited with %v after SIGTERM", err)
		}
	case <-time.After(15 * time.Second):
		_ = d.cmd.Process.Kill()
		t.Error("serve did not stop within 15s of SIGTERM")
	}
}

// runCLI runs a client subcommand and returns its stdout.
func runCLI(t *testing.T, bin string, env []string, args ...string) []byte {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s: %v\nstdout: %s\nstderr: %s", strings.Join(args, " "), err, stdout.Bytes(), stderr.Bytes())
	}
	return stdout.Bytes()
}

type tokenResponse struct {
	AccessToken  string `json:"access_token"`
	RefreshToken string `json:"refresh_token"`
	FamilyID     string `json:"family_id"`
	Error        string `json:"error"`
}

// The README's quick start, as processes: serve with the embedded default,
// then client create, issue and refresh from "another shell"; a restart
// keeps the family and key.
func TestQuickStart(t *testing.T) {
	bin := buildBinary(t)
	data := t.TempDir()
	d := startServe(t, bin, nil, "--listen", "127.0.0.1:0", "--data", data)
	urlEnv := []string{"TOKENLEDGER_NATS_URL=" + d.url}

	var created struct {
		ClientID     string `json:"client_id"`
		ClientSecret string `json:"client_secret"`
	}
	if err := json.Unmarshal(runCLI(t, bin, urlEnv, "client", "create", "--id", "web", "--scope", "read write", "--audience", "api"), &created); err != nil {
		t.Fatal(err)
	}
	if created.ClientID != "web" || !strings.HasPrefix(created.ClientSecret, "tlcs_") {
		t.Fatalf("client create printed %+v", created)
	}
	env := append(urlEnv, "TOKENLEDGER_CLIENT_SECRET="+created.ClientSecret)
	var issued, refreshed tokenResponse
	if err := json.Unmarshal(runCLI(t, bin, env, "issue", "--client-id", "web", "--subject", "alice"), &issued); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(runCLI(t, bin, append(env, "TOKENLEDGER_REFRESH_TOKEN="+issued.RefreshToken), "refresh", "--client-id", "web"), &refreshed); err != nil {
		t.Fatal(err)
	}
	if refreshed.RefreshToken == "" || refreshed.RefreshToken == issued.RefreshToken || refreshed.FamilyID != issued.FamilyID {
		t.Fatalf("refresh: %+v after %+v", refreshed, issued)
	}

	// A wrong secret fails with a non-zero exit and the OAuth error on stdout.
	bad := exec.Command(bin, "issue", "--client-id", "web", "--subject", "alice", "--client-secret", "nope")
	bad.Env = append(os.Environ(), urlEnv...)
	out, err := bad.Output()
	if err == nil || !strings.Contains(string(out), `"invalid_client"`) {
		t.Fatalf("wrong secret: err %v, stdout %s", err, out)
	}

	// Restart on the same data directory: the client, the family and the
	// signing key survive.
	d.stop(t)
	d2 := startServe(t, bin, nil, "--listen", "127.0.0.1:0", "--data", data)
	env2 := []string{"TOKENLEDGER_NATS_URL=" + d2.url, "TOKENLEDGER_CLIENT_SECRET=" + created.ClientSecret,
		"TOKENLEDGER_REFRESH_TOKEN=" + refreshed.RefreshToken}
	var again tokenResponse
	if err := json.Unmarshal(runCLI(t, bin, env2, "refresh", "--client-id", "web"), &again); err != nil {
		t.Fatal(err)
	}
	if again.FamilyID != issued.FamilyID || again.RefreshToken == "" {
		t.Fatalf("after restart: %+v", again)
	}
	if fi, err := os.Stat(filepath.Join(data, "kek")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("generated kek: %v %v", fi, err)
	}
}

// Flags beat the environment, which beats the config file.
func TestFlagPrecedence(t *testing.T) {
	cfg := filepath.Join(t.TempDir(), "c.json")
	if err := os.WriteFile(cfg, []byte(`{"grace":"3s","issuer":"from-file","access-ttl":"1m","replicas":3}`), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("TOKENLEDGER_ISSUER", "from-env")
	t.Setenv("TOKENLEDGER_ACCESS_TTL", "2m")
	c, err := parseServe([]string{"--config", cfg, "--access-ttl", "5m"})
	if err != nil {
		t.Fatal(err)
	}
	if c.grace != 3*time.Second || c.issuer != "from-env" || c.accessTTL != 5*time.Minute || c.replicas != 3 {
		t.Fatalf("got grace %s issuer %s access-ttl %s replicas %d", c.grace, c.issuer, c.accessTTL, c.replicas)
	}
	if err := os.WriteFile(cfg, []byte(`{"gracee":"3s"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := parseServe([]string{"--config", cfg}); err == nil || !strings.Contains(err.Error(), "gracee") {
		t.Fatalf("unknown config key: %v", err)
	}
	if _, err := parseServe([]string{"--grace", "61s"}); err == nil {
		t.Fatal("grace above 60s accepted")
	}
	if _, err := parseServe([]string{"--alg", "HS256"}); err == nil {
		t.Fatal("HMAC accepted")
	}
	if _, err := parseServe([]string{"--state-cache", "-1"}); err == nil {
		t.Fatal("negative state cache accepted")
	}
	for _, bad := range [][]string{{"--attempt-timeout", "0s"}, {"--history-margin", "-1h"}, {"--checkpoint-every", "-1"}} {
		if _, err := parseServe(bad); err == nil {
			t.Fatalf("%v accepted", bad)
		}
	}
	if c, err := parseServe([]string{"--attempt-timeout", "250ms"}); err != nil || c.attempt != 250*time.Millisecond {
		t.Fatalf("--attempt-timeout 250ms: %v, %v", c.attempt, err)
	}
	if _, err := parseServe([]string{"--nope"}); err == nil {
		t.Fatal("unknown flag accepted")
	}
}

// audit diff --live compares the running service's valid-token view with
// one rebuilt from the log up to the sequence the service reported.
func TestAuditDiffAgainstLiveService(t *testing.T) {
	bin := buildBinary(t)
	d := startServe(t, bin, nil, "--listen", "127.0.0.1:0", "--data", t.TempDir())
	env := []string{"TOKENLEDGER_NATS_URL=" + d.url}
	var created struct {
		ClientSecret string `json:"client_secret"`
	}
	if err := json.Unmarshal(runCLI(t, bin, env, "client", "create", "--id", "web", "--scope", "read"), &created); err != nil {
		t.Fatal(err)
	}
	env = append(env, "TOKENLEDGER_CLIENT_SECRET="+created.ClientSecret)
	for _, subject := range []string{"alice", "bob", "carol"} {
		var tr tokenResponse
		if err := json.Unmarshal(runCLI(t, bin, env, "issue", "--client-id", "web", "--subject", subject), &tr); err != nil {
			t.Fatal(err)
		}
		runCLI(t, bin, append(env, "TOKENLEDGER_REFRESH_TOKEN="+tr.RefreshToken), "refresh", "--client-id", "web")
	}
	var rep struct {
		LastSeq     uint64 `json:"last_seq"`
		Families    int    `json:"families"`
		LiveChecked bool   `json:"live_checked"`
		OK          bool   `json:"ok"`
	}
	out := runCLI(t, bin, env, "audit", "diff", "--live")
	if err := json.Unmarshal(out, &rep); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	// 8: the first signing key's key.published.v1 and key.activated.v1,
	// then three issues and three refreshes.
	if !rep.OK || !rep.LiveChecked || rep.Families != 3 || rep.LastSeq != 8 {
		t.Fatalf("diff --live: %s", out)
	}
}
