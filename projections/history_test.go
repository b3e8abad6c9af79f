package projections

import (
	"context"
	"testing"
	"time"

	"github.com/tokenledger/tokenledger/internal/natstest"
	"github.com/tokenledger/tokenledger/ledger"
	"github.com/tokenledger/tokenledger/ledger/jsstore"
)

// A view rebuilt from a hot ledger whose dead families expired
// (jsstore.StoreConfig.HistoryMargin): its first sequence is past 1 and its
// newest events are gone, yet RunToEnd returns, the lag is nothing, and the
// view has the live family and not the dead ones.
func TestViewOnAHotLedgerWithExpiredEvents(t *testing.T) {
	ctx := context.Background()
	_, js := natstest.Connect(t, natstest.Start(t, ""))
	store, err := jsstore.NewStore(ctx, js, jsstore.StoreConfig{HistoryMargin: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	l := jsstore.New(store)
	short := ledger.Policy{Rotation: ledger.RotateAlways, AccessTTL: time.Second, RefreshTTL: 2 * time.Second, FamilyTTL: 2 * time.Second}
	issue := func(p ledger.Policy, subject string) jsstore.Grant {
		t.Helper()
		g, err := l.Issue(ctx, jsstore.IssueRequest{Client: testClient, Policy: p, Subject: subject, Scope: "read"})
		if err != nil {
			t.Fatal(err)
		}
		return g
	}
	first := issue(short, "dead-1") // the stream's first event
	live := issue(testPolicy, "alive")
	last := issue(short, "dead-2") // its newest
	natstest.PollUntil(t, "the dead families expire", 10*time.Second, func() (bool, error) {
		info, err := store.Stream().Info(ctx)
		return err == nil && info.State.Msgs == 1, err
	})
	info, err := store.Stream().Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.FirstSeq != live.State.Seq || info.State.LastSeq != last.State.Seq {
		t.Fatalf("hot stream %+v", info.State)
	}

	v := NewView()
	r, err := NewRunner(js, v, RunnerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := r.RunToEnd(rctx); err != nil {
		t.Fatalf("RunToEnd: %v", err)
	}
	lag, err := r.Lag(ctx)
	if err != nil || lag.Behind() != 0 {
		t.Fatalf("lag %+v (%d behind), %v", lag, lag.Behind(), err)
	}
	if _, ok := v.Family(live.State.FamilyID); !ok {
		t.Fatal("the live family is not in the view")
	}
	for _, g := range []jsstore.Grant{first, last} {
		if _, ok := v.Family(g.State.FamilyID); ok {
			t.Fatalf("expired family %s is in the view", g.State.FamilyID)
		}
	}

	// A new event after the gap is applied as usual.
	next := issue(testPolicy, "later")
	if err := r.RunToEnd(rctx); err != nil {
		t.Fatal(err)
	}
	if v.LastSeq() != next.State.Seq {
		t.Fatalf("view at %d, want %d", v.LastSeq(), next.State.Seq)
	}
}
