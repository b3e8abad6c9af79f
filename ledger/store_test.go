package ledger

import (
	"context"
	"fmt"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/tokenledger/tokenledger/internal/natstest"
)

// TestStoreLastSeq checks both ways LastSeq reads the stream's last
// sequence (a direct get with one replica, the stream info otherwise)
// against the stream's own state: empty, after appends to many family
// subjects, and when the last append is on a security subject.
func TestStoreLastSeq(t *testing.T) {
	ctx := context.Background()
	s, js := newTestStore(t)
	if s.directSubject == "" {
		t.Fatal("a one-replica store does not use the direct get")
	}
	byInfo := *s
	byInfo.directSubject = ""
	for _, tc := range []struct {
		name    string
		publish []string // subjects appended before the check
	}{
		{name: "empty stream"},
		{name: "families", publish: []string{"ledger.family.A", "ledger.family.B", "ledger.family.A", "ledger.family.C"}},
		{name: "security event last", publish: []string{"ledger.family.D", s.SecuritySubject("evt-1")}},
		{name: "many families", publish: func() []string {
			var subs []string
			for i := range 500 {
				subs = append(subs, fmt.Sprintf("ledger.family.F%03d", i))
			}
			return subs
		}()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, sub := range tc.publish {
				if _, err := js.Publish(ctx, sub, []byte(`{}`)); err != nil {
					t.Fatal(err)
				}
			}
			info, err := s.Stream().Info(ctx)
			if err != nil {
				t.Fatal(err)
			}
			want := info.State.LastSeq
			for name, st := range map[string]*Store{"direct get": s, "stream info": &byInfo} {
				got, err := st.LastSeq(ctx)
				if err != nil || got != want {
					t.Errorf("%s: LastSeq = %d, %v; the stream's last sequence is %d", name, got, err, want)
				}
			}
		})
	}
}

// newTestStore is a store on a fresh embedded JetStream server.
func newTestStore(t *testing.T) (*Store, jetstream.JetStream) {
	t.Helper()
	_, js := natstest.Connect(t, natstest.Start(t, ""))
	s, err := NewStore(context.Background(), js, StoreConfig{})
	if err != nil {
		t.Fatal(err)
	}
	return s, js
}
