package jsstore

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/tokenledger/tokenledger/ledger"
	"github.com/tokenledger/tokenledger/ledger/token"

	"github.com/oklog/ulid/v2"
)

// maxAttempts bounds how often a command reloads after a conflict. Each
// conflict means another writer made progress, so n concurrent callers on
// one family need at most n attempts: 256 covers 256 of them.
const maxAttempts = 256

// Ledger runs commands: load a family, decide, append conditionally, and on
// a conflict reload and decide again. It mints the ids, secrets and time
// that the pure Decide needs.
type Ledger struct {
	store *Store
	now   func() time.Time
	rand  io.Reader
	cache *stateCache // nil unless WithStateCache
	clock *ClockGuard // nil unless WithClockGuard
	dog   *Watchdog   // nil unless WithWatchdog
	// mayRollOut, when set, reports whether a client may have a rollout;
	// for one it says has none, decisions skip reading the stored rollout.
	mayRollOut func(clientID string) bool
}

// Option configures a Ledger.
type Option func(*Ledger)

// WithClock replaces time.Now (tests inject a clock).
func WithClock(now func() time.Time) Option { return func(l *Ledger) { l.now = now } }

// WithClockGuard makes the ledger refuse every command with
// ledger.ErrUnavailable while the guard finds its clock out of bound. The
// guard must measure the ledger's clock.
func WithClockGuard(g *ClockGuard) Option { return func(l *Ledger) { l.clock = g } }

// WithRolloutHint lets the ledger skip reading a client's stored rollout
// when known(clientID) is false: the read model (projections.Rollouts.Has)
// has seen no rollout of the client. A rollout started less than the read
// model's lag ago then reaches this instance's issues and refreshes that
// much later (a family issued meanwhile starts below the version and is
// rotated onto it at its next refresh); once the read model has seen it,
// every decision reads the stored rollout, so deadlines are exact.
func WithRolloutHint(known func(clientID string) bool) Option {
	return func(l *Ledger) { l.mayRollOut = known }
}

// mayHaveRollout is false when the hint says the client has no rollout.
func (l *Ledger) mayHaveRollout(clientID string) bool {
	return l.mayRollOut == nil || l.mayRollOut(clientID)
}

// rolloutOf reads the client's stored rollout, unless the hint says it has
// none.
func (l *Ledger) rolloutOf(ctx context.Context, clientID string) (ledger.RolloutState, error) {
	if !l.mayHaveRollout(clientID) {
		return ledger.RolloutState{}, nil
	}
	return l.store.LoadRollout(ctx, clientID)
}

// WithWatchdog makes the ledger refuse every command with
// ledger.ErrUnavailable while the watchdog finds the ledger stream or the
// key bucket missing.
func WithWatchdog(w *Watchdog) Option { return func(l *Ledger) { l.dog = w } }

// Ready is nil while the ledger may decide: its clock guard (if any) finds
// the clock in bound and its watchdog (if any) the ledger's stores present.
// Handlers ask it before serving reads too (introspection, lifetimes).
func (l *Ledger) Ready() error {
	if err := l.dog.Err(); err != nil {
		return err
	}
	return l.clock.Err()
}

// New returns a ledger over the store.
func New(store *Store, opts ...Option) *Ledger {
	l := &Ledger{store: store, now: time.Now, rand: rand.Reader}
	for _, o := range opts {
		o(l)
	}
	// Wall-clock readings only: a state decided here (and kept by the state
	// cache) must compare with the clock as one loaded from the stream
	// does, and those carry no monotonic reading.
	clock := l.now
	l.now = func() time.Time { return clock().Round(0) }
	return l
}

// Now is the ledger's clock.
func (l *Ledger) Now() time.Time { return l.now() }

// Load returns a family's current state (the zero State if it has no
// events) in one read. It changes nothing.
func (l *Ledger) Load(ctx context.Context, familyID string) (ledger.State, error) {
	return l.store.Load(ctx, familyID)
}

// LastSeq is the ledger stream's last sequence: a read model that has
// applied it has seen every event acknowledged before this call.
func (l *Ledger) LastSeq(ctx context.Context) (uint64, error) {
	return l.store.LastSeq(ctx)
}

// NewID mints a ULID at the ledger's clock.
func (l *Ledger) NewID() string {
	return ulid.MustNew(ulid.Timestamp(l.now()), l.rand).String()
}

// Grant is what a successful issue or refresh hands back: the family after
// the event, the raw refresh token (to return once, never to store) and the
// access token to sign.
type Grant struct {
	State        ledger.State
	RefreshToken string
	Access       ledger.AccessGrant
	IssuedAt     time.Time
	// Retried is set when the grant answers a grace retry.
	Retried bool
}

// IssueRequest asks for a new family.
type IssueRequest struct {
	Client    ledger.Client
	Policy    ledger.Policy
	Subject   string
	Scope     string
	Audience  []string
	Claims    json.RawMessage
	Version   int
	RequestID string
	// Prepare, if set, runs while the events are appended: see
	// RefreshRequest.Prepare.
	Prepare func(Grant)
}

// Issue starts a family and returns its first tokens.
func (l *Ledger) Issue(ctx context.Context, req IssueRequest) (Grant, error) {
	if err := l.Ready(); err != nil {
		return Grant{}, err
	}
	// The client's rollout as stored now (see rollout.go): a new family
	// starts at the highest version whose rollout covers it.
	rollout, err := l.rolloutOf(ctx, req.Client.ID)
	if err != nil {
		return Grant{}, err
	}
	now := l.now()
	fid := ulid.MustNew(ulid.Timestamp(now), l.rand)
	raw, err := token.MintRefreshToken(l.rand, fid, 0)
	if err != nil {
		return Grant{}, err
	}
	cmd := ledger.Issue{
		EventID: l.NewID(), FamilyID: fid.String(), Cause: ledger.Cause{Kind: ledger.CauseRequest, ID: req.RequestID},
		ClientID: req.Client.ID, Subject: req.Subject, Scope: req.Scope, Audience: req.Audience,
		Claims: req.Claims, Version: req.Version, TokenHash: token.HashToken(raw),
		AccessJTI: l.NewID(), Policy: req.Policy,
	}
	if r := rollout.For(cmd.FamilyID, now); r != nil && r.Version > cmd.Version {
		cmd.Version, cmd.RolloutID = r.Version, r.ID
	}
	events, err := ledger.Decide(ledger.State{}, cmd, now)
	if err != nil {
		return Grant{}, err
	}
	g := Grant{State: fold(ledger.State{}, events), RefreshToken: raw, Access: events[0].Data.(ledger.FamilyIssued).Access, IssuedAt: now}
	st, err := l.appendPreparing(ctx, ledger.State{}, events, g, req.Prepare)
	if err != nil {
		return Grant{}, err
	}
	// Not cached: a new family's first refresh is an access-token
	// lifetime away (no grace retry or racing refresh can come sooner).
	g.State = st
	return g, nil
}

// appendPreparing appends the events and, meanwhile on another goroutine,
// runs prepare (if set) with the grant g they give: the caller's work on
// the grant (signing the access token) overlaps the append's round trip
// instead of following it. It returns once both are done.
func (l *Ledger) appendPreparing(ctx context.Context, st ledger.State, events []ledger.Event, g Grant, prepare func(Grant)) (ledger.State, error) {
	if prepare == nil {
		return l.store.Append(ctx, st, events...)
	}
	var wg sync.WaitGroup
	wg.Go(func() { prepare(g) })
	after, err := l.store.Append(ctx, st, events...)
	wg.Wait()
	return after, err
}

// fold is the state after the events, as Append computes it (without the
// sequence and head the stream gives).
func fold(st ledger.State, events []ledger.Event) ledger.State {
	for _, e := range events {
		st = ledger.Apply(st, e)
	}
	return st
}

// RefreshRequest presents a refresh token.
type RefreshRequest struct {
	Client       ledger.Client
	Policy       ledger.Policy
	RefreshToken string
	Scope        string
	RequestID    string
	// Prepare, if set, runs while the events are appended, on another
	// goroutine, with the grant the refresh gives if the append succeeds
	// (its State lacks only Seq and Head), so work on it such as signing
	// the access token overlaps the round trip. The append may still fail
	// or lose a race (then Prepare runs again for the next attempt): what
	// Prepare makes must not leave the caller unless Refresh succeeds.
	Prepare func(Grant)
}

// Refresh presents a refresh token: it rotates, keeps (periodic), answers a
// grace retry with the same successor, or refuses; a genuine rotated token
// outside the grace window revokes the family.
func (l *Ledger) Refresh(ctx context.Context, req RefreshRequest) (Grant, error) {
	if err := l.Ready(); err != nil {
		return Grant{}, err
	}
	tok, err := token.ParseRefreshToken(req.RefreshToken)
	if err != nil {
		return Grant{}, err
	}
	fid := tok.FamilyID.String()
	hash := token.HashToken(req.RefreshToken)
	// The client's rollout as stored when the refresh starts (see
	// rollout.go), read while the family loads.
	rollout := l.loadRolloutAsync(ctx, req.Client.ID)
	for attempt := range maxAttempts {
		var st ledger.State
		cached := false
		if attempt == 0 { // only the first attempt may decide on the cached state
			st, cached = l.cache.get(fid)
		}
		if !cached {
			if st, err = l.store.Load(ctx, fid); err != nil {
				return Grant{}, err
			}
		}
		if !st.Exists() {
			return Grant{}, ledger.ErrInvalidToken // do not tell forged from unknown
		}
		presented := ledger.Presented{Hash: hash}
		if hash != st.TokenHash && (st.Previous == nil || hash != st.Previous.Hash) && tok.AfterSeq < st.Seq {
			if presented.Older, err = l.older(ctx, fid, tok.AfterSeq, hash); err != nil {
				return Grant{}, err
			}
		}
		now := l.now()
		cmd := ledger.Refresh{
			EventID: l.NewID(), Cause: ledger.Cause{Kind: ledger.CauseRequest, ID: req.RequestID},
			ClientID: req.Client.ID, Presented: presented, Scope: req.Scope,
			Policy: req.Policy, AccessJTI: l.NewID(),
		}
		ro, err := rollout()
		if err != nil {
			return Grant{}, err
		}
		cmd.Rollout = ro.For(fid, now)
		var next string
		if hash == st.TokenHash && st.Revoked == nil {
			if next, err = token.MintRefreshToken(l.rand, tok.FamilyID, st.Seq); err != nil {
				return Grant{}, err
			}
			cmd.NextHash = token.HashToken(next)
			if cmd.SealedNext, err = token.SealSuccessor(l.rand, req.RefreshToken, next); err != nil {
				return Grant{}, err
			}
		}
		events, decided := ledger.Decide(st, cmd, now)
		if decided != nil {
			if len(events) == 0 && cached {
				continue // refuse only on the loaded state
			}
			if len(events) > 0 { // a reuse: the family is revoked
				after, err := l.store.Append(ctx, st, events...)
				if errors.Is(err, ledger.ErrConflict) {
					continue
				} else if err != nil {
					return Grant{}, err
				}
				l.cache.put(after)
			}
			return Grant{}, decided
		}
		g := Grant{State: fold(st, events), IssuedAt: now}
		switch d := events[0].Data.(type) {
		case ledger.RefreshRotated:
			g.RefreshToken, g.Access = next, d.Access
		case ledger.RefreshUsed:
			g.RefreshToken, g.Access = req.RefreshToken, d.Access
		case ledger.GraceRetried:
			g.Access, g.Retried = d.Access, true
			if g.RefreshToken, err = token.OpenSuccessor(req.RefreshToken, st.Previous.SealedSuccessor); err != nil {
				return Grant{}, fmt.Errorf("grace retry of family %s: %w", fid, err)
			}
		default:
			return Grant{}, fmt.Errorf("refresh decided %T", d)
		}
		after, err := l.appendPreparing(ctx, st, events, g, req.Prepare)
		if errors.Is(err, ledger.ErrConflict) {
			if cached {
				l.cache.drop(fid)
			}
			continue
		}
		if err != nil {
			return Grant{}, err
		}
		l.cache.put(after)
		g.State = after
		return g, nil
	}
	return Grant{}, fmt.Errorf("refresh family %s: %d conflicting writers: %w", fid, maxAttempts, ledger.ErrUnavailable)
}

// genuine reports whether raw, parsed as tok, is a token of the family st:
// its current or previous token, or (one more read) an older generation's.
func (l *Ledger) genuine(ctx context.Context, st ledger.State, tok token.RefreshToken, raw string) (bool, error) {
	if !st.Exists() {
		return false, nil
	}
	hash := token.HashToken(raw)
	if token.HashEqual(hash, st.TokenHash) || (st.Previous != nil && token.HashEqual(hash, st.Previous.Hash)) {
		return true, nil
	}
	if tok.AfterSeq >= st.Seq {
		return false, nil
	}
	o, err := l.older(ctx, st.FamilyID, tok.AfterSeq, hash)
	return o != nil, err
}

// older proves a presented token genuine for a past generation: the token
// names the family's last sequence when it was minted, so the family's first
// event after it is the one that minted it. It returns nil for a token that
// is not genuine. It costs one read, plus a few to find the rotation that
// replaced it for the reuse lineage.
func (l *Ledger) older(ctx context.Context, fid string, afterSeq uint64, hash string) (*ledger.OlderToken, error) {
	minted, seq, err := l.store.EventAfter(ctx, fid, afterSeq)
	if errors.Is(err, ledger.ErrUnknownFamily) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var o ledger.OlderToken
	switch d := minted.Data.(type) {
	case ledger.FamilyIssued:
		if !token.HashEqual(d.TokenHash, hash) {
			return nil, nil
		}
		o.Generation = 0
	case ledger.RefreshRotated:
		if !token.HashEqual(d.TokenHash, hash) {
			return nil, nil
		}
		o.Generation = d.ToGeneration
	default:
		return nil, nil
	}
	// The rotation away from it is usually the next event or close after;
	// lineage is best effort beyond a few reads.
	for range 8 {
		e, s, err := l.store.EventAfter(ctx, fid, seq)
		if err != nil {
			break
		}
		seq = s
		if r, ok := e.Data.(ledger.RefreshRotated); ok && r.FromGeneration == o.Generation {
			o.RotatedAt, o.WinnerEventID, o.WinnerRequest = e.OccurredAt, e.ID, e.Cause.ID
			break
		}
	}
	return &o, nil
}

// Revoke revokes a family for the cause. Revoking a family that is not
// active changes nothing and is not an error.
func (l *Ledger) Revoke(ctx context.Context, familyID string, cause ledger.Cause) (ledger.State, error) {
	return l.run(ctx, familyID, func(context.Context, ledger.State) (ledger.Command, error) {
		return ledger.Revoke{EventID: l.NewID(), Cause: cause}, nil
	})
}

// RevokeToken revokes the family of a refresh token presented by the
// client. Only a genuine token of the family (current, previous or older
// generation) can revoke it: any other string is ledger.ErrInvalidToken, a
// token of another client's family ledger.ErrWrongClient, and neither
// changes anything. The family is loaded once per attempt.
func (l *Ledger) RevokeToken(ctx context.Context, clientID, raw string, cause ledger.Cause) (ledger.State, error) {
	tok, err := token.ParseRefreshToken(raw)
	if err != nil {
		return ledger.State{}, ledger.ErrInvalidToken
	}
	return l.run(ctx, tok.FamilyID.String(), func(ctx context.Context, st ledger.State) (ledger.Command, error) {
		ok, err := l.genuine(ctx, st, tok, raw)
		if err != nil {
			return nil, err
		}
		if !ok {
			return nil, ledger.ErrInvalidToken
		}
		return ledger.Revoke{EventID: l.NewID(), Cause: cause, ClientID: clientID}, nil
	})
}

// AccessToken names one access token of a family.
type AccessToken struct {
	FamilyID  string
	JTI       string
	ExpiresAt time.Time
}

// RevokeAccess denies one access token of the family until it expires.
// denied, if set, reports whether the token is denied already once the
// caller's read model has applied the loaded state (st.Seq); Decide then
// records nothing.
func (l *Ledger) RevokeAccess(ctx context.Context, at AccessToken, cause ledger.Cause, denied func(context.Context, ledger.State) (bool, error)) (ledger.State, error) {
	return l.run(ctx, at.FamilyID, func(ctx context.Context, st ledger.State) (ledger.Command, error) {
		cmd := ledger.RevokeAccess{EventID: l.NewID(), Cause: cause, JTI: at.JTI, ExpiresAt: at.ExpiresAt}
		if denied != nil && st.Exists() {
			var err error
			if cmd.Denied, err = denied(ctx, st); err != nil {
				return nil, err
			}
		}
		return cmd, nil
	})
}

// CutAccess denies every access token of the family issued so far.
func (l *Ledger) CutAccess(ctx context.Context, familyID string, cause ledger.Cause) (ledger.State, error) {
	return l.run(ctx, familyID, func(context.Context, ledger.State) (ledger.Command, error) {
		return ledger.CutAccess{EventID: l.NewID(), Cause: cause}, nil
	})
}

// run loads the family, builds the command on its state, decides and
// appends, retrying on conflicts. It returns the state after the append,
// or the loaded state when Decide recorded nothing.
func (l *Ledger) run(ctx context.Context, familyID string, cmd func(context.Context, ledger.State) (ledger.Command, error)) (ledger.State, error) {
	if err := l.Ready(); err != nil {
		return ledger.State{}, err
	}
	for range maxAttempts {
		st, err := l.store.Load(ctx, familyID)
		if err != nil {
			return ledger.State{}, err
		}
		c, err := cmd(ctx, st)
		if err != nil {
			return st, err
		}
		events, err := ledger.Decide(st, c, l.now())
		if err != nil || len(events) == 0 {
			return st, err
		}
		after, err := l.store.Append(ctx, st, events...)
		if errors.Is(err, ledger.ErrConflict) {
			continue
		}
		if err == nil {
			l.cache.put(after)
		}
		return after, err
	}
	return ledger.State{}, fmt.Errorf("family %s: %d conflicting writers: %w", familyID, maxAttempts, ledger.ErrUnavailable)
}
