package jsstore

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tokenledger/tokenledger/ledger"
)

// Rollouts on the ledger stream (ledger/rollout.go). A client's rollout
// events are on <prefix>.rollout.<client_id>, each appended conditionally
// on that subject's last sequence, so two operators (or instances) never
// both change one rollout state; each links the previous one's hash in
// Prev, a chain like a family's.
//
// Which rollout a decision uses: the one stored when the decision starts,
// read by one direct get of the subject's last message (the leader's
// answer on a replicated stream), never a copy kept in memory. A read
// model fed from the stream (projections.Rollouts) can lag, and during a
// disconnect by minutes: a deadline moved earlier or a rollout started
// meanwhile would then be decided on the old one, refusing a family the
// stored rollout moves, or issuing a family below the version the stored
// one requires. The read costs one round trip, which Refresh overlaps with
// the family's own load; Issue, which loads nothing else, pays it. The
// read models serve progress and status, where a moment's lag is harmless.

// RolloutSubject is the subject of a client's rollout events. Client ids
// (ledger.ValidClientID) hold no wildcard or space, so it is one literal
// subject per client.
func (s *Store) RolloutSubject(clientID string) string {
	return s.prefix + ".rollout." + clientID
}

// LoadRollout returns the client's current rollout (the zero state if it
// never had one) in one read of its subject's last event.
func (s *Store) LoadRollout(ctx context.Context, clientID string) (ledger.RolloutState, error) {
	if !ledger.ValidClientID(clientID) {
		return ledger.RolloutState{}, nil // no rollout can name it
	}
	msg, err := s.LastMsg(ctx, s.RolloutSubject(clientID))
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return ledger.RolloutState{}, nil
	}
	if err != nil {
		return ledger.RolloutState{}, fmt.Errorf("load rollout of %s: %w", clientID, unavailable(err))
	}
	e, err := ledger.DecodeEvent(msg.Data)
	if err != nil {
		return ledger.RolloutState{}, fmt.Errorf("rollout of %s at seq %d: %w", clientID, msg.Sequence, err)
	}
	r, ok := ledger.RolloutOf(e)
	if !ok {
		return ledger.RolloutState{}, fmt.Errorf("rollout of %s at seq %d is %s: %w", clientID, msg.Sequence, e.Type, ledger.ErrUnknownEvent)
	}
	r.Seq, r.Head = msg.Sequence, ledger.EventHash(msg.Data)
	return r, nil
}

// AppendRollout appends a rollout event after cur (the client's rollout as
// loaded), conditional on the subject's last sequence being cur.Seq:
// ledger.ErrConflict if another writer got there first.
func (s *Store) AppendRollout(ctx context.Context, cur ledger.RolloutState, e ledger.Event) (ledger.RolloutState, error) {
	next, ok := ledger.RolloutOf(e)
	if !ok {
		return cur, fmt.Errorf("append rollout: %T is not a rollout event: %w", e.Data, ledger.ErrInvalidRequest)
	}
	e.Prev, e.FamilyID, e.State = cur.Head, "", nil
	data, err := ledger.EncodeEvent(e)
	if err != nil {
		return cur, err
	}
	msg := nats.NewMsg(s.RolloutSubject(next.ClientID))
	msg.Data = data
	msg.Header.Set(HeaderEventType, string(ledger.TypeOf(e.Data)))
	ack, err := s.js.PublishMsg(ctx, msg, jetstream.WithExpectLastSequencePerSubject(cur.Seq))
	if err != nil {
		return cur, fmt.Errorf("append %s to the rollout of %s: %w", e.ID, next.ClientID, translate(err))
	}
	next.Seq, next.Head = ack.Sequence, ledger.EventHash(data)
	return next, nil
}

// Rollout returns the client's current rollout, as a decision reads it.
func (l *Ledger) Rollout(ctx context.Context, clientID string) (ledger.RolloutState, error) {
	return l.store.LoadRollout(ctx, clientID)
}

// RolloutRequest starts or changes a client's rollout (ledger.SetRollout).
type RolloutRequest struct {
	ClientID  string
	Version   int
	Percent   int
	Deadline  time.Time
	RequestID string
}

// SetRollout decides the request on the client's stored rollout and
// appends the event, reloading and deciding again after a conflict. It
// returns the rollout after it, and whether an event was appended (a
// request that changes nothing appends none).
func (l *Ledger) SetRollout(ctx context.Context, req RolloutRequest) (ledger.RolloutState, bool, error) {
	if err := l.Ready(); err != nil {
		return ledger.RolloutState{}, false, err
	}
	for range maxAttempts {
		cur, err := l.store.LoadRollout(ctx, req.ClientID)
		if err != nil {
			return ledger.RolloutState{}, false, err
		}
		events, err := ledger.DecideRollout(cur, ledger.SetRollout{
			EventID: l.NewID(), Cause: ledger.Cause{Kind: ledger.CauseAdmin, ID: req.RequestID},
			ClientID: req.ClientID, Version: req.Version, Percent: req.Percent, Deadline: req.Deadline,
		}, l.now())
		if err != nil || len(events) == 0 {
			return cur, false, err
		}
		after, err := l.store.AppendRollout(ctx, cur, events[0])
		if errors.Is(err, ledger.ErrConflict) {
			continue
		}
		return after, err == nil, err
	}
	return ledger.RolloutState{}, false, fmt.Errorf("rollout of %s: %d conflicting writers: %w", req.ClientID, maxAttempts, ledger.ErrUnavailable)
}

// loadRolloutAsync starts loading the client's rollout and returns the
// wait for it, so the read overlaps another.
func (l *Ledger) loadRolloutAsync(ctx context.Context, clientID string) func() (ledger.RolloutState, error) {
	if !l.mayHaveRollout(clientID) {
		return func() (ledger.RolloutState, error) { return ledger.RolloutState{}, nil }
	}
	type result struct {
		r   ledger.RolloutState
		err error
	}
	ch := make(chan result, 1)
	go func() {
		r, err := l.store.LoadRollout(ctx, clientID)
		ch <- result{r, err}
	}()
	var (
		res  result
		done bool
	)
	return func() (ledger.RolloutState, error) {
		if !done {
			res, done = <-ch, true
		}
		return res.r, res.err
	}
}
