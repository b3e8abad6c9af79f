package ledger

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"reflect"
	"time"

	"github.com/oklog/ulid/v2"
)

// SchemaVersion is the envelope schema every event is written with: 2,
// whose family events store their Base (the state before the event, less
// what the event sets) where schema 1's stored the whole state after them.
// Both are read (see DecodeEvent).
const SchemaVersion = 2

// EventType is the stable, versioned name of an event on the wire. A change
// of meaning is a new type string, never a new meaning for an old one.
type EventType string

// The closed set of ledger events.
const (
	TypeFamilyIssued    EventType = "family.issued.v1"
	TypeRefreshRotated  EventType = "refresh.rotated.v1"
	TypeRefreshUsed     EventType = "refresh.used.v1"
	TypeGraceRetried    EventType = "refresh.grace_retried.v1"
	TypeReuseDetected   EventType = "refresh.reuse_detected.v1"
	TypeFamilyRevoked   EventType = "family.revoked.v1"
	TypeAccessRevoked   EventType = "access.revoked.v1"
	TypeAccessCutoff    EventType = "family.access_cutoff.v1"
	TypeSecurityHandled EventType = "security.handled.v1"
)

// Cause kinds: why an event was appended.
const (
	CauseRequest  = "request"        // a client's request; ID is the request id
	CauseReuse    = "reuse"          // reuse of a rotated refresh token
	CauseRevoke   = "revoke"         // RFC 7009 revocation by the client
	CauseAdmin    = "admin"          // an operator's tokens.admin.revoke
	CauseSecurity = "security_event" // a security event; ID is its id
)

// Cause says why an event happened. Every revocation carries one.
type Cause struct {
	Kind   string `json:"kind"`
	ID     string `json:"id,omitempty"`
	Reason string `json:"reason,omitempty"`
}

// Event is one immutable fact in the ledger: the envelope plus one payload
// from the closed set below.
type Event struct {
	ID         string    // ULID, minted by the caller
	Type       EventType // derived from Data on encode
	FamilyID   string
	OccurredAt time.Time
	Cause      Cause
	// Prev is the hex SHA-256 of the family's previous event as stored, or
	// empty for a family's first event: the per-family hash chain.
	Prev string
	// Data is one of the payload types of this file.
	Data any
	// State is the family state after this event, so that the next
	// decision loads in one read. It must be Apply(prev, e) of the
	// family's previous state (the store sets it so): EncodeEvent stores
	// only Base(State, e), from which DecodeEvent gives State back. Nil
	// for events outside the families and events read without it.
	State *State
}

// FamilyIssued starts a family with its generation-0 refresh token.
type FamilyIssued struct {
	ClientID         string          `json:"client_id"`
	Subject          string          `json:"subject"`
	Scope            string          `json:"scope"`
	Audience         []string        `json:"audience,omitempty"`
	Claims           json.RawMessage `json:"claims,omitempty"`
	Version          int             `json:"version"`
	TokenHash        string          `json:"token_hash"`
	RefreshExpiresAt time.Time       `json:"refresh_expires_at"`
	ExpiresAt        time.Time       `json:"expires_at"`
	Access           AccessGrant     `json:"access"`
	// RolloutID names the rollout whose version the family started at
	// (rollout.go); empty when none covered it.
	RolloutID string `json:"rollout_id,omitempty"`
}

// AccessGrant records an access token handed out, so it can be revoked.
type AccessGrant struct {
	JTI       string    `json:"jti"`
	Scope     string    `json:"scope"`
	ExpiresAt time.Time `json:"expires_at"`
}

// RefreshRotated replaces the current refresh token with its successor.
type RefreshRotated struct {
	FromGeneration   uint64      `json:"from_generation"`
	ToGeneration     uint64      `json:"to_generation"`
	PresentedHash    string      `json:"presented_hash"`
	TokenHash        string      `json:"token_hash"`
	SealedSuccessor  string      `json:"sealed_successor"`
	RefreshExpiresAt time.Time   `json:"refresh_expires_at"`
	Version          int         `json:"version"`
	Access           AccessGrant `json:"access"`
	// RolloutID and FromVersion are set when a rollout moved the family
	// from FromVersion onto Version with this rotation (rollout.go).
	RolloutID   string `json:"rollout_id,omitempty"`
	FromVersion int    `json:"from_version,omitempty"`
}

// RefreshUsed records a refresh that kept the current refresh token
// (periodic rotation) and resets its idle lifetime.
type RefreshUsed struct {
	Generation       uint64      `json:"generation"`
	RefreshExpiresAt time.Time   `json:"refresh_expires_at"`
	Access           AccessGrant `json:"access"`
}

// GraceRetried records a rotated token presented again inside the grace
// window, answered with the successor it was rotated to.
type GraceRetried struct {
	PresentedGeneration uint64        `json:"presented_generation"`
	SuccessorGeneration uint64        `json:"successor_generation"`
	RotatedAgo          time.Duration `json:"rotated_ago_ns"`
	Access              AccessGrant   `json:"access"`
}

// ReuseDetected records a genuine but no longer current refresh token
// presented outside the grace window. It revokes the family (cause reuse).
type ReuseDetected struct {
	PresentedGeneration uint64 `json:"presented_generation"`
	CurrentGeneration   uint64 `json:"current_generation"`
	PresentedHash       string `json:"presented_hash"`
	// RotatedAgo is how long before this event the presented token stopped
	// being current; zero when that moment is not known.
	RotatedAgo time.Duration `json:"rotated_ago_ns"`
	// WinnerEventID and WinnerRequest identify the rotation that replaced
	// the presented token, when known.
	WinnerEventID string `json:"winner_event_id,omitempty"`
	WinnerRequest string `json:"winner_request,omitempty"`
}

// FamilyRevoked ends a family; its cause is in the envelope.
type FamilyRevoked struct {
	Generation uint64 `json:"generation"`
}

// AccessRevoked denies one access token of the family until it expires.
type AccessRevoked struct {
	JTI       string    `json:"jti"`
	ExpiresAt time.Time `json:"expires_at"`
}

// AccessCutoff denies every access token of the family issued at or before
// the event (a security action that forces a refresh); the family stays
// active and its refresh token keeps working.
type AccessCutoff struct {
	Generation uint64 `json:"generation"`
}

// SecurityHandled records what the worker did with a security event.
type SecurityHandled struct {
	EventType string    `json:"event_type"`
	Severity  string    `json:"severity"`
	Action    string    `json:"action"`
	Selector  *Selector `json:"selector,omitempty"`
	Families  []string  `json:"families"`
	// MoreFamilies counts selected families left out of Families to keep
	// the event small.
	MoreFamilies int `json:"more_families,omitempty"`
}

// Selector is what a security event selected families by.
type Selector struct {
	Subject  string `json:"subject,omitempty"`
	ClientID string `json:"client_id,omitempty"`
	FamilyID string `json:"family_id,omitempty"`
}

// payloads is THE list: each event type and its payload struct, whose
// tags are its schema.
var payloads = map[EventType]payload{
	TypeFamilyIssued:    payloadOf[FamilyIssued](),
	TypeRefreshRotated:  payloadOf[RefreshRotated](),
	TypeRefreshUsed:     payloadOf[RefreshUsed](),
	TypeGraceRetried:    payloadOf[GraceRetried](),
	TypeReuseDetected:   payloadOf[ReuseDetected](),
	TypeFamilyRevoked:   payloadOf[FamilyRevoked](),
	TypeAccessRevoked:   payloadOf[AccessRevoked](),
	TypeAccessCutoff:    payloadOf[AccessCutoff](),
	TypeSecurityHandled: payloadOf[SecurityHandled](),
	// Rollouts (rollout.go).
	TypeRolloutStarted:     payloadOf[RolloutStarted](),
	TypeRolloutRaised:      payloadOf[RolloutRaised](),
	TypeRolloutDeadlineSet: payloadOf[RolloutDeadlineSet](),
	TypeVersionRefused:     payloadOf[VersionRefused](),
	// Signing-key events (keyevents.go).
	TypeKeyPublished: payloadOf[KeyPublished](),
	TypeKeyActivated: payloadOf[KeyActivated](),
	TypeKeyRetired:   payloadOf[KeyRetired](),
	TypeKeyRevoked:   payloadOf[KeyRevoked](),
}

// typesOf is payloads the other way round.
var typesOf = func() map[reflect.Type]EventType {
	m := make(map[reflect.Type]EventType, len(payloads))
	for t, p := range payloads {
		m[p.goType] = t
	}
	return m
}()

// TypeOf returns the wire type of a payload, or "" for an unknown one.
func TypeOf(data any) EventType { return typesOf[reflect.TypeOf(data)] }

// ValidFamilyID reports whether id is a family id (a ULID), which also makes
// it safe to put in a subject.
func ValidFamilyID(id string) bool {
	_, err := ulid.ParseStrict(id)
	return err == nil && len(id) == ulid.EncodedSize
}

// EventHash is the hex SHA-256 of an event's stored bytes: the link the
// next event of the family carries in Prev.
func EventHash(data []byte) string {
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:])
}
