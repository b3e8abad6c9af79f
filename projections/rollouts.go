package projections

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tokenledger/tokenledger/ledger"
)

// Rollouts is the rollout read model: each client's current rollout and,
// per rollout, the families it moved, issued at its version and refused.
// A Runner feeds it next to the view (Runner.Also). It serves status and
// progress; a decision never reads it but the stored rollout
// (jsstore.Store.LoadRollout), since this model may lag.
type Rollouts struct {
	mu       sync.RWMutex
	current  map[string]ledger.RolloutState // client id -> current rollout
	progress map[string]*rolloutCounts      // rollout id -> counts

	last   atomic.Uint64
	wmu    sync.Mutex
	notify chan struct{}
}

type rolloutCounts struct {
	moved, issued, refusals int
	refused                 map[string]struct{} // families refused at least once
}

// RolloutProgress is what a rollout did so far, from the ledger's events.
type RolloutProgress struct {
	// Moved counts rotations onto the rollout's version that name it.
	Moved int `json:"moved"`
	// Issued counts families issued at its version because it covered them.
	Issued int `json:"issued"`
	// Refused counts the families refused past its deadline (at least
	// once), Refusals the refusals.
	Refused  int `json:"refused"`
	Refusals int `json:"refusals"`
}

// NewRollouts returns an empty rollout read model.
func NewRollouts() *Rollouts {
	return &Rollouts{current: map[string]ledger.RolloutState{}, progress: map[string]*rolloutCounts{}}
}

// LastSeq is the last stream sequence applied.
func (r *Rollouts) LastSeq() uint64 { return r.last.Load() }

// Apply folds the event stored at sequence seq; a sequence at or below the
// last one applied is ignored.
func (r *Rollouts) Apply(seq uint64, e ledger.Event) {
	r.mu.Lock()
	if seq <= r.last.Load() {
		r.mu.Unlock()
		return
	}
	switch d := e.Data.(type) {
	case ledger.RolloutStarted, ledger.RolloutRaised, ledger.RolloutDeadlineSet:
		ro, _ := ledger.RolloutOf(e)
		ro.Seq = seq
		r.current[ro.ClientID] = ro
	case ledger.RefreshRotated:
		if d.RolloutID != "" {
			r.counts(d.RolloutID).moved++
		}
	case ledger.FamilyIssued:
		if d.RolloutID != "" {
			r.counts(d.RolloutID).issued++
		}
	case ledger.VersionRefused:
		c := r.counts(d.RolloutID)
		c.refusals++
		c.refused[e.FamilyID] = struct{}{}
	}
	r.last.Store(seq)
	r.mu.Unlock()

	r.wmu.Lock()
	if r.notify != nil {
		close(r.notify)
		r.notify = nil
	}
	r.wmu.Unlock()
}

func (r *Rollouts) counts(id string) *rolloutCounts {
	c := r.progress[id]
	if c == nil {
		c = &rolloutCounts{refused: map[string]struct{}{}}
		r.progress[id] = c
	}
	return c
}

// Has reports whether the client has a rollout, as applied so far.
func (r *Rollouts) Has(clientID string) bool {
	r.mu.RLock()
	defer r.mu.RUnlock()
	_, ok := r.current[clientID]
	return ok
}

// Current returns the client's current rollout as applied so far.
func (r *Rollouts) Current(clientID string) (ledger.RolloutState, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	ro, ok := r.current[clientID]
	return ro, ok
}

// Progress returns what the rollout did so far.
func (r *Rollouts) Progress(rolloutID string) RolloutProgress {
	r.mu.RLock()
	defer r.mu.RUnlock()
	c := r.progress[rolloutID]
	if c == nil {
		return RolloutProgress{}
	}
	return RolloutProgress{Moved: c.moved, Issued: c.issued, Refused: len(c.refused), Refusals: c.refusals}
}

// WaitFor blocks until the model has applied sequence seq or ctx ends.
func (r *Rollouts) WaitFor(ctx context.Context, seq uint64) error {
	for {
		r.wmu.Lock()
		if r.notify == nil {
			r.notify = make(chan struct{})
		}
		ch := r.notify
		r.wmu.Unlock()
		if r.last.Load() >= seq {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("rollouts at seq %d waiting for %d: %w", r.last.Load(), seq, ctx.Err())
		}
	}
}

// ClientVersions counts the client's families active at now whose token
// version is at or above version, and those below it: a rollout's
// progress over the families it has to move.
func (v *View) ClientVersions(clientID string, version int, now time.Time) (atOrAbove, below int) {
	v.mu.RLock()
	defer v.mu.RUnlock()
	i, ok := v.strIdx[clientID]
	if !ok {
		return 0, 0
	}
	n := now.Unix()
	for p := v.clientHead[i]; p != 0; p = v.fams[p-1].nextClient {
		r := &v.fams[p-1]
		switch {
		case !r.activeAt(n):
		case int(r.version) >= version:
			atOrAbove++
		default:
			below++
		}
	}
	return atOrAbove, below
}
