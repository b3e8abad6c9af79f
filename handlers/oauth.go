package handlers

import (
	"context"
	"errors"

	"github.com/tokenledger/tokenledger/api"
	"github.com/tokenledger/tokenledger/ledger"
)

// requestError is a problem with the request itself, found while decoding.
type requestError struct{ desc string }

func (e *requestError) Error() string { return e.desc }

func badRequest(desc string) error { return &requestError{desc: desc} }

// errOverloaded: the service is shedding load.
var errOverloaded = errors.New("service overloaded")

// errStopping: the instance is shutting down; another one can answer.
var errStopping = errors.New("service stopping")

// oauthError maps an error to the micro status (an HTTP-like code), the
// OAuth error code and a description safe to return. It is the only place
// where domain errors meet OAuth. known is false for errors that are not
// part of the contract; the caller logs those once.
func oauthError(err error) (status, code, desc string, known bool) {
	var re *requestError
	switch {
	case errors.As(err, &re):
		return "400", api.CodeInvalidRequest, re.desc, true
	case errors.Is(err, ledger.ErrInvalidRequest):
		return "400", api.CodeInvalidRequest, "the request is missing a required field or has an invalid one", true
	case errors.Is(err, ledger.ErrInvalidClient):
		return "401", api.CodeInvalidClient, "client authentication failed", true
	case errors.Is(err, ledger.ErrUnauthorizedClient):
		return "403", api.CodeUnauthorizedClient, "the client is not allowed to do this", true
	case errors.Is(err, ledger.ErrInvalidScope):
		return "400", api.CodeInvalidScope, "the requested scope is not allowed", true
	case errors.Is(err, ledger.ErrRefreshReused):
		return "400", api.CodeInvalidGrant, "refresh token was already used; the token family has been revoked", true
	case errors.Is(err, ledger.ErrFamilyRevoked):
		return "400", api.CodeInvalidGrant, "the token family has been revoked", true
	case errors.Is(err, ledger.ErrExpired):
		return "400", api.CodeInvalidGrant, "refresh token expired", true
	case errors.Is(err, ledger.ErrFamilyExpired):
		return "400", api.CodeInvalidGrant, "the token family reached its maximum lifetime", true
	case errors.Is(err, ledger.ErrVersionRequired):
		return "400", api.CodeInvalidGrant, "the token version is no longer accepted; log in again", true
	case errors.Is(err, ledger.ErrInvalidToken), errors.Is(err, ledger.ErrUnknownFamily),
		errors.Is(err, ledger.ErrWrongClient):
		return "400", api.CodeInvalidGrant, "refresh token is invalid", true
	case errors.Is(err, errOverloaded):
		return "429", api.CodeTemporarilyUnavailable, "the service is overloaded; retry later", true
	case errors.Is(err, errStopping):
		return "503", api.CodeTemporarilyUnavailable, "this instance is shutting down; retry", true
	case errors.Is(err, ledger.ErrUnavailable), errors.Is(err, ledger.ErrConflict),
		errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		return "503", api.CodeTemporarilyUnavailable, "the ledger is temporarily unavailable; retry later", true
	}
	return "500", api.CodeServerError, "internal error", false
}
