package worker

import (
	"errors"
	"fmt"
	"maps"
	"slices"
)

// Severity is how serious a security event is (docs/contract.md §5).
type Severity string

// The closed set of severities.
const (
	SeverityLow      Severity = "low"
	SeverityMedium   Severity = "medium"
	SeverityHigh     Severity = "high"
	SeverityCritical Severity = "critical"
)

var severities = []Severity{SeverityLow, SeverityMedium, SeverityHigh, SeverityCritical}

// Valid reports whether s is one of the four severities.
func (s Severity) Valid() bool { return slices.Contains(severities, s) }

// Action is what the worker does with the families a security event selects.
type Action string

// The closed set of actions.
const (
	// ActionRevokeFamilies revokes the selected families: their refresh and
	// access tokens stop working; the user logs in again.
	ActionRevokeFamilies Action = "revoke_families"
	// ActionRevokeAccess denies the selected families' outstanding access
	// tokens and keeps the families: the client must refresh.
	ActionRevokeAccess Action = "revoke_access"
	// ActionRecordOnly records the event and what it selected, nothing else.
	ActionRecordOnly Action = "record_only"
)

// Valid reports whether a is one of the three actions.
func (a Action) Valid() bool {
	return a == ActionRevokeFamilies || a == ActionRevokeAccess || a == ActionRecordOnly
}

// Policy maps a security event's type and severity to an action. A type's
// entry overrides the default for the severities it lists; a severity that
// neither lists falls back to the built-in default of docs/contract.md §5.
type Policy struct {
	// Default maps each severity to an action for every type.
	Default map[Severity]Action `json:"default,omitempty"`
	// Types maps an event type (such as "credential_change") to the actions
	// for its severities.
	Types map[string]map[Severity]Action `json:"types,omitempty"`
}

// builtinActions is docs/contract.md §5's default policy.
var builtinActions = map[Severity]Action{
	SeverityCritical: ActionRevokeFamilies,
	SeverityHigh:     ActionRevokeFamilies,
	SeverityMedium:   ActionRevokeAccess,
	SeverityLow:      ActionRecordOnly,
}

// DefaultPolicy is docs/contract.md §5's policy: critical and high revoke the selected
// families, medium revokes their access tokens, low is recorded only.
func DefaultPolicy() Policy {
	return Policy{Default: maps.Clone(builtinActions)}
}

// ParsePolicy decodes a policy file strictly (unknown fields, severities and
// actions are errors) and validates it.
func ParsePolicy(b []byte) (Policy, error) {
	var p Policy
	if err := decodeStrict(b, 1<<20, &p); err != nil {
		return Policy{}, fmt.Errorf("policy: %w", err)
	}
	if err := p.Validate(); err != nil {
		return Policy{}, err
	}
	return p, nil
}

// Validate checks every severity and action the policy names.
func (p Policy) Validate() error {
	check := func(where string, m map[Severity]Action) error {
		for s, a := range m {
			if !s.Valid() {
				return fmt.Errorf("policy %s: unknown severity %q", where, s)
			}
			if !a.Valid() {
				return fmt.Errorf("policy %s: severity %s: unknown action %q (want revoke_families, revoke_access or record_only)", where, s, a)
			}
		}
		return nil
	}
	if err := check("default", p.Default); err != nil {
		return err
	}
	for t, m := range p.Types {
		if !eventTypePattern.MatchString(t) {
			return fmt.Errorf("policy types: bad event type %q", t)
		}
		if len(m) == 0 {
			return fmt.Errorf("policy types: %s: no severities", t)
		}
		if err := check("types."+t, m); err != nil {
			return err
		}
	}
	return nil
}

// errUnknownSeverity is returned by Action for a severity outside the set;
// decoding refuses such events before they get here.
var errUnknownSeverity = errors.New("unknown severity")

// Action is the action for an event of the type and severity.
func (p Policy) Action(eventType string, s Severity) (Action, error) {
	if !s.Valid() {
		return "", fmt.Errorf("%w %q", errUnknownSeverity, s)
	}
	if a, ok := p.Types[eventType][s]; ok {
		return a, nil
	}
	if a, ok := p.Default[s]; ok {
		return a, nil
	}
	return builtinActions[s], nil
}
