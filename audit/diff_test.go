package audit

import (
	"context"
	"testing"
	"time"

	"github.com/tokenledger/tokenledger/ledger"
	"github.com/tokenledger/tokenledger/projections"
)

func TestDiff(t *testing.T) {
	msgs := newGenerator(11).mixed(3000)
	js, src := newLedger(t, "DIFF", "ledger", msgs)
	ctx := context.Background()
	// Compare where families are still active and some access
	// revocations unexpired.
	last, _ := ledger.DecodeEvent(msgs[len(msgs)-1].Data)
	now := last.OccurredAt.Add(time.Minute)

	// A live view as the service keeps it, fed the same events.
	live := projections.NewView()
	for i, m := range msgs {
		e, err := ledger.DecodeEvent(m.Data)
		if err != nil {
			t.Fatal(err)
		}
		live.Apply(uint64(i+1), e)
		if i+1 == 2000 {
			break
		}
	}
	liveDigest := live.Digest(now)

	rep, err := Diff(ctx, src, DiffOptions{Now: now, LiveDigest: liveDigest, LiveSeq: 2000, LiveTime: now})
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range rep.Differences[:min(5, len(rep.Differences))] {
		t.Errorf("difference: %+v", d)
	}
	require(t, "ok", rep.OK, true)
	require(t, "live checked", rep.LiveChecked, true)
	require(t, "families", rep.Families, len(familyEvents(msgs)))

	t.Run("live drifted", func(t *testing.T) {
		rep, err := Diff(ctx, src, DiffOptions{Now: now, LiveDigest: liveDigest, LiveSeq: 1999, LiveTime: now})
		if err != nil {
			t.Fatal(err)
		}
		require(t, "ok", rep.OK, false)
		require(t, "difference", rep.Differences[0].Between, "rebuilt/live")
	})

	t.Run("stored state differs from the fold", func(t *testing.T) {
		pos := pickFamily(t, msgs, 3)
		k := pos[len(pos)-1] // the family's last event: its state is what the service loads
		e, _ := ledger.DecodeEvent(msgs[k].Data)
		e.State.Generation += 5
		data, err := ledger.EncodeEvent(e)
		if err != nil {
			t.Fatal(err)
		}
		copied := append([]stored(nil), msgs...)
		copied[k].Data = data
		testStream(t, js, "DIFF2", "diff2")
		publish(t, js, "diff2", copied)
		rep, err := Diff(ctx, NewSource(js, "DIFF2", "diff2"), DiffOptions{Now: now})
		if err != nil {
			t.Fatal(err)
		}
		if len(rep.Differences) != 1 {
			t.Fatalf("want one difference, got %+v", rep.Differences)
		}
		d := rep.Differences[0]
		require(t, "between", d.Between, "fold/snapshot")
		require(t, "family", d.FamilyID, e.FamilyID)
		require(t, "seq", d.Seq, uint64(k+1))
	})
}
