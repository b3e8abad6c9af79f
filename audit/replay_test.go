package audit

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tokenledger/tokenledger/ledger"
)

// expected computes, from the generated messages, the sequences a filter
// must select: the reference the replay is checked against.
func expected(events []ledger.Event, start uint64, f Filter) []uint64 {
	issued := map[string]ledger.FamilyIssued{}
	var out []uint64
	for i, e := range events {
		seq := uint64(i + 1)
		if d, ok := e.Data.(ledger.FamilyIssued); ok {
			issued[e.FamilyID] = d
		}
		if seq < start ||
			len(f.FamilyIDs) > 0 && !slices.Contains(f.FamilyIDs, e.FamilyID) ||
			len(f.Types) > 0 && !slices.Contains(f.Types, e.Type) ||
			!f.Since.IsZero() && e.OccurredAt.Before(f.Since) ||
			!f.Until.IsZero() && !e.OccurredAt.Before(f.Until) {
			continue
		}
		if len(f.Subjects) > 0 || len(f.Clients) > 0 {
			d, ok := issued[e.FamilyID]
			if !ok || e.FamilyID == "" ||
				len(f.Subjects) > 0 && !slices.Contains(f.Subjects, d.Subject) ||
				len(f.Clients) > 0 && !slices.Contains(f.Clients, d.ClientID) {
				continue
			}
		}
		out = append(out, seq)
	}
	return out
}

func TestReplayFilters(t *testing.T) {
	msgs := newGenerator(5).mixed(4000)
	_, src := newLedger(t, "REPLAY", "ledger", msgs)
	fams := familyEvents(msgs)
	events := make([]ledger.Event, len(msgs))
	for i, m := range msgs {
		e, err := ledger.DecodeEvent(m.Data)
		if err != nil {
			t.Fatal(err)
		}
		events[i] = e
	}
	var famIDs []string
	for id := range fams {
		famIDs = append(famIDs, id)
	}
	slices.Sort(famIDs)
	first, _ := ledger.DecodeEvent(msgs[0].Data)
	mid, _ := ledger.DecodeEvent(msgs[len(msgs)/2].Data)
	user := first.Data.(ledger.FamilyIssued).Subject

	cases := []struct {
		name  string
		start uint64
		f     Filter
	}{
		{"everything", 0, Filter{}},
		{"from a sequence", 1234, Filter{}},
		{"one family", 0, Filter{FamilyIDs: famIDs[:1]}},
		{"two families from a sequence", 2000, Filter{FamilyIDs: famIDs[3:5]}},
		{"types", 0, Filter{Types: []ledger.EventType{ledger.TypeReuseDetected, ledger.TypeFamilyRevoked}}},
		{"token subject", 0, Filter{Subjects: []string{user}}},
		{"client and type", 0, Filter{Clients: []string{"mobile"}, Types: []ledger.EventType{ledger.TypeRefreshRotated}}},
		// A family's issue lies before the start: its subject is looked
		// up with a direct get.
		{"client from a sequence", 3000, Filter{Clients: []string{"billing", "cli"}}},
		{"time range", 0, Filter{Since: first.OccurredAt.Add(time.Second), Until: mid.OccurredAt}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			want := expected(events, tc.start, tc.f)
			if len(want) == 0 && tc.name != "none" {
				t.Fatal("the filter selects nothing: a useless case")
			}
			var buf bytes.Buffer
			sum, err := Replay(context.Background(), src, ReplayOptions{Filter: tc.f, StartSeq: tc.start}, &buf)
			if err != nil {
				t.Fatal(err)
			}
			var got []uint64
			sc := bufio.NewScanner(&buf)
			sc.Buffer(nil, 1<<20)
			for sc.Scan() {
				var l Line
				dec := json.NewDecoder(bytes.NewReader(sc.Bytes()))
				dec.DisallowUnknownFields()
				if err := dec.Decode(&l); err != nil {
					t.Fatalf("line %q does not parse: %v", sc.Text(), err)
				}
				if _, err := ledger.DecodeEvent(l.Event); err != nil {
					t.Fatalf("seq %d: embedded event: %v", l.Seq, err)
				}
				require(t, "hash", l.Hash, ledger.EventHash(msgs[l.Seq-1].Data))
				require(t, "event bytes verbatim", string(l.Event), string(msgs[l.Seq-1].Data))
				got = append(got, l.Seq)
			}
			require(t, "matched", sum.Matched, uint64(len(want)))
			if !slices.Equal(got, want) {
				t.Fatalf("selected %d events, want %d (first got %v, want %v)", len(got), len(want), got[:min(5, len(got))], want[:min(5, len(want))])
			}
		})
	}

	t.Run("table", func(t *testing.T) {
		var buf bytes.Buffer
		f := Filter{FamilyIDs: famIDs[:1]}
		if _, err := Replay(context.Background(), src, ReplayOptions{Filter: f, Format: FormatTable}, &buf); err != nil {
			t.Fatal(err)
		}
		lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
		require(t, "rows", len(lines), 1+len(fams[famIDs[0]]))
		if !strings.HasPrefix(lines[0], "SEQ") || !strings.Contains(lines[1], string(ledger.TypeFamilyIssued)) {
			t.Fatalf("table:\n%s", buf.String())
		}
	})

	t.Run("follow", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		r, w := io.Pipe()
		done := make(chan error, 1)
		go func() {
			_, err := Replay(ctx, src, ReplayOptions{StartSeq: uint64(len(msgs)), Follow: true}, w)
			done <- err
		}()
		sc := bufio.NewScanner(r)
		sc.Buffer(nil, 1<<20)
		if !sc.Scan() {
			t.Fatal("no line")
		}
		// A new event appended while following is printed.
		g := newGenerator(9)
		publish(t, src.js, "ledger", []stored{g.issue0()})
		if !sc.Scan() {
			t.Fatal("no line for the new event")
		}
		var l Line
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			t.Fatal(err)
		}
		require(t, "followed seq", l.Seq, uint64(len(msgs)+1))
		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	})
}
