package ledger

import "time"

// Signing-key events: every change of the signing keys (SPEC §1) is a fact
// in the ledger, stored on the subject ledger.keys.<kid> (no family: the
// envelope's family_id is empty and it carries no state). They name the
// key by its kid and algorithm and never hold key material: the keys
// themselves live sealed with the KEK in the keys bucket.
const (
	// TypeKeyPublished: a new key was created and published in the JWKS;
	// it signs from ActivatesAt (created and published are one step).
	TypeKeyPublished EventType = "key.published.v1"
	// TypeKeyActivated: the key became the one every instance signs with.
	TypeKeyActivated EventType = "key.activated.v1"
	// TypeKeyRetired: the key stopped signing (its successor activated);
	// it stays published until PublishedUntil, when its last token expired.
	TypeKeyRetired EventType = "key.retired.v1"
	// TypeKeyRevoked: the key left the JWKS at once and every token it
	// signed is inactive.
	TypeKeyRevoked EventType = "key.revoked.v1"
)

// CauseSchedule is the cause kind of a key change the schedule made (a
// periodic rotation, an activation or retirement falling due).
const CauseSchedule = "schedule"

// KeyPublished records a new signing key in the JWKS, ahead of signing.
type KeyPublished struct {
	KID string `json:"kid"`
	Alg string `json:"alg"`
	// ActivatesAt is when instances start signing with it: at least one
	// JWKS cache period after publication, except after an emergency
	// revocation of the signing key, when it signs at once.
	ActivatesAt time.Time `json:"activates_at"`
}

// KeyActivated records the key every instance signs with from At.
type KeyActivated struct {
	KID string    `json:"kid"`
	Alg string    `json:"alg"`
	At  time.Time `json:"at"`
}

// KeyRetired records a key that stopped signing at At, published until
// PublishedUntil (At plus the longest access-token lifetime and a margin).
type KeyRetired struct {
	KID            string    `json:"kid"`
	At             time.Time `json:"at"`
	PublishedUntil time.Time `json:"published_until"`
}

// KeyRevoked records a key withdrawn at once: it leaves the JWKS and every
// token it signed is inactive. TokensUntil is when the last token it can
// have signed expires (after it, the revocation stops mattering).
type KeyRevoked struct {
	KID         string    `json:"kid"`
	TokensUntil time.Time `json:"tokens_until"`
}

// IsKeyEvent reports whether t is a signing-key event (stored on
// ledger.keys.<kid>, outside the families).
func IsKeyEvent(t EventType) bool {
	switch t {
	case TypeKeyPublished, TypeKeyActivated, TypeKeyRetired, TypeKeyRevoked:
		return true
	}
	return false
}

// KeyEventKID is the kid a signing-key event (KeyPublished, KeyActivated,
// KeyRetired, KeyRevoked) names, the last token of its subject
// ledger.keys.<kid>; "" for any other event data.
func KeyEventKID(data any) string {
	switch d := data.(type) {
	case KeyPublished:
		return d.KID
	case KeyActivated:
		return d.KID
	case KeyRetired:
		return d.KID
	case KeyRevoked:
		return d.KID
	}
	return ""
}
