package handlers

import (
	"context"
	"encoding/json"
	"fmt"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/oklog/ulid/v2"

	"github.com/tokenledger/tokenledger/ledger"
	"github.com/tokenledger/tokenledger/ledger/jsstore"
	"github.com/tokenledger/tokenledger/ledger/token"
	"github.com/tokenledger/tokenledger/projections"
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

// introspectorOf finds the introspector of the env's service that serves v.
func introspectorOf(t *testing.T, e *env, v *projections.View) *introspector {
	t.Helper()
	for _, svc := range e.services {
		if svc.intro != nil && svc.intro.view == v {
			return svc.intro
		}
	}
	t.Fatal("no introspector serves the view")
	return nil
}

// The cache holds only what a token's signature proves: every revocation,
// however it was made and by whichever connection, is seen by the very
// next introspection, although that introspection's signature check is
// answered from the cache.
func TestIntrospectCacheNeverHidesARevocation(t *testing.T) {
	e, _, v := viewEnv(t, envOptions{grace: 10 * time.Second})
	other := jsstore.New(e.store, jsstore.WithClock(e.clock.Now)) // another connection, as another instance
	ctx := context.Background()
	for _, tc := range []struct {
		name   string
		revoke func(g reply, at IntrospectResponse)
	}{
		{"access token revoked", func(g reply, at IntrospectResponse) {
			if _, err := other.RevokeAccess(ctx, jsstore.AccessToken{FamilyID: at.SID, JTI: at.JTI, ExpiresAt: time.Unix(at.ExpiresAt, 0)}, ledger.Cause{Kind: ledger.CauseRevoke, ID: "r1"}, nil); err != nil {
				t.Fatal(err)
			}
		}},
		{"family revoked by an admin", func(g reply, _ IntrospectResponse) {
			if _, err := other.Revoke(ctx, g.FamilyID, ledger.Cause{Kind: ledger.CauseAdmin, ID: "a1"}); err != nil {
				t.Fatal(err)
			}
		}},
		{"access cut by a security event", func(g reply, _ IntrospectResponse) {
			e.clock.Advance(time.Second) // the cutoff is after the token's iat
			if _, err := other.CutAccess(ctx, g.FamilyID, ledger.Cause{Kind: ledger.CauseSecurity, ID: "s1"}); err != nil {
				t.Fatal(err)
			}
		}},
		{"family revoked for reuse", func(g reply, _ IntrospectResponse) {
			wantOK(t, e.refresh(g.RefreshToken))
			e.clock.Advance(time.Minute) // past the grace window
			wantError(t, e.refresh(g.RefreshToken), CodeInvalidGrant, "400")
		}},
		{"revoked through the endpoint", func(g reply, _ IntrospectResponse) {
			e.revoke(g.AccessToken)
		}},
		{"expired, with no event", func(reply, IntrospectResponse) {
			e.clock.Advance(15*time.Minute + time.Second)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := e.issue("alice-" + tc.name)
			wantOK(t, g)
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
	e.startService(envOptions{grace: 10 * time.Second, view: projections.NewView()})
	e.startService(envOptions{grace: 10 * time.Second, view: projections.NewView()})
	other := jsstore.New(e.store, jsstore.WithClock(e.clock.Now)) // a third writer on its own connection
	ctx := context.Background()
	const rounds, callers = 12, 48
	for round := range rounds {
		g := e.issue(fmt.Sprint("user-", round))
		wantOK(t, g)
		var at IntrospectResponse
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
			e.clock.Advance(time.Second)
			_, err = other.CutAccess(ctx, g.FamilyID, cause)
		}
		if err != nil {
			t.Fatal(err)
		}
		body, _ := json.Marshal(map[string]any{"client_id": testClientID, "client_secret": testSecret, "token": g.AccessToken})
		var wg sync.WaitGroup
		bad := make(chan string, callers)
		for range callers {
			wg.Go(func() {
				rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
				defer cancel()
				msg, err := e.nc.RequestWithContext(rctx, "tokens.introspect", body)
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

// decodeTokenRequestFast accepts only what DecodeTokenRequest accepts, with
// the same result.
func TestDecodeTokenRequestFast(t *testing.T) {
	for _, tc := range []struct {
		body string
		fast bool
	}{
		{`{"client_id":"web","client_secret":"s","token":"a.b.c"}`, true},
		{" \n{ \"client_id\" : \"web\" ,\t\"client_secret\":\"s\",\"token\":\"t\",\"token_type_hint\":\"access_token\"}\r\n", true},
		{`{"token":"t","token_type_hint":"refresh_token","client_secret":"s","client_id":"web"}`, true},
		{`{"client_id":"web","client_secret":"s","token":"t","token_type_hint":"other"}`, false},
		{`{"client_id":"web","client_secret":"s"}`, false},
		{`{"client_id":"","client_secret":"s","token":"t"}`, false},
		{`{"client_id":"web","client_secret":"s","token":"t","extra":"x"}`, false},
		{`{"CLIENT_ID":"web","client_secret":"s","token":"t"}`, false}, // encoding/json matches it: slow path
		{`{"client_id":"web","client_id":"web2","client_secret":"s","token":"t"}`, false},
		{`{"client_id":"w\u0065b","client_secret":"s","token":"t"}`, false},
		{`{"client_id":"web","client_secret":"s","token":"t"} x`, false},
		{`{"client_id":"web","client_secret":"s","token":"t"}{}`, false},
		{`{"client_id":"web","client_secret":"s","token":"t",}`, false},
		{`{"client_id":"web","client_secret":"s","token":null}`, false},
		{`{"client_id":"web","client_secret":"s","token":1}`, false},
		{`{"client_id":"wéb","client_secret":"s","token":"t"}`, false},
		{"\v{\"client_id\":\"web\",\"client_secret\":\"s\",\"token\":\"t\"}", false},
		{`[]`, false},
		{``, false},
		{`{`, false},
		{`{"client_id":"web","client_secret":"s","token":"t"`, false},
	} {
		got, ok := decodeTokenRequestFast([]byte(tc.body), DefaultMaxRequestBytes)
		if ok != tc.fast {
			t.Errorf("%q: fast path %t, want %t", tc.body, ok, tc.fast)
		}
		checkFastAgreesWithStrict(t, []byte(tc.body), got, ok)
	}
	body := []byte(`{"client_id":"web","client_secret":"s","token":"t"}`)
	if _, ok := decodeTokenRequestFast(body, len(body)-1); ok {
		t.Error("fast path ignores the size limit")
	}
}

func checkFastAgreesWithStrict(t *testing.T, body []byte, got TokenRequest, ok bool) {
	t.Helper()
	if !ok {
		return
	}
	want, err := DecodeTokenRequest(body, DefaultMaxRequestBytes)
	if err != nil {
		t.Fatalf("%q: fast path accepts what DecodeTokenRequest refuses (%v)", body, err)
	}
	if got != want {
		t.Fatalf("%q: fast path decodes %+v, DecodeTokenRequest %+v", body, got, want)
	}
}

func FuzzDecodeTokenRequestFast(f *testing.F) {
	for _, s := range []string{
		`{"client_id":"web","client_secret":"s","token":"a.b.c"}`,
		`{"client_id":"web","client_secret":"s","token":"t","token_type_hint":"access_token"}`,
		` { "token" : "t" , "client_id":"c","client_secret":"s" } `,
		`{"client_id":"web","client_secret":"s","token":"t","Token":"u"}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		got, ok := decodeTokenRequestFast(body, DefaultMaxRequestBytes)
		checkFastAgreesWithStrict(t, body, got, ok)
	})
}

// A token verified with a key that later leaves the published set (its
// retirement is older than the longest token lifetime) is verified again,
// and refused, as an uncached verifier would refuse it.
func TestIntrospectCacheFollowsTheKeySet(t *testing.T) {
	clock := &testClock{t: time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)}
	start := clock.Now()
	old, err := token.GenerateKey(token.AlgEdDSA, start.Add(-time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	cur, err := token.GenerateKey(token.AlgEdDSA, start)
	if err != nil {
		t.Fatal(err)
	}
	old.RetiredAt = start
	keys := token.KeySet{Keys: []token.Key{old, cur}}
	const maxAge = 16 * time.Minute
	in := &introspector{keys: keys, algs: []string{token.AlgEdDSA}, issuer: "tokenledger",
		maxAge: maxAge, now: clock.Now, cache: newTokenCache()}
	signer, err := token.NewSigner(old)
	if err != nil {
		t.Fatal(err)
	}
	// Longer-lived than any token the service signs, so that only the key
	// set can make it invalid.
	raw, err := signer.Sign(token.AccessClaims{
		Issuer: "tokenledger", Subject: "alice", ExpiresAt: start.Add(time.Hour).Unix(),
		IssuedAt: start.Unix(), NotBefore: start.Unix(), JTI: ulid.Make().String(),
		ClientID: testClientID, SID: ulid.Make().String(),
	})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		if _, ok := in.verify(raw, clock.Now()); !ok {
			t.Fatalf("verification %d refused a token of a published key", i)
		}
	}
	if in.hits.Load() != 1 || in.misses.Load() != 1 {
		t.Fatalf("hits %d, misses %d; want one each", in.hits.Load(), in.misses.Load())
	}
	clock.Advance(maxAge + time.Second) // the retired key is no longer published
	if _, ok := in.verify(raw, clock.Now()); ok {
		t.Fatal("token of a key no longer published accepted from the cache")
	}
	v, err := token.NewVerifier(keys.JWKS(clock.Now(), maxAge), []string{token.AlgEdDSA}, "tokenledger", clock.Now)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := v.Verify(raw); err == nil {
		t.Fatal("the uncached verifier accepts it: the test proves nothing")
	}
}

// The cache stays within its size, and a full shard drops expired tokens
// before live ones.
func TestTokenCacheBounded(t *testing.T) {
	c := newTokenCache()
	now := time.Unix(1_800_000_000, 0)
	size := func() int {
		n := 0
		for i := range c.shards {
			n += len(c.shards[i].m)
		}
		return n
	}
	for i := range 2 * tokenCacheSize {
		c.put(fmt.Sprint("expired-", i), &verifiedToken{exp: now.Unix() - 1}, now)
		if i%1000 == 0 && size() > tokenCacheSize {
			t.Fatalf("%d entries, bound %d", size(), tokenCacheSize)
		}
	}
	if got := size(); got > tokenCacheSize || got == 0 {
		t.Fatalf("%d entries after overfilling, want at most %d and some", got, tokenCacheSize)
	}
	live := tokenCacheSize / 4
	for i := range live {
		c.put(fmt.Sprint("live-", i), &verifiedToken{exp: now.Unix() + 60}, now)
	}
	for i := range live {
		if c.get(fmt.Sprint("live-", i)) == nil {
			t.Fatalf("live token %d evicted while expired ones were there to drop", i)
		}
	}
}
