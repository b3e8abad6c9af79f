package jsstore

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/oklog/ulid/v2"

	"github.com/tokenledger/tokenledger/ledger"
	"github.com/tokenledger/tokenledger/ledger/token"
)

// Defaults of the signing-key lifecycle.
const (
	// DefaultJWKSCachePeriod is how long resource servers may cache the
	// JWKS: a next key is published at least this long before it signs.
	DefaultJWKSCachePeriod = 15 * time.Minute
	// DefaultKeyRotationPeriod is how long a key signs before the
	// scheduled rotation replaces it.
	DefaultKeyRotationPeriod = 30 * 24 * time.Hour
	// maxKeys bounds the keys the set keeps: the oldest keys no longer
	// published are dropped beyond it.
	maxKeys = 16
)

// ErrUnknownKey: no signing key has the kid.
var ErrUnknownKey = errors.New("no signing key has this kid")

// KeyRingConfig configures a KeyRing. Keys and Store are required.
type KeyRingConfig struct {
	Keys  *KeyStore
	Store *Store // where the key events are appended (ledger.keys.<kid>)
	// Alg is the algorithm of new keys (default EdDSA).
	Alg string
	// CachePeriod is the JWKS cache period of resource servers: a next
	// key is published this long before it signs (default 15 min).
	CachePeriod time.Duration
	// RotationPeriod is how long a key signs before the schedule rotates
	// it (default 30 days; negative: never by schedule).
	RotationPeriod time.Duration
	// MaxTokenAge is how long a token can stay valid after its key
	// stopped signing: the longest access-token lifetime plus a margin
	// for clocks (required).
	MaxTokenAge time.Duration
	// CheckInterval is how often Run looks for a change falling due
	// (default 1 s); the bucket's changes arrive by its watch at once.
	CheckInterval time.Duration
	Now           func() time.Time
	Log           *slog.Logger
}

// KeySnapshot is the key set an instance holds, numbered: Gen changes with
// every change of the set, so readers cache what they derive from it.
type KeySnapshot struct {
	Set token.KeySet
	Gen uint64
	// MaxTokenAge is the ring's (see KeyRingConfig).
	MaxTokenAge time.Duration
}

// KeyRing is the signing-key lifecycle of one instance: it holds the key
// set from the keys bucket, follows the bucket's changes (a KV watch) so
// every instance signs with the same key without a restart, and makes the
// changes that fall due (activation of the next key, retirement of the
// previous one, the scheduled rotation) as well as those asked for
// (Rotate, Revoke). Every change is written compare-and-set on the
// bucket's revision, and the instance whose write won appends the change's
// events to the ledger (never key material).
type KeyRing struct {
	cfg  KeyRingConfig
	snap atomic.Pointer[KeySnapshot]
	gen  atomic.Uint64

	mu     sync.Mutex
	rev    uint64               // the bucket revision of the held set
	denied map[string]time.Time // kids seen revoked in the ledger, ahead of the bucket
	wake   chan struct{}
}

// NewKeyRing validates the configuration; Start loads the keys.
func NewKeyRing(cfg KeyRingConfig) (*KeyRing, error) {
	switch {
	case cfg.Keys == nil || cfg.Store == nil:
		return nil, errors.New("jsstore: a key ring needs a key store and an event store")
	case cfg.MaxTokenAge <= 0:
		return nil, errors.New("jsstore: a key ring needs the maximum token age")
	}
	if cfg.Alg == "" {
		cfg.Alg = token.AlgEdDSA
	}
	if !token.ValidAlg(cfg.Alg) {
		return nil, fmt.Errorf("jsstore: algorithm %q: want EdDSA, ES256 or RS256", cfg.Alg)
	}
	if cfg.CachePeriod <= 0 {
		cfg.CachePeriod = DefaultJWKSCachePeriod
	}
	if cfg.RotationPeriod == 0 {
		cfg.RotationPeriod = DefaultKeyRotationPeriod
	}
	if cfg.RotationPeriod > 0 && cfg.RotationPeriod <= cfg.CachePeriod {
		return nil, fmt.Errorf("jsstore: key rotation period %s must exceed the JWKS cache period %s", cfg.RotationPeriod, cfg.CachePeriod)
	}
	if cfg.CheckInterval <= 0 {
		cfg.CheckInterval = time.Second
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	return &KeyRing{cfg: cfg, denied: map[string]time.Time{}, wake: make(chan struct{}, 1)}, nil
}

// Config is the ring's configuration with its defaults.
func (r *KeyRing) Config() KeyRingConfig { return r.cfg }

// Snapshot is the key set held now.
func (r *KeyRing) Snapshot() *KeySnapshot { return r.snap.Load() }

// Start loads the key set, creating the first key if there is none (it
// signs at once), and makes what is due. When the signing key's algorithm
// is not the configured one, a key for it is published to sign one cache
// period later (not at once: resource servers must see it first).
func (r *KeyRing) Start(ctx context.Context) error {
	_, err := r.update(ctx, ledger.Cause{Kind: ledger.CauseSchedule}, func(ks token.KeySet, now time.Time) (token.KeySet, []ledger.Event, error) {
		ks, events, err := r.due(ks, now)
		if err != nil {
			return ks, nil, err
		}
		cur, _ := ks.Signing(now)
		if _, pending := ks.Next(now); cur.Alg != r.cfg.Alg && !pending {
			var ev []ledger.Event
			ks, ev, err = r.publish(ks, now, now.Add(r.cfg.CachePeriod))
			events = append(events, ev...)
		}
		return ks, events, err
	})
	return err
}

// Tick makes the changes due at the ring's clock (Run calls it every
// CheckInterval; tests with a settled clock call it).
func (r *KeyRing) Tick(ctx context.Context) error {
	snap := r.Snapshot()
	if snap != nil && !r.dueAt(snap.Set, r.cfg.Now()) {
		return nil // nothing due: no read of the bucket
	}
	_, err := r.update(ctx, ledger.Cause{Kind: ledger.CauseSchedule}, r.due)
	return err
}

// Rotate publishes a new key that signs one cache period from now and
// returns the set. If a next key is already published, nothing changes:
// it is on its way.
func (r *KeyRing) Rotate(ctx context.Context, cause ledger.Cause) (token.KeySet, error) {
	return r.update(ctx, cause, func(ks token.KeySet, now time.Time) (token.KeySet, []ledger.Event, error) {
		ks, events, err := r.due(ks, now)
		if err != nil {
			return ks, nil, err
		}
		if _, pending := ks.Next(now); pending {
			return ks, events, nil
		}
		ks, ev, err := r.publish(ks, now, now.Add(r.cfg.CachePeriod))
		return ks, append(events, ev...), err
	})
}

// Revoke withdraws the key kid at once: it leaves the JWKS and every token
// it signed is inactive. If it was the signing key, the next key signs at
// once, or a new key if none is published (no pre-publication is possible
// in an emergency: verifiers fetch the JWKS again on an unknown kid). A
// key already revoked is left as it is. ErrUnknownKey if no key has kid.
func (r *KeyRing) Revoke(ctx context.Context, kid string, cause ledger.Cause) (token.KeySet, error) {
	return r.update(ctx, cause, func(ks token.KeySet, now time.Time) (token.KeySet, []ledger.Event, error) {
		i := ks.Index(kid)
		if i < 0 {
			return ks, nil, ErrUnknownKey
		}
		if !ks.Keys[i].RevokedAt.IsZero() {
			return r.due(ks, now)
		}
		ks = ks.Clone()
		tokensUntil := now.Add(r.cfg.MaxTokenAge)
		if ks.State(i, now, r.cfg.MaxTokenAge) == token.KeyRetired {
			tokensUntil = ks.PublishedUntil(i, now, r.cfg.MaxTokenAge)
		}
		signing := ks.State(i, now, r.cfg.MaxTokenAge) == token.KeyActive
		ks.Keys[i].RevokedAt = now
		events := []ledger.Event{r.event(now, ledger.KeyRevoked{KID: kid, TokensUntil: tokensUntil})}
		if signing {
			if next, ok := ks.Next(now); ok {
				ks.Keys[ks.Index(next.KID)].ActivatesAt = now
			} else {
				var ev []ledger.Event
				var err error
				if ks, ev, err = r.publish(ks, now, now); err != nil {
					return ks, nil, err
				}
				events = append(events, ev...)
			}
		}
		ks, ev, err := r.due(ks, now)
		return ks, append(events, ev...), err
	})
}

// Deny takes the key kid out of use on this instance at once, ahead of the
// bucket's watch: the ledger's key.revoked.v1 seen by the projections
// (read-your-writes for introspection). It does no I/O; Run then reads
// the bucket.
func (r *KeyRing) Deny(kid string, at time.Time) {
	r.mu.Lock()
	r.denied[kid] = at
	if snap := r.snap.Load(); snap != nil {
		r.installLocked(snap.Set)
	}
	r.mu.Unlock()
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// Run follows the bucket and makes the changes that fall due until ctx
// ends.
func (r *KeyRing) Run(ctx context.Context) error {
	errs := make(chan error, 1)
	go func() {
		errs <- r.cfg.Keys.Watch(ctx, func(ks token.KeySet, rev uint64) { r.install(ks, rev) })
	}()
	t := time.NewTicker(r.cfg.CheckInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case err := <-errs:
			if ctx.Err() != nil {
				return nil
			}
			return err
		case <-r.wake:
			if ks, rev, err := r.cfg.Keys.Load(ctx); err == nil {
				r.install(ks, rev)
			}
		case <-t.C:
		}
		if err := r.Tick(ctx); err != nil && ctx.Err() == nil {
			r.cfg.Log.Warn("signing keys: change due failed; retrying", "error", err)
		}
	}
}

// install holds ks if it is newer than the held set.
func (r *KeyRing) install(ks token.KeySet, rev uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if rev != 0 && rev <= r.rev {
		return
	}
	r.rev = rev
	r.installLocked(ks)
}

func (r *KeyRing) installLocked(ks token.KeySet) {
	if len(r.denied) > 0 {
		ks = ks.Clone()
		for kid, at := range r.denied {
			if i := ks.Index(kid); i >= 0 && ks.Keys[i].RevokedAt.IsZero() {
				ks.Keys[i].RevokedAt = at
			}
		}
	}
	r.snap.Store(&KeySnapshot{Set: ks, Gen: r.gen.Add(1), MaxTokenAge: r.cfg.MaxTokenAge})
}

// update applies change to the stored set, compare-and-set, and appends
// the events of the change that won. A change with no events writes
// nothing.
func (r *KeyRing) update(ctx context.Context, cause ledger.Cause, change func(token.KeySet, time.Time) (token.KeySet, []ledger.Event, error)) (token.KeySet, error) {
	for range 8 {
		ks, rev, err := r.cfg.Keys.Load(ctx)
		if err != nil {
			return ks, err
		}
		now := r.cfg.Now()
		next, events, err := change(ks, now)
		if err != nil {
			return ks, err
		}
		if len(events) == 0 {
			r.install(ks, rev)
			return ks, nil
		}
		next = prune(next, now, r.cfg.MaxTokenAge)
		nrev, err := r.cfg.Keys.Put(ctx, next, rev)
		if errors.Is(err, ledger.ErrConflict) {
			continue // another instance changed the keys: decide again on its set
		}
		if err != nil {
			return ks, err
		}
		r.install(next, nrev)
		for _, e := range events {
			e.Cause = cause
			if err := r.append(ctx, e); err != nil {
				return next, err
			}
		}
		return next, nil
	}
	return token.KeySet{}, fmt.Errorf("signing keys: too many concurrent writers: %w", ledger.ErrUnavailable)
}

// append appends a key event on ledger.keys.<kid>, retrying while the
// ledger is unavailable: the change is made, its record must follow. The
// event id stays the same, so a retry JetStream already stored is dropped.
func (r *KeyRing) append(ctx context.Context, e ledger.Event) error {
	kid := ledger.KeyEventKID(e.Data)
	for backoff := 50 * time.Millisecond; ; backoff = min(2*backoff, 2*time.Second) {
		_, err := r.cfg.Store.AppendTo(ctx, "keys", kid, e)
		if err == nil || !errors.Is(err, ledger.ErrUnavailable) {
			return err
		}
		r.cfg.Log.Warn("signing keys: event append failed; retrying", "type", ledger.TypeOf(e.Data), "kid", kid, "error", err)
		select {
		case <-ctx.Done():
			return fmt.Errorf("signing keys: record %s: %w", ledger.TypeOf(e.Data), err)
		case <-time.After(backoff):
		}
	}
}

func (r *KeyRing) event(now time.Time, data any) ledger.Event {
	return ledger.Event{ID: ulid.MustNew(ulid.Timestamp(now), rand.Reader).String(), OccurredAt: now, Data: data}
}

// publish adds a new key that signs from activates.
func (r *KeyRing) publish(ks token.KeySet, now, activates time.Time) (token.KeySet, []ledger.Event, error) {
	k, err := token.GenerateKey(r.cfg.Alg, now)
	if err != nil {
		return ks, nil, err
	}
	k.ActivatesAt = activates
	ks = ks.Clone()
	ks.Keys = append(ks.Keys, k)
	return ks, []ledger.Event{r.event(now, ledger.KeyPublished{KID: k.KID, Alg: k.Alg, ActivatesAt: activates})}, nil
}

// dueAt reports whether due would change ks at now.
func (r *KeyRing) dueAt(ks token.KeySet, now time.Time) bool {
	_, events, err := r.dueChanges(ks, now, false)
	return err != nil || len(events) > 0
}

// due records what the clock made of ks at now: the signing key's
// activation, the retirement of the keys it replaced; it publishes a first
// key when none signs, and the next key when the scheduled rotation is one
// cache period away.
func (r *KeyRing) due(ks token.KeySet, now time.Time) (token.KeySet, []ledger.Event, error) {
	return r.dueChanges(ks, now, true)
}

func (r *KeyRing) dueChanges(ks token.KeySet, now time.Time, generate bool) (token.KeySet, []ledger.Event, error) {
	ks = ks.Clone()
	var events []ledger.Event
	cur, ok := ks.Signing(now)
	if !ok {
		if !generate {
			return ks, []ledger.Event{{}}, nil
		}
		var err error
		if ks, events, err = r.publish(ks, now, now); err != nil {
			return ks, nil, err
		}
		cur, _ = ks.Signing(now)
	}
	i := ks.Index(cur.KID)
	if ks.Keys[i].ActivatedAt.IsZero() {
		at := cur.ActivatesAt
		if at.IsZero() {
			at = cur.CreatedAt // a first key signs from its creation
		}
		ks.Keys[i].ActivatedAt = at
		events = append(events, r.event(now, ledger.KeyActivated{KID: cur.KID, Alg: cur.Alg, At: at}))
	}
	for j, k := range ks.Keys {
		if j == i || !k.RevokedAt.IsZero() || !k.RetiredAt.IsZero() || k.ActivatesAt.After(now) {
			continue
		}
		at := ks.RetiredAt(j, now)
		if at.IsZero() {
			at = now
		}
		ks.Keys[j].RetiredAt, ks.Keys[j].PublishedUntil = at, at.Add(r.cfg.MaxTokenAge)
		events = append(events, r.event(now, ledger.KeyRetired{KID: k.KID, At: at, PublishedUntil: at.Add(r.cfg.MaxTokenAge)}))
	}
	if _, pending := ks.Next(now); !pending && r.cfg.RotationPeriod > 0 {
		rotateAt := ks.Keys[i].ActivatedAt.Add(r.cfg.RotationPeriod)
		if !now.Before(rotateAt.Add(-r.cfg.CachePeriod)) {
			if !generate {
				return ks, append(events, ledger.Event{}), nil
			}
			activates := now.Add(r.cfg.CachePeriod)
			if rotateAt.After(activates) {
				activates = rotateAt
			}
			ks2, ev, err := r.publish(ks, now, activates)
			if err != nil {
				return ks, nil, err
			}
			ks, events = ks2, append(events, ev...)
		}
	}
	return ks, events, nil
}

// prune drops the oldest keys no longer published beyond maxKeys.
func prune(ks token.KeySet, now time.Time, maxAge time.Duration) token.KeySet {
	for len(ks.Keys) > maxKeys {
		drop := -1
		for i := range ks.Keys {
			if st := ks.State(i, now, maxAge); st == token.KeyExpired || st == token.KeyRevoked {
				drop = i
				break
			}
		}
		if drop < 0 {
			break
		}
		ks.Keys = append(ks.Keys[:drop:drop], ks.Keys[drop+1:]...)
	}
	return ks
}
