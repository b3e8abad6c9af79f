package main

import (
	"encoding/json"
	"os/exec"
	"strings"
	"testing"
)

type keysOut struct {
	Keys []struct {
		KID   string `json:"kid"`
		Alg   string `json:"alg"`
		State string `json:"state"`
	} `json:"keys"`
}

// tokenledger keys list, rotate and revoke drive the running service and
// print its JSON; a client created without --audience gets its id as
// audience; audit verify passes on the ledger with key events.
func TestKeysCLI(t *testing.T) {
	bin := buildBinary(t)
	d := startServe(t, bin, nil, "--listen", "127.0.0.1:0", "--data", t.TempDir())
	env := []string{"TOKENLEDGER_NATS_URL=" + d.url}

	var created struct {
		Audiences []string `json:"audiences"`
	}
	if err := json.Unmarshal(runCLI(t, bin, env, "client", "create", "--id", "web"), &created); err != nil {
		t.Fatal(err)
	}
	if len(created.Audiences) != 1 || created.Audiences[0] != "web" {
		t.Fatalf("client created without --audience has audiences %v, want [web]", created.Audiences)
	}

	read := func(args ...string) keysOut {
		t.Helper()
		var out keysOut
		if err := json.Unmarshal(runCLI(t, bin, env, args...), &out); err != nil {
			t.Fatal(err)
		}
		return out
	}
	list := read("keys", "list")
	if len(list.Keys) != 1 || list.Keys[0].State != "active" || list.Keys[0].Alg != "EdDSA" {
		t.Fatalf("keys list: %+v", list)
	}
	rotated := read("keys", "rotate")
	if len(rotated.Keys) != 2 || rotated.Keys[1].State != "published" {
		t.Fatalf("keys rotate: %+v", rotated)
	}
	revoked := read("keys", "revoke", "--kid", rotated.Keys[0].KID, "--reason", "drill")
	if revoked.Keys[0].State != "revoked" || revoked.Keys[1].State != "active" {
		t.Fatalf("keys revoke: %+v", revoked)
	}
	cmd := exec.Command(bin, "keys", "revoke", "--kid", "not a kid")
	cmd.Env = append(cmd.Environ(), env...)
	if out, err := cmd.Output(); err == nil {
		t.Fatalf("revoke of a malformed kid succeeded: %s", out)
	}
	var rep struct {
		OK bool `json:"ok"`
	}
	if err := json.Unmarshal(runCLI(t, bin, env, "audit", "verify"), &rep); err != nil || !rep.OK {
		t.Fatalf("audit verify after key changes: %+v %v", rep, err)
	}
	// audit replay shows every key change, with the kid and no key material.
	table := string(runCLI(t, bin, env, "audit", "replay", "--format", "table"))
	for _, want := range []string{
		"key.published.v1", "key.activated.v1", "key.revoked.v1",
		"key " + rotated.Keys[0].KID + " revoked", "key " + rotated.Keys[1].KID + " (EdDSA) published",
	} {
		if !strings.Contains(table, want) {
			t.Errorf("audit replay does not show %q:\n%s", want, table)
		}
	}
}
