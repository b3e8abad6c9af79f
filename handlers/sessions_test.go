package handlers

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
)

func (e *env) sessions(subject string) SessionsResponse {
	e.t.Helper()
	r := e.call("tokens.sessions", map[string]any{"subject": subject})
	if r.Error != "" {
		e.t.Fatalf("sessions: %s", r.Raw)
	}
	var out SessionsResponse
	if err := json.Unmarshal(r.Raw, &out); err != nil {
		e.t.Fatal(err)
	}
	if out.Families == nil {
		e.t.Fatalf("sessions: families must be an array: %s", r.Raw)
	}
	return out
}

func TestSessionsListsActiveFamilies(t *testing.T) {
	e, _, _ := viewEnv(t, envOptions{grace: 10 * time.Second})
	a1, a2, a3 := e.issue("alice"), e.issue("alice"), e.issue("alice")
	e.issue("bob")
	e.clock.Advance(time.Minute)
	rotated := e.refresh(a2.RefreshToken)
	wantOK(t, rotated)
	e.revoke(a3.RefreshToken)

	got := e.sessions("alice").Families
	if len(got) != 2 || got[0].FamilyID != a1.FamilyID || got[1].FamilyID != a2.FamilyID {
		t.Fatalf("sessions of alice: %+v", got)
	}
	s := got[1]
	now := e.clock.Now()
	if s.ClientID != testClientID || s.Generation != 1 || s.Version != 1 ||
		s.RotatedAt == nil || !s.RotatedAt.Equal(now) || !s.CreatedAt.Equal(now.Add(-time.Minute)) ||
		!s.ExpiresAt.Equal(now.Add(-time.Minute).Add(90*24*time.Hour)) {
		t.Fatalf("session fields: %+v (now %s)", s, now)
	}
	if got[0].RotatedAt != nil || got[0].Generation != 0 {
		t.Fatalf("never rotated family: %+v", got[0])
	}
	if raw := e.call("tokens.sessions", map[string]any{"subject": "alice"}).Raw; !strings.Contains(string(raw), `"rotated_at":null`) {
		t.Fatalf("a never rotated family must say rotated_at null: %s", raw)
	}
	if n := len(e.sessions("nobody").Families); n != 0 {
		t.Fatalf("unknown subject has %d sessions", n)
	}
	for _, bad := range []any{"{}", map[string]any{"subject": "a", "client_id": "x"}, `{"subject": 1}`} {
		wantError(t, e.call("tokens.sessions", bad), CodeInvalidRequest, "400")
	}
}
