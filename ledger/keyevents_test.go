package ledger

import (
	"testing"
	"time"
)

// keySampleEvents are the golden samples of the signing-key events (added
// to sampleEvents).
func keySampleEvents(at time.Time) []Event {
	key := func(id string, cause Cause, data any) Event {
		return Event{ID: id, OccurredAt: at, Cause: cause, Data: data}
	}
	schedule := Cause{Kind: CauseSchedule}
	admin := Cause{Kind: CauseAdmin, ID: "req-9", Reason: "leaked key"}
	return []Event{
		key("01JDQ80000000000000000KEY1", schedule, KeyPublished{KID: "k2-AbCdEfGhIjKl", Alg: "EdDSA", ActivatesAt: at.Add(15 * time.Minute)}),
		key("01JDQ80000000000000000KEY2", schedule, KeyActivated{KID: "k2-AbCdEfGhIjKl", Alg: "EdDSA", At: at.Add(15 * time.Minute)}),
		key("01JDQ80000000000000000KEY3", schedule, KeyRetired{KID: "k1-AbCdEfGhIjKl", At: at.Add(15 * time.Minute), PublishedUntil: at.Add(31 * time.Minute)}),
		key("01JDQ80000000000000000KEY4", admin, KeyRevoked{KID: "k2-AbCdEfGhIjKl", TokensUntil: at.Add(16 * time.Minute)}),
	}
}

func TestIsKeyEvent(t *testing.T) {
	for _, typ := range EventTypes() {
		_, isKey := map[EventType]bool{TypeKeyPublished: true, TypeKeyActivated: true, TypeKeyRetired: true, TypeKeyRevoked: true}[typ]
		if got := IsKeyEvent(typ); got != isKey {
			t.Errorf("IsKeyEvent(%s) = %v, want %v", typ, got, isKey)
		}
	}
}

func TestKeyEventKID(t *testing.T) {
	for _, tc := range []struct {
		data any
		want string
	}{
		{KeyPublished{KID: "a"}, "a"},
		{KeyActivated{KID: "b"}, "b"},
		{KeyRetired{KID: "c"}, "c"},
		{KeyRevoked{KID: "d"}, "d"},
		{FamilyIssued{}, ""},
		{nil, ""},
	} {
		if got := KeyEventKID(tc.data); got != tc.want {
			t.Errorf("KeyEventKID(%T) = %q, want %q", tc.data, got, tc.want)
		}
	}
}
