package main

import (
	"encoding/json"
	"os/exec"
	"testing"
	"time"
)

// The rollout commands drive tokens.admin.rollout: start, raise, read; bad
// input exits non-zero and changes nothing.
func TestRolloutCLI(t *testing.T) {
	bin := buildBinary(t)
	d := startServe(t, bin, nil, "--listen", "127.0.0.1:0", "--data", t.TempDir())
	env := []string{"TOKENLEDGER_NATS_URL=" + d.url}
	runCLI(t, bin, env, "client", "create", "--id", "web", "--audience", "api")

	type state struct {
		ClientID string `json:"client_id"`
		Version  int    `json:"version"`
		Percent  int    `json:"percent"`
		Changed  bool   `json:"changed"`
		Deadline *time.Time
	}
	read := func(args ...string) state {
		t.Helper()
		var s state
		if err := json.Unmarshal(runCLI(t, bin, env, args...), &s); err != nil {
			t.Fatal(err)
		}
		return s
	}
	deadline := time.Now().Add(24 * time.Hour).UTC().Format(time.RFC3339)
	if s := read("rollout", "start", "--client-id", "web", "--version", "2", "--percent", "10", "--deadline", deadline); s.Version != 2 || s.Percent != 10 || !s.Changed {
		t.Fatalf("rollout start: %+v", s)
	}
	if s := read("rollout", "set", "--client-id", "web", "--percent", "50"); s.Version != 2 || s.Percent != 50 || !s.Changed {
		t.Fatalf("rollout set: %+v", s)
	}
	if s := read("rollout", "status", "--client-id", "web"); s.ClientID != "web" || s.Percent != 50 {
		t.Fatalf("rollout status: %+v", s)
	}
	for _, bad := range [][]string{
		{"rollout", "set", "--client-id", "web", "--percent", "20"},  // lower
		{"rollout", "set", "--client-id", "web", "--percent", "101"}, // out of range
		{"rollout", "start", "--client-id", "nobody", "--version", "2"},
	} {
		cmd := exec.Command(bin, bad...)
		cmd.Env = append(cmd.Environ(), env...)
		if out, err := cmd.Output(); err == nil {
			t.Errorf("%v succeeded: %s", bad, out)
		}
	}
	if s := read("rollout", "status", "--client-id", "web"); s.Percent != 50 {
		t.Fatalf("refused changes moved the rollout: %+v", s)
	}
}
