package projections

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tokenledger/tokenledger/internal/natstest"
	"github.com/tokenledger/tokenledger/ledger"
	"github.com/tokenledger/tokenledger/ledger/jsstore"
)

// scriptedProbe answers probe n with sequence n once the test releases it.
type scriptedProbe struct {
	calls   atomic.Uint64
	started chan uint64
	release chan struct{}
}

func newScriptedProbe() *scriptedProbe {
	return &scriptedProbe{started: make(chan uint64, 16), release: make(chan struct{})}
}

func (p *scriptedProbe) last(ctx context.Context) (uint64, error) {
	n := p.calls.Add(1)
	p.started <- n
	select {
	case <-p.release:
		return n, nil
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

// seqWaiter records the sequences callers waited for.
type seqWaiter struct {
	mu   sync.Mutex
	seqs []uint64
}

func (w *seqWaiter) WaitFor(_ context.Context, seq uint64) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.seqs = append(w.seqs, seq)
	return nil
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// Callers that arrive while a probe is in flight share the next probe and
// are never answered by the one in flight, which may have been answered
// before their writes.
func TestSyncerCoalescesAndServesOnlyEarlierCallers(t *testing.T) {
	p := newScriptedProbe()
	w := &seqWaiter{}
	s, err := NewSyncer(p.last, w)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()

	first := make(chan error, 1)
	go func() { first <- s.Sync(ctx) }()
	if n := <-p.started; n != 1 {
		t.Fatalf("first probe is #%d", n)
	}
	const late = 63
	errs := make(chan error, late)
	for range late {
		go func() { errs <- s.Sync(ctx) }()
	}
	waitUntil(t, "every late caller joined the next round", func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.next != nil && s.next.joined == late
	})

	p.release <- struct{}{} // probe 1 answers seq 1: only the first caller's
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	if n := <-p.started; n != 2 {
		t.Fatalf("second probe is #%d", n)
	}
	p.release <- struct{}{}
	for range late {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if got := p.calls.Load(); got != 2 {
		t.Fatalf("%d probes for 64 callers in two arrival waves, want 2", got)
	}
	w.mu.Lock()
	counts := map[uint64]int{}
	for _, seq := range w.seqs {
		counts[seq]++
	}
	waits := len(w.seqs)
	w.mu.Unlock()
	if counts[1] != 1 || counts[2] != late || waits != late+1 {
		t.Fatalf("waited for %v, want seq 1 once and seq 2 %d times", counts, late)
	}
	// Idle again: the next caller probes at once.
	go func() { first <- s.Sync(ctx) }()
	<-p.started
	p.release <- struct{}{}
	if err := <-first; err != nil {
		t.Fatal(err)
	}
}

// A failed probe fails only its round's callers; the next round probes
// again.
func TestSyncerProbeErrorIsNotSticky(t *testing.T) {
	fail := errors.New("stream unavailable")
	var calls atomic.Int64
	s, err := NewSyncer(func(context.Context) (uint64, error) {
		if calls.Add(1) == 1 {
			return 0, fail
		}
		return 7, nil
	}, &seqWaiter{})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Sync(context.Background()); !errors.Is(err, fail) {
		t.Fatalf("first sync: %v, want %v", err, fail)
	}
	if err := s.Sync(context.Background()); err != nil {
		t.Fatalf("second sync: %v", err)
	}
}

// SyncThen callers never block, share rounds with Sync callers, and are
// called back only after a probe that started after they joined, once the
// projection reached what that probe saw; a failed probe is passed on.
func TestSyncerThen(t *testing.T) {
	p := newScriptedProbe()
	w := &seqWaiter{}
	s, err := NewSyncer(p.last, w)
	if err != nil {
		t.Fatal(err)
	}
	type result struct {
		id  int
		err error
	}
	got := make(chan result, 64)
	then := func(id int) func(error) { return func(err error) { got <- result{id, err} } }

	s.SyncThen(then(0)) // returns at once; an idle syncer starts a probe
	if n := <-p.started; n != 1 {
		t.Fatalf("first probe is #%d", n)
	}
	const late = 40
	for i := 1; i <= late; i++ {
		s.SyncThen(then(i))
	}
	syncDone := make(chan error, 1)
	go func() { syncDone <- s.Sync(context.Background()) }()
	waitUntil(t, "the late callers joined the next round", func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.next != nil && s.next.joined == late+1
	})
	select {
	case r := <-got:
		t.Fatalf("callback %d ran before its probe answered", r.id)
	default:
	}
	p.release <- struct{}{} // probe 1: only caller 0's
	if r := <-got; r.id != 0 || r.err != nil {
		t.Fatalf("first callback: %+v", r)
	}
	if n := <-p.started; n != 2 {
		t.Fatalf("second probe is #%d", n)
	}
	select {
	case r := <-got:
		t.Fatalf("late callback %d ran on the first probe", r.id)
	default:
	}
	p.release <- struct{}{}
	seen := map[int]bool{}
	for range late {
		r := <-got
		if r.err != nil || r.id < 1 || r.id > late || seen[r.id] {
			t.Fatalf("late callback: %+v", r)
		}
		seen[r.id] = true
	}
	if err := <-syncDone; err != nil {
		t.Fatal(err)
	}
	w.mu.Lock()
	counts := map[uint64]int{}
	for _, seq := range w.seqs {
		counts[seq]++
	}
	w.mu.Unlock()
	// One wait per round with callbacks, one per Sync caller.
	if counts[1] != 1 || counts[2] != 2 || p.calls.Load() != 2 {
		t.Fatalf("waited for %v over %d probes", counts, p.calls.Load())
	}

	fail := errors.New("stream unavailable")
	f, err := NewSyncer(func(context.Context) (uint64, error) { return 0, fail }, w)
	if err != nil {
		t.Fatal(err)
	}
	f.SyncThen(then(99))
	if r := <-got; r.id != 99 || !errors.Is(r.err, fail) {
		t.Fatalf("callback after a failed probe: %+v", r)
	}
}

// A caller whose context ends stops waiting; the probe it started still
// serves the others.
func TestSyncerCallerGivesUp(t *testing.T) {
	p := newScriptedProbe()
	s, err := NewSyncer(p.last, &seqWaiter{})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Sync(context.Background()) }()
	<-p.started
	ctx, cancel := context.WithCancel(context.Background())
	gaveUp := make(chan error, 1)
	go func() { gaveUp <- s.Sync(ctx) }()
	waitUntil(t, "the second caller joined", func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.next != nil && s.next.joined == 1
	})
	cancel()
	if err := <-gaveUp; !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled caller: %v", err)
	}
	p.release <- struct{}{}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	<-p.started // the abandoned round still runs; nobody is hurt by it
	p.release <- struct{}{}
}

// heldView is a View whose applying the test can hold back, so the view
// lags the stream as much as the test wants.
type heldView struct {
	*View
	hold sync.RWMutex
}

func (h *heldView) Apply(seq uint64, e ledger.Event) {
	h.hold.RLock()
	defer h.hold.RUnlock()
	h.View.Apply(seq, e)
}

// Revocations appended by another connection (another instance) just
// before the call are seen by every concurrent caller once Sync returns,
// though the view lags behind the stream when they call.
func TestSyncerSeesRevocationsOfAnotherConnection(t *testing.T) {
	srv := natstest.Start(t, "")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	c := &clock{t: time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)}
	open := func() (*jsstore.Store, *jsstore.Ledger) {
		_, js := natstest.Connect(t, srv)
		store, err := jsstore.NewStore(ctx, js, jsstore.StoreConfig{})
		if err != nil {
			t.Fatal(err)
		}
		return store, jsstore.New(store, jsstore.WithClock(c.Now))
	}
	ours, _ := open()   // this instance: its view and its probe
	_, theirs := open() // another instance, appending
	v := &heldView{View: NewView()}
	_, js := natstest.Connect(t, srv)
	r, err := NewRunner(js, v, RunnerConfig{Now: c.Now})
	if err != nil {
		t.Fatal(err)
	}
	ran := make(chan error, 1)
	go func() { ran <- r.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-ran; err != nil {
			t.Errorf("runner: %v", err)
		}
	}()
	s, err := NewSyncer(ours.LastSeq, v)
	if err != nil {
		t.Fatal(err)
	}

	const rounds, callers = 10, 32
	for round := range rounds {
		g, err := theirs.Issue(ctx, jsstore.IssueRequest{Client: testClient, Policy: testPolicy, Subject: fmt.Sprint("user-", round)})
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Sync(ctx); err != nil {
			t.Fatal(err)
		}
		iat := g.IssuedAt
		if !v.AccessActive(g.Access.JTI, g.State.FamilyID, iat, g.State.Events, c.Now()) {
			t.Fatalf("round %d: fresh family's access token inactive after sync", round)
		}

		v.hold.Lock() // the view stops here: it lags from now on
		cause := ledger.Cause{Kind: ledger.CauseRevoke, ID: fmt.Sprint("r-", round)}
		if round%2 == 0 {
			_, err = theirs.Revoke(ctx, g.State.FamilyID, cause)
		} else {
			_, err = theirs.RevokeAccess(ctx, jsstore.AccessToken{FamilyID: g.State.FamilyID, JTI: g.Access.JTI, ExpiresAt: g.Access.ExpiresAt}, cause, nil)
		}
		if err != nil {
			t.Fatal(err)
		}
		if !v.AccessActive(g.Access.JTI, g.State.FamilyID, iat, g.State.Events, c.Now()) {
			t.Fatalf("round %d: the held view already saw the revocation; the test proves nothing", round)
		}
		var wg sync.WaitGroup
		stale := make(chan string, callers)
		for range callers {
			wg.Go(func() {
				if err := s.Sync(ctx); err != nil {
					stale <- err.Error()
					return
				}
				if v.AccessActive(g.Access.JTI, g.State.FamilyID, iat, g.State.Events, c.Now()) {
					stale <- "revoked access token active after sync"
				}
			})
		}
		v.hold.Unlock()
		wg.Wait()
		close(stale)
		for msg := range stale {
			t.Fatalf("round %d: %s", round, msg)
		}
	}
}

// A round holds at most MaxThen callbacks; SyncThen refuses more until a
// round completes, and every callback it took is called.
func TestSyncerThenIsBounded(t *testing.T) {
	p := newScriptedProbe()
	s, err := NewSyncer(p.last, &seqWaiter{})
	if err != nil {
		t.Fatal(err)
	}
	var called atomic.Int64
	then := func(error) { called.Add(1) }
	if !s.SyncThen(then) { // starts probe 1
		t.Fatal("first SyncThen refused")
	}
	<-p.started
	for i := range MaxThen {
		if !s.SyncThen(then) {
			t.Fatalf("SyncThen %d of a round refused", i+1)
		}
	}
	if s.SyncThen(then) {
		t.Fatal("a full round took another callback")
	}
	p.release <- struct{}{} // probe 1 answers; probe 2 starts for the full round
	<-p.started
	if !s.SyncThen(then) {
		t.Fatal("refused while the next round is empty")
	}
	p.release <- struct{}{}
	<-p.started
	p.release <- struct{}{}
	waitUntil(t, "every callback taken was called", func() bool { return called.Load() == MaxThen+2 })
}
