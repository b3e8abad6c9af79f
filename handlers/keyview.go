package handlers

import (
	"time"

	"github.com/tokenledger/tokenledger/ledger/token"
)

// keyView is what the service derives from its signing keys for an
// interval of time in which they do not change by the clock: the signer,
// the JWKS reply and the key set. It is rebuilt when the key ring holds a
// new set (gen) or the clock leaves [from, until).
type keyView struct {
	gen         uint64
	from, until time.Time // until is zero when no change is due
	set         token.KeySet
	maxAge      time.Duration
	signer      *token.Signer
	jwks        []byte
}

func (v *keyView) covers(gen uint64, now time.Time) bool {
	return v.gen == gen && !now.Before(v.from) && (v.until.IsZero() || now.Before(v.until))
}

// keySet is the key set the service holds now, how long retired keys
// stay published, and the set's generation: the key ring's when there is
// one, else the fixed Config.Keys (generation 0).
func (s *Service) keySet() (token.KeySet, time.Duration, uint64) {
	if s.cfg.Ring != nil {
		if snap := s.cfg.Ring.Snapshot(); snap != nil {
			return snap.Set, snap.MaxTokenAge, snap.Gen
		}
	}
	return s.cfg.Keys, s.cfg.Defaults.AccessTTL + time.Minute, 0
}

// keysAt returns the key view for now.
func (s *Service) keysAt(now time.Time) (*keyView, error) {
	set, maxAge, gen := s.keySet()
	if v := s.keyView.Load(); v != nil && v.covers(gen, now) {
		return v, nil
	}
	s.keyMu.Lock()
	defer s.keyMu.Unlock()
	if v := s.keyView.Load(); v != nil && v.covers(gen, now) {
		return v, nil
	}
	v := &keyView{gen: gen, from: set.LastChange(now, maxAge), until: set.NextChange(now, maxAge), set: set, maxAge: maxAge}
	key, ok := set.Signing(now)
	if !ok {
		return nil, errNoSigningKey
	}
	var err error
	if v.signer, err = token.NewSigner(key); err != nil {
		return nil, err
	}
	// The next key is published ahead of signing; retired keys while
	// tokens they signed can still be valid; revoked keys never.
	if v.jwks, err = marshalReply(map[string]any{"keys": set.JWKS(now, maxAge)}); err != nil {
		return nil, err
	}
	s.keyView.Store(v)
	return v, nil
}

// sign signs claims with the signing key at the ledger's clock.
func (s *Service) sign(c token.AccessClaims) (string, error) {
	v, err := s.keysAt(s.cfg.Ledger.Now())
	if err != nil {
		return "", err
	}
	return v.signer.Sign(c)
}
