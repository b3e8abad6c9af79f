package handlers

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/micro"

	"github.com/tokenledger/tokenledger/api"
	"github.com/tokenledger/tokenledger/ledger"
	"github.com/tokenledger/tokenledger/ledger/token"
	"github.com/tokenledger/tokenledger/projections"
)

// inactiveReply is the whole answer for an inactive token (RFC 7662 §2.2:
// nothing about the token is disclosed). The service sends []byte replies
// as they are.
var inactiveReply = []byte(`{"active":false}`)

// introspect implements RFC 7662 for access and refresh tokens. Any
// authenticated client may introspect an access token (resource servers
// introspect tokens issued to others); a refresh token is reported active
// only to the client it was issued to.
//
// Read-your-writes: an access token is judged by the view only after the
// view has applied every event the ledger acknowledged before the request
// (a Syncer round shared by concurrent requests), so a revocation answered
// by any instance is seen by this one. A refresh token is judged by the
// family's state in the ledger (one direct get).
func (s *Service) introspect(ctx context.Context, req micro.Request) (any, error) {
	if s.cfg.View == nil {
		return nil, errNoView
	}
	r, ok := decodeTokenRequestFast(req.Data(), s.cfg.MaxRequestBytes)
	if !ok {
		var err error
		if r, err = DecodeTokenRequest(req.Data(), s.cfg.MaxRequestBytes); err != nil {
			return nil, err
		}
	}
	client, err := s.cfg.Registry.Authenticate(ctx, r.ClientID, r.ClientSecret)
	if err != nil {
		return nil, err
	}
	if isRefreshToken(r.Token) {
		return s.introspectRefresh(ctx, client, r.Token)
	}
	return s.introspectAccess(ctx, r.Token)
}

// introspectAccess answers for an access token: its signature, type,
// issuer and lifetime (checked once per distinct token, then cached), and
// on every call the view's word on its family and on the token itself.
func (s *Service) introspectAccess(ctx context.Context, raw string) ([]byte, error) {
	in, err := s.introspector()
	if err != nil {
		return nil, err
	}
	tok, ok := in.verify(raw, s.cfg.Ledger.Now())
	if !ok {
		return inactiveReply, nil // forged, expired, another issuer's: no sync needed
	}
	return in.afterSync(tok, in.sync.Sync(ctx), s.cfg.Ledger.Now())
}

// afterSync is the answer for a verified, unexpired access token once the
// view has been synced, or the error that kept it from syncing: the view
// is asked about the token and its family on every call.
func (in *introspector) afterSync(tok *verifiedToken, syncErr error, now time.Time) ([]byte, error) {
	if syncErr != nil {
		return nil, fmt.Errorf("introspect: %w: %w", ledger.ErrUnavailable, syncErr)
	}
	if e := in.keyEpoch(now); e.gen != tok.epoch {
		// The keys changed while the view synced (a key revoked by a
		// request acknowledged before this one): verify again.
		again, ok := in.verify(tok.raw, now)
		if !ok {
			return inactiveReply, nil
		}
		tok = again
	}
	if !in.view.AccessActive(tok.jti, tok.sid, time.Unix(tok.iat, 0), tok.grantEvent, now) {
		return inactiveReply, nil
	}
	return tok.reply, nil
}

// introspectNow answers the common introspection without the worker pool,
// on the endpoint's own goroutine: a well-formed request of a client held
// in memory, for an access token already verified with the current keys.
// The only wait, the read-your-writes sync, does not block: the request
// joins the next Syncer round and is answered by the goroutine that runs
// it, with the other requests of that round. It reports false, having
// done nothing, for any other request; the pool then serves it as before.
// The answer is the one introspectAccess gives.
func (s *Service) introspectNow(req micro.Request) bool {
	start := time.Now()
	in := s.intro
	if in == nil || s.cfg.Ledger.Ready() != nil {
		return false // the pool path answers, or refuses while the clock is out of bound
	}
	r, ok := decodeTokenRequestFast(req.Data(), s.cfg.MaxRequestBytes)
	if !ok || isRefreshToken(r.Token) {
		return false
	}
	client, ok := s.cfg.Registry.Known(r.ClientID)
	if !ok || !client.Authenticate(r.ClientSecret) {
		return false // the pool looks the client up and answers the error
	}
	now := s.cfg.Ledger.Now()
	tok, ok := in.cached(r.Token, now)
	if !ok {
		return false // the pool verifies the signature
	}
	s.gate.RLock()
	defer s.gate.RUnlock()
	if s.stopped {
		return false // the pool path answers that the service is stopping
	}
	in.direct.Add(1)
	if !tok.validAt(now) {
		s.observe("introspect", OutcomeOK, start)
		s.answer(req, "introspect", inactiveReply)
		return true
	}
	s.inline.Add(1)
	joined := in.sync.SyncThen(func(err error) {
		defer s.inline.Done()
		if body, err := in.afterSync(tok, err, s.cfg.Ledger.Now()); err != nil {
			s.observe("introspect", s.respondError(req, "introspect", err), start)
		} else {
			s.observe("introspect", OutcomeOK, start)
			s.answer(req, "introspect", body)
		}
	})
	if !joined {
		s.inline.Done()
		in.direct.Add(-1)
		return false // the round is full: the pool waits, within the request timeout
	}
	return true
}

// introspectRefresh reports a refresh token active while it is the
// family's current one, within its idle lifetime, and the family active.
// The ledger's state is authoritative and one direct get away.
func (s *Service) introspectRefresh(ctx context.Context, client ledger.Client, raw string) (any, error) {
	tok, err := token.ParseRefreshToken(raw)
	if err != nil {
		return inactiveReply, nil
	}
	st, err := s.cfg.Ledger.Load(ctx, tok.FamilyID.String())
	if errors.Is(err, ledger.ErrUnknownFamily) {
		return inactiveReply, nil
	}
	if err != nil {
		return nil, err
	}
	now := s.cfg.Ledger.Now()
	switch {
	case !st.Exists(), st.ClientID != client.ID,
		!token.HashEqual(token.HashToken(raw), st.TokenHash),
		st.StatusAt(now) != ledger.StatusActive, !now.Before(st.RefreshExpiresAt):
		return inactiveReply, nil
	}
	return api.IntrospectResponse{
		Active: true, TokenType: api.TokenTypeRefresh, Subject: st.Subject, ClientID: st.ClientID,
		Scope: st.Scope, Audience: st.Audience, Issuer: s.cfg.Issuer,
		ExpiresAt: st.RefreshExpiresAt.Unix(), IssuedAt: st.TokenIssuedAt.Unix(), SID: st.FamilyID,
	}, nil
}

func (s *Service) introspector() (*introspector, error) {
	if s.intro == nil {
		return nil, errNoView
	}
	return s.intro, nil
}

// introspector is what access-token introspection keeps between requests:
// a verifier per key set, the tokens it verified, and the sync point with
// the ledger. It holds nothing a revocation can change: whether a token is
// revoked is asked of the view on every call.
type introspector struct {
	keys token.KeySet
	// source, when set, is the key ring's current set, its maximum token
	// age and generation (Service.keySet); keys and maxAge are then unused.
	source func() (token.KeySet, time.Duration, uint64)
	algs   []string
	issuer string
	maxAge time.Duration // how long a retired key still verifies tokens
	now    func() time.Time
	view   *projections.View
	sync   *projections.Syncer

	mu     sync.Mutex // serialises building a key epoch
	epoch  atomic.Pointer[keyEpoch]
	cache  *tokenCache
	hits   atomic.Int64 // verifications answered from the cache (tests)
	misses atomic.Int64 // signatures checked
	direct atomic.Int64 // requests answered by introspectNow (tests)
}

func newIntrospector(cfg Config) (*introspector, error) {
	syncer, err := projections.NewSyncer(cfg.Ledger.LastSeq, cfg.View)
	if err != nil {
		return nil, err
	}
	return &introspector{
		keys: cfg.Keys, algs: cfg.Algs, issuer: cfg.Issuer,
		maxAge: cfg.Defaults.AccessTTL + time.Minute, now: cfg.Ledger.Now,
		view: cfg.View, sync: syncer, cache: newTokenCache(),
	}, nil
}

// keyEpoch is a verifier over the keys published during [from, until) in
// one generation of the key set: the published keys change by the clock
// (a next key activates, a retired key's tokens can no longer be valid)
// or when the key ring holds a new set (a rotation, a revocation). Tokens
// verified in one epoch are checked again in the next, so a key leaving
// the set also takes its tokens out of the cache.
type keyEpoch struct {
	gen         uint64
	keyGen      uint64          // the key set's generation (KeySnapshot.Gen)
	v           *token.Verifier // nil if the configuration is unusable
	from, until time.Time       // until is zero when no change is due
}

func (e *keyEpoch) covers(now time.Time) bool {
	return !now.Before(e.from) && (e.until.IsZero() || now.Before(e.until))
}

// keyEpoch returns the verifier for the keys published at now.
func (in *introspector) keyEpoch(now time.Time) *keyEpoch {
	keys, maxAge, keyGen := in.keys, in.maxAge, uint64(0)
	if in.source != nil {
		keys, maxAge, keyGen = in.source()
	}
	if e := in.epoch.Load(); e != nil && e.keyGen == keyGen && e.covers(now) {
		return e
	}
	in.mu.Lock()
	defer in.mu.Unlock()
	prev := in.epoch.Load()
	if prev != nil && prev.keyGen == keyGen && prev.covers(now) {
		return prev
	}
	e := &keyEpoch{keyGen: keyGen, from: keys.LastChange(now, maxAge), until: keys.NextChange(now, maxAge)}
	if prev != nil {
		e.gen = prev.gen + 1
	}
	// As the JWKS reply: a revoked key and a retired key whose tokens
	// have expired verify nothing.
	e.v, _ = token.NewVerifier(keys.JWKS(now, maxAge), in.algs, in.issuer, in.now)
	in.epoch.Store(e)
	return e
}

// verifiedToken is an access token whose signature, type and issuer were
// verified in epoch, with what introspection needs of its claims and its
// active answer encoded once.
type verifiedToken struct {
	raw           string // the token (the cache's key: no copy)
	jti, sid      string
	iat, nbf, exp int64
	grantEvent    uint64 // the sid_event claim: the family event that granted it
	epoch         uint64
	reply         []byte
}

// validAt checks the token's lifetime as the verifier does (golang-jwt: now
// before exp, not before nbf nor iat).
func (t *verifiedToken) validAt(now time.Time) bool {
	return now.Before(time.Unix(t.exp, 0)) && !now.Before(time.Unix(t.nbf, 0)) && !now.Before(time.Unix(t.iat, 0))
}

// cached returns the token as verified with the current keys, if the cache
// has it; it never checks a signature.
func (in *introspector) cached(raw string, now time.Time) (*verifiedToken, bool) {
	e := in.keyEpoch(now)
	if e.v == nil {
		return nil, false
	}
	if t := in.cache.get(raw); t != nil && t.epoch == e.gen {
		in.hits.Add(1)
		return t, true
	}
	return nil, false
}

// verify returns the verified token, from the cache when its signature was
// already checked with the current keys. Failures are not cached: a
// forged token costs a verification each time, as before the cache.
func (in *introspector) verify(raw string, now time.Time) (*verifiedToken, bool) {
	if t, ok := in.cached(raw, now); ok {
		return t, t.validAt(now)
	}
	e := in.keyEpoch(now)
	if e.v == nil {
		return nil, false
	}
	in.misses.Add(1)
	c, err := e.v.Verify(raw)
	if err != nil {
		return nil, false
	}
	reply, err := marshalReply(api.IntrospectResponse{
		Active: true, TokenType: api.TokenTypeBearer, Subject: c.Subject, ClientID: c.ClientID,
		Scope: c.Scope, Audience: c.Audience, Issuer: c.Issuer, ExpiresAt: c.ExpiresAt,
		IssuedAt: c.IssuedAt, NotBefore: c.NotBefore, JTI: c.JTI, SID: c.SID,
	})
	if err != nil {
		return nil, false
	}
	t := &verifiedToken{raw: raw, jti: c.JTI, sid: c.SID, iat: c.IssuedAt, nbf: c.NotBefore, exp: c.ExpiresAt, grantEvent: c.FamilyEvent, epoch: e.gen, reply: reply}
	in.cache.put(raw, t, now)
	return t, t.validAt(now)
}

// Size of the verified-token cache: at most tokenCacheSize entries, each
// the token, its reply and a few ids (about 1 KiB), in tokenCacheShards
// independently locked shards.
const (
	tokenCacheShards = 16
	tokenCacheSize   = 1 << 14
	tokenShardSize   = tokenCacheSize / tokenCacheShards
)

// tokenCache maps an access token's exact string to the token as verified.
// The key is the whole token, so a lookup can only find the very token
// that was verified, whatever the hash does. A full shard first drops its
// expired entries, then arbitrary ones down to seven eighths, so eviction
// costs a shard scan every eighth of a shard's inserts at most.
type tokenCache struct {
	seed   maphash.Seed // picks the shard
	shards [tokenCacheShards]tokenShard
}

type tokenShard struct {
	mu sync.RWMutex
	m  map[string]*verifiedToken
	_  [40]byte // keep shards' locks on separate cache lines
}

func newTokenCache() *tokenCache { return &tokenCache{seed: maphash.MakeSeed()} }

func (c *tokenCache) shard(raw string) *tokenShard {
	return &c.shards[maphash.String(c.seed, raw)%tokenCacheShards]
}

func (c *tokenCache) get(raw string) *verifiedToken {
	sh := c.shard(raw)
	sh.mu.RLock()
	t := sh.m[raw]
	sh.mu.RUnlock()
	return t
}

func (c *tokenCache) put(raw string, t *verifiedToken, now time.Time) {
	sh := c.shard(raw)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if sh.m == nil {
		sh.m = make(map[string]*verifiedToken)
	}
	if _, ok := sh.m[raw]; !ok && len(sh.m) >= tokenShardSize {
		n := now.Unix()
		for k, old := range sh.m {
			if n >= old.exp {
				delete(sh.m, k)
			}
		}
		for k := range sh.m {
			if len(sh.m) <= tokenShardSize*7/8 {
				break
			}
			delete(sh.m, k)
		}
	}
	sh.m[raw] = t
}

// decodeTokenRequestFast decodes the usual shape of a token request without
// encoding/json, which is most of an introspection's own CPU otherwise: one
// object whose members are the known lower-case names, each at most once,
// with string values of printable ASCII and no escapes, JSON whitespace
// only. It reports false for anything else, valid or not, and for every
// request DecodeTokenRequest would refuse; the caller then decodes with
// DecodeTokenRequest. So it accepts a subset of what DecodeTokenRequest
// accepts, with the same result (TestDecodeTokenRequestFast, and its fuzz
// target, hold it to that).
func decodeTokenRequestFast(body []byte, limit int) (api.TokenRequest, bool) {
	var r api.TokenRequest
	ok := decodeFlat(body, limit, tokenRequestKeys, []*string{&r.ClientID, &r.ClientSecret, &r.Token, &r.TokenTypeHint})
	switch {
	case !ok, r.ClientID == "", r.ClientSecret == "", r.Token == "":
		return r, false
	case r.TokenTypeHint != "" && r.TokenTypeHint != api.HintRefreshToken && r.TokenTypeHint != api.HintAccessToken:
		return r, false
	}
	return r, true
}

// The members the fast paths know, in the order of their destinations.
var (
	tokenRequestKeys   = []string{"client_id", "client_secret", "token", "token_type_hint"}
	issueRequestKeys   = []string{"client_id", "client_secret", "subject", "scope"}
	refreshRequestKeys = []string{"client_id", "client_secret", "refresh_token", "scope"}
)

// decodeFlat is the fast path of the request decoders: a JSON object, at
// most limit bytes, whose members are all plain strings (ASCII, no control
// characters, no escapes) under keys exactly as in keys, each at most once,
// with nothing after it; the value of keys[i] goes to *dsts[i] (at most
// eight keys). decodeFlat reports false for anything else, and the caller
// then decodes with decodeStrict, which accepts or refuses it as the
// contract says: so the fast path never decides a request differently, it
// only decides it sooner.
func decodeFlat(body []byte, limit int, keys []string, dsts []*string) bool {
	if len(body) > limit {
		return false
	}
	i := skipWS(body, 0)
	if i >= len(body) || body[i] != '{' {
		return false
	}
	i++
	var seen uint8
	for {
		key, j, ok := plainString(body, skipWS(body, i))
		if !ok {
			return false
		}
		i = skipWS(body, j)
		if i >= len(body) || body[i] != ':' {
			return false
		}
		val, j, ok := plainString(body, skipWS(body, i+1))
		if !ok {
			return false
		}
		k := slices.Index(keys, string(key))
		if k < 0 || seen&(1<<k) != 0 {
			return false
		}
		seen |= 1 << k
		*dsts[k] = string(val)
		i = skipWS(body, j)
		if i < len(body) && body[i] == ',' {
			i++
			continue
		}
		if i < len(body) && body[i] == '}' {
			i++
			break
		}
		return false
	}
	return skipWS(body, i) == len(body)
}

// skipWS skips JSON whitespace from i.
func skipWS(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// plainString reads a JSON string at i made only of ASCII without control
// characters or escapes, and returns its contents and the index after it.
func plainString(b []byte, i int) ([]byte, int, bool) {
	if i >= len(b) || b[i] != '"' {
		return nil, i, false
	}
	n := bytes.IndexByte(b[i+1:], '"')
	if n < 0 || !ledger.PlainText(b[i+1:i+1+n]) {
		return nil, i, false
	}
	return b[i+1 : i+1+n], i + n + 2, true
}
