package handlers_test

import (
	"testing"
	"time"

	"github.com/tokenledger/tokenledger/api"
	"github.com/tokenledger/tokenledger/internal/tltest"
	"github.com/tokenledger/tokenledger/ledger"
)

func TestAdminRevoke(t *testing.T) {
	e, _, _ := viewEnv(t, tltest.Options{Grace: 10 * time.Second})
	a1, a2 := e.Issue("alice"), e.Issue("alice")
	b1 := e.Issue("bob")
	c1 := e.Issue("carol")
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
	if n := e.adminRevoke(map[string]any{"client_id": tltest.ClientID, "reason": "client rotated"}); n != 1 {
		t.Fatalf("by client: %d (carol's family left)", n)
	}
	if e.introspect(c1.RefreshToken).Active {
		t.Fatal("carol's refresh token active after the client was revoked")
	}

	var admin []ledger.Event
	for _, ev := range e.Events() {
		if ev.Type == ledger.TypeFamilyRevoked && ev.Cause.Kind == ledger.CauseAdmin {
			admin = append(admin, ev)
		}
	}
	if len(admin) != 3 || admin[0].Cause.Reason != "account locked" || admin[1].Cause.Reason != "lost phone" || admin[2].Cause.Reason != "client rotated" {
		t.Fatalf("admin revocations in the ledger: %+v", admin)
	}

	before := e.LastSeq()
	for name, body := range map[string]any{
		"no selector":     map[string]any{"reason": "x"},
		"two selectors":   map[string]any{"subject": "a", "client_id": "b", "reason": "x"},
		"no reason":       map[string]any{"subject": "a"},
		"bad family id":   map[string]any{"family_id": "../x", "reason": "x"},
		"unknown field":   map[string]any{"subject": "a", "reason": "x", "force": true},
		"reason not text": map[string]any{"subject": "a", "reason": "\x00"},
	} {
		r := e.Call("tokens.admin.revoke", body)
		if r.Error != api.CodeInvalidRequest || r.Status != "400" {
			t.Errorf("%s: got %s", name, r.Raw)
		}
	}
	if e.LastSeq() != before {
		t.Fatal("malformed admin requests appended events")
	}
}
