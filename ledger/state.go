package ledger

import (
	"encoding/json"
	"time"
)

// Status is a family's lifecycle state as recorded by events. Expiry is by
// time and never recorded: see State.ActiveAt.
type Status string

// Family statuses.
const (
	StatusActive  Status = "active"
	StatusRevoked Status = "revoked"
	StatusExpired Status = "expired"
)

// State is a family's current state: the fold of its events. The store keeps
// a copy in each event so that a decision needs one read.
type State struct {
	FamilyID string          `json:"family_id"`
	ClientID string          `json:"client_id"`
	Subject  string          `json:"subject"`
	Scope    string          `json:"scope"`
	Audience []string        `json:"audience,omitempty"`
	Claims   json.RawMessage `json:"claims,omitempty"`
	Version  int             `json:"version"`
	Revoked  *Revocation     `json:"revoked,omitempty"`

	CreatedAt time.Time `json:"created_at"`
	ExpiresAt time.Time `json:"expires_at"`

	// The current refresh token.
	Generation       uint64    `json:"generation"`
	TokenHash        string    `json:"token_hash"`
	TokenIssuedAt    time.Time `json:"token_issued_at"`
	RefreshExpiresAt time.Time `json:"refresh_expires_at"`
	// RotatedAt is when the family last rotated (zero if never).
	RotatedAt time.Time `json:"rotated_at,omitzero"`
	// Previous is the token the current one replaced, kept for grace
	// retries and reuse lineage.
	Previous *Previous `json:"previous,omitempty"`
	// AccessCutoff: access tokens of the family issued at or before this
	// instant are denied (zero: none).
	AccessCutoff time.Time `json:"access_cutoff,omitzero"`
	// Events counts the family's events.
	Events uint64 `json:"events"`

	// Seq is the stream sequence of the family's last event and Head the
	// hex SHA-256 of its stored bytes; the store sets both on load and
	// append. Zero for a family that does not exist yet.
	Seq  uint64 `json:"-"`
	Head string `json:"-"`
}

// Revocation records why and when a family died.
type Revocation struct {
	At      time.Time `json:"at"`
	Cause   Cause     `json:"cause"`
	EventID string    `json:"event_id"`
}

// Previous is the refresh token most recently rotated away.
type Previous struct {
	Generation uint64    `json:"generation"`
	Hash       string    `json:"hash"`
	RotatedAt  time.Time `json:"rotated_at"`
	// SealedSuccessor is the current token sealed with a key derived from
	// the previous one: only its holder can open it, for a grace retry.
	SealedSuccessor string `json:"sealed_successor"`
	EventID         string `json:"event_id"`
	Request         string `json:"request,omitempty"`
}

// Exists reports whether the family has any event.
func (s State) Exists() bool { return s.FamilyID != "" }

// StatusAt is the family's status at instant t: revoked by an event, expired
// by time, or active.
func (s State) StatusAt(t time.Time) Status {
	switch {
	case s.Revoked != nil:
		return StatusRevoked
	case !t.Before(s.ExpiresAt):
		return StatusExpired
	}
	return StatusActive
}

// Apply folds one event into the state. It never fails: every rule lives in
// Decide, and an event in the log is a fact. Apply is idempotent only in the
// sense that the caller applies each stream sequence once.
func Apply(s State, e Event) State {
	s.Events++
	switch d := e.Data.(type) {
	case FamilyIssued:
		s = State{
			FamilyID: e.FamilyID, ClientID: d.ClientID, Subject: d.Subject,
			Scope: d.Scope, Audience: d.Audience, Claims: d.Claims,
			Version: d.Version, CreatedAt: e.OccurredAt, ExpiresAt: d.ExpiresAt,
			TokenHash: d.TokenHash, TokenIssuedAt: e.OccurredAt,
			RefreshExpiresAt: d.RefreshExpiresAt, Events: 1,
		}
	case RefreshRotated:
		s.Previous = &Previous{
			Generation: d.FromGeneration, Hash: d.PresentedHash, RotatedAt: e.OccurredAt,
			SealedSuccessor: d.SealedSuccessor, EventID: e.ID, Request: e.Cause.ID,
		}
		s.Generation = d.ToGeneration
		s.TokenHash = d.TokenHash
		s.TokenIssuedAt = e.OccurredAt
		s.RefreshExpiresAt = d.RefreshExpiresAt
		s.RotatedAt = e.OccurredAt
		s.Version = d.Version
	case RefreshUsed:
		s.RefreshExpiresAt = d.RefreshExpiresAt
	case GraceRetried:
		// A retry hands out an access token and changes nothing else.
	case ReuseDetected:
		s.Revoked = &Revocation{At: e.OccurredAt, Cause: Cause{Kind: CauseReuse, ID: e.ID}, EventID: e.ID}
	case FamilyRevoked:
		if s.Revoked == nil {
			s.Revoked = &Revocation{At: e.OccurredAt, Cause: e.Cause, EventID: e.ID}
		}
	case AccessRevoked:
		// One token is denied; the family's state is unchanged.
	case AccessCutoff:
		s.AccessCutoff = e.OccurredAt
	case SecurityHandled:
		// Recorded on its own subject; it changes no family.
	}
	return s
}
