package handlers

import (
	"context"
	"testing"
	"time"

	"github.com/tokenledger/tokenledger/ledger"
)

func TestIntrospectExpiredTokensWithoutEvents(t *testing.T) {
	e, _, _ := viewEnv(t, envOptions{grace: 10 * time.Second})
	g := e.issue("alice")
	wantOK(t, g)
	seq := e.lastSeq()

	e.clock.Advance(15*time.Minute + time.Second) // past the access TTL
	if e.introspect(g.AccessToken).Active {
		t.Fatal("expired access token active")
	}
	if !e.introspect(g.RefreshToken).Active {
		t.Fatal("refresh token inactive before its idle lifetime")
	}
	e.clock.Advance(14 * 24 * time.Hour) // past the refresh idle lifetime
	if e.introspect(g.RefreshToken).Active {
		t.Fatal("idle-expired refresh token active")
	}
	e.clock.Advance(90 * 24 * time.Hour) // past the family's lifetime
	if s := e.sessions("alice"); len(s.Families) != 0 {
		t.Fatalf("expired family listed as a session: %+v", s)
	}
	if got := e.lastSeq(); got != seq {
		t.Fatalf("expiry wrote %d events", got-seq)
	}
}

func TestIntrospectAfterAccessCutoff(t *testing.T) {
	e, l, _ := viewEnv(t, envOptions{grace: 10 * time.Second})
	g := e.issue("alice")
	wantOK(t, g)
	// The clock is fixed: cutoff and the next refresh share their instant,
	// and only event order tells the old token from the new one.
	if _, err := l.CutAccess(context.Background(), g.FamilyID, ledger.Cause{Kind: ledger.CauseSecurity, ID: "sec-1"}); err != nil {
		t.Fatal(err)
	}
	if e.introspect(g.AccessToken).Active {
		t.Fatal("access token issued before the cutoff is active")
	}
	next := e.refresh(g.RefreshToken)
	wantOK(t, next)
	if !e.introspect(next.AccessToken).Active {
		t.Fatal("access token issued after the cutoff (same second) is inactive")
	}
	e.clock.Advance(2 * time.Second)
	later := e.refresh(next.RefreshToken)
	wantOK(t, later)
	if !e.introspect(later.AccessToken).Active || e.introspect(g.AccessToken).Active {
		t.Fatal("cutoff answers changed with time")
	}
}

func TestIntrospectGraceRetryAndReuse(t *testing.T) {
	e, _, _ := viewEnv(t, envOptions{grace: 10 * time.Second})
	g0 := e.issue("alice")
	g1 := e.refresh(g0.RefreshToken)
	retry := e.refresh(g0.RefreshToken) // inside the grace window
	wantOK(t, retry)
	if retry.RefreshToken != g1.RefreshToken || !e.introspect(retry.AccessToken).Active {
		t.Fatalf("grace retry: %+v", retry.TokenResponse)
	}
	if e.introspect(g0.RefreshToken).Active {
		t.Fatal("rotated refresh token introspected active")
	}
	e.clock.Advance(time.Minute)
	wantError(t, e.refresh(g0.RefreshToken), CodeInvalidGrant, "400") // reuse: family revoked
	for _, tok := range []string{g0.AccessToken, g1.AccessToken, retry.AccessToken, g1.RefreshToken} {
		if e.introspect(tok).Active {
			t.Fatal("token of a family revoked for reuse is active")
		}
	}
}
