package projections

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
)

// Waiter waits until a projection has applied stream sequence seq. View and
// Runner are Waiters.
type Waiter interface {
	WaitFor(ctx context.Context, seq uint64) error
}

// DefaultProbeTimeout bounds one probe of the stream's last sequence, so a
// probe that never answers cannot hold back the callers of later rounds.
const DefaultProbeTimeout = 5 * time.Second

// Syncer is a read-your-writes barrier that many callers share: Sync
// returns once the projection has applied every event the stream had
// acknowledged when Sync was called, whichever connection or instance
// appended it.
//
// Each round probes the stream's last sequence once (one round trip) and
// then each caller waits for the projection to reach it. A probe serves
// exactly the callers that arrived before it started; a caller arriving
// while a probe is in flight joins the next round, which starts when that
// probe ends. So at most one probe is in flight however many callers there
// are, and none is answered by a probe that could have missed an append
// acknowledged before its call.
type Syncer struct {
	last    func(context.Context) (uint64, error)
	w       Waiter
	timeout time.Duration

	mu      sync.Mutex
	probing bool       // a probe is in flight
	next    *syncRound // the round the next probe serves; nil while nobody waits for one
}

// syncRound is one probe and the callers it serves. seq and err are set
// before done is closed.
type syncRound struct {
	done   chan struct{}
	seq    uint64
	err    error
	joined int // callers served, counted under Syncer.mu (tests read it)
	// after holds the callbacks of SyncThen callers, run once the
	// projection reached seq.
	after []func(error)
}

// NewSyncer returns a barrier for the projection w waits on. last reads the
// stream's last sequence; it must observe every append acknowledged before
// it was called. jsstore.Store.LastSeq does: with one replica by a direct
// get of the stream's last message, with more by asking the stream leader
// (a direct get may be answered by a replica that lags).
func NewSyncer(last func(context.Context) (uint64, error), w Waiter) (*Syncer, error) {
	if last == nil || w == nil {
		return nil, errors.New("projections: syncer needs a last-sequence probe and a waiter")
	}
	return &Syncer{last: last, w: w, timeout: DefaultProbeTimeout}, nil
}

// join adds a caller to the round the next probe serves and reports
// whether the caller must start that probe (none is in flight).
func (s *Syncer) join(then func(error)) (r *syncRound, lead, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r = s.next
	if r == nil {
		r = &syncRound{done: make(chan struct{})}
		s.next = r
	}
	if then != nil && len(r.after) >= MaxThen {
		return nil, false, false
	}
	r.joined++
	if then != nil {
		r.after = append(r.after, then)
	}
	lead = !s.probing
	if lead {
		s.probing, s.next = true, nil
	}
	return r, lead, true
}

// Sync blocks until the projection has applied every event acknowledged by
// the stream before the call, or ctx ends.
func (s *Syncer) Sync(ctx context.Context) error {
	r, lead, _ := s.join(nil)
	if lead {
		// The first caller of an idle syncer probes itself (no goroutine
		// switch for a lone caller) and hands later rounds to a goroutine.
		s.round(ctx, r)
	} else {
		select {
		case <-r.done:
		case <-ctx.Done():
			return fmt.Errorf("sync: waiting for the stream's last sequence: %w", ctx.Err())
		}
	}
	if r.err != nil {
		return r.err
	}
	return s.w.WaitFor(ctx, r.seq)
}

// MaxThen bounds the SyncThen callers one round holds; more are refused
// (they are arriving faster than rounds complete, e.g. while the
// projection catches up) so that callers fall back to waiting their own
// way, under their own limits.
const MaxThen = 4096

// SyncThen is Sync for a caller that must not block. It returns at once,
// false if the next round is full (see MaxThen), and then runs later with
// nil once the projection has applied every event the stream had
// acknowledged when SyncThen was called, or with the error that prevented
// it: the probe and the wait for the projection together take at most the
// probe timeout. The callbacks of one round run one after another on the
// goroutine that probed: they must be quick and must not block.
func (s *Syncer) SyncThen(then func(error)) bool {
	r, lead, ok := s.join(then)
	if lead {
		go s.round(context.Background(), r)
	}
	return ok
}

// round probes for r, hands the round waiting behind it (if any) to a new
// goroutine, then runs r's callbacks.
func (s *Syncer) round(ctx context.Context, r *syncRound) {
	deadline := time.Now().Add(s.timeout)
	s.probe(ctx, r)
	if next := s.advance(); next != nil {
		go s.round(ctx, next)
	}
	if len(r.after) == 0 {
		return
	}
	err := r.err
	if err == nil {
		wctx, cancel := context.WithDeadline(context.WithoutCancel(ctx), deadline)
		err = s.w.WaitFor(wctx, r.seq)
		cancel()
	}
	for _, then := range r.after {
		then(err)
	}
}

// probe runs one round's probe. Its context outlives the caller that
// started it: the round serves other callers too.
func (s *Syncer) probe(ctx context.Context, r *syncRound) {
	pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.timeout)
	defer cancel()
	r.seq, r.err = s.last(pctx)
	if r.err != nil {
		r.err = fmt.Errorf("sync: the stream's last sequence: %w", r.err)
	}
	close(r.done)
}

// advance takes the round that waits for the next probe, or marks the
// syncer idle when there is none.
func (s *Syncer) advance() *syncRound {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.next
	if r == nil {
		s.probing = false
		return nil
	}
	s.next = nil
	return r
}
