package token

import (
	"regexp"
	"slices"
	"time"

	"github.com/tokenledger/tokenledger/api"
)

// Key states, as KeySet.State names them.
const (
	// KeyPublished: the next key, in the JWKS ahead of signing.
	KeyPublished = "published"
	// KeyActive: the key new tokens are signed with.
	KeyActive = "active"
	// KeyRetired: it no longer signs; published while its tokens can be valid.
	KeyRetired = "retired"
	// KeyExpired: retired, and every token it signed has expired: no
	// longer published.
	KeyExpired = "expired"
	// KeyRevoked: withdrawn at once; every token it signed is inactive.
	KeyRevoked = "revoked"
)

var kidPattern = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

// ValidKID reports whether kid has the form of a key id (base64url, as
// GenerateKey makes them, at most 64 characters): safe in a subject.
func ValidKID(kid string) bool { return kidPattern.MatchString(kid) }

// KeySet is the signing keys and their lifecycle. Which key signs, and
// which are published, is a pure function of the set and the instant, so
// every instance holding the same set agrees without talking:
//   - the signing key at now is the key, not revoked nor retired at or
//     before now, with the latest ActivatesAt at or before now (a later
//     key in the list wins a tie);
//   - a key that signed before is retired from its successor's
//     activation, and published until PublishedUntil;
//   - a key whose ActivatesAt is ahead is the next key: published, not
//     signing;
//   - a revoked key is in no JWKS and signs nothing.
type KeySet struct {
	Keys []Key
}

// Clone returns a copy whose Keys can be changed without touching ks.
func (ks KeySet) Clone() KeySet { return KeySet{Keys: slices.Clone(ks.Keys)} }

// Index returns the position of the key kid, or -1.
func (ks KeySet) Index(kid string) int {
	return slices.IndexFunc(ks.Keys, func(k Key) bool { return k.KID == kid })
}

// signingIndex is the position of the signing key at now, or -1.
func (ks KeySet) signingIndex(now time.Time) int {
	best := -1
	for i, k := range ks.Keys {
		switch {
		case !k.RevokedAt.IsZero(), !k.RetiredAt.IsZero() && !now.Before(k.RetiredAt),
			k.ActivatesAt.After(now):
			continue
		}
		if best < 0 || !k.ActivatesAt.Before(ks.Keys[best].ActivatesAt) {
			best = i
		}
	}
	return best
}

// Signing is the key that signs new tokens at now.
func (ks KeySet) Signing(now time.Time) (Key, bool) {
	if i := ks.signingIndex(now); i >= 0 {
		return ks.Keys[i], true
	}
	return Key{}, false
}

// Current is the last key of the list neither retired nor revoked: the
// key that signs, or the next one once it is published. Prefer Signing.
func (ks KeySet) Current() (Key, bool) {
	for i := len(ks.Keys) - 1; i >= 0; i-- {
		if k := ks.Keys[i]; k.RetiredAt.IsZero() && k.RevokedAt.IsZero() {
			return k, true
		}
	}
	return Key{}, false
}

// Next is the published key that will sign next (ActivatesAt after now).
func (ks KeySet) Next(now time.Time) (Key, bool) {
	for i := len(ks.Keys) - 1; i >= 0; i-- {
		if k := ks.Keys[i]; k.RevokedAt.IsZero() && k.ActivatesAt.After(now) {
			return k, true
		}
	}
	return Key{}, false
}

// RetiredAt is when the key at i stopped signing as of now: its recorded
// retirement, or the activation of a later signing key; zero if it has
// not stopped (or never signed).
func (ks KeySet) RetiredAt(i int, now time.Time) time.Time {
	k := ks.Keys[i]
	if !k.RetiredAt.IsZero() {
		if now.Before(k.RetiredAt) {
			return time.Time{}
		}
		return k.RetiredAt
	}
	if k.ActivatesAt.After(now) {
		return time.Time{}
	}
	s := ks.signingIndex(now)
	if s < 0 || s == i {
		return time.Time{}
	}
	return ks.Keys[s].ActivatesAt
}

// PublishedUntil is when the key at i, retired as of now, leaves the
// JWKS: its recorded PublishedUntil, else its retirement plus maxAge.
// Zero while it is not retired.
func (ks KeySet) PublishedUntil(i int, now time.Time, maxAge time.Duration) time.Time {
	if until := ks.Keys[i].PublishedUntil; !until.IsZero() {
		return until
	}
	if r := ks.RetiredAt(i, now); !r.IsZero() {
		return r.Add(maxAge)
	}
	return time.Time{}
}

// State is the state of the key at i at now (the Key* constants).
func (ks KeySet) State(i int, now time.Time, maxAge time.Duration) string {
	k := ks.Keys[i]
	switch {
	case !k.RevokedAt.IsZero():
		return KeyRevoked
	case k.ActivatesAt.After(now):
		return KeyPublished
	case ks.RetiredAt(i, now).IsZero():
		return KeyActive
	case now.Before(ks.PublishedUntil(i, now, maxAge)):
		return KeyRetired
	}
	return KeyExpired
}

// JWKS returns the public keys published at now: the signing key, the
// next one, and retired keys until their last token expired (maxAge
// after retirement unless recorded otherwise); never a revoked key.
func (ks KeySet) JWKS(now time.Time, maxAge time.Duration) []JWK {
	out := make([]JWK, 0, len(ks.Keys))
	for i, k := range ks.Keys {
		switch ks.State(i, now, maxAge) {
		case KeyPublished, KeyActive, KeyRetired:
			out = append(out, k.PublicJWK())
		}
	}
	return out
}

// NextChange is the first instant after now at which the signing key or
// the JWKS changes by the clock alone (a next key activates, a retired key
// leaves), or zero if none is due.
func (ks KeySet) NextChange(now time.Time, maxAge time.Duration) time.Time {
	var next time.Time
	earlier := func(t time.Time) {
		if t.After(now) && (next.IsZero() || t.Before(next)) {
			next = t
		}
	}
	for i, k := range ks.Keys {
		if !k.RevokedAt.IsZero() {
			continue
		}
		earlier(k.ActivatesAt)
		earlier(k.RetiredAt)
		earlier(ks.PublishedUntil(i, now, maxAge))
	}
	return next
}

// KeyInfo is a key as tokens.admin.keys.list shows it: no key material
// (the wire type, spelled in api).
type KeyInfo = api.KeyInfo

// Info lists the keys at now, in the set's order (oldest first).
func (ks KeySet) Info(now time.Time, maxAge time.Duration) []KeyInfo {
	out := make([]KeyInfo, 0, len(ks.Keys))
	for i, k := range ks.Keys {
		info := KeyInfo{KID: k.KID, Alg: k.Alg, State: ks.State(i, now, maxAge), CreatedAt: k.CreatedAt.UTC(),
			ActivatesAt: k.ActivatesAt.UTC(), RevokedAt: k.RevokedAt.UTC()}
		if k.RevokedAt.IsZero() {
			info.RetiredAt = ks.RetiredAt(i, now).UTC()
			info.PublishedUntil = ks.PublishedUntil(i, now, maxAge).UTC()
		}
		out = append(out, info)
	}
	return out
}

// LastChange is the last instant at or before now at which the signing
// key or the JWKS changed by the clock (see NextChange), or zero.
func (ks KeySet) LastChange(now time.Time, maxAge time.Duration) time.Time {
	var last time.Time
	later := func(t time.Time) {
		if !t.After(now) && t.After(last) {
			last = t
		}
	}
	for i, k := range ks.Keys {
		later(k.ActivatesAt)
		later(k.RetiredAt)
		later(k.RevokedAt)
		if k.RevokedAt.IsZero() {
			later(ks.PublishedUntil(i, now, maxAge))
		}
	}
	return last
}
