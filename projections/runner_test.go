package projections

import (
	"context"
	"errors"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/tokenledger/tokenledger/internal/natstest"
	"github.com/tokenledger/tokenledger/ledger"
	"github.com/tokenledger/tokenledger/ledger/jsstore"
)

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

var (
	testClient = ledger.Client{ID: "web"}
	testPolicy = ledger.Policy{
		Rotation: ledger.RotateAlways, Grace: 10 * time.Second, AccessTTL: 15 * time.Minute,
		RefreshTTL: 14 * 24 * time.Hour, FamilyTTL: 90 * 24 * time.Hour,
	}
)

type fixture struct {
	t     testing.TB
	js    jetstream.JetStream
	store *jsstore.Store
	l     *jsstore.Ledger
	clock *clock
}

func newFixture(t testing.TB) *fixture {
	t.Helper()
	srv := natstest.Start(t, "")
	_, js := natstest.Connect(t, srv)
	store, err := jsstore.NewStore(context.Background(), js, jsstore.StoreConfig{})
	if err != nil {
		t.Fatal(err)
	}
	c := &clock{t: time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)}
	return &fixture{t: t, js: js, store: store, l: jsstore.New(store, jsstore.WithClock(c.Now)), clock: c}
}

func (f *fixture) runner(p Projection) *Runner {
	f.t.Helper()
	r, err := NewRunner(f.js, p, RunnerConfig{Now: f.clock.Now})
	if err != nil {
		f.t.Fatal(err)
	}
	return r
}

func (f *fixture) issue(subject string) jsstore.Grant {
	f.t.Helper()
	g, err := f.l.Issue(context.Background(), jsstore.IssueRequest{Client: testClient, Policy: testPolicy, Subject: subject, Scope: "read"})
	if err != nil {
		f.t.Fatal(err)
	}
	return g
}

func (f *fixture) lastSeq() uint64 {
	f.t.Helper()
	seq, err := f.store.LastSeq(context.Background())
	if err != nil {
		f.t.Fatal(err)
	}
	return seq
}

// workload runs n mixed operations against the ledger: issues, rotations,
// grace retries, reuses, revocations of families and access tokens, and
// access cutoffs, with time moving on.
func (f *fixture) workload(n int, seed uint64) {
	f.t.Helper()
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(seed, seed))
	type fam struct {
		id      string
		current string
		older   []string
		access  ledger.AccessGrant
	}
	var fams []*fam
	subjects := []string{"alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi"}
	for i := 0; i < n; i++ {
		if i%50 == 0 {
			f.clock.Advance(time.Duration(rng.IntN(3000)) * time.Millisecond)
		}
		op := rng.IntN(100)
		if len(fams) == 0 || op < 20 {
			g := f.issue(subjects[rng.IntN(len(subjects))])
			fams = append(fams, &fam{id: g.State.FamilyID, current: g.RefreshToken, access: g.Access})
			continue
		}
		x := fams[rng.IntN(len(fams))]
		var err error
		switch {
		case op < 60: // rotate
			var g jsstore.Grant
			g, err = f.l.Refresh(ctx, jsstore.RefreshRequest{Client: testClient, Policy: testPolicy, RefreshToken: x.current})
			if err == nil {
				if g.RefreshToken != x.current {
					x.older = append(x.older, x.current)
				}
				x.current, x.access = g.RefreshToken, g.Access
			}
		case op < 70 && len(x.older) > 0: // retry or reuse an older token
			_, err = f.l.Refresh(ctx, jsstore.RefreshRequest{Client: testClient, Policy: testPolicy, RefreshToken: x.older[len(x.older)-1]})
		case op < 78:
			_, err = f.l.Revoke(ctx, x.id, ledger.Cause{Kind: ledger.CauseRevoke})
		case op < 90:
			_, err = f.l.RevokeAccess(ctx, jsstore.AccessToken{FamilyID: x.id, JTI: x.access.JTI, ExpiresAt: x.access.ExpiresAt}, ledger.Cause{Kind: ledger.CauseRevoke}, nil)
		default:
			_, err = f.l.CutAccess(ctx, x.id, ledger.Cause{Kind: ledger.CauseSecurity, ID: "sec"})
		}
		switch {
		case err == nil, errors.Is(err, ledger.ErrFamilyRevoked), errors.Is(err, ledger.ErrRefreshReused),
			errors.Is(err, ledger.ErrInvalidToken):
		default:
			f.t.Fatalf("op %d: %v", i, err)
		}
	}
}

func TestLiveViewEqualsRebuiltView(t *testing.T) {
	f := newFixture(t)
	ctx, cancel := context.WithCancel(context.Background())
	live := NewView()
	runner := f.runner(live)
	done := make(chan error, 1)
	go func() { done <- runner.Run(ctx) }()

	f.workload(10_000, 1)
	last := f.lastSeq()
	wctx, wcancel := context.WithTimeout(ctx, 30*time.Second)
	defer wcancel()
	if err := live.WaitFor(wctx, last); err != nil {
		t.Fatal(err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}

	rebuilt := NewView()
	if err := f.runner(rebuilt).RunToEnd(context.Background()); err != nil {
		t.Fatal(err)
	}
	// The slow, complete decoder must give the same view as the fast one.
	slow := NewView()
	sr, err := NewRunner(f.js, slow, RunnerConfig{Decode: ledger.DecodeEvent})
	if err != nil {
		t.Fatal(err)
	}
	if err := sr.RunToEnd(context.Background()); err != nil {
		t.Fatal(err)
	}
	if live.LastSeq() != last || rebuilt.LastSeq() != last || slow.LastSeq() != last {
		t.Fatalf("last seq: live %d rebuilt %d slow %d, stream %d", live.LastSeq(), rebuilt.LastSeq(), slow.LastSeq(), last)
	}
	now := f.clock.Now()
	for _, at := range []time.Time{now, now.Add(10 * time.Minute), now.Add(time.Hour), now.Add(100 * 24 * time.Hour)} {
		if l, r, s := live.Digest(at), rebuilt.Digest(at), slow.Digest(at); l != r || l != s {
			t.Fatalf("digest at %s: live %s rebuilt %s slow %s", at, l, r, s)
		}
	}
	// Pruning frees memory without changing any answer.
	before := rebuilt.Digest(now.Add(time.Hour))
	rebuilt.Prune(now.Add(time.Hour))
	if after := rebuilt.Digest(now.Add(time.Hour)); after != before {
		t.Fatal("prune changed the digest")
	}

	// The view agrees with the ledger's own state of every family.
	var active, revoked int
	for _, id := range append(live.FamiliesByClient(testClient.ID, now), revokedIDs(t, f)...) {
		st, err := f.store.Load(context.Background(), id)
		if err != nil {
			t.Fatal(err)
		}
		fv, ok := live.Family(id)
		if !ok {
			t.Fatalf("family %s missing from the view", id)
		}
		if fv.Generation != st.Generation || fv.Version != st.Version || fv.Subject != st.Subject ||
			fv.Revoked != (st.Revoked != nil) || fv.ActiveAt(now) != (st.StatusAt(now) == ledger.StatusActive) {
			t.Fatalf("family %s: view %+v, ledger %+v", id, fv, st)
		}
		if fv.Revoked {
			revoked++
		} else {
			active++
		}
	}
	if active == 0 || revoked == 0 {
		t.Fatalf("workload too tame: %d active, %d revoked families", active, revoked)
	}
}

// revokedIDs lists the revoked families by reading the stream, and checks
// that the workload wrote every kind of event.
func revokedIDs(t *testing.T, f *fixture) []string {
	t.Helper()
	var ids []string
	seen := map[string]bool{}
	types := map[ledger.EventType]int{}
	defer func() {
		for _, typ := range []ledger.EventType{ledger.TypeFamilyIssued, ledger.TypeRefreshRotated, ledger.TypeGraceRetried,
			ledger.TypeReuseDetected, ledger.TypeFamilyRevoked, ledger.TypeAccessRevoked, ledger.TypeAccessCutoff} {
			if types[typ] == 0 {
				t.Errorf("workload wrote no %s (%v)", typ, types)
			}
		}
	}()
	for seq := uint64(1); seq <= f.lastSeq(); seq++ {
		msg, err := f.store.Stream().GetMsg(context.Background(), seq)
		if err != nil {
			t.Fatal(err)
		}
		e, err := ledger.DecodeEvent(msg.Data)
		if err != nil {
			t.Fatal(err)
		}
		types[e.Type]++
		switch e.Data.(type) {
		case ledger.FamilyRevoked, ledger.ReuseDetected:
			if !seen[e.FamilyID] {
				seen[e.FamilyID] = true
				ids = append(ids, e.FamilyID)
			}
		}
	}
	return ids
}

// counting wraps a view and counts what it is handed.
type counting struct {
	*View
	applied atomic.Int64
	hold    chan struct{} // when set, Apply waits for a token
}

func (c *counting) Apply(seq uint64, e ledger.Event) {
	if c.hold != nil {
		<-c.hold
	}
	c.applied.Add(1)
	c.View.Apply(seq, e)
}

func TestRestartedRunnerResumesFromCheckpoint(t *testing.T) {
	f := newFixture(t)
	for range 50 {
		f.issue("alice")
	}
	v := &counting{View: NewView()}
	if err := f.runner(v).RunToEnd(context.Background()); err != nil {
		t.Fatal(err)
	}
	if v.applied.Load() != 50 || v.LastSeq() != 50 {
		t.Fatalf("first run applied %d up to %d", v.applied.Load(), v.LastSeq())
	}
	digest := v.Digest(f.clock.Now())

	// A restarted runner over the same view starts after its checkpoint.
	for range 7 {
		f.issue("bob")
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := f.runner(v)
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	wctx, wcancel := context.WithTimeout(ctx, 10*time.Second)
	defer wcancel()
	if err := r.WaitFor(wctx, 57); err != nil {
		t.Fatal(err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if n := v.applied.Load(); n != 57 {
		t.Fatalf("restarted runner handed %d events in total, want 57 (re-applied %d)", n, n-57)
	}
	// Redelivery of an applied sequence changes nothing.
	v.View.Apply(3, ledger.Event{FamilyID: "01JDQ6Y8V1R2Y6G5R4D7QZ9K3M", Data: ledger.FamilyRevoked{}})
	if v.LastSeq() != 57 || len(v.FamiliesBySubject("alice", f.clock.Now())) != 50 {
		t.Fatal("a redelivered sequence was applied")
	}
	if v.Digest(f.clock.Now()) == digest {
		t.Fatal("digest did not change with seven new families")
	}
	if err := f.runner(v).RunToEnd(context.Background()); err != nil || v.applied.Load() != 57 {
		t.Fatalf("run to end at the end: %v, applied %d", err, v.applied.Load())
	}
}

func TestLagWhileHeldBack(t *testing.T) {
	f := newFixture(t)
	for range 20 {
		f.issue("alice")
	}
	v := &counting{View: NewView(), hold: make(chan struct{})}
	r := f.runner(v)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	lag, err := r.Lag(ctx)
	if err != nil || lag.Applied != 0 || lag.Last != 20 || lag.Behind() != 20 {
		t.Fatalf("before running: %+v %v", lag, err)
	}
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	for range 5 {
		v.hold <- struct{}{}
	}
	wctx, wcancel := context.WithTimeout(ctx, 10*time.Second)
	defer wcancel()
	if err := r.WaitFor(wctx, 5); err != nil {
		t.Fatal(err)
	}
	lag, err = r.Lag(ctx)
	if err != nil || lag.Applied != 5 || lag.Last != 20 || lag.Behind() != 15 {
		t.Fatalf("held at 5: %+v %v", lag, err)
	}
	f.issue("bob") // the stream moves on while the runner is held
	if lag, _ = r.Lag(ctx); lag.Last != 21 || lag.Behind() != 16 {
		t.Fatalf("after an append: %+v", lag)
	}
	// WaitFor gives up with the context while held back.
	short, scancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer scancel()
	if err := r.WaitFor(short, 21); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("WaitFor while held back: %v", err)
	}
	close(v.hold)
	if err := r.WaitFor(wctx, 21); err != nil {
		t.Fatal(err)
	}
	if lag, _ = r.Lag(ctx); lag.Behind() != 0 || lag.Applied != 21 {
		t.Fatalf("caught up: %+v", lag)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
