package handlers_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/oklog/ulid/v2"

	"github.com/tokenledger/tokenledger/api"
	"github.com/tokenledger/tokenledger/internal/tltest"
	"github.com/tokenledger/tokenledger/ledger"
	"github.com/tokenledger/tokenledger/ledger/token"
)

func TestRevokeRefreshTokenThenIntrospectReadsItsWrite(t *testing.T) {
	e, _, _ := viewEnv(t, tltest.Options{Grace: 10 * time.Second})
	for i := range 20 { // repeated: a lagging view would show up as a flake
		g := e.Issue("alice")
		tltest.WantOK(t, g)
		at := e.introspect(g.AccessToken)
		if !at.Active || at.TokenType != api.TokenTypeBearer || at.Subject != "alice" || at.ClientID != tltest.ClientID ||
			at.SID != g.FamilyID || at.JTI == "" || at.Issuer == "" || at.ExpiresAt == 0 || at.IssuedAt == 0 ||
			at.Scope != "read write" || len(at.Audience) != 1 {
			t.Fatalf("access token introspection: %+v", at)
		}
		rt := e.introspect(g.RefreshToken)
		if !rt.Active || rt.TokenType != api.TokenTypeRefresh || rt.SID != g.FamilyID || rt.Subject != "alice" {
			t.Fatalf("refresh token introspection: %+v", rt)
		}

		hint := ""
		if i%2 == 0 {
			hint = api.HintRefreshToken
		}
		if r := e.tokenCall("tokens.revoke", g.RefreshToken, hint); string(r.Raw) != `{"revoked":true}` {
			t.Fatalf("revoke: %s", r.Raw)
		}
		// No sleep, no polling: the revoke reply came after the view
		// applied the revocation.
		if got := e.introspect(g.AccessToken); got.Active {
			t.Fatalf("round %d: access token active right after its family was revoked", i)
		}
		if got := e.introspect(g.RefreshToken); got.Active {
			t.Fatalf("round %d: refresh token active right after revocation", i)
		}
		tltest.WantError(t, e.Refresh(g.RefreshToken), api.CodeInvalidGrant, "400")
	}
	evs := e.Events()
	var revoked []ledger.Event
	for _, ev := range evs {
		if ev.Type == ledger.TypeFamilyRevoked {
			revoked = append(revoked, ev)
		}
	}
	if len(revoked) != 20 || revoked[0].Cause.Kind != ledger.CauseRevoke {
		t.Fatalf("want 20 family.revoked.v1 with cause revoke, got %d (%+v)", len(revoked), revoked)
	}
}

func TestRevokeAccessTokenKeepsFamily(t *testing.T) {
	e, _, _ := viewEnv(t, tltest.Options{Grace: 10 * time.Second})
	g := e.Issue("alice")
	tltest.WantOK(t, g)
	e.revoke(g.AccessToken)
	if e.introspect(g.AccessToken).Active {
		t.Fatal("revoked access token still active")
	}
	evs := e.Events()
	if n := countType(evs, ledger.TypeAccessRevoked); n != 1 {
		t.Fatalf("want one access.revoked.v1, got %d", n)
	}
	ar := evs[len(evs)-1].Data.(ledger.AccessRevoked)
	if ar.JTI == "" || ar.ExpiresAt.IsZero() {
		t.Fatalf("access revocation without jti or expiry: %+v", ar)
	}
	// The family lives on: its refresh token works and the new access
	// token is active.
	if !e.introspect(g.RefreshToken).Active {
		t.Fatal("refresh token inactive after revoking an access token")
	}
	next := e.Refresh(g.RefreshToken)
	tltest.WantOK(t, next)
	if !e.introspect(next.AccessToken).Active {
		t.Fatal("fresh access token inactive")
	}
	// Revoking it again records nothing new.
	before := e.LastSeq()
	e.revoke(g.AccessToken)
	if e.LastSeq() != before {
		t.Fatal("revoking an already revoked access token appended an event")
	}
}

func TestRevokeChangesNothingForUnknownForgedOrForeignTokens(t *testing.T) {
	e, _, _ := viewEnv(t, tltest.Options{Grace: 10 * time.Second})
	g := e.Issue("alice")
	tltest.WantOK(t, g)

	// Another client, registered at runtime.
	reg := e.Instances[0].Registry()
	const otherSecret = "tlcs_other-secret-0123456789abcdefghijklmnopqrstuvwxyz"
	if err := reg.Create(context.Background(), ledger.Client{ID: "other", SecretSHA256: ledger.SecretSHA256(otherSecret), Scopes: []string{"read"}}); err != nil {
		t.Fatal(err)
	}
	tok, err := token.ParseRefreshToken(g.RefreshToken)
	if err != nil {
		t.Fatal(err)
	}
	forged := tok
	forged.Secret[0] ^= 0xff

	before := e.LastSeq()
	for name, body := range map[string]map[string]any{
		"garbage":         {"client_id": tltest.ClientID, "client_secret": tltest.Secret, "token": "not a token"},
		"garbage jwt":     {"client_id": tltest.ClientID, "client_secret": tltest.Secret, "token": "eyJhbGciOiJub25lIn0.e30.", "token_type_hint": "access_token"},
		"unknown family":  {"client_id": tltest.ClientID, "client_secret": tltest.Secret, "token": token.RefreshToken{FamilyID: ulid.Make()}.String()},
		"forged secret":   {"client_id": tltest.ClientID, "client_secret": tltest.Secret, "token": forged.String()},
		"other's refresh": {"client_id": "other", "client_secret": otherSecret, "token": g.RefreshToken},
		"other's access":  {"client_id": "other", "client_secret": otherSecret, "token": g.AccessToken},
	} {
		r := e.Call("tokens.revoke", body)
		if string(r.Raw) != `{"revoked":true}` {
			t.Fatalf("%s: got %s", name, r.Raw)
		}
	}
	if after := e.LastSeq(); after != before {
		t.Fatalf("revocations that must change nothing appended %d events", after-before)
	}
	if !e.introspect(g.AccessToken).Active || !e.introspect(g.RefreshToken).Active {
		t.Fatal("tokens inactive after foreign revocation attempts")
	}
	// The other client cannot see the refresh token through introspection.
	r := e.Call("tokens.introspect", map[string]any{"client_id": "other", "client_secret": otherSecret, "token": g.RefreshToken})
	if string(r.Raw) != `{"active":false}` {
		t.Fatalf("another client's refresh token introspected as %s", r.Raw)
	}
}

func TestRevokeOlderGenerationRevokesFamily(t *testing.T) {
	e, _, _ := viewEnv(t, tltest.Options{Grace: 10 * time.Second})
	g0 := e.Issue("alice")
	g1 := e.Refresh(g0.RefreshToken)
	g2 := e.Refresh(g1.RefreshToken)
	tltest.WantOK(t, g2)
	// g0 is two generations old: still genuine, so it may revoke.
	e.revoke(g0.RefreshToken)
	if e.introspect(g2.RefreshToken).Active || e.introspect(g2.AccessToken).Active {
		t.Fatal("family still active after revoking with a genuine older token")
	}
}

func TestRevokeRejectsMalformedRequests(t *testing.T) {
	e, _, _ := viewEnv(t, tltest.Options{})
	before := e.LastSeq() // the first signing key's events
	for name, tc := range map[string]struct {
		body         any
		code, status string
	}{
		"not json":      {"{", api.CodeInvalidRequest, "400"},
		"unknown field": {map[string]any{"client_id": tltest.ClientID, "client_secret": tltest.Secret, "token": "x", "extra": 1}, api.CodeInvalidRequest, "400"},
		"no token":      {map[string]any{"client_id": tltest.ClientID, "client_secret": tltest.Secret}, api.CodeInvalidRequest, "400"},
		"bad hint":      {map[string]any{"client_id": tltest.ClientID, "client_secret": tltest.Secret, "token": "x", "token_type_hint": "id_token"}, api.CodeInvalidRequest, "400"},
		"no client":     {map[string]any{"token": "x"}, api.CodeInvalidRequest, "400"},
		"wrong secret":  {map[string]any{"client_id": tltest.ClientID, "client_secret": "nope", "token": "x"}, api.CodeInvalidClient, "401"},
	} {
		for _, subject := range []string{"tokens.revoke", "tokens.introspect"} {
			r := e.Call(subject, tc.body)
			if r.Error != tc.code || r.Status != tc.status {
				t.Errorf("%s on %s: got %s (%s)", name, subject, r.Raw, r.Status)
			}
			if strings.Contains(string(r.Raw), tltest.Secret) {
				t.Errorf("%s: reply echoes the secret", name)
			}
		}
	}
	if seq := e.LastSeq(); seq != before {
		t.Fatalf("malformed requests appended %d events", seq-before)
	}
}
