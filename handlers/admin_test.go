package handlers

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/tokenledger/tokenledger/ledger"
)

func (e *env) adminRevoke(body map[string]any) int {
	e.t.Helper()
	r := e.call("tokens.admin.revoke", body)
	if r.Error != "" {
		e.t.Fatalf("admin revoke %v: %s", body, r.Raw)
	}
	var out AdminRevokeResponse
	if err := json.Unmarshal(r.Raw, &out); err != nil {
		e.t.Fatal(err)
	}
	return out.RevokedFamilies
}

func TestAdminRevoke(t *testing.T) {
	e, _, _ := viewEnv(t, envOptions{grace: 10 * time.Second})
	a1, a2 := e.issue("alice"), e.issue("alice")
	b1 := e.issue("bob")
	c1 := e.issue("carol")
	e.revoke(a2.RefreshToken) // already revoked: not counted again

	if n := e.adminRevoke(map[string]any{"subject": "alice", "reason": "account locked"}); n != 1 {
		t.Fatalf("by subject: revoked %d, want 1", n)
	}
	if e.introspect(a1.AccessToken).Active || len(e.sessions("alice").Families) != 0 {
		t.Fatal("alice still has an active family right after the admin revoke")
	}
	if n := e.adminRevoke(map[string]any{"subject": "alice", "reason": "again"}); n != 0 {
		t.Fatalf("second revoke by subject: %d", n)
	}
	if n := e.adminRevoke(map[string]any{"family_id": b1.FamilyID, "reason": "lost phone"}); n != 1 {
		t.Fatalf("by family: %d", n)
	}
	if n := e.adminRevoke(map[string]any{"client_id": testClientID, "reason": "client rotated"}); n != 1 {
		t.Fatalf("by client: %d (carol's family left)", n)
	}
	if e.introspect(c1.RefreshToken).Active {
		t.Fatal("carol's refresh token active after the client was revoked")
	}

	var admin []ledger.Event
	for _, ev := range e.events() {
		if ev.Type == ledger.TypeFamilyRevoked && ev.Cause.Kind == ledger.CauseAdmin {
			admin = append(admin, ev)
		}
	}
	if len(admin) != 3 || admin[0].Cause.Reason != "account locked" || admin[1].Cause.Reason != "lost phone" || admin[2].Cause.Reason != "client rotated" {
		t.Fatalf("admin revocations in the ledger: %+v", admin)
	}

	before := e.lastSeq()
	for name, body := range map[string]any{
		"no selector":     map[string]any{"reason": "x"},
		"two selectors":   map[string]any{"subject": "a", "client_id": "b", "reason": "x"},
		"no reason":       map[string]any{"subject": "a"},
		"bad family id":   map[string]any{"family_id": "../x", "reason": "x"},
		"unknown field":   map[string]any{"subject": "a", "reason": "x", "force": true},
		"reason not text": map[string]any{"subject": "a", "reason": "\x00"},
	} {
		r := e.call("tokens.admin.revoke", body)
		if r.Error != CodeInvalidRequest || r.Status != "400" {
			t.Errorf("%s: got %s", name, r.Raw)
		}
	}
	if e.lastSeq() != before {
		t.Fatal("malformed admin requests appended events")
	}
}
