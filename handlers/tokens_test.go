package handlers_test

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	josejwt "github.com/go-jose/go-jose/v4/jwt"
	"github.com/oklog/ulid/v2"

	"github.com/tokenledger/tokenledger/api"
	"github.com/tokenledger/tokenledger/internal/tltest"
	"github.com/tokenledger/tokenledger/ledger"
	"github.com/tokenledger/tokenledger/ledger/token"
)

// The access token verifies against the tokens.jwks reply with go-jose, an
// independent JWT library, and carries the claims of docs/contract.md §2.4.
func TestAccessTokenVerifiesWithIndependentLibrary(t *testing.T) {
	e := newEnv(t, "")
	e.StartInstance(tltest.Options{Grace: 10 * time.Second, Wall: true})
	r := e.Call("tokens.issue", map[string]any{
		"client_id": tltest.ClientID, "client_secret": tltest.Secret, "subject": "alice",
		"scope": "read", "claims": map[string]any{"tenant": "acme"},
	})
	tltest.WantOK(t, r)

	jwksReply := e.Call("tokens.jwks", "{}")
	var set jose.JSONWebKeySet
	if err := json.Unmarshal(jwksReply.Raw, &set); err != nil || len(set.Keys) == 0 {
		t.Fatalf("jwks %s: %v", jwksReply.Raw, err)
	}
	if empty := e.Call("tokens.jwks", ""); string(empty.Raw) != string(jwksReply.Raw) {
		t.Fatal("empty jwks request answered differently")
	}

	tok, err := josejwt.ParseSigned(r.AccessToken, []jose.SignatureAlgorithm{jose.EdDSA})
	if err != nil {
		t.Fatal(err)
	}
	h := tok.Headers[0]
	if typ := h.ExtraHeaders[jose.HeaderType]; typ != "at+jwt" {
		t.Fatalf("typ = %v", typ)
	}
	keys := set.Key(h.KeyID)
	if h.KeyID == "" || len(keys) != 1 {
		t.Fatalf("kid %q not in jwks", h.KeyID)
	}
	var std josejwt.Claims
	var extra struct {
		ClientID string `json:"client_id"`
		Scope    string `json:"scope"`
		SID      string `json:"sid"`
		Ver      int    `json:"ver"`
		Tenant   string `json:"tenant"`
	}
	if err := tok.Claims(keys[0].Key, &std, &extra); err != nil {
		t.Fatalf("signature does not verify: %v", err)
	}
	if err := std.ValidateWithLeeway(josejwt.Expected{Issuer: "tokenledger", AnyAudience: []string{"api"}, Subject: "alice"}, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := ulid.ParseStrict(std.ID); err != nil {
		t.Fatalf("jti %q is not a ULID", std.ID)
	}
	if std.Expiry == nil || std.IssuedAt == nil || std.NotBefore == nil ||
		std.Expiry.Time().Sub(std.IssuedAt.Time()) != 15*time.Minute {
		t.Fatalf("times %+v", std)
	}
	if extra.ClientID != tltest.ClientID || extra.Scope != "read" || extra.SID != r.FamilyID || extra.Ver != 1 || extra.Tenant != "acme" {
		t.Fatalf("claims %+v", extra)
	}
	if r.TokenType != "Bearer" || r.ExpiresIn != 900 || r.RefreshTokenExpiresIn != 14*24*3600 || r.Scope != "read" {
		t.Fatalf("token response %s", r.Raw)
	}
	// A tampered token fails with the independent library too.
	parts := strings.Split(r.AccessToken, ".")
	forged, _ := josejwt.ParseSigned(parts[0]+"."+parts[1][:len(parts[1])-2]+"AA."+parts[2], []jose.SignatureAlgorithm{jose.EdDSA})
	if forged != nil && forged.Claims(keys[0].Key, &std) == nil {
		t.Fatal("tampered token verified")
	}
}

func TestRefreshChainAndGrace(t *testing.T) {
	e := newEnv(t, "")
	e.StartInstance(tltest.Options{Grace: 10 * time.Second})
	first := e.Issue("alice")
	tltest.WantOK(t, first)
	seen := map[string]bool{first.RefreshToken: true}
	cur := first
	for i := range 100 {
		e.Clock.Advance(time.Minute)
		next := e.Refresh(cur.RefreshToken)
		tltest.WantOK(t, next)
		if seen[next.RefreshToken] || next.FamilyID != first.FamilyID {
			t.Fatalf("step %d: token repeated or family changed", i)
		}
		seen[next.RefreshToken] = true
		cur = next
	}
	st, err := e.Store.Load(context.Background(), first.FamilyID)
	if err != nil || st.Generation != 100 || st.Events != 101 {
		t.Fatalf("after 100 rotations: generation %d, events %d, err %v", st.Generation, st.Events, err)
	}

	// A grace retry of the previous token returns the same successor.
	prev := cur
	e.Clock.Advance(time.Minute)
	succ := e.Refresh(prev.RefreshToken)
	tltest.WantOK(t, succ)
	e.Clock.Advance(9 * time.Second)
	retry := e.Refresh(prev.RefreshToken)
	tltest.WantOK(t, retry)
	if retry.RefreshToken != succ.RefreshToken || retry.AccessToken == succ.AccessToken {
		t.Fatal("grace retry must return the same successor with a fresh access token")
	}
	events := e.Events()
	if n := countType(events, ledger.TypeGraceRetried); n != 1 {
		t.Fatalf("%d grace events, want 1", n)
	}
	// The successor is still the one current token.
	tltest.WantOK(t, e.Refresh(succ.RefreshToken))
}

func TestReuseAfterWindowRevokesFamily(t *testing.T) {
	e := newEnv(t, "")
	e.StartInstance(tltest.Options{Grace: 10 * time.Second})
	t.Run("previous generation", func(t *testing.T) {
		a := e.Issue("alice")
		b := e.Refresh(a.RefreshToken)
		tltest.WantOK(t, b)
		e.Clock.Advance(11 * time.Second)
		tltest.WantError(t, e.Refresh(a.RefreshToken), api.CodeInvalidGrant, "400")
		// The newest token of the family fails too.
		tltest.WantError(t, e.Refresh(b.RefreshToken), api.CodeInvalidGrant, "400")
		reuse := lastOfType(t, e.Events(), a.FamilyID, ledger.TypeReuseDetected)
		d := reuse.Data.(ledger.ReuseDetected)
		rotation := lastOfType(t, e.Events(), a.FamilyID, ledger.TypeRefreshRotated)
		if d.PresentedGeneration != 0 || d.CurrentGeneration != 1 || d.RotatedAgo != 11*time.Second ||
			d.WinnerEventID != rotation.ID || d.WinnerRequest != rotation.Cause.ID || d.WinnerRequest == "" {
			t.Fatalf("lineage %+v (rotation %s by %s)", d, rotation.ID, rotation.Cause.ID)
		}
		if reuse.State.Revoked == nil || reuse.State.Revoked.Cause.Kind != ledger.CauseReuse {
			t.Fatalf("family not revoked for reuse: %+v", reuse.State.Revoked)
		}
	})
	t.Run("older generation", func(t *testing.T) {
		a := e.Issue("bob")
		b := e.Refresh(a.RefreshToken)
		e.Clock.Advance(time.Minute)
		c := e.Refresh(b.RefreshToken)
		tltest.WantOK(t, c)
		e.Clock.Advance(time.Minute)
		tltest.WantError(t, e.Refresh(a.RefreshToken), api.CodeInvalidGrant, "400")
		d := lastOfType(t, e.Events(), a.FamilyID, ledger.TypeReuseDetected).Data.(ledger.ReuseDetected)
		if d.PresentedGeneration != 0 || d.CurrentGeneration != 2 || d.RotatedAgo != 2*time.Minute || d.WinnerEventID == "" {
			t.Fatalf("lineage %+v", d)
		}
		tltest.WantError(t, e.Refresh(c.RefreshToken), api.CodeInvalidGrant, "400")
	})
	t.Run("revoked family stays dead inside the grace window", func(t *testing.T) {
		a := e.Issue("carol")
		b := e.Refresh(a.RefreshToken)
		tltest.WantOK(t, b)
		if _, err := e.Ledger().Revoke(context.Background(), a.FamilyID, ledger.Cause{Kind: ledger.CauseAdmin, Reason: "test"}); err != nil {
			t.Fatal(err)
		}
		tltest.WantError(t, e.Refresh(a.RefreshToken), api.CodeInvalidGrant, "400")
		tltest.WantError(t, e.Refresh(b.RefreshToken), api.CodeInvalidGrant, "400")
	})
}

func TestForgedTokenRevokesNothing(t *testing.T) {
	e := newEnv(t, "")
	e.StartInstance(tltest.Options{Grace: 10 * time.Second})
	a := e.Issue("alice")
	b := e.Refresh(a.RefreshToken)
	before := e.LastSeq()
	tok, _ := token.ParseRefreshToken(a.RefreshToken)
	for _, afterSeq := range []uint64{0, tok.AfterSeq, 1, 2, 1 << 60} {
		forged, _ := token.MintRefreshToken(rand.Reader, tok.FamilyID, afterSeq)
		tltest.WantError(t, e.Refresh(forged), api.CodeInvalidGrant, "400")
	}
	for _, junk := range []string{"tlr_", "tlr_AAAA", "eyJhbGciOi.x.y", strings.Repeat("z", 300)} {
		tltest.WantError(t, e.Refresh(junk), api.CodeInvalidGrant, "400")
	}
	if after := e.LastSeq(); after != before {
		t.Fatalf("forged tokens appended %d events", after-before)
	}
	tltest.WantOK(t, e.Refresh(b.RefreshToken))
}

func TestExpiry(t *testing.T) {
	e := newEnv(t, "")
	e.StartInstance(tltest.Options{Grace: 10 * time.Second})
	t.Run("idle", func(t *testing.T) {
		a := e.Issue("alice")
		e.Clock.Advance(14*24*time.Hour - time.Second)
		b := e.Refresh(a.RefreshToken)
		tltest.WantOK(t, b)
		e.Clock.Advance(14 * 24 * time.Hour)
		before := e.LastSeq()
		tltest.WantError(t, e.Refresh(b.RefreshToken), api.CodeInvalidGrant, "400")
		if e.LastSeq() != before {
			t.Fatal("expiry wrote an event")
		}
	})
	t.Run("absolute", func(t *testing.T) {
		a := e.Issue("bob")
		cur := a
		for range 6 { // 6 x 13 days = 78 days
			e.Clock.Advance(13 * 24 * time.Hour)
			cur = e.Refresh(cur.RefreshToken)
			tltest.WantOK(t, cur)
		}
		if cur.RefreshTokenExpiresIn != 12*24*3600 {
			t.Fatalf("refresh token outlives its family: expires in %ds", cur.RefreshTokenExpiresIn)
		}
		e.Clock.Advance(12 * 24 * time.Hour) // day 90
		tltest.WantError(t, e.Refresh(cur.RefreshToken), api.CodeInvalidGrant, "400")
	})
}

// 64 goroutines present one token at once: exactly one rotation is
// appended; with a grace window every caller gets the same successor,
// without one the others get invalid_grant. With the state cache the
// family is refreshed once first, so the racers start from a cached state
// (an issued family is not cached).
func TestConcurrentRefreshOneToken(t *testing.T) {
	for _, tc := range []struct {
		grace  time.Duration
		cached bool // a view, and so the ledger's state cache, as serve runs
	}{{10 * time.Second, false}, {0, false}, {10 * time.Second, true}, {0, true}} {
		grace := tc.grace
		t.Run(fmt.Sprintf("grace=%s/state cache %t", grace, tc.cached), func(t *testing.T) {
			e := newEnv(t, "")
			e.StartInstance(tltest.Options{Grace: grace, NoView: !tc.cached})
			presented, rotatedBefore := e.Issue("alice").RefreshToken, 0
			if tc.cached {
				r := e.Refresh(presented)
				if r.Error != "" {
					t.Fatalf("first refresh: %s", r.Raw)
				}
				presented, rotatedBefore = r.RefreshToken, 1
			}
			const n = 64
			replies := make([]tltest.Reply, n)
			errs := make([]error, n) // the goroutines must not stop the test
			var wg sync.WaitGroup
			start := make(chan struct{})
			for i := range n {
				wg.Go(func() {
					<-start
					replies[i], errs[i] = e.tryRefresh(presented)
				})
			}
			close(start)
			wg.Wait()
			if err := errors.Join(errs...); err != nil {
				t.Fatal(err)
			}
			successors := map[string]int{}
			failures := 0
			for _, r := range replies {
				switch {
				case r.Error == "":
					successors[r.RefreshToken]++
				case r.Error == api.CodeInvalidGrant:
					failures++
				default:
					t.Fatalf("unexpected reply %s", r.Raw)
				}
			}
			events := e.Events()
			if got := countType(events, ledger.TypeRefreshRotated) - rotatedBefore; got != 1 {
				t.Fatalf("%d rotation events from the race, want exactly 1", got)
			}
			if len(successors) != 1 {
				t.Fatalf("%d distinct successors, want 1", len(successors))
			}
			if grace > 0 && failures != 0 {
				t.Fatalf("%d failures inside the grace window", failures)
			}
			if grace == 0 && (failures != n-1 || countType(events, ledger.TypeReuseDetected) == 0) {
				t.Fatalf("without grace: %d failures, want %d, and a reuse", failures, n-1)
			}
		})
	}
}

// A refresh racing a revocation: once the revocation is appended, no later
// refresh of that family succeeds, and the log shows no grant after it.
func TestRefreshRacingRevocation(t *testing.T) {
	e := newEnv(t, "")
	e.StartInstance(tltest.Options{Grace: 10 * time.Second, Wall: true})
	l := e.Ledger()
	for round := range 20 {
		a := e.Issue("alice")
		stop := make(chan struct{})
		var revokedAt time.Time
		var mu sync.Mutex
		var lateSuccess []string
		var wg sync.WaitGroup
		callErrs := make(chan error, 4) // the goroutines must not stop the test
		for range 4 {
			wg.Go(func() {
				cur := a.RefreshToken
				for {
					select {
					case <-stop:
						return
					default:
					}
					sent := time.Now()
					r, err := e.tryRefresh(cur)
					if err != nil {
						callErrs <- err
						return
					}
					mu.Lock()
					after := !revokedAt.IsZero() && sent.After(revokedAt)
					mu.Unlock()
					if r.Error == "" {
						if after {
							mu.Lock()
							lateSuccess = append(lateSuccess, r.FamilyID)
							mu.Unlock()
						}
						cur = r.RefreshToken
					}
				}
			})
		}
		if _, err := l.Revoke(context.Background(), a.FamilyID, ledger.Cause{Kind: ledger.CauseAdmin, Reason: "race"}); err != nil {
			t.Fatal(err)
		}
		mu.Lock()
		revokedAt = time.Now()
		mu.Unlock()
		// Let the refreshers run into the revocation a few times.
		for range 5 {
			tltest.WantError(t, e.Refresh(a.RefreshToken), api.CodeInvalidGrant, "400")
		}
		close(stop)
		wg.Wait()
		close(callErrs)
		for err := range callErrs {
			t.Fatalf("round %d: %v", round, err)
		}
		if len(lateSuccess) > 0 {
			t.Fatalf("round %d: %d refreshes succeeded after the revocation was appended", round, len(lateSuccess))
		}
		dead := false
		for _, ev := range e.Events() {
			if ev.FamilyID != a.FamilyID {
				continue
			}
			switch ev.Type {
			case ledger.TypeFamilyRevoked, ledger.TypeReuseDetected:
				dead = true
			case ledger.TypeRefreshRotated, ledger.TypeRefreshUsed, ledger.TypeGraceRetried:
				if dead {
					t.Fatalf("round %d: %s %s appended after the revocation", round, ev.Type, ev.ID)
				}
			}
		}
		if !dead {
			t.Fatalf("round %d: no revocation in the log", round)
		}
	}
}
