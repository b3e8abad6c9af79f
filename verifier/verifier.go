package verifier

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tokenledger/tokenledger/ledger/token"
	"github.com/tokenledger/tokenledger/revocation"
)

// Errors Verify returns besides token.ErrTokenInvalid and
// token.ErrUnknownKey.
var (
	// ErrRevoked: the token, its family, or the family's access tokens
	// were revoked.
	ErrRevoked = errors.New("verifier: access token revoked")
	// ErrNotReady: the verifier has not yet read the revocation feed.
	ErrNotReady = errors.New("verifier: revocations not loaded yet")
	// ErrStale: the revocation feed has been out of reach for longer than
	// MaxStale.
	ErrStale = errors.New("verifier: revocation feed out of reach")
	// ErrAudience: the token is not meant for this resource server.
	ErrAudience = errors.New("verifier: access token not for this audience")
)

// Config configures a Verifier. Issuer is required.
type Config struct {
	// Issuer is the iss claim the tokens must carry.
	Issuer string
	// Audience, when set, must be one of the token's aud values.
	Audience string
	// Algs are the accepted algorithms (default EdDSA).
	Algs []string
	// Prefix is the service's subject prefix (default "tokens").
	Prefix string
	// FeedStream is the revocation feed's stream (default
	// revocation.DefaultStream).
	FeedStream string
	// RefetchInterval bounds how often an unknown kid refetches the JWKS
	// (default 1 s), so forged kids cannot flood the service.
	RefetchInterval time.Duration
	// MaxStale is how long Verify keeps answering from what it has while
	// the feed is out of reach (default 30 s); after it, ErrStale.
	MaxStale time.Duration
	// Now is the clock (default time.Now).
	Now func() time.Time
	Log *slog.Logger
}

// Verifier verifies access tokens offline and rejects revoked ones.
type Verifier struct {
	nc  *nats.Conn
	js  jetstream.JetStream
	cfg Config

	keys      atomic.Pointer[token.Verifier]
	fetchMu   sync.Mutex
	lastFetch time.Time
	jwks      []token.JWK // the usable keys fetched last (under fetchMu)

	mu       sync.RWMutex
	families map[string]*familyRevocation
	jtis     map[string]time.Time // revoked jti -> expiry
	kids     map[string]time.Time // revoked signing key -> when its last token expires

	applied    atomic.Uint64 // last feed sequence applied
	ready      chan struct{}
	readyOnce  sync.Once
	staleSince atomic.Int64 // unix ns since the feed has been out of reach, 0 when fine
}

type familyRevocation struct {
	revoked bool
	cutoff  int64 // unix seconds of the latest cutoff, 0 for none
	// cutoffEvent is the latest cutoff's number among the family's
	// events: tokens granted by an earlier event are denied.
	cutoffEvent uint64
	expires     time.Time // after it nothing here matters
}

// New returns a verifier on the connection; Run must be running for Verify
// to answer.
func New(nc *nats.Conn, cfg Config) (*Verifier, error) {
	if nc == nil {
		return nil, errors.New("verifier: a NATS connection is required")
	}
	if cfg.Issuer == "" {
		return nil, errors.New("verifier: Issuer is required")
	}
	if len(cfg.Algs) == 0 {
		cfg.Algs = []string{token.AlgEdDSA}
	}
	for _, a := range cfg.Algs {
		if !token.ValidAlg(a) {
			return nil, fmt.Errorf("verifier: algorithm %q not allowed", a)
		}
	}
	if cfg.Prefix == "" {
		cfg.Prefix = revocation.DefaultPrefix
	}
	if cfg.FeedStream == "" {
		cfg.FeedStream = revocation.DefaultStream
	}
	if cfg.RefetchInterval <= 0 {
		cfg.RefetchInterval = time.Second
	}
	if cfg.MaxStale == 0 {
		cfg.MaxStale = 30 * time.Second
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("verifier: %w", err)
	}
	return &Verifier{
		nc: nc, js: js, cfg: cfg,
		families: map[string]*familyRevocation{}, jtis: map[string]time.Time{}, kids: map[string]time.Time{},
		ready: make(chan struct{}),
	}, nil
}

// Ready is closed once the verifier has the keys and has read the
// revocation feed up to where it stood when Run started.
func (v *Verifier) Ready() <-chan struct{} { return v.ready }

// Run fetches the keys and follows the revocation feed until ctx ends.
func (v *Verifier) Run(ctx context.Context) error {
	if err := v.fetchKeys(ctx); err != nil {
		return err
	}
	stream, err := v.js.Stream(ctx, v.cfg.FeedStream)
	if err != nil {
		return fmt.Errorf("verifier: feed stream %s: %w", v.cfg.FeedStream, err)
	}
	info, err := stream.Info(ctx)
	if err != nil {
		return fmt.Errorf("verifier: feed stream %s: %w", v.cfg.FeedStream, err)
	}
	target := info.State.LastSeq
	// The whole stream: it keeps only what can still matter. The ordered
	// consumer resumes after the last delivered sequence on a reconnect.
	cons, err := stream.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{
		DeliverPolicy:  jetstream.DeliverAllPolicy,
		FilterSubjects: []string{revocation.Subjects(v.cfg.Prefix)},
	})
	if err != nil {
		return fmt.Errorf("verifier: consumer on %s: %w", v.cfg.FeedStream, err)
	}
	it, err := cons.Messages()
	if err != nil {
		return fmt.Errorf("verifier: consume %s: %w", v.cfg.FeedStream, err)
	}
	defer it.Stop()
	if info.State.Msgs == 0 {
		v.markReady()
	}

	go v.watch(ctx, stream)
	prune := time.NewTicker(time.Minute)
	defer prune.Stop()
	for {
		msg, err := it.Next(jetstream.NextContext(ctx))
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			return fmt.Errorf("verifier: read feed: %w", err)
		}
		meta, err := msg.Metadata()
		if err != nil {
			return fmt.Errorf("verifier: feed metadata: %w", err)
		}
		var a revocation.Announcement
		if err := json.Unmarshal(msg.Data(), &a); err != nil {
			v.cfg.Log.Warn("skipping a malformed announcement", "seq", meta.Sequence.Stream, "error", err)
		} else {
			v.apply(a)
		}
		v.applied.Store(meta.Sequence.Stream)
		if meta.Sequence.Stream >= target || meta.NumPending == 0 {
			v.markReady()
		}
		select {
		case <-prune.C:
			v.prune(v.cfg.Now())
		default:
		}
	}
}

func (v *Verifier) markReady() { v.readyOnce.Do(func() { close(v.ready) }) }

// watch marks the feed stale while the connection is down, and fresh again
// once the verifier has caught up with the stream after reconnecting.
func (v *Verifier) watch(ctx context.Context, stream jetstream.Stream) {
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if !v.nc.IsConnected() {
			v.staleSince.CompareAndSwap(0, v.cfg.Now().UnixNano())
			continue
		}
		if v.staleSince.Load() == 0 {
			continue
		}
		ictx, cancel := context.WithTimeout(ctx, time.Second)
		info, err := stream.Info(ictx)
		cancel()
		if err == nil && v.applied.Load() >= info.State.LastSeq {
			v.staleSince.Store(0)
		}
	}
}

func (v *Verifier) apply(a revocation.Announcement) {
	if a.Kind == revocation.KindKey {
		v.revokeKey(a)
		return
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	switch a.Kind {
	case revocation.KindAccess:
		if a.ExpiresAt.After(v.jtis[a.JTI]) {
			v.jtis[a.JTI] = a.ExpiresAt
		}
	case revocation.KindFamily, revocation.KindCutoff:
		f := v.families[a.FamilyID]
		if f == nil {
			f = &familyRevocation{}
			v.families[a.FamilyID] = f
		}
		if a.Kind == revocation.KindFamily {
			f.revoked = true
		} else {
			f.cutoff = max(f.cutoff, a.At.Unix())
			f.cutoffEvent = max(f.cutoffEvent, a.FamilyEvent)
		}
		if a.ExpiresAt.After(f.expires) {
			f.expires = a.ExpiresAt
		}
	}
}

// revokeKey denies every token of the key and drops the key from the
// verification keys, so a JWKS fetched from an instance that has not yet
// seen the revocation cannot bring it back.
func (v *Verifier) revokeKey(a revocation.Announcement) {
	if a.KID == "" {
		return
	}
	v.mu.Lock()
	if a.ExpiresAt.After(v.kids[a.KID]) {
		v.kids[a.KID] = a.ExpiresAt
	}
	v.mu.Unlock()
	v.fetchMu.Lock()
	defer v.fetchMu.Unlock()
	if err := v.useKeys(v.jwks); err != nil {
		v.cfg.Log.Warn("verification keys after a key revocation", "kid", a.KID, "error", err)
	}
}

// keyRevoked reports whether kid was revoked.
func (v *Verifier) keyRevoked(kid string) bool {
	v.mu.RLock()
	defer v.mu.RUnlock()
	_, ok := v.kids[kid]
	return ok
}

func (v *Verifier) prune(now time.Time) {
	v.mu.Lock()
	defer v.mu.Unlock()
	for k, exp := range v.kids {
		if !now.Before(exp) {
			delete(v.kids, k)
		}
	}
	for k, exp := range v.jtis {
		if !now.Before(exp) {
			delete(v.jtis, k)
		}
	}
	for k, f := range v.families {
		if !now.Before(f.expires) {
			delete(v.families, k)
		}
	}
}

// Verify checks the token's signature, type, issuer, expiry and audience
// offline, then that it is not revoked, and returns its claims.
func (v *Verifier) Verify(ctx context.Context, raw string) (token.AccessClaims, error) {
	select {
	case <-v.ready:
	default:
		return token.AccessClaims{}, ErrNotReady
	}
	if since := v.staleSince.Load(); since != 0 && v.cfg.MaxStale > 0 &&
		v.cfg.Now().Sub(time.Unix(0, since)) > v.cfg.MaxStale {
		return token.AccessClaims{}, ErrStale
	}
	if v.anyKeyRevoked() {
		if kid, ok := headerKID(raw); ok && v.keyRevoked(kid) {
			return token.AccessClaims{}, ErrRevoked
		}
	}
	c, err := v.keys.Load().Verify(raw)
	if errors.Is(err, token.ErrUnknownKey) {
		if ferr := v.refetch(ctx); ferr != nil {
			return c, err
		}
		c, err = v.keys.Load().Verify(raw)
	}
	if err != nil {
		return c, err
	}
	if v.cfg.Audience != "" && !slices.Contains(c.Audience, v.cfg.Audience) {
		return c, ErrAudience
	}
	if v.revoked(c) {
		return c, ErrRevoked
	}
	return c, nil
}

func (v *Verifier) revoked(c token.AccessClaims) bool {
	now := v.cfg.Now()
	v.mu.RLock()
	defer v.mu.RUnlock()
	if exp, ok := v.jtis[c.JTI]; ok && now.Before(exp) {
		return true
	}
	f, ok := v.families[c.SID]
	if !ok || !now.Before(f.expires) {
		return false
	}
	return f.revoked || f.cutOff(c)
}

// cutOff reports whether the family's access cutoff denies the token: by
// stream order when both the token (sid_event) and the announcement carry
// the family event number, by time only for what predates them.
func (f *familyRevocation) cutOff(c token.AccessClaims) bool {
	switch {
	case f.cutoff == 0:
		return false
	case c.FamilyEvent != 0 && f.cutoffEvent != 0:
		return c.FamilyEvent < f.cutoffEvent
	}
	return c.IssuedAt <= f.cutoff
}

// refetch reloads the keys unless that was done less than RefetchInterval
// ago.
func (v *Verifier) refetch(ctx context.Context) error {
	v.fetchMu.Lock()
	// Wall time, not the configured clock: the bound is on requests to
	// the service, whatever time tokens are judged at.
	recent := time.Since(v.lastFetch) < v.cfg.RefetchInterval
	v.fetchMu.Unlock()
	if recent {
		return errors.New("verifier: keys fetched recently")
	}
	return v.fetchKeys(ctx)
}

func (v *Verifier) fetchKeys(ctx context.Context) error {
	v.fetchMu.Lock()
	defer v.fetchMu.Unlock()
	v.lastFetch = time.Now()
	msg, err := v.nc.RequestWithContext(ctx, v.cfg.Prefix+".jwks", nil)
	if err != nil {
		return fmt.Errorf("verifier: fetch JWKS: %w", err)
	}
	var set struct {
		Keys []token.JWK `json:"keys"`
	}
	if err := json.Unmarshal(msg.Data, &set); err != nil {
		return fmt.Errorf("verifier: JWKS: %w", err)
	}
	var usable []token.JWK
	for _, k := range set.Keys {
		if slices.Contains(v.cfg.Algs, k.Alg) {
			usable = append(usable, k)
		}
	}
	if err := v.useKeys(usable); err != nil {
		return err
	}
	v.jwks = usable
	return nil
}

// useKeys verifies with the keys, but those revoked (under fetchMu).
func (v *Verifier) useKeys(jwks []token.JWK) error {
	keep := make([]token.JWK, 0, len(jwks))
	for _, k := range jwks {
		if !v.keyRevoked(k.Kid) {
			keep = append(keep, k)
		}
	}
	kv, err := token.NewVerifier(keep, v.cfg.Algs, v.cfg.Issuer, v.cfg.Now)
	if err != nil {
		return fmt.Errorf("verifier: JWKS: %w", err)
	}
	v.keys.Store(kv)
	return nil
}

// anyKeyRevoked reports whether some signing key is revoked, so Verify
// reads the token's header only then.
func (v *Verifier) anyKeyRevoked() bool {
	v.mu.RLock()
	defer v.mu.RUnlock()
	return len(v.kids) > 0
}

// headerKID reads the kid of a compact JWS's header without verifying
// anything: only to deny tokens of a revoked key (the signature check
// that follows would refuse a forged header anyway).
func headerKID(raw string) (string, bool) {
	dot := strings.IndexByte(raw, '.')
	if dot <= 0 || dot > 4096 {
		return "", false
	}
	h, err := base64.RawURLEncoding.DecodeString(raw[:dot])
	if err != nil {
		return "", false
	}
	var header struct {
		KID string `json:"kid"`
	}
	if err := json.Unmarshal(h, &header); err != nil {
		return "", false
	}
	return header.KID, true
}
