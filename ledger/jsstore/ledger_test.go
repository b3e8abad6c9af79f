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
