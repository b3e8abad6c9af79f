package ledger

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"
)

// Rotation is a client's refresh-token rotation policy.
type Rotation string

// Rotation policies.
const (
	RotateAlways   Rotation = "always"
	RotatePeriodic Rotation = "periodic"
)

// MaxGrace is the longest grace window the ledger accepts.
const MaxGrace = 60 * time.Second

// Policy is what a decision needs to know about the client's settings.
type Policy struct {
	Rotation    Rotation
	RotateAfter time.Duration // periodic only
	Grace       time.Duration // 0 disables grace retries
	AccessTTL   time.Duration
	RefreshTTL  time.Duration // idle lifetime of a refresh token
	FamilyTTL   time.Duration // absolute lifetime of a family
}

// Command is one of Issue, Refresh, Revoke.
type Command interface{ command() }

// Issue starts a family.
type Issue struct {
	EventID  string
	FamilyID string
	Cause    Cause
	ClientID string
	Subject  string
	Scope    string
	Audience []string
	Claims   json.RawMessage
	Version  int
	// RolloutID names the rollout that set Version, if one did.
	RolloutID string
	TokenHash string // hash of the generation-0 refresh token
	AccessJTI string
	Policy    Policy
}

// Refresh presents a refresh token.
type Refresh struct {
	EventID   string
	Cause     Cause
	ClientID  string
	Presented Presented
	// Scope narrows the access token's scope; empty means the family's.
	Scope  string
	Policy Policy
	// NextHash and SealedNext describe the successor the caller minted,
	// used only if the decision rotates.
	NextHash   string
	SealedNext string
	AccessJTI  string
	// Rollout, when set, is the token version this family must reach.
	Rollout *Rollout
}

// Rollout is a required token version for a family, with an optional
// deadline after which families still below it are refused: what a
// client's rollout requires of one family (RolloutState.For).
type Rollout struct {
	// ID names the rollout (its rollout.started event's id).
	ID       string
	Version  int
	Deadline time.Time
}

// Presented is what the caller knows about the presented refresh token.
type Presented struct {
	Hash string
	// Older is set when the caller proved the token genuine for an older
	// generation than the state's current and previous ones.
	Older *OlderToken
}

// OlderToken is the lineage of a genuine token rotated away long ago.
type OlderToken struct {
	Generation    uint64
	RotatedAt     time.Time // zero if unknown
	WinnerEventID string
	WinnerRequest string
}

// Revoke ends a family.
type Revoke struct {
	EventID string
	Cause   Cause
	// ClientID, when set, is the client asking: a family of another client
	// is refused with ErrWrongClient and nothing is recorded.
	ClientID string
}

// RevokeAccess denies one access token of the family until it expires.
type RevokeAccess struct {
	EventID   string
	Cause     Cause
	JTI       string
	ExpiresAt time.Time
	// Denied is set when the token is denied already (its jti revoked, or
	// an access cutoff covers it), as the valid-token view reports once it
	// has applied the family's last event: then nothing is recorded.
	Denied bool
}

// CutAccess denies every access token of the family issued so far, forcing
// a refresh, without revoking the family.
type CutAccess struct {
	EventID string
	Cause   Cause
	// Since, when set, is when the work that asks for the cut began (the
	// handling of a security event, which survives a takeover by another
	// worker): a family already cut at or after it is not cut again, so a
	// repeated handling records nothing twice.
	Since time.Time
}

func (Issue) command()        {}
func (Refresh) command()      {}
func (Revoke) command()       {}
func (RevokeAccess) command() {}
func (CutAccess) command()    {}

// Decide returns the events a command produces given the family's state at
// instant now. It is pure. When it returns both events and an error, the
// events record the refusal (a detected reuse, or a refresh refused for a
// rollout's version past its deadline) and must be appended before the
// error is reported.
func Decide(s State, c Command, now time.Time) ([]Event, error) {
	switch c := c.(type) {
	case Issue:
		return decideIssue(s, c, now)
	case Refresh:
		return decideRefresh(s, c, now)
	case Revoke:
		return decideRevoke(s, c, now)
	case RevokeAccess:
		return decideRevokeAccess(s, c, now)
	case CutAccess:
		return decideCutAccess(s, c, now)
	}
	return nil, fmt.Errorf("decide %T: %w", c, ErrInvalidRequest)
}

func decideIssue(s State, c Issue, now time.Time) ([]Event, error) {
	switch {
	case s.Exists():
		return nil, fmt.Errorf("issue %s: family exists: %w", c.FamilyID, ErrConflict)
	case c.FamilyID == "" || c.EventID == "" || c.TokenHash == "" || c.AccessJTI == "":
		return nil, fmt.Errorf("issue: missing id or token hash: %w", ErrInvalidRequest)
	case c.ClientID == "" || c.Subject == "":
		return nil, fmt.Errorf("issue: client and subject are required: %w", ErrInvalidRequest)
	case c.Policy.AccessTTL <= 0 || c.Policy.RefreshTTL <= 0 || c.Policy.FamilyTTL <= 0:
		return nil, fmt.Errorf("issue: lifetimes must be positive: %w", ErrInvalidRequest)
	}
	version := max(c.Version, 1)
	expires := now.Add(c.Policy.FamilyTTL)
	return []Event{{
		ID: c.EventID, FamilyID: c.FamilyID, OccurredAt: now, Cause: c.Cause,
		Data: FamilyIssued{
			ClientID: c.ClientID, Subject: c.Subject, Scope: c.Scope,
			Audience: c.Audience, Claims: c.Claims, Version: version, RolloutID: c.RolloutID,
			TokenHash: c.TokenHash, ExpiresAt: expires,
			RefreshExpiresAt: earliest(now.Add(c.Policy.RefreshTTL), expires),
			Access: AccessGrant{
				JTI: c.AccessJTI, Scope: c.Scope,
				ExpiresAt: earliest(now.Add(c.Policy.AccessTTL), expires),
			},
		},
	}}, nil
}

func decideRefresh(s State, c Refresh, now time.Time) ([]Event, error) {
	if !s.Exists() {
		return nil, ErrUnknownFamily
	}
	if c.ClientID != s.ClientID {
		return nil, ErrWrongClient
	}
	p := c.Presented
	genuine := p.Hash == s.TokenHash || p.Older != nil ||
		(s.Previous != nil && p.Hash == s.Previous.Hash)
	if !genuine {
		return nil, ErrInvalidToken
	}
	switch s.StatusAt(now) {
	case StatusRevoked:
		return nil, ErrFamilyRevoked
	case StatusExpired:
		return nil, ErrFamilyExpired
	}
	scope := s.Scope
	if c.Scope != "" {
		if !ScopeSubset(c.Scope, s.Scope) {
			return nil, ErrInvalidScope
		}
		scope = c.Scope
	}
	access := AccessGrant{JTI: c.AccessJTI, Scope: scope, ExpiresAt: earliest(now.Add(c.Policy.AccessTTL), s.ExpiresAt)}
	base := Event{ID: c.EventID, FamilyID: s.FamilyID, OccurredAt: now, Cause: c.Cause}

	switch {
	case p.Hash == s.TokenHash:
		if !now.Before(s.RefreshExpiresAt) {
			return nil, ErrExpired
		}
		version := s.Version
		forceRotate := false
		var movedBy string
		if r := c.Rollout; r != nil && s.Version < r.Version {
			if !r.Deadline.IsZero() && !now.Before(r.Deadline) {
				// Recorded, so an auditor sees who was turned away and
				// by which rollout; the family itself is unchanged.
				base.Data = VersionRefused{
					Generation: s.Generation, Version: s.Version, RequiredVersion: r.Version,
					RolloutID: r.ID, Deadline: r.Deadline,
				}
				return []Event{base}, ErrVersionRequired
			}
			version, forceRotate, movedBy = r.Version, true, r.ID
		}
		rotate := forceRotate || c.Policy.Rotation != RotatePeriodic ||
			!now.Before(s.TokenIssuedAt.Add(c.Policy.RotateAfter))
		refreshExpires := earliest(now.Add(c.Policy.RefreshTTL), s.ExpiresAt)
		if !rotate {
			base.Data = RefreshUsed{Generation: s.Generation, RefreshExpiresAt: refreshExpires, Access: access}
			return []Event{base}, nil
		}
		if c.NextHash == "" || c.SealedNext == "" || c.AccessJTI == "" {
			return nil, fmt.Errorf("refresh: successor not minted: %w", ErrInvalidRequest)
		}
		base.Data = RefreshRotated{
			FromGeneration: s.Generation, ToGeneration: s.Generation + 1,
			PresentedHash: p.Hash, TokenHash: c.NextHash, SealedSuccessor: c.SealedNext,
			RefreshExpiresAt: refreshExpires, Version: version, Access: access,
		}
		if forceRotate {
			rot := base.Data.(RefreshRotated)
			rot.RolloutID, rot.FromVersion = movedBy, s.Version
			base.Data = rot
		}
		return []Event{base}, nil

	case s.Previous != nil && p.Hash == s.Previous.Hash:
		ago := now.Sub(s.Previous.RotatedAt)
		// A negative age means this clock is behind the one that rotated
		// (or stepped back): the window cannot be measured, so it is not a
		// grace retry but reuse.
		if c.Policy.Grace > 0 && ago >= 0 && ago <= min(c.Policy.Grace, MaxGrace) {
			base.Data = GraceRetried{
				PresentedGeneration: s.Previous.Generation, SuccessorGeneration: s.Generation,
				RotatedAgo: ago, Access: access,
			}
			return []Event{base}, nil
		}
		base.Data = ReuseDetected{
			PresentedGeneration: s.Previous.Generation, CurrentGeneration: s.Generation,
			PresentedHash: p.Hash, RotatedAgo: ago,
			WinnerEventID: s.Previous.EventID, WinnerRequest: s.Previous.Request,
		}
		return []Event{base}, ErrRefreshReused

	default: // a genuine token of an older generation
		o := p.Older
		var ago time.Duration
		if !o.RotatedAt.IsZero() {
			ago = now.Sub(o.RotatedAt)
		}
		base.Data = ReuseDetected{
			PresentedGeneration: o.Generation, CurrentGeneration: s.Generation,
			PresentedHash: p.Hash, RotatedAgo: ago,
			WinnerEventID: o.WinnerEventID, WinnerRequest: o.WinnerRequest,
		}
		return []Event{base}, ErrRefreshReused
	}
}

func decideRevoke(s State, c Revoke, now time.Time) ([]Event, error) {
	if !s.Exists() {
		return nil, ErrUnknownFamily
	}
	if c.Cause.Kind == "" {
		return nil, fmt.Errorf("revoke: a cause is required: %w", ErrInvalidRequest)
	}
	if c.ClientID != "" && c.ClientID != s.ClientID {
		return nil, ErrWrongClient
	}
	if s.StatusAt(now) != StatusActive {
		return nil, nil // revoked or expired already: revoking changes nothing
	}
	return []Event{{
		ID: c.EventID, FamilyID: s.FamilyID, OccurredAt: now, Cause: c.Cause,
		Data: FamilyRevoked{Generation: s.Generation},
	}}, nil
}

func decideRevokeAccess(s State, c RevokeAccess, now time.Time) ([]Event, error) {
	switch {
	case !s.Exists():
		return nil, ErrUnknownFamily
	case c.Cause.Kind == "" || c.JTI == "":
		return nil, fmt.Errorf("revoke access token: cause and jti are required: %w", ErrInvalidRequest)
	case s.StatusAt(now) != StatusActive || !now.Before(c.ExpiresAt) || c.Denied:
		return nil, nil // already inactive or denied: nothing to record
	}
	return []Event{{
		ID: c.EventID, FamilyID: s.FamilyID, OccurredAt: now, Cause: c.Cause,
		Data: AccessRevoked{JTI: c.JTI, ExpiresAt: c.ExpiresAt},
	}}, nil
}

func decideCutAccess(s State, c CutAccess, now time.Time) ([]Event, error) {
	switch {
	case !s.Exists():
		return nil, ErrUnknownFamily
	case c.Cause.Kind == "":
		return nil, fmt.Errorf("cut access: a cause is required: %w", ErrInvalidRequest)
	case s.StatusAt(now) != StatusActive:
		return nil, nil // a dead family's access tokens are already inactive
	case !c.Since.IsZero() && !s.AccessCutoff.IsZero() && !s.AccessCutoff.Before(c.Since):
		return nil, nil // cut already by this work (or later): nothing to record
	}
	return []Event{{
		ID: c.EventID, FamilyID: s.FamilyID, OccurredAt: now, Cause: c.Cause,
		Data: AccessCutoff{Generation: s.Generation},
	}}, nil
}

func earliest(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

// ScopeSubset reports whether every space-separated scope in want is in have.
func ScopeSubset(want, have string) bool {
	granted := strings.Fields(have)
	for w := range strings.FieldsSeq(want) {
		found := false
		for _, g := range granted {
			if g == w {
				found = true
				break
			}
		}
		if !found {
			return false
		}
	}
	return true
}
