package api

// OAuth error codes the service returns in ErrorResponse.Error (RFC 6749
// §5.2, RFC 7009, RFC 6750; docs/contract.md §2.3).
const (
	CodeInvalidRequest         = "invalid_request"
	CodeInvalidClient          = "invalid_client"
	CodeInvalidGrant           = "invalid_grant"
	CodeInvalidScope           = "invalid_scope"
	CodeUnauthorizedClient     = "unauthorized_client"
	CodeUnsupportedTokenType   = "unsupported_token_type"
	CodeServerError            = "server_error"
	CodeTemporarilyUnavailable = "temporarily_unavailable"
)

// ErrorResponse is the body of every error reply (docs/contract.md §2.3);
// the Nats-Service-Error headers repeat it.
type ErrorResponse struct {
	// Error is the OAuth error code (one of the Code constants).
	Error string `json:"error"`
	// Description says what went wrong; it never echoes a value from the
	// request.
	Description string `json:"error_description"`
}
