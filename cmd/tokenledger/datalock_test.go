//go:build unix

package main

import (
	"encoding/json"
	"os/exec"
	"strconv"
	"strings"
	"testing"
)

// A second serve on a data directory in use refuses to start at once with a
// one-line message naming the holder; the first keeps serving and keeps
// every event it acknowledged.
func TestSecondServeOnALockedDataDirectoryRefuses(t *testing.T) {
	bin := buildBinary(t)
	data := t.TempDir()
	d := startServe(t, bin, nil, "--listen", "127.0.0.1:0", "--data", data)
	env := []string{"TOKENLEDGER_NATS_URL=" + d.url}
	var created struct {
		ClientSecret string `json:"client_secret"`
	}
	if err := json.Unmarshal(runCLI(t, bin, env, "client", "create", "--id", "web", "--audience", "api"), &created); err != nil {
		t.Fatal(err)
	}
	env = append(env, "TOKENLEDGER_CLIENT_SECRET="+created.ClientSecret)
	var issued tokenResponse
	if err := json.Unmarshal(runCLI(t, bin, env, "issue", "--client-id", "web", "--subject", "alice"), &issued); err != nil {
		t.Fatal(err)
	}

	out, err := exec.Command(bin, "serve", "--listen", "127.0.0.1:0", "--data", data).CombinedOutput()
	msg := strings.TrimSpace(string(out))
	if err == nil || !strings.Contains(msg, "in use by another tokenledger (pid "+strconv.Itoa(d.cmd.Process.Pid)+")") || strings.Count(msg, "\n") != 0 {
		t.Fatalf("second serve: %v, output %q; want one line naming pid %d", err, msg, d.cmd.Process.Pid)
	}

	// The first still serves, with the family it issued.
	var refreshed tokenResponse
	if err := json.Unmarshal(runCLI(t, bin, append(env, "TOKENLEDGER_REFRESH_TOKEN="+issued.RefreshToken), "refresh", "--client-id", "web"), &refreshed); err != nil {
		t.Fatal(err)
	}
	if refreshed.FamilyID != issued.FamilyID || refreshed.RefreshToken == "" {
		t.Fatalf("refresh after the refused second serve: %+v", refreshed)
	}
}
