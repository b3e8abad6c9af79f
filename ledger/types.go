package ledger

// EventTypes returns every event type of the closed set in events.go, in a
// fixed order: the list documentation and tests check against (a new type
// goes here as well as in TypeOf and the decoder).
func EventTypes() []EventType {
	return []EventType{
		TypeFamilyIssued,
		TypeRefreshRotated,
		TypeRefreshUsed,
		TypeGraceRetried,
		TypeReuseDetected,
		TypeFamilyRevoked,
		TypeAccessRevoked,
		TypeAccessCutoff,
		TypeSecurityHandled,
		TypeRolloutStarted,
		TypeRolloutRaised,
		TypeRolloutDeadlineSet,
		TypeVersionRefused,
		TypeKeyPublished,
		TypeKeyActivated,
		TypeKeyRetired,
		TypeKeyRevoked,
	}
}
