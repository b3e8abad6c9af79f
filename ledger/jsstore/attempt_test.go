package jsstore

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/tokenledger/tokenledger/internal/natstest"
	"github.com/tokenledger/tokenledger/ledger"
)

// While nothing answers (a stream leader being elected: the request
// reaches a subscriber that never replies), each JetStream call gives up
// after the attempt timeout with ledger.ErrUnavailable, well before the
// request's own deadline.
func TestAttemptTimeoutFailsFast(t *testing.T) {
	srv := natstest.Start(t, t.TempDir())
	nc, js := natstest.Connect(t, srv)
	s, err := NewStore(context.Background(), js, StoreConfig{AttemptTimeout: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	// A store whose appends and reads go to subjects a silent subscriber
	// swallows, as a dead leader would.
	silent := &Store{js: s.js, stream: s.stream, prefix: "silent", getSubject: "silent.get", attemptTimeout: s.attemptTimeout}
	sub, err := nc.Subscribe("silent.>", func(*nats.Msg) {})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	fid := "01JDQ7Z6M3XGJ8Y9W4V2T1S0RQ"
	for _, tc := range []struct {
		name string
		call func(context.Context) error
	}{
		{"append", func(ctx context.Context) error {
			_, err := silent.Append(ctx, ledger.State{}, ledger.Event{ID: "01JDQ7Z6M3XGJ8Y9W4V2T1S0RR", FamilyID: fid, Data: ledger.FamilyRevoked{}})
			return err
		}},
		{"append outside families", func(ctx context.Context) error {
			_, err := silent.AppendTo(ctx, "security", "evt-1", ledger.Event{ID: "01JDQ7Z6M3XGJ8Y9W4V2T1S0RS", Data: ledger.FamilyRevoked{}})
			return err
		}},
		{"load", func(ctx context.Context) error { _, err := silent.Load(ctx, fid); return err }},
		{"event after", func(ctx context.Context) error { _, _, err := silent.EventAfter(ctx, fid, 1); return err }},
		{"last sequence", func(ctx context.Context) error { _, err := silent.LastSeq(ctx); return err }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			start := time.Now()
			err := tc.call(ctx)
			took := time.Since(start)
			if !errors.Is(err, ledger.ErrUnavailable) {
				t.Errorf("err = %v, want ledger.ErrUnavailable", err)
			}
			if took > time.Second {
				t.Errorf("took %v with a 200ms attempt timeout and a 5s request", took)
			}
		})
	}
}
