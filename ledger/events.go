package ledger

import (
	"crypto/sha256"
	"encoding/hex"

	"encoding/json"
	"fmt"
	"time"

	"github.com/oklog/ulid/v2"
)

// SchemaVersion is the envelope schema every event is written with.
const SchemaVersion = 1

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
	// State is the family state after this event; the store writes it so
	// the next decision loads in one read. Nil for events read without it.
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

// Type returns the wire type of a payload, or "" for an unknown one.
func TypeOf(data any) EventType {
	switch data.(type) {
	case FamilyIssued:
		return TypeFamilyIssued
	case RefreshRotated:
		return TypeRefreshRotated
	case RefreshUsed:
		return TypeRefreshUsed
	case GraceRetried:
		return TypeGraceRetried
	case ReuseDetected:
		return TypeReuseDetected
	case FamilyRevoked:
		return TypeFamilyRevoked
	case AccessRevoked:
		return TypeAccessRevoked
	case AccessCutoff:
		return TypeAccessCutoff
	case SecurityHandled:
		return TypeSecurityHandled
	}
	return ""
}

type wireEvent struct {
	ID         string          `json:"id"`
	Type       EventType       `json:"type"`
	Schema     int             `json:"schema"`
	FamilyID   string          `json:"family_id"`
	OccurredAt time.Time       `json:"occurred_at"`
	Cause      Cause           `json:"cause"`
	Prev       string          `json:"prev"`
	Data       json.RawMessage `json:"data"`
	State      *State          `json:"state,omitempty"`
}

// outEvent is wireEvent for encoding: the payload is marshalled in place,
// not through a json.RawMessage that would be validated and compacted again.
type outEvent struct {
	ID         string    `json:"id"`
	Type       EventType `json:"type"`
	Schema     int       `json:"schema"`
	FamilyID   string    `json:"family_id"`
	OccurredAt time.Time `json:"occurred_at"`
	Cause      Cause     `json:"cause"`
	Prev       string    `json:"prev"`
	Data       any       `json:"data"`
	State      *State    `json:"state,omitempty"`
}

// EncodeEvent returns the event's stored JSON.
func EncodeEvent(e Event) ([]byte, error) {
	return AppendEvent(make([]byte, 0, 2048), e) // a rotation with its snapshot is ~1.6 KB
}

// appendEncoded is EncodeEvent writing into b's spare capacity when it
// can (the bytes then alias b).
func AppendEvent(b []byte, e Event) ([]byte, error) {
	t := TypeOf(e.Data)
	if t == "" {
		return nil, fmt.Errorf("encode event %s: unknown payload %T", e.ID, e.Data)
	}
	if b, ok := appendEvent(b, e, t); ok {
		return b, nil
	}
	b, err := json.Marshal(outEvent{
		ID: e.ID, Type: t, Schema: SchemaVersion, FamilyID: e.FamilyID,
		OccurredAt: e.OccurredAt.UTC(), Cause: e.Cause, Prev: e.Prev,
		Data: e.Data, State: e.State,
	})
	if err != nil {
		return nil, fmt.Errorf("encode event %s: %w", e.ID, err)
	}
	return b, nil
}

// DecodeEvent parses a stored event. An unknown type or schema is an error:
// an event this code cannot read must not be folded. Unknown fields are
// ignored, so writers may add optional fields.
func DecodeEvent(b []byte) (Event, error) {
	if e, ok := decodeFast(b); ok {
		return e, nil
	}
	return decodeSlow(b)
}

// DecodeEventSkipState is DecodeEvent without the state snapshot (left
// nil), for readers that fold events themselves: it is the cheaper read.
func DecodeEventSkipState(b []byte) (Event, error) {
	if e, ok := decodeFastOpts(b, false); ok {
		return e, nil
	}
	e, err := decodeSlow(b)
	e.State = nil
	return e, err
}

// decodeSlow is DecodeEvent with encoding/json, for what the fast path
// does not take.
func decodeSlow(b []byte) (Event, error) {
	var w wireEvent
	if err := json.Unmarshal(b, &w); err != nil {
		return Event{}, fmt.Errorf("decode event: %w", err)
	}
	if w.Schema != SchemaVersion {
		return Event{}, fmt.Errorf("decode event %s: schema %d: %w", w.ID, w.Schema, ErrUnknownEvent)
	}
	var err error
	e := Event{ID: w.ID, Type: w.Type, FamilyID: w.FamilyID, OccurredAt: w.OccurredAt,
		Cause: w.Cause, Prev: w.Prev, State: w.State}
	switch w.Type {
	case TypeFamilyIssued:
		e.Data, err = decodeData[FamilyIssued](w.Data)
	case TypeRefreshRotated:
		e.Data, err = decodeData[RefreshRotated](w.Data)
	case TypeRefreshUsed:
		e.Data, err = decodeData[RefreshUsed](w.Data)
	case TypeGraceRetried:
		e.Data, err = decodeData[GraceRetried](w.Data)
	case TypeReuseDetected:
		e.Data, err = decodeData[ReuseDetected](w.Data)
	case TypeFamilyRevoked:
		e.Data, err = decodeData[FamilyRevoked](w.Data)
	case TypeAccessRevoked:
		e.Data, err = decodeData[AccessRevoked](w.Data)
	case TypeAccessCutoff:
		e.Data, err = decodeData[AccessCutoff](w.Data)
	case TypeSecurityHandled:
		e.Data, err = decodeData[SecurityHandled](w.Data)
	default:
		return Event{}, fmt.Errorf("decode event %s: type %q: %w", w.ID, w.Type, ErrUnknownEvent)
	}
	if err != nil {
		return Event{}, fmt.Errorf("decode event %s (%s): %w", w.ID, w.Type, err)
	}
	return e, nil
}

func decodeData[T any](b json.RawMessage) (T, error) {
	var v T
	err := json.Unmarshal(b, &v)
	return v, err
}

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
