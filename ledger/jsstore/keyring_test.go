package jsstore

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/tokenledger/tokenledger/internal/natstest"
	"github.com/tokenledger/tokenledger/ledger"
	"github.com/tokenledger/tokenledger/ledger/token"
)

type ringClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *ringClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *ringClock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = t
}

// The scheduled rotation: the next key is published one cache period
// before the rotation period ends, signs when it ends, and the previous key
// retires then; two rings on one bucket agree and record each change once.
func TestKeyRingScheduledRotation(t *testing.T) {
	ctx := context.Background()
	srv := natstest.Start(t, "")
	_, js := natstest.Connect(t, srv)
	store, err := NewStore(ctx, js, StoreConfig{})
	if err != nil {
		t.Fatal(err)
	}
	keys, err := NewKeyStore(ctx, js, token.KEK{1}, 1)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)
	clock := &ringClock{t: start}
	const period, cache, maxAge = 24 * time.Hour, 15 * time.Minute, 16 * time.Minute
	ring := func() *KeyRing {
		r, err := NewKeyRing(KeyRingConfig{Keys: keys, Store: store, CachePeriod: cache, RotationPeriod: period, MaxTokenAge: maxAge, Now: clock.Now})
		if err != nil {
			t.Fatal(err)
		}
		if err := r.Start(ctx); err != nil {
			t.Fatal(err)
		}
		return r
	}
	a, b := ring(), ring()
	first, _ := a.Snapshot().Set.Signing(start)
	if got, _ := b.Snapshot().Set.Signing(start); got.KID != first.KID {
		t.Fatal("two rings sign with different keys")
	}
	tick := func(at time.Time) {
		clock.Set(at)
		for _, r := range []*KeyRing{a, b} {
			if err := r.Tick(ctx); err != nil {
				t.Fatal(err)
			}
		}
	}
	tick(start.Add(period - cache - time.Second))
	if _, ok := a.Snapshot().Set.Next(clock.Now()); ok {
		t.Fatal("next key published before the schedule")
	}
	tick(start.Add(period - cache))
	ks, _, err := keys.Load(ctx)
	if err != nil {
		t.Fatal(err)
	}
	next, ok := ks.Next(clock.Now())
	if !ok || !next.ActivatesAt.Equal(start.Add(period)) {
		t.Fatalf("next key %+v (%v), want activation at %s", next, ok, start.Add(period))
	}
	if cur, _ := ks.Signing(clock.Now()); cur.KID != first.KID {
		t.Fatal("the next key signs before its activation")
	}
	tick(start.Add(period))
	ks, _, _ = keys.Load(ctx)
	if cur, _ := ks.Signing(clock.Now()); cur.KID != next.KID {
		t.Fatalf("after the period %s signs, want %s", cur.KID, next.KID)
	}
	if st := ks.State(ks.Index(first.KID), clock.Now(), maxAge); st != token.KeyRetired {
		t.Fatalf("first key %s after the rotation", st)
	}
	tick(start.Add(period + maxAge))
	if jwks := a.Snapshot().Set.JWKS(clock.Now(), maxAge); len(jwks) != 1 || jwks[0].Kid != next.KID {
		t.Fatalf("JWKS after the old key's tokens expired: %+v", jwks)
	}

	counts := map[ledger.EventType]int{}
	last, err := store.LastSeq(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for seq := uint64(1); seq <= last; seq++ {
		msg, err := store.Stream().GetMsg(ctx, seq)
		if err != nil {
			t.Fatal(err)
		}
		e, err := ledger.DecodeEvent(msg.Data)
		if err != nil {
			t.Fatal(err)
		}
		if msg.Subject != "ledger.keys."+ledger.KeyEventKID(e.Data) || e.Cause.Kind != ledger.CauseSchedule {
			t.Fatalf("seq %d: %s on %s, cause %+v", seq, e.Type, msg.Subject, e.Cause)
		}
		counts[e.Type]++
	}
	want := map[ledger.EventType]int{ledger.TypeKeyPublished: 2, ledger.TypeKeyActivated: 2, ledger.TypeKeyRetired: 1}
	for typ, n := range want {
		if counts[typ] != n {
			t.Errorf("%s recorded %d times, want %d (all: %v)", typ, counts[typ], n, counts)
		}
	}
}
