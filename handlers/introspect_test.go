package handlers_test

import (
	"context"
	"encoding/json"
	"fmt"
	"reflect"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tokenledger/tokenledger/api"
	"github.com/tokenledger/tokenledger/handlers"
	"github.com/tokenledger/tokenledger/internal/tltest"
	"github.com/tokenledger/tokenledger/ledger"
	"github.com/tokenledger/tokenledger/ledger/jsstore"
	"github.com/tokenledger/tokenledger/projections"
)

func TestIntrospectExpiredTokensWithoutEvents(t *testing.T) {
	e, _, _ := viewEnv(t, tltest.Options{Grace: 10 * time.Second})
	g := e.Issue("alice")
	tltest.WantOK(t, g)
	seq := e.LastSeq()

	e.Clock.Advance(15*time.Minute + time.Second) // past the access TTL
	if e.introspect(g.AccessToken).Active {
		t.Fatal("expired access token active")
	}
	if !e.introspect(g.RefreshToken).Active {
		t.Fatal("refresh token inactive before its idle lifetime")
	}
	e.Clock.Advance(14 * 24 * time.Hour) // past the refresh idle lifetime
	if e.introspect(g.RefreshToken).Active {
		t.Fatal("idle-expired refresh token active")
	}
	e.Clock.Advance(90 * 24 * time.Hour) // past the family's lifetime
	if s := e.sessions("alice"); len(s.Families) != 0 {
		t.Fatalf("expired family listed as a session: %+v", s)
	}
	if got := e.LastSeq(); got != seq {
		t.Fatalf("expiry wrote %d events", got-seq)
	}
}

func TestIntrospectAfterAccessCutoff(t *testing.T) {
	e, l, _ := viewEnv(t, tltest.Options{Grace: 10 * time.Second})
	g := e.Issue("alice")
	tltest.WantOK(t, g)
	// The clock is fixed: cutoff and the next refresh share their instant,
	// and only event order tells the old token from the new one.
	if _, err := l.CutAccess(context.Background(), g.FamilyID, ledger.Cause{Kind: ledger.CauseSecurity, ID: "sec-1"}); err != nil {
		t.Fatal(err)
	}
	if e.introspect(g.AccessToken).Active {
		t.Fatal("access token issued before the cutoff is active")
	}
	next := e.Refresh(g.RefreshToken)
	tltest.WantOK(t, next)
	if !e.introspect(next.AccessToken).Active {
		t.Fatal("access token issued after the cutoff (same second) is inactive")
	}
	e.Clock.Advance(2 * time.Second)
	later := e.Refresh(next.RefreshToken)
	tltest.WantOK(t, later)
	if !e.introspect(later.AccessToken).Active || e.introspect(g.AccessToken).Active {
		t.Fatal("cutoff answers changed with time")
	}
}

func TestIntrospectGraceRetryAndReuse(t *testing.T) {
	e, _, _ := viewEnv(t, tltest.Options{Grace: 10 * time.Second})
	g0 := e.Issue("alice")
	g1 := e.Refresh(g0.RefreshToken)
	retry := e.Refresh(g0.RefreshToken) // inside the grace window
	tltest.WantOK(t, retry)
	if retry.RefreshToken != g1.RefreshToken || !e.introspect(retry.AccessToken).Active {
		t.Fatalf("grace retry: %+v", retry.TokenResponse)
	}
	if e.introspect(g0.RefreshToken).Active {
		t.Fatal("rotated refresh token introspected active")
	}
	e.Clock.Advance(time.Minute)
	tltest.WantError(t, e.Refresh(g0.RefreshToken), api.CodeInvalidGrant, "400") // reuse: family revoked
	for _, tok := range []string{g0.AccessToken, g1.AccessToken, retry.AccessToken, g1.RefreshToken} {
		if e.introspect(tok).Active {
			t.Fatal("token of a family revoked for reuse is active")
		}
	}
}

// introspector is the counters of an instance's introspector.
type introspector struct{ hits, direct *atomic.Int64 }

// introspectorOf finds the introspector of the env's instances that
// serves v.
func introspectorOf(t *testing.T, e *env, v *projections.View) introspector {
	t.Helper()
	for _, in := range e.Instances {
		if hits, direct, ok := handlers.IntrospectCounters(in.Service(), v); ok {
			return introspector{hits, direct}
		}
	}
	t.Fatal("no introspector serves the view")
	return introspector{}
}

// The cache holds only what a token's signature proves: every revocation,
// however it was made and by whichever connection, is seen by the very
// next introspection, although that introspection's signature check is
// answered from the cache.
func TestIntrospectCacheNeverHidesARevocation(t *testing.T) {
	e, _, v := viewEnv(t, tltest.Options{Grace: 10 * time.Second})
	other := jsstore.New(e.Store, jsstore.WithClock(e.Clock.Now)) // another connection, as another instance
	ctx := context.Background()
	for _, tc := range []struct {
		name   string
		revoke func(g tltest.Reply, at api.IntrospectResponse)
	}{
		{"access token revoked", func(g tltest.Reply, at api.IntrospectResponse) {
			if _, err := other.RevokeAccess(ctx, jsstore.AccessToken{FamilyID: at.SID, JTI: at.JTI, ExpiresAt: time.Unix(at.ExpiresAt, 0)}, ledger.Cause{Kind: ledger.CauseRevoke, ID: "r1"}, nil); err != nil {
				t.Fatal(err)
			}
		}},
		{"family revoked by an admin", func(g tltest.Reply, _ api.IntrospectResponse) {
			if _, err := other.Revoke(ctx, g.FamilyID, ledger.Cause{Kind: ledger.CauseAdmin, ID: "a1"}); err != nil {
				t.Fatal(err)
			}
		}},
		{"access cut by a security event", func(g tltest.Reply, _ api.IntrospectResponse) {
			e.Clock.Advance(time.Second) // the cutoff is after the token's iat
			if _, err := other.CutAccess(ctx, g.FamilyID, ledger.Cause{Kind: ledger.CauseSecurity, ID: "s1"}); err != nil {
				t.Fatal(err)
			}
		}},
		{"family revoked for reuse", func(g tltest.Reply, _ api.IntrospectResponse) {
			tltest.WantOK(t, e.Refresh(g.RefreshToken))
			e.Clock.Advance(time.Minute) // past the grace window
			tltest.WantError(t, e.Refresh(g.RefreshToken), api.CodeInvalidGrant, "400")
		}},
		{"revoked through the endpoint", func(g tltest.Reply, _ api.IntrospectResponse) {
			e.revoke(g.AccessToken)
		}},
		{"expired, with no event", func(tltest.Reply, api.IntrospectResponse) {
			e.Clock.Advance(15*time.Minute + time.Second)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := e.Issue("alice-" + tc.name)
			tltest.WantOK(t, g)
			at := e.introspect(g.AccessToken)
			if !at.Active || at.JTI == "" || at.SID != g.FamilyID {
				t.Fatalf("fresh access token: %+v", at)
			}
			in := introspectorOf(t, e, v)
			hits := in.hits.Load()
			if again := e.introspect(g.AccessToken); !reflect.DeepEqual(again, at) {
				t.Fatalf("cached answer %+v differs from the first %+v", again, at)
			}
			if in.hits.Load() == hits {
				t.Fatal("the second introspection did not hit the cache")
			}
			tc.revoke(g, at)
			hits, direct := in.hits.Load(), in.direct.Load()
			if e.introspect(g.AccessToken).Active {
				t.Fatal("revoked access token active")
			}
			if in.hits.Load() == hits {
				t.Fatal("the token was verified again: the test did not exercise the cache")
			}
			if in.direct.Load() == direct {
				t.Fatal("answered by the worker pool: the test did not exercise introspectNow")
			}
		})
	}
}

// Revocations appended by another instance just before a burst of
// concurrent introspections are seen by all of them, on both instances.
func TestIntrospectConcurrentReadsOtherInstancesWrites(t *testing.T) {
	e := newEnv(t, "")
	e.StartInstance(tltest.Options{Grace: 10 * time.Second})
	e.StartInstance(tltest.Options{Grace: 10 * time.Second})
	other := jsstore.New(e.Store, jsstore.WithClock(e.Clock.Now)) // a third writer on its own connection
	ctx := context.Background()
	const rounds, callers = 12, 48
	for round := range rounds {
		g := e.Issue(fmt.Sprint("user-", round))
		tltest.WantOK(t, g)
		var at api.IntrospectResponse
		for range 8 { // both instances verify and cache it
			if at = e.introspect(g.AccessToken); !at.Active {
				t.Fatalf("round %d: fresh access token inactive", round)
			}
		}
		cause := ledger.Cause{Kind: ledger.CauseSecurity, ID: fmt.Sprint("c-", round)}
		var err error
		switch round % 3 {
		case 0:
			_, err = other.Revoke(ctx, g.FamilyID, cause)
		case 1:
			_, err = other.RevokeAccess(ctx, jsstore.AccessToken{FamilyID: g.FamilyID, JTI: at.JTI, ExpiresAt: time.Unix(at.ExpiresAt, 0)}, cause, nil)
		case 2:
			e.Clock.Advance(time.Second)
			_, err = other.CutAccess(ctx, g.FamilyID, cause)
		}
		if err != nil {
			t.Fatal(err)
		}
		body, _ := json.Marshal(map[string]any{"client_id": tltest.ClientID, "client_secret": tltest.Secret, "token": g.AccessToken})
		var wg sync.WaitGroup
		bad := make(chan string, callers)
		for range callers {
			wg.Go(func() {
				rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
				defer cancel()
				msg, err := e.NC.RequestWithContext(rctx, "tokens.introspect", body)
				if err != nil {
					bad <- err.Error()
				} else if string(msg.Data) != `{"active":false}` {
					bad <- string(msg.Data)
				}
			})
		}
		wg.Wait()
		close(bad)
		for msg := range bad {
			t.Fatalf("round %d: introspection after another instance's revocation answered %s", round, msg)
		}
	}
}
