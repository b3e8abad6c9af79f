package audit

import (
	"context"
	"testing"
	"time"

	"github.com/tokenledger/tokenledger/ledger"
	"github.com/tokenledger/tokenledger/projections"
)

// Diff compares a view checkpoint with the view rebuilt up to its
// sequence: the same digest, or the families that differ.
func TestDiffCheckpoint(t *testing.T) {
	msgs := newGenerator(13).mixed(2000)
	js, src := newLedger(t, "DIFFCP", "ledger", msgs)
	ctx := context.Background()
	last, _ := ledger.DecodeEvent(msgs[len(msgs)-1].Data)
	now := last.OccurredAt.Add(time.Minute)
	store, err := projections.NewCheckpointStore(ctx, js, projections.CheckpointConfig{})
	if err != nil {
		t.Fatal(err)
	}
	// checkpoint saves a checkpoint of a view fed the first n events,
	// the last one replaced by lie if given.
	checkpoint := func(t *testing.T, n int, lie *ledger.Event) *projections.Checkpoint {
		t.Helper()
		v := projections.NewView()
		r, err := projections.NewRunner(js, v, projections.RunnerConfig{Stream: "DIFFCP", Checkpoints: store,
			Now: func() time.Time { return now }})
		if err != nil {
			t.Fatal(err)
		}
		for i, m := range msgs[:n] {
			e, err := ledger.DecodeEvent(m.Data)
			if err != nil {
				t.Fatal(err)
			}
			if i == n-1 && lie != nil {
				e = *lie
			}
			v.Apply(uint64(i+1), e)
		}
		info, err := r.Checkpoint(ctx)
		if err != nil {
			t.Fatal(err)
		}
		cp, err := store.Load(ctx, info)
		if err != nil {
			t.Fatal(err)
		}
		return cp
	}

	cp := checkpoint(t, 1500, nil)
	rep, err := Diff(ctx, src, DiffOptions{Now: now, Checkpoint: cp})
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range rep.Differences[:min(5, len(rep.Differences))] {
		t.Errorf("difference: %+v", d)
	}
	require(t, "ok", rep.OK, true)
	require(t, "checkpoint checked", rep.CheckpointChecked, true)
	require(t, "checkpoint", rep.Checkpoint, cp.Name)

	t.Run("checkpoint differs", func(t *testing.T) {
		// The checkpoint missed the last event it claims to cover (a
		// rotation): valid as an object, but wrong.
		var n int
		var victim ledger.Event
		for n = 1999; n > 0; n-- {
			victim, _ = ledger.DecodeEvent(msgs[n-1].Data)
			if _, ok := victim.Data.(ledger.RefreshRotated); ok {
				break
			}
		}
		cp := checkpoint(t, n, &ledger.Event{})
		rep, err := Diff(ctx, src, DiffOptions{Now: now, Checkpoint: cp})
		if err != nil {
			t.Fatal(err)
		}
		require(t, "ok", rep.OK, false)
		var digest, family bool
		for _, d := range rep.Differences {
			require(t, "between", d.Between, "rebuilt/checkpoint")
			digest = digest || d.Field == "digest"
			family = family || d.FamilyID == victim.FamilyID
		}
		if !digest || !family {
			t.Fatalf("want the digest and family %s to differ, got %+v", victim.FamilyID, rep.Differences)
		}
	})
}
