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

// State is a family's current state: the fold of its events. Each family
// event stores what the next decision needs in one read (schema 2: the
// event's Base, from which Apply gives the state after it; schema 1: the
// state itself). The fields Base zeroes are omitted when zero, so that a
// base does not spell them out.
type State struct {
	FamilyID string          `json:"family_id,omitempty"`
	ClientID string          `json:"client_id"`
	Subject  string          `json:"subject"`
	Scope    string          `json:"scope"`
	Audience []string        `json:"audience,omitempty"`
	Claims   json.RawMessage `json:"claims,omitempty"`
	Version  int             `json:"version,omitempty"`
	Revoked  *Revocation     `json:"revoked,omitempty"`

	CreatedAt time.Time `json:"created_at"`
	ExpiresAt time.Time `json:"expires_at"`

	// The current refresh token.
	Generation       uint64    `json:"generation,omitempty"`
	TokenHash        string    `json:"token_hash,omitempty"`
	TokenIssuedAt    time.Time `json:"token_issued_at,omitzero"`
	RefreshExpiresAt time.Time `json:"refresh_expires_at,omitzero"`
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

// Base is what a schema-2 family event stores in place of the state after
// it: the family's state before e, without what e brings back. after is
// the state after e (Apply(prev, e)); Base returns prev with FamilyID (in
// the envelope), Seq and Head cleared and every field that Apply sets from
// e zeroed, so that
//
//	Apply(Base(after, e) with FamilyID set, e) == after
//
// and the event does not repeat what its payload says. For family.issued,
// whose Apply starts over, it is the zero State: the event stores none.
//
// This is Apply's rule read backwards: a case of Apply that sets a field
// from e zeroes it here. TestBase checks both directions for every event
// type and every field, so a change to Apply that is not made here (or a
// new field or event type) fails there, never on the wire.
func Base(after State, e Event) State {
	b := after
	b.FamilyID, b.Seq, b.Head = "", 0, ""
	b.Events-- // Apply counts e
	switch e.Data.(type) {
	case FamilyIssued:
		return State{}
	case RefreshRotated:
		b.Previous = nil
		b.Generation, b.TokenHash, b.Version = 0, "", 0
		b.TokenIssuedAt, b.RefreshExpiresAt, b.RotatedAt = time.Time{}, time.Time{}, time.Time{}
	case RefreshUsed:
		b.RefreshExpiresAt = time.Time{}
	case ReuseDetected:
		b.Revoked = nil
	case FamilyRevoked:
		// Apply keeps an earlier revocation: only e's own is brought back.
		if r := b.Revoked; r != nil && r.EventID == e.ID && r.Cause == e.Cause && r.At.Equal(e.OccurredAt) {
			b.Revoked = nil
		}
	case AccessCutoff:
		b.AccessCutoff = time.Time{}
	}
	return b
}
