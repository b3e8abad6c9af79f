package jsstore

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/tokenledger/tokenledger/ledger"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/tokenledger/tokenledger/internal/natstest"
)

// On a three-node cluster with a three-replica stream, what one instance
// appends is what another reads at once: a family issued through node 0 is
// found through node 1, revoked there, and the revocation holds for the
// next refresh through node 0. (Reads go to the stream leader: a direct
// get may be answered by a replica that does not have the append yet.)
func TestStoreOnAThreeNodeCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a three-node cluster")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	servers := natstest.StartCluster(t, 3)
	_, jsA := natstest.Connect(t, servers[0])
	_, jsB := natstest.Connect(t, servers[1])
	open := func(js jetstream.JetStream) *Store {
		t.Helper()
		for {
			s, err := NewStore(ctx, js, StoreConfig{Replicas: 3})
			if err == nil {
				return s
			}
			if ctx.Err() != nil {
				t.Fatalf("three-replica store: %v", err)
			}
			time.Sleep(100 * time.Millisecond) // the cluster may still be placing peers
		}
	}
	storeA, storeB := open(jsA), open(jsB)
	if storeA.directSubject != "" || storeB.directSubject != "" {
		t.Fatal("a three-replica store reads by direct gets")
	}
	a, b := New(storeA), New(storeB)
	client := ledger.Client{ID: "web", Scopes: []string{"read"}}
	policy := testPolicy
	for i := range 100 {
		g, err := a.Issue(ctx, IssueRequest{Client: client, Policy: policy, Subject: "alice", Scope: "read"})
		if err != nil {
			t.Fatalf("round %d: issue: %v", i, err)
		}
		st, err := storeB.Load(ctx, g.State.FamilyID)
		if err != nil || !st.Exists() || st.TokenHash != g.State.TokenHash || st.Seq != g.State.Seq {
			t.Fatalf("round %d: node 1 loads %+v, %v; node 0 appended seq %d", i, st, err, g.State.Seq)
		}
		if _, err := b.Revoke(ctx, g.State.FamilyID, ledger.Cause{Kind: ledger.CauseRevoke, ID: "logout"}); err != nil {
			t.Fatalf("round %d: revoke through node 1: %v", i, err)
		}
		if _, err := a.Refresh(ctx, RefreshRequest{Client: client, Policy: policy, RefreshToken: g.RefreshToken}); err == nil {
			t.Fatalf("round %d: refresh through node 0 succeeded after the revocation through node 1", i)
		} else if errors.Is(err, ledger.ErrUnavailable) {
			t.Fatalf("round %d: refresh: %v", i, err)
		}
		last, err := storeA.LastSeq(ctx)
		if err != nil || last < g.State.Seq+1 {
			t.Fatalf("round %d: node 0's last sequence %d, %v; the revocation is after %d", i, last, err, g.State.Seq)
		}
	}
}
