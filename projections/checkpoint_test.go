package projections

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/oklog/ulid/v2"

	"github.com/tokenledger/tokenledger/ledger"
)

// checkpointDigests are the instants the tests compare views at: now, as
// access tokens expire, and past every family's lifetime.
func checkpointDigests(v *View, now time.Time) []string {
	var out []string
	for _, at := range []time.Time{now, now.Add(10 * time.Minute), now.Add(time.Hour), now.Add(100 * 24 * time.Hour)} {
		out = append(out, v.Digest(at))
	}
	return out
}

// sameAnswers checks that two views answer every query alike for the
// families and subjects of the workload.
func sameAnswers(t *testing.T, f *fixture, a, b *View, now time.Time) {
	t.Helper()
	if x, y := fmt.Sprint(checkpointDigests(a, now)), fmt.Sprint(checkpointDigests(b, now)); x != y {
		t.Fatalf("digests differ:\n%s\n%s", x, y)
	}
	if a.LastSeq() != b.LastSeq() || a.Len() != b.Len() {
		t.Fatalf("seq %d/%d, families %d/%d", a.LastSeq(), b.LastSeq(), a.Len(), b.Len())
	}
	ea, ra := a.Counts()
	eb, rb := b.Counts()
	if fmt.Sprint(ea, ra) != fmt.Sprint(eb, rb) {
		t.Fatalf("counts differ: %v %v / %v %v", ea, ra, eb, rb)
	}
	for _, s := range []string{"alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "nobody"} {
		if x, y := fmt.Sprint(a.FamilyViewsBySubject(s, now)), fmt.Sprint(b.FamilyViewsBySubject(s, now)); x != y {
			t.Fatalf("subject %s: %s / %s", s, x, y)
		}
	}
	if x, y := fmt.Sprint(a.FamiliesByClient(testClient.ID, now)), fmt.Sprint(b.FamiliesByClient(testClient.ID, now)); x != y {
		t.Fatalf("client: %s / %s", x, y)
	}
	for _, e := range streamEvents(t, f) {
		if fa, oka := a.Family(e.FamilyID); fmt.Sprint(fa, oka) != fmt.Sprint(b.Family(e.FamilyID)) {
			t.Fatalf("family %s differs", e.FamilyID)
		}
		if d, ok := e.Data.(ledger.AccessRevoked); ok {
			if a.AccessRevoked(d.JTI, e.FamilyID, now, 1, now) != b.AccessRevoked(d.JTI, e.FamilyID, now, 1, now) {
				t.Fatalf("jti %s differs", d.JTI)
			}
		}
	}
}

func streamEvents(t *testing.T, f *fixture) []ledger.Event {
	t.Helper()
	var out []ledger.Event
	ctx := context.Background()
	cons, err := f.js.OrderedConsumer(ctx, "TOKENLEDGER", jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	last := f.lastSeq()
	for seq := uint64(0); seq < last; {
		msg, err := cons.Next(jetstream.FetchMaxWait(5 * time.Second))
		if err != nil {
			t.Fatal(err)
		}
		meta, _ := msg.Metadata()
		seq = meta.Sequence.Stream
		e, err := ledger.DecodeEvent(msg.Data())
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, e)
	}
	return out
}

// A view and a rollout model encoded and decoded are the same models: the
// same digests and answers, the same bytes when encoded again, and they
// fold the events after them exactly as the originals do.
func TestCheckpointCodecRoundTrip(t *testing.T) {
	f := newFixture(t)
	f.workload(3000, 7)
	live, rollouts := NewView(), NewRollouts()
	r := f.runner(live)
	r.Also(rollouts)
	if err := r.RunToEnd(context.Background()); err != nil {
		t.Fatal(err)
	}
	// Rollout events are not in the workload: fold some by hand.
	now := f.clock.Now()
	ro := ledger.RolloutState{ID: ulid.Make().String(), ClientID: "c1", Version: 2, Percent: 50, StartedAt: now, Deadline: now.Add(time.Hour)}
	rollouts.Apply(rollouts.LastSeq()+1, ledger.Event{Type: ledger.TypeRolloutStarted, Data: ledger.RolloutStarted{Rollout: ro}})
	rollouts.Apply(rollouts.LastSeq()+1, ledger.Event{Type: ledger.TypeVersionRefused, FamilyID: ulid.Make().String(), Data: ledger.VersionRefused{RolloutID: ro.ID}})
	rollouts.Apply(rollouts.LastSeq()+1, ledger.Event{Type: ledger.TypeRefreshRotated, Data: ledger.RefreshRotated{RolloutID: ro.ID}})
	live.Apply(rollouts.LastSeq(), ledger.Event{}) // both at one sequence
	live.Prune(now.Add(20 * time.Minute))          // the index rebuilt by a prune must survive too

	body, digests, err := encodeCheckpoint([]checkpointPart{live.freeze(), rollouts.freeze()}, now, "TOKENLEDGER", now)
	if err != nil {
		t.Fatal(err)
	}
	c, err := decodeCheckpoint(body)
	if err != nil {
		t.Fatal(err)
	}
	if c.Seq != live.LastSeq() || c.Digest != digests[0] || c.Digest != live.Digest(now) || !c.At.Equal(now) {
		t.Fatalf("checkpoint header %+v, view at %d digest %s", c.CheckpointInfo, live.LastSeq(), live.Digest(now))
	}
	got := c.View()
	sameAnswers(t, f, live, got, now)
	gotRollouts := c.parts[1].(*Rollouts)
	if gotRollouts.Digest() != rollouts.Digest() || fmt.Sprint(gotRollouts.Progress(ro.ID)) != fmt.Sprint(rollouts.Progress(ro.ID)) {
		t.Fatalf("rollouts: %+v / %+v", gotRollouts.Progress(ro.ID), rollouts.Progress(ro.ID))
	}
	if x, _ := gotRollouts.Current("c1"); !x.Deadline.Equal(ro.Deadline) || x.ID != ro.ID {
		t.Fatalf("rollout %+v, want %+v", x, ro)
	}
	again, _, err := encodeCheckpoint([]checkpointPart{got, gotRollouts}, now, "TOKENLEDGER", now)
	if err != nil || !bytes.Equal(again, body) {
		t.Fatalf("encoded again: %v, equal %v", err, bytes.Equal(again, body))
	}

	// Both keep folding identically.
	f.workload(1000, 8)
	for _, v := range []*View{live, got} {
		if err := f.runner(v).RunToEnd(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	sameAnswers(t, f, live, got, f.clock.Now())
}

// Damaged checkpoints never decode into a view: each is refused with
// errCorrupt (or a format error), without a panic.
func TestCheckpointDecodeRefusesDamage(t *testing.T) {
	f := newFixture(t)
	f.workload(300, 3)
	v := NewView()
	if err := f.runner(v).RunToEnd(context.Background()); err != nil {
		t.Fatal(err)
	}
	now := f.clock.Now()
	body, digests, err := encodeCheckpoint([]checkpointPart{v.freeze()}, now, "TOKENLEDGER", now)
	if err != nil {
		t.Fatal(err)
	}
	otherDigest := strings.Repeat("0", len(digests[0]))
	tests := []struct {
		name    string
		damage  func([]byte) []byte
		wantErr error
	}{
		{"truncated", func(b []byte) []byte { return b[:len(b)-7] }, errCorrupt},
		{"trailing bytes", func(b []byte) []byte { return append(b, 0) }, errCorrupt},
		{"wrong recorded digest", func(b []byte) []byte {
			return bytes.Replace(b, []byte(digests[0]), []byte(otherDigest), 1)
		}, errCorrupt},
		{"not a checkpoint", func(b []byte) []byte { return []byte("hello") }, errCorrupt},
		{"family subject index out of range", func(b []byte) []byte {
			// The first family record follows the strings and causes: find
			// the first family key and break its subject index.
			k := v.fams[0].key
			i := bytes.Index(b, k[:])
			c := bytes.Clone(b)
			rd := &reader{b: c[i+16:]}
			for range 6 { // seq, generation, cutoff, events, cutoffEvent, client
				if rd.b[0]&0x80 == 0 {
					rd.b = rd.b[1:]
				} else {
					rd.uvarint()
				}
			}
			rd.b[0] = 0x7f
			return c
		}, errCorrupt},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := decodeCheckpoint(tt.damage(bytes.Clone(body)))
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("err %v, want %v", err, tt.wantErr)
			}
		})
	}
	t.Run("other format", func(t *testing.T) {
		b := bytes.Clone(body)
		b[len(checkpointMagic)] = CheckpointFormat + 1
		if _, err := decodeCheckpoint(b); err == nil || !strings.Contains(err.Error(), "format") {
			t.Fatalf("err %v", err)
		}
	})
	// Every single flipped byte is refused or decodes to a view whose
	// digest is the recorded one (fields no digest covers, such as
	// counts, are the object store's SHA-256 to guard): never a panic,
	// never a view that differs in what it answers.
	for i := range body {
		b := bytes.Clone(body)
		b[i] ^= 0x55
		c, err := decodeCheckpoint(b)
		if err == nil && c.View().Digest(now) != v.Digest(now) {
			t.Fatalf("byte %d flipped: accepted a view with another digest", i)
		}
	}
}

// checkpointFixture runs runners over the fixture's ledger with a
// checkpoint store.
func (f *fixture) checkpoints() *CheckpointStore {
	f.t.Helper()
	s, err := NewCheckpointStore(context.Background(), f.js, CheckpointConfig{})
	if err != nil {
		f.t.Fatal(err)
	}
	return s
}

func (f *fixture) ckRunner(s *CheckpointStore, every uint64, v *View, ro *Rollouts, log *logBuf) *Runner {
	f.t.Helper()
	cfg := RunnerConfig{Now: f.clock.Now, Checkpoints: s, CheckpointEvery: every}
	if log != nil {
		cfg.Log = logTo(log)
	}
	r, err := NewRunner(f.js, v, cfg)
	if err != nil {
		f.t.Fatal(err)
	}
	r.Also(ro)
	return r
}

// runUntil runs r until the projection reached the stream's end and
// cond holds, then stops it.
func runUntil(t *testing.T, f *fixture, r *Runner, cond func() bool) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	wctx, wcancel := context.WithTimeout(ctx, 30*time.Second)
	defer wcancel()
	if err := r.WaitFor(wctx, f.lastSeq()); err != nil {
		t.Fatal(err)
	}
	for !cond() {
		if wctx.Err() != nil {
			t.Fatal("condition not met in time")
		}
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func rebuiltDigests(t *testing.T, f *fixture) []string {
	t.Helper()
	v := NewView()
	if err := f.runner(v).RunToEnd(context.Background()); err != nil {
		t.Fatal(err)
	}
	return checkpointDigests(v, f.clock.Now())
}

// A runner saves a checkpoint once N events are applied; a restarted
// runner loads it and replays only the tail, into the view a rebuild
// gives.
func TestCheckpointSavedAndRestored(t *testing.T) {
	f := newFixture(t)
	s := f.checkpoints()
	f.workload(1500, 11)
	first := f.lastSeq()

	v, ro := NewView(), NewRollouts()
	r := f.ckRunner(s, 500, v, ro, nil)
	var saved CheckpointInfo
	runUntil(t, f, r, func() bool {
		var err error
		saved, err = s.Find(context.Background(), 0)
		return err == nil
	})
	if saved.Seq < 500 || saved.Seq > first || saved.Format != CheckpointFormat || saved.Digest == "" {
		t.Fatalf("checkpoint %+v after %d events", saved, first)
	}

	f.workload(300, 12) // the tail
	last := f.lastSeq()
	var log logBuf
	v2, ro2 := NewView(), NewRollouts()
	r2 := f.ckRunner(s, 0, v2, ro2, &log)
	runUntil(t, f, r2, func() bool { return true })
	got, ok := r2.Restored()
	if !ok || got.Seq != saved.Seq {
		t.Fatalf("restored %+v %v, want the checkpoint at %d; log:\n%s", got, ok, saved.Seq, log.String())
	}
	if n := r2.Applied(); n != last-saved.Seq {
		t.Fatalf("restarted runner applied %d events, want the tail of %d", n, last-saved.Seq)
	}
	if !strings.Contains(log.String(), "view restored from checkpoint") {
		t.Fatalf("no log line of the restore:\n%s", log.String())
	}
	if x, y := fmt.Sprint(checkpointDigests(v2, f.clock.Now())), fmt.Sprint(rebuiltDigests(t, f)); x != y {
		t.Fatalf("restored view %s, rebuilt %s", x, y)
	}
	if ro2.Digest() != ro.Digest() && ro.LastSeq() == ro2.LastSeq() {
		t.Fatal("rollouts differ")
	}
}

// The newest checkpoint damaged in each way: the runner falls back to the
// previous one or, with none left, to a rebuild, and its view is a
// rebuild's.
func TestCheckpointFallback(t *testing.T) {
	tests := []struct {
		name string
		// damage spoils the newest checkpoint (or more).
		damage   func(t *testing.T, f *fixture, s *CheckpointStore, newest CheckpointInfo)
		fallback bool // to the previous checkpoint (else a rebuild)
	}{
		{"bytes overwritten in the object store", func(t *testing.T, f *fixture, s *CheckpointStore, c CheckpointInfo) {
			info, err := s.obj.GetInfo(context.Background(), c.Name)
			if err != nil {
				t.Fatal(err)
			}
			// One more chunk on the object's chunk subject: the stored
			// bytes no longer match the object's SHA-256.
			if _, err := f.js.Publish(context.Background(), fmt.Sprintf("$O.%s.C.%s", DefaultCheckpointBucket, info.NUID), []byte("garbage")); err != nil {
				t.Fatal(err)
			}
		}, true},
		{"wrong recorded digest", func(t *testing.T, f *fixture, s *CheckpointStore, c CheckpointInfo) {
			rewrite(t, s, c, func(b []byte) []byte {
				return bytes.Replace(b, []byte(c.Digest), []byte(strings.Repeat("0", len(c.Digest))), 1)
			}, nil)
		}, true},
		{"metadata claims another sequence", func(t *testing.T, f *fixture, s *CheckpointStore, c CheckpointInfo) {
			rewrite(t, s, c, nil, map[string]string{"seq": fmt.Sprint(c.Seq - 1)})
		}, true},
		{"another format", func(t *testing.T, f *fixture, s *CheckpointStore, c CheckpointInfo) {
			rewrite(t, s, c, func(b []byte) []byte {
				b[len(checkpointMagic)] = CheckpointFormat + 1
				return b
			}, map[string]string{"format": fmt.Sprint(CheckpointFormat + 1)})
		}, true},
		{"past the stream's end", func(t *testing.T, f *fixture, s *CheckpointStore, c CheckpointInfo) {
			rewrite(t, s, c, nil, map[string]string{"seq": "999999999"})
		}, true},
		{"every checkpoint damaged", func(t *testing.T, f *fixture, s *CheckpointStore, c CheckpointInfo) {
			list, err := s.List(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			for _, c := range list {
				rewrite(t, s, c, func(b []byte) []byte { return b[:len(b)/2] }, nil)
			}
		}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t)
			s := f.checkpoints()
			ctx := context.Background()
			f.workload(400, 21)
			v, ro := NewView(), NewRollouts()
			r := f.ckRunner(s, 0, v, ro, nil)
			if err := r.RunToEnd(ctx); err != nil {
				t.Fatal(err)
			}
			previous, err := r.Checkpoint(ctx)
			if err != nil {
				t.Fatal(err)
			}
			f.workload(400, 22)
			if err := r.RunToEnd(ctx); err != nil {
				t.Fatal(err)
			}
			newest, err := r.Checkpoint(ctx)
			if err != nil {
				t.Fatal(err)
			}
			f.workload(100, 23)
			tt.damage(t, f, s, newest)

			var log logBuf
			v2, ro2 := NewView(), NewRollouts()
			r2 := f.ckRunner(s, 0, v2, ro2, &log)
			runUntil(t, f, r2, func() bool { return true })
			got, ok := r2.Restored()
			switch {
			case tt.fallback && (!ok || got.Seq != previous.Seq):
				t.Fatalf("restored %+v %v, want the previous checkpoint at %d; log:\n%s", got, ok, previous.Seq, log.String())
			case !tt.fallback && ok:
				t.Fatalf("restored %+v from damaged checkpoints", got)
			case !strings.Contains(log.String(), "checkpoint not used"):
				t.Fatalf("the damaged checkpoint was not reported:\n%s", log.String())
			}
			if x, y := fmt.Sprint(checkpointDigests(v2, f.clock.Now())), fmt.Sprint(rebuiltDigests(t, f)); x != y {
				t.Fatalf("view after the fallback %s, rebuilt %s", x, y)
			}
		})
	}
}

// rewrite replaces a stored checkpoint's bytes and metadata (a valid
// object, as far as the object store can tell).
func rewrite(t *testing.T, s *CheckpointStore, c CheckpointInfo, body func([]byte) []byte, meta map[string]string) {
	t.Helper()
	ctx := context.Background()
	info, err := s.obj.GetInfo(ctx, c.Name)
	if err != nil {
		t.Fatal(err)
	}
	b, err := s.obj.GetBytes(ctx, c.Name)
	if err != nil {
		t.Fatal(err)
	}
	if body != nil {
		b = body(b)
	}
	m := info.ObjectMeta
	for k, v := range meta {
		m.Metadata[k] = v
	}
	if _, err := s.obj.Put(ctx, m, bytes.NewReader(b)); err != nil {
		t.Fatal(err)
	}
}

// Of two runners due at once, one writes; old checkpoints beyond Keep
// are deleted.
func TestCheckpointClaimAndRetention(t *testing.T) {
	f := newFixture(t)
	s := f.checkpoints()
	ctx := context.Background()
	f.workload(200, 31)
	seq := f.lastSeq()
	c, rev, err := s.readClaim(ctx)
	if err != nil || rev != 0 {
		t.Fatalf("claim before any: %+v %d %v", c, rev, err)
	}
	if err := s.takeClaim(ctx, claim{Seq: seq, At: f.clock.Now()}, rev); err != nil {
		t.Fatal(err)
	}
	if err := s.takeClaim(ctx, claim{Seq: seq, At: f.clock.Now()}, rev); err == nil {
		t.Fatal("a second writer took the claim read at the same revision")
	}

	v, ro := NewView(), NewRollouts()
	r := f.ckRunner(s, 0, v, ro, nil)
	var saved []uint64
	for i := range 4 {
		f.workload(20, uint64(40+i))
		if err := r.RunToEnd(ctx); err != nil {
			t.Fatal(err)
		}
		info, err := r.Checkpoint(ctx)
		if err != nil {
			t.Fatal(err)
		}
		saved = append(saved, info.Seq)
	}
	list, err := s.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != DefaultCheckpointKeep || list[0].Seq != saved[3] || list[1].Seq != saved[2] {
		t.Fatalf("kept %+v, saved %v", list, saved)
	}
	// Retention purged the old chunks: the bucket holds two objects' worth.
	st, err := s.obj.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Size() > 2*(list[0].Size+list[1].Size)+4096 {
		t.Fatalf("bucket holds %d bytes for checkpoints of %d and %d", st.Size(), list[0].Size, list[1].Size)
	}
}

// logBuf collects a runner's log lines (written from its goroutines).
type logBuf struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *logBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func logTo(w io.Writer) *slog.Logger { return slog.New(slog.NewTextHandler(w, nil)) }
