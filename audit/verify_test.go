package audit

import (
	"context"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/tokenledger/tokenledger/ledger"
)

func TestVerifyCleanLedger(t *testing.T) {
	n := 100_000
	if testing.Short() || raceEnabled {
		n = 25_000 // the race detector makes 100 000 take minutes
	}
	msgs := newGenerator(1).mixed(n)
	_, src := newLedger(t, "CLEAN", "ledger", msgs)
	rep, err := Verify(context.Background(), src, VerifyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("verified %d events, %d families in %v (%.0f events/s)", rep.Events, rep.Families, rep.Elapsed, rep.PerSecond)
	for _, v := range rep.Violations[:min(len(rep.Violations), 10)] {
		t.Errorf("violation: %+v", v)
	}
	require(t, "ok", rep.OK, true)
	require(t, "events", rep.Events, uint64(len(msgs)))
	require(t, "last seq", rep.LastSeq, uint64(len(msgs)))
}

func TestVerifyEmptyAndOneFamily(t *testing.T) {
	msgs := newGenerator(2).mixed(500)
	js, src := newLedger(t, "ONE", "ledger", msgs)
	testStream(t, js, "EMPTY", "empty")
	rep, err := Verify(context.Background(), NewSource(js, "EMPTY", "empty"), VerifyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	require(t, "empty ledger ok", rep.OK, true)
	require(t, "empty ledger events", rep.Events, uint64(0))

	pos := pickFamily(t, msgs, 3)
	fam := strings.TrimPrefix(msgs[pos[0]].Subject, "family.")
	rep, err = Verify(context.Background(), src, VerifyOptions{FamilyID: fam})
	if err != nil {
		t.Fatal(err)
	}
	require(t, "family ok", rep.OK, true)
	require(t, "family events", rep.Events, uint64(len(pos)))
	require(t, "families", rep.Families, 1)
}

func TestSameStateIsDeepEqual(t *testing.T) {
	var states []ledger.State
	for _, m := range newGenerator(4).mixed(3000) {
		if e, err := ledger.DecodeEvent(m.Data); err == nil && e.State != nil {
			states = append(states, *e.State)
		}
	}
	at := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	mutations := []func(*ledger.State){
		func(s *ledger.State) { s.FamilyID += "x" },
		func(s *ledger.State) { s.Scope += " x" },
		func(s *ledger.State) { s.Audience = append(s.Audience, "x") },
		func(s *ledger.State) { s.Claims = []byte(`{}`) },
		func(s *ledger.State) { s.Version++ },
		func(s *ledger.State) { s.Generation++ },
		func(s *ledger.State) { s.TokenHash += "x" },
		func(s *ledger.State) { s.Events++ },
		func(s *ledger.State) { s.ExpiresAt = s.ExpiresAt.Add(time.Nanosecond) },
		func(s *ledger.State) { s.RotatedAt = at },
		func(s *ledger.State) { s.AccessCutoff = at },
		func(s *ledger.State) { s.Revoked = &ledger.Revocation{At: at, Cause: ledger.Cause{Kind: "admin"}} },
		func(s *ledger.State) { s.Previous = &ledger.Previous{Generation: 99} },
	}
	for i, s := range states {
		c := s
		if !sameState(s, &c) || !reflect.DeepEqual(s, c) {
			t.Fatalf("state %d differs from its copy", i)
		}
		for j, mutate := range mutations {
			m := s
			if s.Previous != nil {
				p := *s.Previous
				m.Previous = &p
			}
			mutate(&m)
			if got, want := sameState(s, &m), reflect.DeepEqual(s, m); got != want {
				t.Fatalf("state %d, mutation %d: sameState %v, DeepEqual %v", i, j, got, want)
			}
		}
	}
}
