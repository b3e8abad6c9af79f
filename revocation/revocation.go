package revocation

import "time"

// Defaults of the feed.
const (
	// DefaultStream is the JetStream stream that keeps the announcements.
	DefaultStream = "TOKENLEDGER_REVOCATIONS"
	// DefaultPrefix is the service's subject prefix the feed's subjects
	// start with.
	DefaultPrefix = "tokens"
)

// Announcement kinds: the last token of the subject an announcement is
// published on.
const (
	KindFamily = "family" // a family was revoked: all its tokens are dead
	KindAccess = "access" // one access token (JTI) is denied
	KindCutoff = "cutoff" // access tokens of the family granted before its event FamilyEvent are denied
	KindKey    = "key"    // a signing key (KID) was revoked: every token it signed is denied
)

// Announcement is one message of the revocation feed.
type Announcement struct {
	Kind string `json:"kind"`
	// FamilyID is empty for a key revocation.
	FamilyID string `json:"family_id"`
	JTI      string `json:"jti,omitempty"`
	// KID, for a key revocation, is the revoked key's id: every token
	// whose JWS header names it is denied.
	KID string `json:"kid,omitempty"`
	// At is when the revocation happened.
	At time.Time `json:"at"`
	// FamilyEvent, for a cutoff, is the cutoff's number among its family's
	// events: the access tokens whose sid_event claim is lower are denied,
	// by stream order and no clock. Tokens without the claim (from builds
	// before it) are denied when issued at or before At.
	FamilyEvent uint64 `json:"family_event,omitempty"`
	// ExpiresAt is when the announcement stops mattering: no access token
	// it denies can be valid after it, so a subscriber may forget it then.
	ExpiresAt time.Time `json:"expires_at"`
	// Cause is the cause kind (reuse, revoke, admin, security_event).
	Cause     string `json:"cause"`
	EventID   string `json:"event_id"`
	LedgerSeq uint64 `json:"ledger_seq"`
}

// Subject is the subject announcements of a kind are published on:
// <prefix>.revocations.<kind>.
func Subject(prefix, kind string) string { return prefix + ".revocations." + kind }

// Subjects is the wildcard of every kind's subject, which the feed's
// stream captures and a subscriber filters on.
func Subjects(prefix string) string { return Subject(prefix, "*") }
