package client

import (
	"context"
	"encoding/json"
	"time"
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
	// TokenTypeHint is "refresh_token", "access_token" or empty.
	TokenTypeHint string
}

// Token type hints.
const (
	HintRefreshToken = "refresh_token"
	HintAccessToken  = "access_token"
)

// TokenResponse is the reply of Issue and Refresh.
type TokenResponse struct {
	AccessToken  string `json:"access_token"`
	TokenType    string `json:"token_type"`
	ExpiresIn    int64  `json:"expires_in"`
	RefreshToken string `json:"refresh_token"`
	// RefreshTokenExpiresIn is the refresh token's idle lifetime, seconds.
	RefreshTokenExpiresIn int64  `json:"refresh_token_expires_in"`
	FamilyID              string `json:"family_id"`
	Scope                 string `json:"scope"`
}

// Introspection is the reply of Introspect (RFC 7662): only Active for an
// inactive token.
type Introspection struct {
	Active bool `json:"active"`
	// TokenType is "Bearer" for access tokens, "refresh_token" for refresh
	// tokens.
	TokenType string   `json:"token_type,omitempty"`
	Subject   string   `json:"sub,omitempty"`
	ClientID  string   `json:"client_id,omitempty"`
	Scope     string   `json:"scope,omitempty"`
	Audience  []string `json:"aud,omitempty"`
	Issuer    string   `json:"iss,omitempty"`
	ExpiresAt int64    `json:"exp,omitempty"`
	IssuedAt  int64    `json:"iat,omitempty"`
	NotBefore int64    `json:"nbf,omitempty"`
	JTI       string   `json:"jti,omitempty"`
	// SID is the family id.
	SID string `json:"sid,omitempty"`
}

// JWK is one public key (RFC 7517).
type JWK struct {
	Kty string `json:"kty"`
	Kid string `json:"kid"`
	Alg string `json:"alg"`
	Use string `json:"use"`
	Crv string `json:"crv,omitempty"`
	X   string `json:"x,omitempty"`
	Y   string `json:"y,omitempty"`
	N   string `json:"n,omitempty"`
	E   string `json:"e,omitempty"`
}

// JWKS is the reply of JWKS: the current key and retired keys whose tokens
// can still be valid.
type JWKS struct {
	Keys []JWK `json:"keys"`
}

// Session is one active token family.
type Session struct {
	FamilyID  string    `json:"family_id"`
	ClientID  string    `json:"client_id"`
	CreatedAt time.Time `json:"created_at"`
	// RotatedAt is nil for a family never rotated.
	RotatedAt  *time.Time `json:"rotated_at"`
	Generation uint64     `json:"generation"`
	Version    int        `json:"version"`
	ExpiresAt  time.Time  `json:"expires_at"`
}

// Sessions is the reply of Sessions and AdminSessions, oldest first.
type Sessions struct {
	Families []Session `json:"families"`
}

// AdminRevokeRequest revokes the active families of exactly one selector.
type AdminRevokeRequest struct {
	FamilyID string `json:"family_id,omitempty"`
	Subject  string `json:"subject,omitempty"`
	ClientID string `json:"client_id,omitempty"`
	// Reason is recorded in the ledger (required).
	Reason string `json:"reason"`
}

// AdminRevokeResponse counts the families the request revoked.
type AdminRevokeResponse struct {
	RevokedFamilies int `json:"revoked_families"`
}

// Digest is the live view's digest at Time and the ledger sequence it had
// applied (for `tokenledger audit diff --live`).
type Digest struct {
	Seq    uint64    `json:"seq"`
	Time   time.Time `json:"time"`
	Digest string    `json:"digest"`
}

// The wire bodies: the contract's member names; optional members omitted
// when empty, since the service refuses unknown ones.
type (
	issueBody struct {
		ClientID     string                     `json:"client_id"`
		ClientSecret string                     `json:"client_secret"`
		Subject      string                     `json:"subject"`
		Audience     []string                   `json:"audience,omitempty"`
		Scope        string                     `json:"scope,omitempty"`
		Claims       map[string]json.RawMessage `json:"claims,omitempty"`
	}
	refreshBody struct {
		ClientID     string `json:"client_id"`
		ClientSecret string `json:"client_secret"`
		RefreshToken string `json:"refresh_token"`
		Scope        string `json:"scope,omitempty"`
	}
	tokenBody struct {
		ClientID      string `json:"client_id"`
		ClientSecret  string `json:"client_secret"`
		Token         string `json:"token"`
		TokenTypeHint string `json:"token_type_hint,omitempty"`
	}
	sessionsBody struct {
		ClientID     string `json:"client_id"`
		ClientSecret string `json:"client_secret"`
		Subject      string `json:"subject"`
	}
	adminSessionsBody struct {
		Subject string `json:"subject"`
	}
	revokeReply struct {
		Revoked bool `json:"revoked"`
	}
)

// Issue starts a token family for req.Subject (tokens.issue). It is not
// idempotent: it is retried only when no instance received it.
func (c *Client) Issue(ctx context.Context, creds Credentials, req IssueRequest) (*TokenResponse, error) {
	var out TokenResponse
	err := c.call(ctx, "issue", issueBody{creds.ID, creds.Secret, req.Subject, req.Audience, req.Scope, req.Claims}, &out, retryUndelivered)
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
	if err := c.call(ctx, "refresh", refreshBody{creds.ID, creds.Secret, req.RefreshToken, req.Scope}, &out, retryRefresh); err != nil {
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
	var out revokeReply
	return c.call(ctx, "revoke", tokenBody{creds.ID, creds.Secret, req.Token, req.TokenTypeHint}, &out, retrySafe)
}

// Introspect reports whether a token is active (tokens.introspect, RFC
// 7662).
func (c *Client) Introspect(ctx context.Context, creds Credentials, req TokenRequest) (*Introspection, error) {
	var out Introspection
	if err := c.call(ctx, "introspect", tokenBody{creds.ID, creds.Secret, req.Token, req.TokenTypeHint}, &out, retrySafe); err != nil {
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
	if err := c.call(ctx, "sessions", sessionsBody{creds.ID, creds.Secret, subject}, &out, retrySafe); err != nil {
		return nil, err
	}
	return &out, nil
}

// AdminSessions lists subject's active families of every client
// (tokens.admin.sessions; NATS permissions keep it to operators).
func (c *Client) AdminSessions(ctx context.Context, subject string) (*Sessions, error) {
	var out Sessions
	if err := c.call(ctx, "admin.sessions", adminSessionsBody{subject}, &out, retrySafe); err != nil {
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
