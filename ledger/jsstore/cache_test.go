package jsstore

import (
	"context"
	"errors"
	"sync"
	"testing"

	"github.com/tokenledger/tokenledger/ledger"
)

// A ledger deciding on cached states decides exactly as one that loads:
// here its view lags forever (newer never reports anything), the worst
// case, while another instance rotates and revokes the family under it.
func TestLedgerStateCacheNeverDecidesOnAStaleState(t *testing.T) {
	ctx := context.Background()
	store, _ := newTestStore(t)
	a := New(store, WithStateCache(func(string, uint64) bool { return false }, 0))
	b := New(store) // another instance
	client := ledger.Client{ID: "web", Scopes: []string{"read"}, Audiences: []string{"api"}}
	refresh := func(l *Ledger, token string) (Grant, error) {
		return l.Refresh(ctx, RefreshRequest{Client: client, Policy: testPolicy, RefreshToken: token})
	}
	issue := func(subject string) Grant {
		t.Helper()
		g, err := a.Issue(ctx, IssueRequest{Client: client, Policy: testPolicy, Subject: subject, Scope: "read", Audience: []string{"api"}})
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := a.cache.get(g.State.FamilyID); ok {
			t.Fatal("a family just issued is cached (its next refresh is an access-token lifetime away)")
		}
		return g
	}
	g0 := issue("alice")
	ga, err := refresh(a, g0.RefreshToken)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := a.cache.get(ga.State.FamilyID); !ok {
		t.Fatal("the refreshed family is not cached")
	}

	// b rotates; a, presented the same token inside the grace window,
	// answers with b's successor (a grace retry), not a second rotation.
	g1, err := refresh(b, ga.RefreshToken)
	if err != nil {
		t.Fatal(err)
	}
	r, err := refresh(a, ga.RefreshToken)
	if err != nil || !r.Retried || r.RefreshToken != g1.RefreshToken {
		t.Fatalf("stale cache, rotated token: retried %t, same successor %t, %v", r.Retried, r.RefreshToken == g1.RefreshToken, err)
	}
	g2, err := refresh(a, g1.RefreshToken)
	if err != nil || g2.State.Generation != 3 {
		t.Fatalf("rotation on the cached state: generation %d, %v", g2.State.Generation, err)
	}

	// b rotates again; a is presented the newest token, which its cached
	// state does not know: refused there, it decides again on the loaded
	// state and rotates.
	g3, err := refresh(b, g2.RefreshToken)
	if err != nil {
		t.Fatal(err)
	}
	g4, err := refresh(a, g3.RefreshToken)
	if err != nil || g4.State.Generation != 5 {
		t.Fatalf("token newer than the cache: generation %d, %v", g4.State.Generation, err)
	}

	// b revokes; a's cached state still shows a live family, but the
	// refresh is refused and nothing is appended after the revocation.
	revoked, err := b.Revoke(ctx, g4.State.FamilyID, ledger.Cause{Kind: ledger.CauseAdmin})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := refresh(a, g4.RefreshToken); !errors.Is(err, ledger.ErrFamilyRevoked) {
		t.Fatalf("refresh of a revoked family: %v", err)
	}
	if st, err := store.Load(ctx, g4.State.FamilyID); err != nil || st.Seq != revoked.Seq {
		t.Fatalf("after the revocation the family moved from seq %d to %d (%v)", revoked.Seq, st.Seq, err)
	}

	// 16 refreshers of one token of a cached family: one rotation.
	g5, err := refresh(a, issue("bob").RefreshToken)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	grants := make([]Grant, 16)
	for i := range grants {
		wg.Go(func() {
			var err error
			if grants[i], err = refresh(a, g5.RefreshToken); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	rotated := 0
	for _, g := range grants {
		if !g.Retried {
			rotated++
		}
		if g.RefreshToken != grants[0].RefreshToken {
			t.Fatal("racers got different successors")
		}
	}
	if rotated != 1 {
		t.Fatalf("%d racers rotated, want 1", rotated)
	}
}

func TestStateCache(t *testing.T) {
	var newer sync.Map // family → seq the "view" has seen
	l := New(nil, WithStateCache(func(fid string, seq uint64) bool {
		v, ok := newer.Load(fid)
		return ok && v.(uint64) > seq
	}, 2))
	c := l.cache
	c.put(ledger.State{FamilyID: "a", Seq: 5})
	c.put(ledger.State{FamilyID: "a", Seq: 3}) // older: ignored
	if st, ok := c.get("a"); !ok || st.Seq != 5 {
		t.Fatalf("get a: %d %t", st.Seq, ok)
	}
	newer.Store("a", uint64(6)) // another writer's event, seen by the view
	if _, ok := c.get("a"); ok {
		t.Fatal("a state the view knows to be old was used")
	}
	c.put(ledger.State{FamilyID: "b", Seq: 7})
	c.put(ledger.State{FamilyID: "c", Seq: 8})
	if n := len(c.m); n != 2 {
		t.Fatalf("%d entries held, want at most 2", n)
	}
	c.drop("c")
	if _, ok := c.get("c"); ok {
		t.Fatal("dropped entry still served")
	}
	c.put(ledger.State{}) // no family: not cached
	if New(nil).cache != nil || New(nil, WithStateCache(nil, 0)).cache != nil {
		t.Fatal("a cache without a view check")
	}
}

// The ledger's clock carries no monotonic reading, so a cached state and
// one loaded from the stream compare with now alike.
func TestLedgerClockIsWallOnly(t *testing.T) {
	now := New(nil).Now()
	if now != now.Round(0) {
		t.Fatal("the ledger's clock has a monotonic reading")
	}
}
