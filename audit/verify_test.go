package audit

import (
	"context"
	"strings"
	"testing"
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
