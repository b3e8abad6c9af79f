package jsstore

import (
	"context"
	"errors"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/tokenledger/tokenledger/ledger"
)

// Prepare sees the grant the call returns (all but the stream's Seq and
// Head), and under a race the last Prepare of each call is for the attempt
// that succeeded.
func TestLedgerPrepareSeesTheGrant(t *testing.T) {
	ctx := context.Background()
	store, _ := newTestStore(t)
	l := New(store)
	client := ledger.Client{ID: "web", Scopes: []string{"read"}, Audiences: []string{"api"}}
	policy := testPolicy
	same := func(prepared, got Grant) bool {
		prepared.State.Seq, prepared.State.Head = got.State.Seq, got.State.Head
		return reflect.DeepEqual(prepared, got)
	}

	var prepared []Grant
	g, err := l.Issue(ctx, IssueRequest{Client: client, Policy: policy, Subject: "alice", Scope: "read",
		Audience: []string{"api"}, Prepare: func(g Grant) { prepared = append(prepared, g) }})
	if err != nil {
		t.Fatal(err)
	}
	if len(prepared) != 1 || !same(prepared[0], g) || g.State.Seq == 0 {
		t.Fatalf("issue: prepared %+v, returned %+v", prepared, g)
	}

	const racers = 16
	var wg sync.WaitGroup
	grants := make([]Grant, racers)
	lasts := make([]Grant, racers)
	errs := make([]error, racers)
	for i := range racers {
		wg.Go(func() {
			grants[i], errs[i] = l.Refresh(ctx, RefreshRequest{Client: client, Policy: policy,
				RefreshToken: g.RefreshToken, Prepare: func(p Grant) { lasts[i] = p }})
		})
	}
	wg.Wait()
	rotated := 0
	for i := range racers {
		if errs[i] != nil {
			t.Fatalf("racer %d: %v", i, errs[i])
		}
		if !same(lasts[i], grants[i]) {
			t.Fatalf("racer %d: last prepared %+v, returned %+v", i, lasts[i], grants[i])
		}
		if !grants[i].Retried {
			rotated++
		}
	}
	if rotated != 1 {
		t.Fatalf("%d racers rotated, want 1", rotated)
	}

	// A refusal runs no Prepare: a forged token, and the reuse of a
	// rotated token after the grace window.
	called := false
	prep := func(Grant) { called = true }
	if _, err := l.Refresh(ctx, RefreshRequest{Client: client, Policy: policy, RefreshToken: "tlr_forged", Prepare: prep}); err == nil || called {
		t.Fatalf("forged token: %v, prepare called %t", err, called)
	}
	late := New(store, WithClock(func() time.Time { return time.Now().Add(time.Minute) }))
	_, err = late.Refresh(ctx, RefreshRequest{Client: client, Policy: policy, RefreshToken: g.RefreshToken, Prepare: prep})
	if !errors.Is(err, ledger.ErrRefreshReused) || called {
		t.Fatalf("reuse: %v, prepare called %t", err, called)
	}
}

// RevokeToken revokes a family only for a genuine token of it presented by
// its own client; anything else appends nothing.
func TestLedgerRevokeToken(t *testing.T) {
	ctx := context.Background()
	store, _ := newTestStore(t)
	l := New(store)
	client := ledger.Client{ID: "web", Scopes: []string{"read"}, Audiences: []string{"api"}}
	g, err := l.Issue(ctx, IssueRequest{Client: client, Policy: testPolicy, Subject: "alice", Scope: "read", Audience: []string{"api"}})
	if err != nil {
		t.Fatal(err)
	}
	rotated, err := l.Refresh(ctx, RefreshRequest{Client: client, Policy: testPolicy, RefreshToken: g.RefreshToken})
	if err != nil {
		t.Fatal(err)
	}
	forged := rotated.RefreshToken[:len(rotated.RefreshToken)-4] + "AAAA"
	cause := ledger.Cause{Kind: ledger.CauseRevoke, ID: "r1"}
	for _, tc := range []struct {
		name     string
		clientID string
		raw      string
		wantErr  error
	}{
		{"not a token", "web", "nope", ledger.ErrInvalidToken},
		{"forged token of the family", "web", forged, ledger.ErrInvalidToken},
		{"another client's family", "evil", rotated.RefreshToken, ledger.ErrWrongClient},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before, err := store.LastSeq(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := l.RevokeToken(ctx, tc.clientID, tc.raw, cause); !errors.Is(err, tc.wantErr) {
				t.Fatalf("RevokeToken = %v, want %v", err, tc.wantErr)
			}
			if after, _ := store.LastSeq(ctx); after != before {
				t.Fatalf("stream moved from %d to %d", before, after)
			}
		})
	}
	// The previous generation's token is genuine: it revokes the family,
	// and a second revocation appends nothing.
	st, err := l.RevokeToken(ctx, "web", g.RefreshToken, cause)
	if err != nil || st.Revoked == nil || st.Revoked.Cause != cause {
		t.Fatalf("RevokeToken(previous) = %+v, %v; want revoked by %v", st.Revoked, err, cause)
	}
	again, err := l.RevokeToken(ctx, "web", rotated.RefreshToken, ledger.Cause{Kind: ledger.CauseRevoke, ID: "r2"})
	if err != nil || again.Seq != st.Seq {
		t.Fatalf("second RevokeToken = seq %d, %v; want seq %d and nothing appended", again.Seq, err, st.Seq)
	}
}
