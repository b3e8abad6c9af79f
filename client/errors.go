package client

import (
	"errors"
	"fmt"
	"strconv"

	"github.com/tokenledger/tokenledger/api"
)

// Sentinels for the OAuth codes (api.CodeInvalidGrant, …):
// errors.Is(err, ErrInvalidGrant) holds for an *Error with that code.
var (
	// ErrInvalidRequest: the request is malformed or a value is not allowed.
	ErrInvalidRequest = errors.New(api.CodeInvalidRequest)
	// ErrInvalidClient: unknown client or wrong secret.
	ErrInvalidClient = errors.New(api.CodeInvalidClient)
	// ErrInvalidGrant: the refresh token is invalid, expired, reused or of
	// a revoked family; the user must log in again.
	ErrInvalidGrant = errors.New(api.CodeInvalidGrant)
	// ErrInvalidScope: a scope the client may not have.
	ErrInvalidScope = errors.New(api.CodeInvalidScope)
	// ErrUnauthorizedClient: the client may not do this (reserved).
	ErrUnauthorizedClient = errors.New(api.CodeUnauthorizedClient)
	// ErrUnsupportedTokenType: reserved by RFC 7009.
	ErrUnsupportedTokenType = errors.New(api.CodeUnsupportedTokenType)
	// ErrTemporarilyUnavailable: retry later; another instance may answer.
	ErrTemporarilyUnavailable = errors.New(api.CodeTemporarilyUnavailable)
	// ErrServerError: the service failed; it logged the cause.
	ErrServerError = errors.New(api.CodeServerError)
)

// Transport errors: no reply came.
var (
	// ErrNoService: no instance serves the subject (no responders).
	ErrNoService = errors.New("no tokenledger service answers")
	// ErrPermission: the NATS server refused to let this connection
	// publish or subscribe on a subject; the error names it.
	ErrPermission = errors.New("NATS permission denied")
)

var sentinels = map[string]error{
	api.CodeInvalidRequest:         ErrInvalidRequest,
	api.CodeInvalidClient:          ErrInvalidClient,
	api.CodeInvalidGrant:           ErrInvalidGrant,
	api.CodeInvalidScope:           ErrInvalidScope,
	api.CodeUnauthorizedClient:     ErrUnauthorizedClient,
	api.CodeUnsupportedTokenType:   ErrUnsupportedTokenType,
	api.CodeTemporarilyUnavailable: ErrTemporarilyUnavailable,
	api.CodeServerError:            ErrServerError,
}

// Error is an error reply of the service.
type Error struct {
	// Code is the OAuth error code ("invalid_grant").
	Code string `json:"error"`
	// Description is the service's error_description; it never echoes a
	// secret.
	Description string `json:"error_description"`
	// Status is the micro status: 400, 401, 403, 429, 500 or 503.
	Status int `json:"-"`
}

// Error returns "code: description".
func (e *Error) Error() string {
	if e.Description == "" {
		return e.Code
	}
	return e.Code + ": " + e.Description
}

// Is matches the sentinel of the error's code.
func (e *Error) Is(target error) bool {
	s, ok := sentinels[e.Code]
	return ok && s == target
}

// Retryable reports whether the service asked the caller to retry.
func (e *Error) Retryable() bool { return e.Code == api.CodeTemporarilyUnavailable }

// newError builds an *Error from the reply's body and error headers. The
// body is the contract's; the headers fill in what a foreign reply lacks.
func newError(code, desc, status string) *Error {
	n, _ := strconv.Atoi(status)
	return &Error{Code: code, Description: desc, Status: n}
}

// PermissionError is a subject the NATS server refused; it matches
// ErrPermission.
type PermissionError struct {
	// Subject is the refused subject.
	Subject string
	// Op is "publish" or "subscribe".
	Op string
}

// Error names the subject.
func (e *PermissionError) Error() string {
	return fmt.Sprintf("NATS permission denied: this user may not %s to %q (check the user's permissions in the NATS server configuration)", e.Op, e.Subject)
}

// Is matches ErrPermission.
func (e *PermissionError) Is(target error) bool { return target == ErrPermission }
