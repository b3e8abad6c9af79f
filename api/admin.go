package api

import "time"

// SessionsRequest is the body of tokens.sessions: a client lists its own
// families of the subject.
type SessionsRequest struct {
	ClientID     string `json:"client_id"`
	ClientSecret string `json:"client_secret"`
	Subject      string `json:"subject"`
}

// AdminSessionsRequest is the body of tokens.admin.sessions: the subject's
// families of every client (NATS permissions keep it to operators).
type AdminSessionsRequest struct {
	Subject string `json:"subject"`
}

// Session is one active family in the reply of tokens.sessions.
type Session struct {
	FamilyID  string    `json:"family_id"`
	ClientID  string    `json:"client_id"`
	CreatedAt time.Time `json:"created_at"`
	// RotatedAt is null for a family never rotated: every key of
	// docs/contract.md §3 is always there.
	RotatedAt  *time.Time `json:"rotated_at"`
	Generation uint64     `json:"generation"`
	Version    int        `json:"version"`
	ExpiresAt  time.Time  `json:"expires_at"`
}

// SessionsResponse is the reply of tokens.sessions and
// tokens.admin.sessions, oldest first.
type SessionsResponse struct {
	Families []Session `json:"families"`
}

// AdminRevokeRequest is the body of tokens.admin.revoke: exactly one of
// FamilyID, Subject and ClientID, and the reason recorded in the ledger.
type AdminRevokeRequest struct {
	FamilyID string `json:"family_id,omitempty"`
	Subject  string `json:"subject,omitempty"`
	ClientID string `json:"client_id,omitempty"`
	// Reason is recorded in the ledger (required).
	Reason string `json:"reason"`
}

// AdminRevokeResponse is the reply of tokens.admin.revoke: how many active
// families this request revoked.
type AdminRevokeResponse struct {
	RevokedFamilies int `json:"revoked_families"`
}

// DigestResponse is the reply of tokens.admin.digest: the live valid-token
// view's digest at Time (a whole second, UTC) and the ledger sequence it
// had applied, for `tokenledger audit diff --live` to compare with a view
// rebuilt from the log up to that sequence.
type DigestResponse struct {
	Seq    uint64    `json:"seq"`
	Time   time.Time `json:"time"`
	Digest string    `json:"digest"`
}

// KeyInfo is a key as tokens.admin.keys.list shows it: no key material.
type KeyInfo struct {
	KID            string    `json:"kid"`
	Alg            string    `json:"alg"`
	State          string    `json:"state"`
	CreatedAt      time.Time `json:"created_at"`
	ActivatesAt    time.Time `json:"activates_at,omitzero"`
	RetiredAt      time.Time `json:"retired_at,omitzero"`
	PublishedUntil time.Time `json:"published_until,omitzero"`
	RevokedAt      time.Time `json:"revoked_at,omitzero"`
}

// KeysResponse is the reply of tokens.admin.keys.list, .rotate and
// .revoke: every key the set holds, oldest first, with its state and
// dates; never key material.
type KeysResponse struct {
	Keys []KeyInfo `json:"keys"`
}

// KeyRevokeRequest is the body of tokens.admin.keys.revoke.
type KeyRevokeRequest struct {
	KID string `json:"kid"`
	// Reason is recorded in the key.revoked.v1 event's cause.
	Reason string `json:"reason,omitempty"`
}

// RolloutRequest is the body of tokens.admin.rollout (SPEC §3). With a
// version it starts a rollout to that version or changes the current one
// (a higher percent raises it, a deadline sets it; the same request twice
// changes nothing); with only client_id it reads the rollout's state.
type RolloutRequest struct {
	ClientID string `json:"client_id"`
	Version  int    `json:"version,omitempty"`
	// Percent is 1-100; without it, 100.
	Percent *int `json:"percent,omitempty"`
	// Deadline is RFC 3339; after it every family below the version is
	// refused.
	Deadline string `json:"deadline,omitempty"`
}

// RolloutResponse is the reply of tokens.admin.rollout: the client's
// rollout as stored, and its progress from the read models.
type RolloutResponse struct {
	// RolloutID names the rollout (its rollout.started event); empty when
	// the client has none.
	RolloutID string     `json:"rollout_id"`
	ClientID  string     `json:"client_id"`
	Version   int        `json:"version"`
	Percent   int        `json:"percent"`
	Deadline  *time.Time `json:"deadline"`
	StartedAt *time.Time `json:"started_at"`
	// BaseVersion is what families outside this rollout's cohort must
	// still reach (the previous rollout's version), 0 for none.
	BaseVersion int `json:"base_version"`
	// Changed is set when this request appended a rollout event.
	Changed  bool            `json:"changed"`
	Progress RolloutProgress `json:"progress"`
}

// RolloutProgress counts the client's active families at or above the
// rollout's version and below it, and what the rollout did: families
// moved onto its version at a refresh, issued at it, and refused past its
// deadline.
type RolloutProgress struct {
	AtOrAbove int `json:"at_or_above"`
	Below     int `json:"below"`
	Refused   int `json:"refused"`
	Moved     int `json:"moved"`
	Issued    int `json:"issued"`
}
