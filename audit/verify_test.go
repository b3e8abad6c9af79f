package audit

import (
	"context"
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
