package client

import (
	"context"
	"encoding/json"

	"github.com/tokenledger/tokenledger/api"
)

// Credentials are a client's id and secret.
type Credentials struct {
	ID     string
	Secret string
}

// IssueRequest asks for a new token family for Subject.
type IssueRequest struct {
	// Subject is the user or entity the tokens are for (required).
	Subject string
	// Audience defaults to the client's audiences.
	Audience []string
	// Scope (space-separated) defaults to the client's scopes.
	Scope string
	// Claims are custom claims the client lists in allowed_claims.
	Claims map[string]json.RawMessage
}

// RefreshRequest presents a refresh token.
type RefreshRequest struct {
	RefreshToken string
	// Scope narrows the access token's scope (optional).
	Scope string
}

// TokenRequest names a token to revoke or introspect.
type TokenRequest struct {
	Token string
	// TokenTypeHint is api.HintRefreshToken, api.HintAccessToken or empty.
	TokenTypeHint string
}

// body is the wire request of the token with the client's credentials.
func (r TokenRequest) body(creds Credentials) api.TokenRequest {
	return api.TokenRequest{ClientID: creds.ID, ClientSecret: creds.Secret, Token: r.Token, TokenTypeHint: r.TokenTypeHint}
}

// The replies, as the service sends them (package api spells the wire).
type (
	// TokenResponse is the reply of Issue and Refresh.
	TokenResponse = api.TokenResponse
	// Introspection is the reply of Introspect (RFC 7662): only Active for
	// an inactive token.
	Introspection = api.IntrospectResponse
	// JWK is one public key (RFC 7517).
	JWK = api.JWK
	// JWKS is the reply of JWKS: the current key and retired keys whose
	// tokens can still be valid.
	JWKS = api.JWKS
	// Session is one active token family.
	Session = api.Session
	// Sessions is the reply of Sessions and AdminSessions, oldest first.
	Sessions = api.SessionsResponse
	// AdminRevokeRequest revokes the active families of exactly one
	// selector; its Reason is required.
	AdminRevokeRequest = api.AdminRevokeRequest
	// AdminRevokeResponse counts the families the request revoked.
	AdminRevokeResponse = api.AdminRevokeResponse
	// Digest is the live view's digest at Time and the ledger sequence it
	// had applied (for `tokenledger audit diff --live`).
	Digest = api.DigestResponse
)

// Issue starts a token family for req.Subject (tokens.issue). It is not
// idempotent: it is retried only when no instance received it.
func (c *Client) Issue(ctx context.Context, creds Credentials, req IssueRequest) (*TokenResponse, error) {
	var out TokenResponse
	err := c.call(ctx, "issue", api.IssueRequest{ClientID: creds.ID, ClientSecret: creds.Secret, Subject: req.Subject, Audience: req.Audience, Scope: req.Scope, Claims: req.Claims}, &out, retryUndelivered)
	if err != nil {
		return nil, err
	}
	return &out, nil
}

// Refresh rotates a refresh token (tokens.refresh); the reply holds its
// successor. Retried within the refresh retry window only (see the package
// doc).
func (c *Client) Refresh(ctx context.Context, creds Credentials, req RefreshRequest) (*TokenResponse, error) {
	var out TokenResponse
	if err := c.call(ctx, "refresh", api.RefreshRequest{ClientID: creds.ID, ClientSecret: creds.Secret, RefreshToken: req.RefreshToken, Scope: req.Scope}, &out, retryRefresh); err != nil {
		return nil, err
	}
	return &out, nil
}

// Revoke revokes a token (tokens.revoke, RFC 7009): a refresh token of the
// client revokes its family, an access token is denied until it expires.
// The service answers revoked also for unknown tokens, so only an error
// (invalid_client, for one) is reported. It returns once every instance's
// introspection sees the revocation.
func (c *Client) Revoke(ctx context.Context, creds Credentials, req TokenRequest) error {
	var out api.RevokeResponse
	return c.call(ctx, "revoke", req.body(creds), &out, retrySafe)
}

// Introspect reports whether a token is active (tokens.introspect, RFC
// 7662).
func (c *Client) Introspect(ctx context.Context, creds Credentials, req TokenRequest) (*Introspection, error) {
	var out Introspection
	if err := c.call(ctx, "introspect", req.body(creds), &out, retrySafe); err != nil {
		return nil, err
	}
	return &out, nil
}

// JWKS returns the service's public keys (tokens.jwks).
func (c *Client) JWKS(ctx context.Context) (*JWKS, error) {
	var out JWKS
	if err := c.call(ctx, "jwks", nil, &out, retrySafe); err != nil {
		return nil, err
	}
	return &out, nil
}

// Sessions lists subject's active families of the calling client
// (tokens.sessions).
func (c *Client) Sessions(ctx context.Context, creds Credentials, subject string) (*Sessions, error) {
	var out Sessions
	if err := c.call(ctx, "sessions", api.SessionsRequest{ClientID: creds.ID, ClientSecret: creds.Secret, Subject: subject}, &out, retrySafe); err != nil {
		return nil, err
	}
	return &out, nil
}

// AdminSessions lists subject's active families of every client
// (tokens.admin.sessions; NATS permissions keep it to operators).
func (c *Client) AdminSessions(ctx context.Context, subject string) (*Sessions, error) {
	var out Sessions
	if err := c.call(ctx, "admin.sessions", api.AdminSessionsRequest{Subject: subject}, &out, retrySafe); err != nil {
		return nil, err
	}
	return &out, nil
}

// AdminRevoke revokes the active families of one family, subject or client
// (tokens.admin.revoke). A retry counts only what it revoked itself.
func (c *Client) AdminRevoke(ctx context.Context, req AdminRevokeRequest) (*AdminRevokeResponse, error) {
	var out AdminRevokeResponse
	if err := c.call(ctx, "admin.revoke", req, &out, retrySafe); err != nil {
		return nil, err
	}
	return &out, nil
}

// AdminDigest returns the live view's digest (tokens.admin.digest).
func (c *Client) AdminDigest(ctx context.Context) (*Digest, error) {
	var out Digest
	if err := c.call(ctx, "admin.digest", nil, &out, retrySafe); err != nil {
		return nil, err
	}
	return &out, nil
}

// Rollout reads a client's token-version rollout (tokens.admin.rollout with
// the client id alone).
func (c *Client) Rollout(ctx context.Context, clientID string) (*api.RolloutResponse, error) {
	return c.SetRollout(ctx, api.RolloutRequest{ClientID: clientID})
}

// SetRollout starts a rollout, raises its percent or sets its deadline
// (tokens.admin.rollout). Safe to retry: the same request again changes
// nothing.
func (c *Client) SetRollout(ctx context.Context, req api.RolloutRequest) (*api.RolloutResponse, error) {
	var out api.RolloutResponse
	if err := c.call(ctx, "admin.rollout", req, &out, retrySafe); err != nil {
		return nil, err
	}
	return &out, nil
}

// Keys lists the signing keys (tokens.admin.keys.list).
func (c *Client) Keys(ctx context.Context) (*api.KeysResponse, error) {
	return c.keys(ctx, "admin.keys.list", nil, retrySafe)
}

// RotateKey publishes the next signing key (tokens.admin.keys.rotate). Not
// retried after the request may have arrived: a second rotation would
// publish another key.
func (c *Client) RotateKey(ctx context.Context) (*api.KeysResponse, error) {
	return c.keys(ctx, "admin.keys.rotate", nil, retryUndelivered)
}

// RevokeKey revokes a signing key at once (tokens.admin.keys.revoke). Safe
// to retry: revoking a revoked key changes nothing.
func (c *Client) RevokeKey(ctx context.Context, req api.KeyRevokeRequest) (*api.KeysResponse, error) {
	return c.keys(ctx, "admin.keys.revoke", req, retrySafe)
}

func (c *Client) keys(ctx context.Context, endpoint string, req any, policy retryPolicy) (*api.KeysResponse, error) {
	var out api.KeysResponse
	if err := c.call(ctx, endpoint, req, &out, policy); err != nil {
		return nil, err
	}
	return &out, nil
}
