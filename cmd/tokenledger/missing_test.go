package main

import (
	"context"
	"encoding/json"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Deleting the ledger stream under a running service is an alarm: it logs
// the loss at error level and refuses decisions with 503; a restart on the
// same deployment refuses to start on an empty ledger unless told --init.
func TestMissingLedgerIsAnAlarm(t *testing.T) {
	bin := buildBinary(t)
	data := t.TempDir()
	d := startServe(t, bin, nil, "--listen", "127.0.0.1:0", "--data", data)
	created := runCLI(t, bin, []string{"TOKENLEDGER_NATS_URL=" + d.url}, "client", "create", "--id", "web", "--audience", "api")
	var client struct {
		ClientSecret string `json:"client_secret"`
	}
	if err := json.Unmarshal(created, &client); err != nil {
		t.Fatal(err)
	}
	issue, _ := json.Marshal(map[string]string{"client_id": "web", "client_secret": client.ClientSecret, "subject": "alice"})

	nc, err := nats.Connect(d.url)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if msg, err := nc.RequestWithContext(ctx, "tokens.issue", issue); err != nil || msg.Header.Get("Nats-Service-Error-Code") != "" {
		t.Fatalf("issue before the loss: %v %s", err, msg.Data)
	}
	if err := js.DeleteStream(ctx, "TOKENLEDGER"); err != nil {
		t.Fatal(err)
	}
	for {
		msg, err := nc.RequestWithContext(ctx, "tokens.issue", issue)
		if err != nil {
			t.Fatalf("issue after the loss: %v", err)
		}
		if msg.Header.Get("Nats-Service-Error-Code") == "503" && strings.Contains(string(msg.Data), "temporarily_unavailable") && d.logged("ledger stores missing") {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("no 503 and error log after the ledger stream was deleted; last reply %s", msg.Data)
		case <-time.After(100 * time.Millisecond):
		}
	}
	if _, err := js.Stream(ctx, "TOKENLEDGER"); err == nil {
		t.Fatal("the running service recreated the ledger stream")
	}
	nc.Close()
	d.stop(t)
	if t.Failed() {
		d.mu.Lock()
		t.Fatalf("serve's log:\n%s", strings.Join(d.log, "\n"))
	}

	// Restarting on the same data: refused, with the reason and the way out.
	out, err := exec.Command(bin, "serve", "--listen", "127.0.0.1:0", "--data", data).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "TOKENLEDGER missing") || !strings.Contains(string(out), "--init") {
		t.Fatalf("restart without --init: %v\n%s", err, out)
	}
	// Told to, it starts over.
	startServe(t, bin, nil, "--listen", "127.0.0.1:0", "--data", data, "--init")
}
