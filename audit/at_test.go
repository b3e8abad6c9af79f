package audit

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/tokenledger/tokenledger/internal/natstest"
	"github.com/tokenledger/tokenledger/ledger"
	"github.com/tokenledger/tokenledger/ledger/jsstore"
	"github.com/tokenledger/tokenledger/ledger/token"
)

// history is a ledger written by the real jsstore.Ledger on a controlled
// clock, with the instants and tokens whose fate the test knows.
type history struct {
	src                *Source
	t0, rotA, revokeA  time.Time
	a, b, c            jsstore.Grant // as issued
	a1                 jsstore.Grant // A after its rotation
	revokeASeq         uint64
	reuseB, revokeJTIC time.Time
	cutC               time.Time
}

func buildHistory(t *testing.T) history {
	t.Helper()
	s := natstest.Start(t, "")
	_, js := natstest.Connect(t, s)
	ctx := context.Background()
	store, err := jsstore.NewStore(ctx, js, jsstore.StoreConfig{})
	if err != nil {
		t.Fatal(err)
	}
	var h history
	h.t0 = time.Date(2026, 5, 4, 10, 0, 0, 0, time.UTC)
	now := h.t0
	l := jsstore.New(store, jsstore.WithClock(func() time.Time { return now }))
	client := ledger.Client{ID: "web"}
	policy := ledger.Policy{Rotation: ledger.RotateAlways, Grace: 10 * time.Second,
		AccessTTL: 15 * time.Minute, RefreshTTL: 24 * time.Hour, FamilyTTL: 30 * 24 * time.Hour}
	issue := func(subject string) jsstore.Grant {
		g, err := l.Issue(ctx, jsstore.IssueRequest{Client: client, Policy: policy, Subject: subject, Scope: "read"})
		if err != nil {
			t.Fatal(err)
		}
		return g
	}
	refresh := func(tok string) (jsstore.Grant, error) {
		return l.Refresh(ctx, jsstore.RefreshRequest{Client: client, Policy: policy, RefreshToken: tok})
	}
	h.a, h.b, h.c = issue("alice"), issue("bob"), issue("carol")

	now = h.t0.Add(30 * time.Second) // B rotates
	if _, err := refresh(h.b.RefreshToken); err != nil {
		t.Fatal(err)
	}
	now = h.t0.Add(time.Minute) // A rotates...
	h.rotA = now
	if h.a1, err = refresh(h.a.RefreshToken); err != nil {
		t.Fatal(err)
	}
	now = h.rotA.Add(3 * time.Second) // ...and its response is lost: a grace retry
	if g, err := refresh(h.a.RefreshToken); err != nil || !g.Retried {
		t.Fatalf("grace retry: %v %v", g.Retried, err)
	}
	now = h.t0.Add(2 * time.Minute) // A is revoked by its client
	h.revokeA = now
	st, err := l.Revoke(ctx, h.a.State.FamilyID, ledger.Cause{Kind: ledger.CauseRevoke, ID: "req-revoke"})
	if err != nil {
		t.Fatal(err)
	}
	h.revokeASeq = st.Seq
	now = h.t0.Add(3 * time.Minute) // C's first access token is revoked
	h.revokeJTIC = now
	if _, err := l.RevokeAccess(ctx, jsstore.AccessToken{FamilyID: h.c.State.FamilyID, JTI: h.c.Access.JTI, ExpiresAt: h.c.Access.ExpiresAt}, ledger.Cause{Kind: ledger.CauseRevoke}, nil); err != nil {
		t.Fatal(err)
	}
	now = h.t0.Add(4 * time.Minute) // C's access tokens are cut off
	h.cutC = now
	if _, err := l.CutAccess(ctx, h.c.State.FamilyID, ledger.Cause{Kind: ledger.CauseSecurity, ID: "sec-1"}); err != nil {
		t.Fatal(err)
	}
	now = h.t0.Add(5 * time.Minute) // B's old token comes back: reuse
	h.reuseB = now
	if _, err := refresh(h.b.RefreshToken); !errors.Is(err, ledger.ErrRefreshReused) {
		t.Fatalf("reuse: %v", err)
	}
	h.src = NewSource(js, "", "")
	return h
}

func TestAtKnownOutcomes(t *testing.T) {
	h := buildHistory(t)
	ms := time.Millisecond
	famA, famB, famC := h.a.State.FamilyID, h.b.State.FamilyID, h.c.State.FamilyID
	hashA0, hashA1 := token.HashToken(h.a.RefreshToken), token.HashToken(h.a1.RefreshToken)
	cases := []struct {
		name       string
		opts       AtOptions
		wantValid  bool
		wantStatus string
		wantSeq    uint64 // the event that made it so; 0: none
		wantType   ledger.EventType
	}{
		{"family before it existed", AtOptions{Time: h.t0.Add(-time.Second), FamilyID: famA}, false, StatusUnknown, 0, ""},
		{"family after issue", AtOptions{Time: h.t0.Add(10 * time.Second), FamilyID: famA}, true, StatusActive, h.a.State.Seq, ledger.TypeFamilyIssued},
		{"family just before revocation", AtOptions{Time: h.revokeA.Add(-ms), FamilyID: famA}, true, StatusActive, h.a.State.Seq, ledger.TypeFamilyIssued},
		{"family at the instant of revocation", AtOptions{Time: h.revokeA, FamilyID: famA}, false, StatusRevoked, h.revokeASeq, ledger.TypeFamilyRevoked},
		{"family just after revocation", AtOptions{Time: h.revokeA.Add(ms), FamilyID: famA}, false, StatusRevoked, h.revokeASeq, ledger.TypeFamilyRevoked},
		{"family revoked by reuse", AtOptions{Time: h.reuseB.Add(ms), FamilyID: famB}, false, StatusRevoked, 0, ledger.TypeReuseDetected},
		{"old token before rotation", AtOptions{Time: h.rotA.Add(-ms), RefreshHash: hashA0}, true, StatusCurrent, h.a.State.Seq, ledger.TypeFamilyIssued},
		{"old token inside the grace window", AtOptions{Time: h.rotA.Add(5 * time.Second), RefreshHash: hashA0}, false, StatusGrace, h.a1.State.Seq, ledger.TypeRefreshRotated},
		{"old token at the end of the grace window", AtOptions{Time: h.rotA.Add(10 * time.Second), RefreshHash: hashA0}, false, StatusGrace, h.a1.State.Seq, ledger.TypeRefreshRotated},
		{"old token after the grace window", AtOptions{Time: h.rotA.Add(10*time.Second + ms), RefreshHash: hashA0}, false, StatusRotated, h.a1.State.Seq, ledger.TypeRefreshRotated},
		{"new token inside the grace window", AtOptions{Time: h.rotA.Add(5 * time.Second), RefreshHash: hashA1}, true, StatusCurrent, h.a1.State.Seq, ledger.TypeRefreshRotated},
		{"new token just after revocation", AtOptions{Time: h.revokeA.Add(ms), RefreshHash: hashA1}, false, StatusRevoked, h.revokeASeq, ledger.TypeFamilyRevoked},
		{"unknown refresh token", AtOptions{Time: h.reuseB, RefreshHash: "nope"}, false, StatusUnknown, 0, ""},
		{"access token while granted", AtOptions{Time: h.rotA.Add(ms), JTI: h.a1.Access.JTI}, true, StatusActive, h.a1.State.Seq, ledger.TypeRefreshRotated},
		{"access token just after its family's revocation", AtOptions{Time: h.revokeA.Add(ms), JTI: h.a1.Access.JTI}, false, StatusRevoked, h.revokeASeq, ledger.TypeFamilyRevoked},
		{"access token before it was revoked", AtOptions{Time: h.revokeJTIC.Add(-ms), JTI: h.c.Access.JTI}, true, StatusActive, h.c.State.Seq, ledger.TypeFamilyIssued},
		{"access token just after it was revoked", AtOptions{Time: h.revokeJTIC.Add(ms), JTI: h.c.Access.JTI}, false, StatusRevoked, 0, ledger.TypeAccessRevoked},
		{"access token after its expiry", AtOptions{Time: h.a.Access.ExpiresAt.Add(ms), JTI: h.a.Access.JTI}, false, StatusExpired, h.a.State.Seq, ledger.TypeFamilyIssued},
		{"access token of a family cut off", AtOptions{Time: h.cutC.Add(ms), FamilyID: famC}, true, StatusActive, h.c.State.Seq, ledger.TypeFamilyIssued},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ans, err := At(context.Background(), h.src, tc.opts)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("%s: %s", ans.Status, ans.Reason)
			require(t, "valid", ans.Valid, tc.wantValid)
			require(t, "status", ans.Status, tc.wantStatus)
			require(t, "view agrees", ans.ViewAgrees, true)
			if ans.Active != nil {
				t.Fatalf("active_families %d on a %s query: it counts the whole ledger only", *ans.Active, ans.Query)
			}
			if tc.wantType == "" {
				if ans.Event != nil {
					t.Fatalf("event: got %+v, want none", ans.Event)
				}
				return
			}
			if ans.Event == nil {
				t.Fatal("no event given")
			}
			require(t, "event type", ans.Event.Type, tc.wantType)
			if tc.wantSeq != 0 {
				require(t, "event seq", ans.Event.Seq, tc.wantSeq)
			}
		})
	}

	t.Run("active families", func(t *testing.T) {
		for _, tc := range []struct {
			at   time.Time
			want []string
		}{
			{h.t0.Add(-time.Second), nil},
			{h.rotA, []string{famA, famB, famC}},
			{h.revokeA.Add(time.Millisecond), []string{famB, famC}},
			{h.reuseB.Add(time.Millisecond), []string{famC}},
		} {
			ans, err := At(context.Background(), h.src, AtOptions{Time: tc.at})
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, f := range ans.Families {
				got = append(got, f.FamilyID)
			}
			require(t, "active at "+tc.at.String(), len(got), len(tc.want))
			for i := range got {
				require(t, "family", got[i], tc.want[i])
			}
			require(t, "view agrees", ans.ViewAgrees, true)
		}
	})
}
