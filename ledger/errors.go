package ledger

import "errors"

// Domain errors. They name what went wrong in ledger terms; the handlers map
// each one to a transport error code in exactly one place.
var (
	// ErrConflict: another writer appended to the family since it was
	// loaded. The caller reloads and decides again.
	ErrConflict = errors.New("ledger: family changed concurrently")
	// ErrUnknownFamily: no family with that id.
	ErrUnknownFamily = errors.New("ledger: unknown token family")
	// ErrInvalidToken: the presented refresh token is malformed or is not a
	// genuine token of its family.
	ErrInvalidToken = errors.New("ledger: invalid refresh token")
	// ErrRefreshReused: a rotated refresh token was presented outside the
	// grace window; the family has been revoked.
	ErrRefreshReused = errors.New("ledger: refresh token reused")
	// ErrFamilyRevoked: the family was revoked earlier.
	ErrFamilyRevoked = errors.New("ledger: token family revoked")
	// ErrExpired: the refresh token passed its idle lifetime.
	ErrExpired = errors.New("ledger: refresh token expired")
	// ErrFamilyExpired: the family passed its absolute lifetime.
	ErrFamilyExpired = errors.New("ledger: token family expired")
	// ErrWrongClient: the token belongs to another client.
	ErrWrongClient = errors.New("ledger: token issued to another client")
	// ErrInvalidScope: the requested scope is not allowed.
	ErrInvalidScope = errors.New("ledger: scope not allowed")
	// ErrInvalidRequest: a command is missing or has a malformed field.
	ErrInvalidRequest = errors.New("ledger: invalid request")
	// ErrInvalidClient: unknown client or wrong secret.
	ErrInvalidClient = errors.New("ledger: client authentication failed")
	// ErrUnauthorizedClient: the client may not do this.
	ErrUnauthorizedClient = errors.New("ledger: client not allowed")
	// ErrVersionRequired: the family is below a client's required token
	// version past the rollout's deadline.
	ErrVersionRequired = errors.New("ledger: token version no longer accepted")
	// ErrUnknownEvent: an event type or schema this code does not know.
	ErrUnknownEvent = errors.New("ledger: unknown event type")
	// ErrUnavailable: the ledger could not be reached or kept conflicting.
	ErrUnavailable = errors.New("ledger: temporarily unavailable")
)
