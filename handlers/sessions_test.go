package handlers_test

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tokenledger/tokenledger/api"
	"github.com/tokenledger/tokenledger/internal/tltest"
	"github.com/tokenledger/tokenledger/ledger"
)

func TestSessionsListsActiveFamilies(t *testing.T) {
	e, _, _ := viewEnv(t, tltest.Options{Grace: 10 * time.Second})
	a1, a2, a3 := e.Issue("alice"), e.Issue("alice"), e.Issue("alice")
	e.Issue("bob")
	e.Clock.Advance(time.Minute)
	rotated := e.Refresh(a2.RefreshToken)
	tltest.WantOK(t, rotated)
	e.revoke(a3.RefreshToken)

	got := e.sessions("alice").Families
	if len(got) != 2 || got[0].FamilyID != a1.FamilyID || got[1].FamilyID != a2.FamilyID {
		t.Fatalf("sessions of alice: %+v", got)
	}
	s := got[1]
	now := e.Clock.Now()
	if s.ClientID != tltest.ClientID || s.Generation != 1 || s.Version != 1 ||
		s.RotatedAt == nil || !s.RotatedAt.Equal(now) || !s.CreatedAt.Equal(now.Add(-time.Minute)) ||
		!s.ExpiresAt.Equal(now.Add(-time.Minute).Add(90*24*time.Hour)) {
		t.Fatalf("session fields: %+v (now %s)", s, now)
	}
	if got[0].RotatedAt != nil || got[0].Generation != 0 {
		t.Fatalf("never rotated family: %+v", got[0])
	}
	if raw := e.Call("tokens.sessions", map[string]any{"client_id": tltest.ClientID, "client_secret": tltest.Secret, "subject": "alice"}).Raw; !strings.Contains(string(raw), `"rotated_at":null`) {
		t.Fatalf("a never rotated family must say rotated_at null: %s", raw)
	}
	if n := len(e.sessions("nobody").Families); n != 0 {
		t.Fatalf("unknown subject has %d sessions", n)
	}
	for _, bad := range []any{"{}", map[string]any{"subject": "a", "client_id": "x"}, `{"subject": 1}`, map[string]any{"subject": "alice"}} {
		tltest.WantError(t, e.Call("tokens.sessions", bad), api.CodeInvalidRequest, "400")
	}
	tltest.WantError(t, e.Call("tokens.sessions", map[string]any{"client_id": tltest.ClientID, "client_secret": "tlcs_wrong", "subject": "alice"}), api.CodeInvalidClient, "401")
}

// tokens.sessions lists only the calling client's families; another
// client's credentials see none of them, and tokens.admin.sessions sees
// every client's.
func TestSessionsAreScopedToTheClient(t *testing.T) {
	const otherSecret = "tlcs_other-secret-0123456789abcdefghijklmnopqrstuvwxyz"
	other := ledger.Client{ID: "billing", SecretSHA256: ledger.SecretSHA256(otherSecret), Scopes: []string{"read"}, Audiences: []string{"api"}}
	e, _, _ := viewEnv(t, tltest.Options{Grace: 10 * time.Second, More: []ledger.Client{other}})
	mine := e.Issue("alice")
	tltest.WantOK(t, mine)
	theirs := e.Call("tokens.issue", map[string]any{"client_id": "billing", "client_secret": otherSecret, "subject": "alice"})
	tltest.WantOK(t, theirs)

	for _, tc := range []struct {
		name     string
		endpoint string
		body     map[string]any
		want     []string
	}{
		{"the test client", "tokens.sessions", map[string]any{"client_id": tltest.ClientID, "client_secret": tltest.Secret, "subject": "alice"}, []string{mine.FamilyID}},
		{"another client", "tokens.sessions", map[string]any{"client_id": "billing", "client_secret": otherSecret, "subject": "alice"}, []string{theirs.FamilyID}},
		{"an operator", "tokens.admin.sessions", map[string]any{"subject": "alice"}, []string{mine.FamilyID, theirs.FamilyID}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got []string
			for _, f := range e.sessionsAt(tc.endpoint, tc.body).Families {
				got = append(got, f.FamilyID)
			}
			if !slices.Equal(got, tc.want) {
				t.Fatalf("%s lists %v, want %v", tc.endpoint, got, tc.want)
			}
		})
	}
	tltest.WantError(t, e.Call("tokens.admin.sessions", map[string]any{"subject": "alice", "client_id": "billing"}), api.CodeInvalidRequest, "400")
}
