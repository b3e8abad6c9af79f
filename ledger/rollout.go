package ledger

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"time"
)

// Token-versioning rollouts (SPEC §2 "Token versioning"). A rollout raises
// the token version a client's families must reach, for a percentage of
// them chosen by a stable hash of the family id, with an optional deadline
// after which a family still below the version is refused. A client has
// at most one current rollout; its events are on their own subject
// (ledger.rollout.<client_id>), appended conditionally on that subject's
// last sequence like a family's, and every one of them carries the whole
// rollout after it (RolloutState), so the rollout loads in one read.
//
// The families' side: a rotation that moves a family onto the version
// names the rollout (RefreshRotated.RolloutID, FromVersion); a family
// issued at a rollout's version names it too (FamilyIssued.RolloutID); a
// refresh refused past the deadline is refresh.version_refused.v1.

// Rollout and version event types.
const (
	TypeRolloutStarted     EventType = "rollout.started.v1"
	TypeRolloutRaised      EventType = "rollout.raised.v1"
	TypeRolloutDeadlineSet EventType = "rollout.deadline_set.v1"
	TypeVersionRefused     EventType = "refresh.version_refused.v1"
)

// MaxTokenVersion is the highest token version a rollout may require (the
// read models keep versions in 32 bits).
const MaxTokenVersion = 1<<31 - 1

// RolloutState is a client's current rollout: the fold of its rollout
// events, each of which carries it whole.
type RolloutState struct {
	// ID is the id of the rollout.started event that began it.
	ID       string `json:"id"`
	ClientID string `json:"client_id"`
	// Version is the token version the rollout requires of the families
	// it covers.
	Version int `json:"version"`
	// Percent (1-100) of the client's families are covered before the
	// deadline: those whose CohortBucket is below it.
	Percent int `json:"percent"`
	// Deadline, when set, is when every family is covered and one still
	// below Version is refused.
	Deadline  time.Time `json:"deadline,omitzero"`
	StartedAt time.Time `json:"started_at"`
	// BaseID, BaseVersion and BaseDeadline are the client's previous
	// rollout, complete when this one started: what every family not
	// covered by this one must still reach.
	BaseID       string    `json:"base_id,omitempty"`
	BaseVersion  int       `json:"base_version,omitempty"`
	BaseDeadline time.Time `json:"base_deadline,omitzero"`

	// Seq and Head are the stream sequence and hex SHA-256 of the
	// rollout's last event; the store sets them on load and append.
	Seq  uint64 `json:"-"`
	Head string `json:"-"`
}

// RolloutStarted begins a rollout of a client to a token version.
type RolloutStarted struct {
	Rollout RolloutState `json:"rollout"`
}

// RolloutRaised raises a rollout's percentage (never lowers it); the same
// request may also set its deadline.
type RolloutRaised struct {
	FromPercent  int          `json:"from_percent"`
	FromDeadline time.Time    `json:"from_deadline,omitzero"`
	Rollout      RolloutState `json:"rollout"`
}

// RolloutDeadlineSet sets or moves a rollout's deadline.
type RolloutDeadlineSet struct {
	FromDeadline time.Time    `json:"from_deadline,omitzero"`
	Rollout      RolloutState `json:"rollout"`
}

// VersionRefused records a refresh refused because the family is below the
// version a rollout required by a deadline that has passed: the holder
// must log in again. The family stays as it was.
type VersionRefused struct {
	Generation      uint64    `json:"generation"`
	Version         int       `json:"version"`
	RequiredVersion int       `json:"required_version"`
	RolloutID       string    `json:"rollout_id"`
	Deadline        time.Time `json:"deadline"`
}

// CohortBucket is the family's place in every rollout's cohort, 0-99: the
// first 8 bytes of SHA-256 of the family id, big-endian, modulo 100. A
// rollout at p percent covers the buckets below p, so raising p only adds
// families.
func CohortBucket(familyID string) int {
	sum := sha256.Sum256([]byte(familyID))
	return int(binary.BigEndian.Uint64(sum[:8]) % 100)
}

// Exists reports whether the client has a rollout.
func (r RolloutState) Exists() bool { return r.ID != "" }

// PastDeadline reports whether the rollout has a deadline at or before now.
func (r RolloutState) PastDeadline(now time.Time) bool {
	return !r.Deadline.IsZero() && !now.Before(r.Deadline)
}

// Complete reports whether the rollout covers every family at now: at 100
// percent or past its deadline.
func (r RolloutState) Complete(now time.Time) bool {
	return r.Exists() && (r.Percent >= 100 || r.PastDeadline(now))
}

// Covers reports whether the rollout covers the family at now.
func (r RolloutState) Covers(familyID string, now time.Time) bool {
	return r.Complete(now) || (r.Exists() && CohortBucket(familyID) < r.Percent)
}

// For is what the client's rollouts require of the family at now: the
// current rollout's version if it covers the family, else its base's, or
// nil when nothing is required.
func (r RolloutState) For(familyID string, now time.Time) *Rollout {
	switch {
	case !r.Exists():
		return nil
	case r.Covers(familyID, now):
		return &Rollout{ID: r.ID, Version: r.Version, Deadline: r.Deadline}
	case r.BaseVersion > 0:
		return &Rollout{ID: r.BaseID, Version: r.BaseVersion, Deadline: r.BaseDeadline}
	}
	return nil
}

// RolloutOf returns the rollout an event of a rollout subject carries.
func RolloutOf(e Event) (RolloutState, bool) {
	switch d := e.Data.(type) {
	case RolloutStarted:
		return d.Rollout, true
	case RolloutRaised:
		return d.Rollout, true
	case RolloutDeadlineSet:
		return d.Rollout, true
	}
	return RolloutState{}, false
}

// ApplyRollout folds one rollout event: the rollout it carries. Like
// Apply it never fails; an event of another kind changes nothing.
func ApplyRollout(r RolloutState, e Event) RolloutState {
	if next, ok := RolloutOf(e); ok {
		next.Seq, next.Head = r.Seq, r.Head
		return next
	}
	return r
}

// SetRollout starts a client's rollout to Version, or changes the current
// one: the same Version with a higher Percent raises it, a Deadline sets
// it. A request that changes nothing records nothing.
type SetRollout struct {
	EventID  string
	Cause    Cause
	ClientID string
	Version  int
	// Percent is 1-100.
	Percent int
	// Deadline, if not zero, must be after now.
	Deadline time.Time
}

// RolloutError is a rollout request the rules refuse, with the reason (it
// names no value of the request). It is an ErrInvalidRequest.
type RolloutError struct{ Reason string }

func (e *RolloutError) Error() string { return "rollout: " + e.Reason }

// Is makes a RolloutError match ErrInvalidRequest.
func (e *RolloutError) Is(target error) bool { return target == ErrInvalidRequest }

func refuseRollout(format string, args ...any) error {
	return &RolloutError{Reason: fmt.Sprintf(format, args...)}
}

// DecideRollout returns the event a rollout command produces given the
// client's current rollout cur, at now. It is pure.
func DecideRollout(cur RolloutState, c SetRollout, now time.Time) ([]Event, error) {
	switch {
	case c.EventID == "" || c.ClientID == "" || c.Cause.Kind == "":
		return nil, fmt.Errorf("rollout: missing event id, client or cause: %w", ErrInvalidRequest)
	case cur.Exists() && cur.ClientID != c.ClientID:
		return nil, fmt.Errorf("rollout of %s decided on the rollout of %s: %w", c.ClientID, cur.ClientID, ErrInvalidRequest)
	case c.Version < 1 || c.Version > MaxTokenVersion:
		return nil, refuseRollout("version must be between 1 and %d", MaxTokenVersion)
	case c.Percent < 1 || c.Percent > 100:
		return nil, refuseRollout("percent must be between 1 and 100")
	case !c.Deadline.IsZero() && !c.Deadline.After(now):
		return nil, refuseRollout("the deadline has passed")
	case cur.Exists() && c.Version < cur.Version:
		return nil, refuseRollout("version is lower than the current rollout's %d", cur.Version)
	}
	base := Event{ID: c.EventID, OccurredAt: now, Cause: c.Cause}
	if !cur.Exists() || c.Version > cur.Version {
		next := RolloutState{
			ID: c.EventID, ClientID: c.ClientID, Version: c.Version, Percent: c.Percent,
			Deadline: c.Deadline, StartedAt: now,
		}
		if cur.Exists() {
			if !cur.Complete(now) {
				return nil, refuseRollout("the rollout to version %d is not complete: raise it to 100 percent or wait for its deadline first", cur.Version)
			}
			next.BaseID, next.BaseVersion, next.BaseDeadline = cur.ID, cur.Version, cur.Deadline
		}
		base.Data = RolloutStarted{Rollout: next}
		return []Event{base}, nil
	}
	// The same version: raise, set the deadline, or nothing.
	next := cur
	next.Seq, next.Head = 0, ""
	if !c.Deadline.IsZero() {
		next.Deadline = c.Deadline
	}
	switch {
	case c.Percent < cur.Percent:
		return nil, refuseRollout("percent cannot be lowered (it is %d)", cur.Percent)
	case c.Percent > cur.Percent:
		next.Percent = c.Percent
		base.Data = RolloutRaised{FromPercent: cur.Percent, FromDeadline: cur.Deadline, Rollout: next}
	case !next.Deadline.Equal(cur.Deadline):
		base.Data = RolloutDeadlineSet{FromDeadline: cur.Deadline, Rollout: next}
	default:
		return nil, nil
	}
	return []Event{base}, nil
}

// CheckRolloutEvent returns why e is not a legal rollout event after the
// client's rollout before, or "": the auditor's rule, the same as
// DecideRollout's but without the clock (a deadline is checked against the
// event's own time).
func CheckRolloutEvent(before RolloutState, e Event) string {
	next, ok := RolloutOf(e)
	switch {
	case !ok:
		return fmt.Sprintf("%s is not a rollout event", e.Type)
	case e.Cause.Kind == "":
		return "rollout event without a cause"
	case e.FamilyID != "" || e.State != nil:
		return "rollout event carries a family"
	case next.Percent < 1 || next.Percent > 100 || next.Version < 1:
		return fmt.Sprintf("rollout at version %d, %d percent", next.Version, next.Percent)
	case before.Exists() && next.ClientID != before.ClientID:
		return fmt.Sprintf("rollout of client %s follows one of client %s", next.ClientID, before.ClientID)
	}
	switch d := e.Data.(type) {
	case RolloutStarted:
		switch {
		case next.ID != e.ID || !next.StartedAt.Equal(e.OccurredAt):
			return "rollout started with another id or time than its event's"
		case before.Exists() && next.Version <= before.Version:
			return fmt.Sprintf("rollout to version %d started after one to version %d", next.Version, before.Version)
		case before.Exists() && next.BaseVersion != before.Version:
			return fmt.Sprintf("rollout's base is version %d, the previous rollout's is %d", next.BaseVersion, before.Version)
		}
	case RolloutRaised:
		switch {
		case !before.Exists() || next.ID != before.ID || next.Version != before.Version:
			return "rollout raised that is not the current one"
		case d.FromPercent != before.Percent || next.Percent <= before.Percent:
			return fmt.Sprintf("rollout from %d to %d percent, but it was at %d", d.FromPercent, next.Percent, before.Percent)
		}
	case RolloutDeadlineSet:
		switch {
		case !before.Exists() || next.ID != before.ID || next.Version != before.Version || next.Percent != before.Percent:
			return "deadline set on a rollout that is not the current one"
		case !d.FromDeadline.Equal(before.Deadline) || next.Deadline.IsZero():
			return "deadline set from another deadline than the rollout's"
		}
	}
	return ""
}
