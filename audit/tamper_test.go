package audit

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/tokenledger/tokenledger/internal/natstest"
	"github.com/tokenledger/tokenledger/ledger"
)

// readBack copies the stream's messages out through the audit Source, as
// the tampered copies are built from what the stream holds.
func readBack(t *testing.T, src *Source) []stored {
	t.Helper()
	var out []stored
	err := src.Scan(context.Background(), ScanOptions{}, func(m Msg) error {
		out = append(out, stored{Subject: strings.TrimPrefix(m.Subject, "ledger."), Type: m.Type, Data: m.Data})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// familyEvents returns the positions (0-based) of each family's events.
func familyEvents(msgs []stored) map[string][]int {
	out := map[string][]int{}
	for i, m := range msgs {
		if fam, ok := strings.CutPrefix(m.Subject, "family."); ok {
			out[fam] = append(out[fam], i)
		}
	}
	return out
}

// pickFamily returns the positions of a family with at least n events whose
// events are interleaved with others.
// Its second event is a rotation. The choice is deterministic.
func pickFamily(t *testing.T, msgs []stored, n int) []int {
	t.Helper()
	fams := familyEvents(msgs)
	ids := slices.Sorted(maps.Keys(fams))
	for _, id := range ids {
		pos := fams[id]
		if len(pos) >= n && pos[2]-pos[1] > 1 && msgs[pos[1]].Type == ledger.TypeRefreshRotated {
			return pos
		}
	}
	t.Fatal("no family long enough")
	return nil
}

func TestVerifyDetectsTampering(t *testing.T) {
	orig := newGenerator(3).mixed(3000)
	s := natstest.Start(t, "")
	_, js := natstest.Connect(t, s)
	testStream(t, js, "ORIG", "ledger")
	publish(t, js, "ledger", orig)
	checkTampering(t, js, NewSource(js, "ORIG", "ledger"), len(orig), storeTampered)
}

// tamperStore stores a tampered copy of a ledger as stream name on prefix,
// deletes the sequences given from it, and returns the source an auditor
// reads it through.
type tamperStore func(t *testing.T, js jetstream.JetStream, name, prefix string, msgs []stored, delete []uint64) *Source

// storeTampered stores the copy as a stream of its own.
func storeTampered(t *testing.T, js jetstream.JetStream, name, prefix string, msgs []stored, delete []uint64) *Source {
	t.Helper()
	testStream(t, js, name, prefix)
	publish(t, js, prefix, msgs)
	deleteSeqs(t, js, name, delete)
	return NewSource(js, name, prefix)
}

func deleteSeqs(t *testing.T, js jetstream.JetStream, name string, seqs []uint64) {
	t.Helper()
	st, err := js.Stream(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	for _, seq := range seqs {
		if err := st.DeleteMsg(context.Background(), seq); err != nil {
			t.Fatalf("delete %d: %v", seq, err)
		}
	}
}

// checkTampering verifies the ledger origSrc reads (n events), then
// copies of it with each kind of tampering, stored by store: each must be
// caught, first at the sequence and of the kind the case names. Cases
// named in except are left out.
func checkTampering(t *testing.T, js jetstream.JetStream, origSrc *Source, n int, store tamperStore, except ...string) {
	ctx := context.Background()
	clean, err := Verify(ctx, origSrc, VerifyOptions{})
	if err != nil || !clean.OK {
		t.Fatalf("original ledger: %v %+v", err, clean.Violations)
	}
	msgs := readBack(t, origSrc)
	require(t, "copied", len(msgs), n)
	pos := pickFamily(t, msgs, 5)
	k := pos[1] // the family's second event, in the middle of its history
	seqOf := func(i int) uint64 { return uint64(i + 1) }

	cases := []struct {
		name     string
		edit     func([]stored) []stored
		delete   []uint64 // sequences deleted from the copy after publishing
		opts     VerifyOptions
		wantSeq  uint64
		wantKind string
	}{
		{
			name: "payload altered",
			edit: func(m []stored) []stored {
				e, _ := ledger.DecodeEvent(m[k].Data)
				jti := e.Data.(ledger.RefreshRotated).Access.JTI
				m[k].Data = bytes.Replace(m[k].Data, []byte(jti), []byte("01ARZ3NDEKTSV4RRFFQ69G5FAV"), 1)
				return m
			},
			wantSeq: seqOf(k), wantKind: KindAltered,
		},
		{
			name: "state (the base) altered",
			edit: func(m []stored) []stored {
				e, _ := ledger.DecodeEvent(m[k].Data)
				e.State.Scope += " admin"
				data, err := ledger.EncodeEvent(e)
				if err != nil {
					t.Fatal(err)
				}
				m[k].Data = data
				return m
			},
			wantSeq: seqOf(k), wantKind: KindState,
		},
		{
			// Apply would overwrite it, so the state after the event is
			// the same; the bytes are not what the writer stores.
			name: "base spells out a field its event sets",
			edit: func(m []stored) []stored {
				m[k].Data = bytes.Replace(m[k].Data, []byte(`"base":{`), []byte(`"base":{"generation":99,`), 1)
				return m
			},
			wantSeq: seqOf(k), wantKind: KindState,
		},
		{
			// No later event of the family chains to it.
			name: "base of the family's last event altered",
			edit: func(m []stored) []stored {
				last := pos[len(pos)-1]
				e, _ := ledger.DecodeEvent(m[last].Data)
				if !bytes.Contains(m[last].Data, []byte(`"base":{`)) {
					t.Fatalf("the family's last event has no base: %s", m[last].Data)
				}
				e.State.Subject += "-mallory"
				data, err := ledger.EncodeEvent(e)
				if err != nil {
					t.Fatal(err)
				}
				m[last].Data = data
				return m
			},
			wantSeq: seqOf(pos[len(pos)-1]), wantKind: KindState,
		},
		{
			// A repeated member is not an event: the codec refuses it
			// rather than pick one of the two payloads.
			name: "a second payload appended after the state snapshot",
			edit: func(m []stored) []stored {
				e, _ := ledger.DecodeEvent(m[k].Data)
				d := e.Data.(ledger.RefreshRotated)
				d.FromGeneration += 5
				extra, _ := json.Marshal(d)
				b := m[k].Data
				m[k].Data = append(append(append([]byte{}, b[:len(b)-1]...), `,"data":`...), append(extra, '}')...)
				return m
			},
			wantSeq: seqOf(k), wantKind: KindDecode,
		},
		{
			name:    "event removed (sequence left as a gap)",
			delete:  []uint64{seqOf(k)},
			wantSeq: seqOf(k), wantKind: KindGap,
		},
		{
			name: "event removed and the rest renumbered",
			edit: func(m []stored) []stored { return append(m[:k:k], m[k+1:]...) },
			// The removal shows at the family's next event, which moved
			// up one sequence.
			wantSeq: seqOf(pos[2] - 1), wantKind: KindMissing,
		},
		{
			name: "two events of a family swapped",
			edit: func(m []stored) []stored {
				m[k], m[pos[2]] = m[pos[2]], m[k]
				return m
			},
			wantSeq: seqOf(k), wantKind: KindReordered,
		},
		{
			name:    "tail truncated (the stream keeps its last sequence)",
			delete:  []uint64{uint64(len(msgs)) - 2, uint64(len(msgs)) - 1, uint64(len(msgs))},
			wantSeq: uint64(len(msgs)) - 2, wantKind: KindTruncated,
		},
		{
			name:     "tail truncated (copied short, caught by the checkpoint)",
			edit:     func(m []stored) []stored { return m[:len(m)-10] },
			opts:     VerifyOptions{Checkpoints: []Checkpoint{{Seq: clean.LastSeq, Digest: clean.Digest}}},
			wantSeq:  uint64(len(msgs)) - 9,
			wantKind: KindTruncated,
		},
		{
			name: "event inserted",
			edit: func(m []stored) []stored {
				forged := forgeAfter(t, m[k].Data, ledger.Cause{Kind: ledger.CauseAdmin, Reason: "forged"})
				out := append(m[:k+1:k+1], stored{Subject: m[k].Subject, Type: ledger.TypeFamilyRevoked, Data: forged})
				return append(out, m[k+1:]...)
			},
			wantSeq: seqOf(k + 1), wantKind: KindInserted,
		},
	}
	for i, tc := range cases {
		if slices.Contains(except, tc.name) {
			continue
		}
		t.Run(tc.name, func(t *testing.T) {
			name, prefix := fmt.Sprintf("TAMPER%d", i), fmt.Sprintf("tamper%d", i)
			copied := append([]stored(nil), msgs...)
			if tc.edit != nil {
				copied = tc.edit(copied)
			}
			rep, err := Verify(ctx, store(t, js, name, prefix, copied, tc.delete), tc.opts)
			if err != nil {
				t.Fatal(err)
			}
			if rep.OK || len(rep.Violations) == 0 {
				t.Fatal("tampering not detected")
			}
			first := rep.Violations[0]
			t.Logf("%d violation(s), first: %+v", len(rep.Violations), first)
			require(t, "first violation's sequence", first.Seq, tc.wantSeq)
			require(t, "first violation's kind", first.Kind, tc.wantKind)
		})
	}
}

// forgeAfter builds a family.revoked event that chains correctly after the
// stored event prevData, with a consistent state snapshot: the forgery a
// chain alone would accept if it were the family's last event.
func forgeAfter(t *testing.T, prevData []byte, cause ledger.Cause) []byte {
	t.Helper()
	prev, err := ledger.DecodeEvent(prevData)
	if err != nil {
		t.Fatal(err)
	}
	e := ledger.Event{ID: "01ARZ3NDEKTSV4RRFFQ69G5FAV", FamilyID: prev.FamilyID,
		OccurredAt: prev.OccurredAt.Add(time.Millisecond), Cause: cause,
		Prev: ledger.EventHash(prevData), Data: ledger.FamilyRevoked{Generation: prev.State.Generation}}
	next := ledger.Apply(*prev.State, e)
	e.State = &next
	data, err := ledger.EncodeEvent(e)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// chain encodes events of one family with correct links and snapshots,
// whatever the rules say: for ledgers that break the rules.
func chain(t *testing.T, events ...ledger.Event) []stored {
	t.Helper()
	var st ledger.State
	var out []stored
	for _, e := range events {
		e.Prev = st.Head
		next := ledger.Apply(st, e)
		snap := next
		e.State = &snap
		data, err := ledger.EncodeEvent(e)
		if err != nil {
			t.Fatal(err)
		}
		next.Head = ledger.EventHash(data)
		st = next
		out = append(out, stored{Subject: "family." + e.FamilyID, Type: eventType(e.Data), Data: data})
	}
	return out
}

func TestVerifyIllegalTransitions(t *testing.T) {
	fid := "01HZZZZZZZZZZZZZZZZZZZZZZ0"
	at := time.Date(2026, 3, 1, 9, 0, 0, 0, time.UTC)
	ev := func(i int, cause string, data any) ledger.Event {
		return ledger.Event{ID: fmt.Sprintf("01HZZZZZZZZZZZZZZZZZZZZZ%02d", i), FamilyID: fid,
			OccurredAt: at.Add(time.Duration(i) * time.Second), Cause: ledger.Cause{Kind: cause}, Data: data}
	}
	issued := ev(1, ledger.CauseRequest, ledger.FamilyIssued{ClientID: "web", Subject: "u", TokenHash: "h0", ExpiresAt: at.Add(time.Hour), RefreshExpiresAt: at.Add(time.Hour)})
	rot := func(i int, from, to uint64) ledger.Event {
		return ev(i, ledger.CauseRequest, ledger.RefreshRotated{FromGeneration: from, ToGeneration: to, TokenHash: fmt.Sprint("h", i)})
	}
	cases := []struct {
		name    string
		events  []ledger.Event
		wantSeq uint64
	}{
		{"first event not an issue", []ledger.Event{rot(1, 0, 1)}, 1},
		{"one generation rotated twice", []ledger.Event{issued, rot(2, 0, 1), rot(3, 0, 1)}, 3},
		{"generation skipped", []ledger.Event{issued, rot(2, 0, 2)}, 2},
		{"rotation after revocation", []ledger.Event{issued, ev(2, ledger.CauseAdmin, ledger.FamilyRevoked{}), rot(3, 0, 1)}, 3},
		{"rotation after reuse", []ledger.Event{issued, rot(2, 0, 1), ev(3, ledger.CauseRequest, ledger.ReuseDetected{PresentedGeneration: 0, CurrentGeneration: 1}), rot(4, 1, 2)}, 4},
		{"grace retry after revocation", []ledger.Event{issued, rot(2, 0, 1), ev(3, ledger.CauseAdmin, ledger.FamilyRevoked{Generation: 1}), ev(4, ledger.CauseRequest, ledger.GraceRetried{PresentedGeneration: 0, SuccessorGeneration: 1})}, 4},
		{"revocation without a cause", []ledger.Event{issued, ev(2, "", ledger.FamilyRevoked{})}, 2},
	}
	s := natstest.Start(t, "")
	_, js := natstest.Connect(t, s)
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			name, prefix := fmt.Sprintf("RULES%d", i), fmt.Sprintf("rules%d", i)
			testStream(t, js, name, prefix)
			publish(t, js, prefix, chain(t, tc.events...))
			rep, err := Verify(context.Background(), NewSource(js, name, prefix), VerifyOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if len(rep.Violations) != 1 {
				t.Fatalf("want one violation, got %+v", rep.Violations)
			}
			require(t, "kind", rep.Violations[0].Kind, KindTransition)
			require(t, "seq", rep.Violations[0].Seq, tc.wantSeq)
		})
	}
	// Further revocations after a revocation are legal.
	testStream(t, js, "RULESOK", "rulesok")
	publish(t, js, "rulesok", chain(t, issued, ev(2, ledger.CauseAdmin, ledger.FamilyRevoked{}),
		ev(3, ledger.CauseSecurity, ledger.FamilyRevoked{}), ev(4, ledger.CauseRevoke, ledger.AccessRevoked{JTI: "j"})))
	rep, err := Verify(context.Background(), NewSource(js, "RULESOK", "rulesok"), VerifyOptions{})
	if err != nil || !rep.OK {
		t.Fatalf("legal ledger: %v %+v", err, rep.Violations)
	}
}
