package projections

import (
	"context"
	"testing"
	"time"

	"github.com/tokenledger/tokenledger/ledger"
	"github.com/tokenledger/tokenledger/ledger/jsstore"
	"github.com/tokenledger/tokenledger/ledger/token"
)

// An access cutoff denies exactly the access tokens granted by the
// family's events before it, whatever the clocks of the instances that
// issued and cut: here the cutting instance is 30 s behind the issuing
// one, so its cutoff is stamped before the token's iat, and the token is
// still denied; a token granted after the cutoff by that lagging instance
// (iat before the cutoff's stamp) stays active.
func TestAccessCutoffByStreamOrderNotClocks(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	behind := &clock{t: f.clock.Now().Add(-30 * time.Second)}
	lagging := jsstore.New(f.store, jsstore.WithClock(behind.Now))

	issued := f.issue("alice") // at T by the first instance
	before := token.ClaimsFor("iss", issued.State, issued.Access, issued.IssuedAt)
	if before.FamilyEvent != 1 {
		t.Fatalf("the issue's token has sid_event %d, want 1", before.FamilyEvent)
	}
	cut, err := lagging.CutAccess(ctx, issued.State.FamilyID, ledger.Cause{Kind: ledger.CauseSecurity, ID: "sec-1"}) // stamped T-30s
	if err != nil {
		t.Fatal(err)
	}
	behind.Advance(time.Second)
	after, err := lagging.Refresh(ctx, jsstore.RefreshRequest{Client: testClient, Policy: testPolicy, RefreshToken: issued.RefreshToken}) // iat T-29s
	if err != nil {
		t.Fatal(err)
	}
	granted := token.ClaimsFor("iss", after.State, after.Access, after.IssuedAt)

	v := NewView()
	if err := f.runner(v).RunToEnd(ctx); err != nil {
		t.Fatal(err)
	}
	fv, _ := v.Family(issued.State.FamilyID)
	if fv.CutoffEvent != cut.Events || fv.CutoffEvent != 2 {
		t.Fatalf("view's cutoff event %d, the ledger's %d; want 2", fv.CutoffEvent, cut.Events)
	}
	now := f.clock.Now()
	for _, tc := range []struct {
		name   string
		c      token.AccessClaims
		denied bool
	}{
		{"granted before the cutoff, iat after its stamp", before, true},
		{"granted after the cutoff, iat before its stamp", granted, false},
		{"a token without sid_event (older build) issued before the stamp", func() token.AccessClaims {
			c := granted
			c.FamilyEvent, c.JTI, c.IssuedAt = 0, "01JDQ80000000000000000OLD1", cut.AccessCutoff.Unix()-1
			return c
		}(), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := v.AccessRevoked(tc.c.JTI, tc.c.SID, time.Unix(tc.c.IssuedAt, 0), tc.c.FamilyEvent, now)
			if got != tc.denied {
				t.Fatalf("AccessRevoked = %v, want %v (sid_event %d, cutoff event %d)", got, tc.denied, tc.c.FamilyEvent, fv.CutoffEvent)
			}
			if active := v.AccessActive(tc.c.JTI, tc.c.SID, time.Unix(tc.c.IssuedAt, 0), tc.c.FamilyEvent, now); active == tc.denied {
				t.Fatalf("AccessActive = %v, want %v", active, !tc.denied)
			}
		})
	}
}
