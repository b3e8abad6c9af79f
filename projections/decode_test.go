package projections

import (
	"reflect"
	"testing"
	"time"

	"github.com/oklog/ulid/v2"

	"github.com/tokenledger/tokenledger/ledger"
)

// TestDecodeForViewAgreesWithLedger: for every event type, with awkward
// strings, the view's decoder gives the same envelope and the same payload
// fields it promises as ledger.DecodeEvent.
func TestDecodeForViewAgreesWithLedger(t *testing.T) {
	now := time.Date(2026, 11, 27, 10, 0, 0, 123456789, time.UTC)
	grant := ledger.AccessGrant{JTI: ulid.Make().String(), Scope: "read \"quoted\" \\ \u2028", ExpiresAt: now.Add(time.Minute)}
	payloads := []any{
		ledger.FamilyIssued{ClientID: "web", Subject: "al\"ice\\\n\u00e9\u2028}{", Version: 3, ExpiresAt: now.Add(time.Hour), Access: grant},
		ledger.RefreshRotated{FromGeneration: 4, ToGeneration: 5, Version: 2, Access: grant, SealedSuccessor: "\"}]"},
		ledger.RefreshUsed{Generation: 7, Access: grant},
		ledger.GraceRetried{PresentedGeneration: 1, SuccessorGeneration: 2, Access: grant},
		ledger.ReuseDetected{PresentedGeneration: 1, CurrentGeneration: 3},
		ledger.FamilyRevoked{Generation: 9},
		ledger.AccessRevoked{JTI: grant.JTI, ExpiresAt: grant.ExpiresAt},
		ledger.AccessCutoff{Generation: 2},
	}
	for _, p := range payloads {
		e := ledger.Event{ID: ulid.Make().String(), FamilyID: ulid.Make().String(), OccurredAt: now,
			Cause: ledger.Cause{Kind: ledger.CauseAdmin, ID: "x\"y", Reason: "why \\ \"not\""}, Prev: "ab", Data: p}
		st := ledger.Apply(ledger.State{}, e)
		e.State = &st
		b, err := ledger.EncodeEvent(e)
		if err != nil {
			t.Fatal(err)
		}
		fast, err := DecodeForView(b)
		if err != nil {
			t.Fatalf("%T: %v", p, err)
		}
		slow, err := ledger.DecodeEvent(b)
		if err != nil {
			t.Fatal(err)
		}
		if fast.ID != slow.ID || fast.Type != slow.Type || fast.FamilyID != slow.FamilyID ||
			!fast.OccurredAt.Equal(slow.OccurredAt) || fast.Cause != slow.Cause {
			t.Fatalf("%T envelope: fast %+v slow %+v", p, fast, slow)
		}
		want := reflect.ValueOf(slow.Data)
		got := reflect.ValueOf(fast.Data)
		if got.Type() != want.Type() {
			t.Fatalf("payload type %s, want %s", got.Type(), want.Type())
		}
		// Every field the fast path fills must equal the complete decode.
		for i := range got.NumField() {
			g, w := got.Field(i).Interface(), want.Field(i).Interface()
			if got.Field(i).IsZero() {
				continue
			}
			if !reflect.DeepEqual(g, w) {
				t.Errorf("%T.%s: fast %#v, slow %#v", p, got.Type().Field(i).Name, g, w)
			}
		}
	}
	// What the fast path does not know falls back to the ledger's decoder.
	if _, err := DecodeForView([]byte(`{"type":"nope.v1","schema":1,"data":{}}`)); err == nil {
		t.Fatal("unknown type decoded")
	}
	if _, err := DecodeForView([]byte(`{"type":"family.revoked.v1","schema":3,"data":{}}`)); err == nil {
		t.Fatal("unknown schema decoded")
	}
}
