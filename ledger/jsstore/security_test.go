package jsstore

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tokenledger/tokenledger/ledger"
)

func TestSecurityKey(t *testing.T) {
	for id, want := range map[string]string{
		"evt-1":                       "evt-1",
		"a.b":                         "sha256-",
		"sha256-abc":                  "sha256-",
		"https://idp.example.com#jti": "sha256-",
		strings.Repeat("a", 129):      "sha256-",
	} {
		got := SecurityKey(id)
		if !strings.HasPrefix(got, want) || (want == "sha256-" && len(got) != 7+64) {
			t.Errorf("SecurityKey(%q) = %q", id, got)
		}
	}
	if SecurityKey("a.b") == SecurityKey("a_b") {
		t.Error("keys collide")
	}
}

// What the security-event worker asks of the ledger: the record of a
// handling and the question whether there is one, selection by family id,
// and a cut of access tokens that a repeated handling does not repeat.
func TestLedgerSecurity(t *testing.T) {
	ctx := context.Background()
	store, _ := newTestStore(t)
	now := time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)
	l := New(store, WithClock(func() time.Time { return now }))
	client := ledger.Client{ID: "web", Scopes: []string{"read"}, Audiences: []string{"api"}}
	g, err := l.Issue(ctx, IssueRequest{Client: client, Policy: testPolicy, Subject: "alice"})
	if err != nil {
		t.Fatal(err)
	}
	fid := g.State.FamilyID

	t.Run("selects", func(t *testing.T) {
		for _, c := range []struct {
			name, fid, subject, client string
			want                       bool
		}{
			{"by id", fid, "", "", true},
			{"id and subject", fid, "alice", "", true},
			{"id and client", fid, "", "web", true},
			{"another subject", fid, "bob", "", false},
			{"another client", fid, "", "billing", false},
			{"no such family", "01JDZ8Q4V3N7X2K9M5P6R8T0WB", "", "", false},
			{"not a family id", "nope", "", "", false},
		} {
			got, err := l.SecuritySelects(ctx, c.fid, c.subject, c.client)
			if err != nil || got != c.want {
				t.Errorf("%s: %v, %v; want %v", c.name, got, err, c.want)
			}
		}
	})

	t.Run("cut access once per handling", func(t *testing.T) {
		cause := ledger.Cause{Kind: ledger.CauseSecurity, ID: "evt-cut"}
		started := now
		now = now.Add(time.Second)
		before, _ := store.LastSeq(ctx)
		st, err := l.CutAccessSince(ctx, fid, started, cause)
		if err != nil || st.AccessCutoff.IsZero() {
			t.Fatalf("cut: %+v, %v", st, err)
		}
		// A takeover of the same handling finds the cut made after its
		// start and appends nothing.
		if _, err := l.CutAccessSince(ctx, fid, started, cause); err != nil {
			t.Fatal(err)
		}
		if after, _ := store.LastSeq(ctx); after != before+1 {
			t.Fatalf("%d events appended, want 1", after-before)
		}
		// A later handling cuts again.
		now = now.Add(time.Second)
		if _, err := l.CutAccessSince(ctx, fid, now, ledger.Cause{Kind: ledger.CauseSecurity, ID: "evt-later"}); err != nil {
			t.Fatal(err)
		}
		if after, _ := store.LastSeq(ctx); after != before+2 {
			t.Fatalf("%d events appended, want 2", after-before)
		}
		if _, err := l.CutAccessSince(ctx, "01JDZ8Q4V3N7X2K9M5P6R8T0WB", now, cause); !errors.Is(err, ledger.ErrUnknownFamily) {
			t.Fatalf("unknown family: %v", err)
		}
	})

	t.Run("record", func(t *testing.T) {
		const id = "https://idp.example.com#jti-1" // not a plain token
		if done, err := l.SecurityHandled(ctx, id); err != nil || done {
			t.Fatalf("before: %v, %v", done, err)
		}
		cause := ledger.Cause{Kind: ledger.CauseSecurity, ID: id, Reason: "r"}
		h := ledger.SecurityHandled{EventType: "t", Severity: "low", Action: "record_only", Families: []string{fid}}
		if err := l.RecordSecurityHandled(ctx, cause, now, h); err != nil {
			t.Fatal(err)
		}
		seq, _ := store.LastSeq(ctx)
		// Again with the same start: JetStream drops the copy.
		if err := l.RecordSecurityHandled(ctx, cause, now, h); err != nil {
			t.Fatal(err)
		}
		if again, _ := store.LastSeq(ctx); again != seq {
			t.Fatalf("the repeated record was appended")
		}
		if done, err := l.SecurityHandled(ctx, id); err != nil || !done {
			t.Fatalf("after: %v, %v", done, err)
		}
		msg, err := store.LastMsg(ctx, store.SecuritySubject(SecurityKey(id)))
		if err != nil {
			t.Fatal(err)
		}
		e, err := ledger.DecodeEvent(msg.Data)
		if err != nil {
			t.Fatal(err)
		}
		if d, ok := e.Data.(ledger.SecurityHandled); !ok || e.Cause != cause || !slices.Equal(d.Families, h.Families) {
			t.Fatalf("record %+v", e)
		}
		if err := l.RecordSecurityHandled(ctx, ledger.Cause{Kind: ledger.CauseAdmin, ID: "x"}, now, h); !errors.Is(err, ledger.ErrInvalidRequest) {
			t.Fatalf("record with a non-security cause: %v", err)
		}
	})
}
