package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tokenledger/tokenledger/audit"
	"github.com/tokenledger/tokenledger/ledger"
	"github.com/tokenledger/tokenledger/ledger/jsstore"
)

// auditorPermissions are the auditor's permissions of
// config/nats-server.conf: read-only on the ledger stream and its archive.
var auditorPermissions = &server.Permissions{
	Publish: &server.SubjectPermission{Allow: []string{
		"$JS.API.INFO", "$JS.API.STREAM.INFO.TOKENLEDGER",
		"$JS.API.CONSUMER.CREATE.TOKENLEDGER", "$JS.API.CONSUMER.CREATE.TOKENLEDGER.>",
		"$JS.API.CONSUMER.MSG.NEXT.TOKENLEDGER.>", "$JS.API.CONSUMER.DELETE.TOKENLEDGER.>",
		"$JS.API.CONSUMER.INFO.TOKENLEDGER.>",
		"$JS.API.DIRECT.GET.TOKENLEDGER", "$JS.API.DIRECT.GET.TOKENLEDGER.>",
		"$JS.API.STREAM.MSG.GET.TOKENLEDGER", "$JS.FC.>",
		"$JS.API.STREAM.INFO.TOKENLEDGER_ARCHIVE",
		"$JS.API.CONSUMER.CREATE.TOKENLEDGER_ARCHIVE", "$JS.API.CONSUMER.CREATE.TOKENLEDGER_ARCHIVE.>",
		"$JS.API.CONSUMER.MSG.NEXT.TOKENLEDGER_ARCHIVE.>", "$JS.API.CONSUMER.DELETE.TOKENLEDGER_ARCHIVE.>",
		"$JS.API.CONSUMER.INFO.TOKENLEDGER_ARCHIVE.>",
		"$JS.API.DIRECT.GET.TOKENLEDGER_ARCHIVE", "$JS.API.DIRECT.GET.TOKENLEDGER_ARCHIVE.>",
		"$JS.API.STREAM.MSG.GET.TOKENLEDGER_ARCHIVE"}},
	Subscribe: &server.SubjectPermission{Allow: []string{"_INBOX.>"}},
}

func TestAuditCommandsReadOnly(t *testing.T) {
	s, err := server.NewServer(&server.Options{
		Host: "127.0.0.1", Port: server.RANDOM_PORT, JetStream: true, StoreDir: t.TempDir(),
		NoLog: true, NoSigs: true,
		Users: []*server.User{{Username: "writer", Password: "w"}, {Username: "auditor", Password: "a", Permissions: auditorPermissions}},
	})
	if err != nil {
		t.Fatal(err)
	}
	s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("server not ready")
	}
	t.Cleanup(func() { s.Shutdown(); s.WaitForShutdown() })
	nc, err := nats.Connect(s.ClientURL(), nats.UserInfo("writer", "w"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, _ := jetstream.New(nc)
	ctx := context.Background()
	store, err := jsstore.NewStore(ctx, js, jsstore.StoreConfig{})
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)
	now := t0
	l := jsstore.New(store, jsstore.WithClock(func() time.Time { return now }))
	policy := ledger.Policy{Grace: 10 * time.Second, AccessTTL: time.Minute, RefreshTTL: time.Hour, FamilyTTL: 24 * time.Hour}
	client := ledger.Client{ID: "web"}
	g, err := l.Issue(ctx, jsstore.IssueRequest{Client: client, Policy: policy, Subject: "alice"})
	if err != nil {
		t.Fatal(err)
	}
	fid := g.State.FamilyID
	now = t0.Add(time.Minute)
	if _, err := l.Refresh(ctx, jsstore.RefreshRequest{Client: client, Policy: policy, RefreshToken: g.RefreshToken}); err != nil {
		t.Fatal(err)
	}
	now = t0.Add(2 * time.Minute)
	if _, err := l.Issue(ctx, jsstore.IssueRequest{Client: ledger.Client{ID: "cli"}, Policy: policy, Subject: "bob"}); err != nil {
		t.Fatal(err)
	}
	now = t0.Add(3 * time.Minute)
	revoked, err := l.Revoke(ctx, fid, ledger.Cause{Kind: ledger.CauseAdmin, Reason: "left the company"})
	if err != nil {
		t.Fatal(err)
	}

	auditor := []string{"--nats-url", s.ClientURL(), "--user", "auditor", "--password", "a"}
	runAudit := func(args ...string) (string, error) {
		var out bytes.Buffer
		err := run(ctx, append(append([]string{"audit"}, args...), auditor...), &out)
		return out.String(), err
	}

	t.Run("verify", func(t *testing.T) {
		out, err := runAudit("verify")
		if err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		var rep audit.Report
		if err := json.Unmarshal([]byte(out), &rep); err != nil {
			t.Fatal(err)
		}
		if !rep.OK || rep.Events != 4 || rep.Families != 2 || rep.Digest == "" {
			t.Fatalf("report: %+v", rep)
		}
		// The digest is a checkpoint for the next run.
		if out, err := runAudit("verify", "--checkpoint", "4:"+rep.Digest); err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		out, err = runAudit("verify", "--checkpoint", "4:"+strings.Repeat("0", 64))
		if !errors.Is(err, errViolations) {
			t.Fatalf("a wrong checkpoint: err %v\n%s", err, out)
		}
		if _, err := runAudit("verify", "--family", fid); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("replay", func(t *testing.T) {
		out, err := runAudit("replay", "--client", "web", "--type", "family.issued.v1,family.revoked.v1")
		if err != nil {
			t.Fatal(err)
		}
		var seqs []uint64
		sc := bufio.NewScanner(strings.NewReader(out))
		for sc.Scan() {
			var l audit.Line
			if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
				t.Fatalf("line %q: %v", sc.Text(), err)
			}
			seqs = append(seqs, l.Seq)
		}
		if len(seqs) != 2 || seqs[0] != 1 || seqs[1] != revoked.Seq {
			t.Fatalf("selected %v, want [1 %d]", seqs, revoked.Seq)
		}
		out, err = runAudit("replay", "--family", fid, "--format", "table")
		if err != nil {
			t.Fatal(err)
		}
		if n := strings.Count(out, "\n"); n != 4 || !strings.Contains(out, "left the company") {
			t.Fatalf("table (%d lines):\n%s", n, out)
		}
	})

	t.Run("at", func(t *testing.T) {
		for _, tc := range []struct {
			at     time.Time
			valid  bool
			status string
		}{
			{t0.Add(90 * time.Second), true, audit.StatusActive},
			{t0.Add(3*time.Minute + time.Millisecond), false, audit.StatusRevoked},
		} {
			out, err := runAudit("at", "--time", tc.at.Format(time.RFC3339Nano), "--family", fid)
			if err != nil {
				t.Fatal(err)
			}
			var ans audit.AtAnswer
			if err := json.Unmarshal([]byte(out), &ans); err != nil {
				t.Fatal(err)
			}
			if ans.Valid != tc.valid || ans.Status != tc.status || ans.Event == nil {
				t.Fatalf("at %v: %s", tc.at, out)
			}
		}
		if _, err := runAudit("at", "--family", fid); err == nil {
			t.Fatal("at without --time succeeded")
		}
	})

	t.Run("diff", func(t *testing.T) {
		out, err := runAudit("diff", "--now", t0.Add(5*time.Minute).Format(time.RFC3339))
		if err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
	})

	t.Run("nothing written", func(t *testing.T) {
		st, err := js.Stream(ctx, jsstore.DefaultStream)
		if err != nil {
			t.Fatal(err)
		}
		info := st.CachedInfo()
		if info.State.Msgs != 4 {
			t.Fatalf("the stream holds %d messages", info.State.Msgs)
		}
		names := st.ListConsumers(ctx)
		for c := range names.Info() {
			if c.Config.Durable != "" {
				t.Fatalf("durable consumer %s left behind", c.Name)
			}
		}
	})
}
