package api

import "encoding/json"

// IssueRequest is the body of tokens.issue.
type IssueRequest struct {
	ClientID     string                     `json:"client_id"`
	ClientSecret string                     `json:"client_secret"`
	Subject      string                     `json:"subject"`
	Audience     []string                   `json:"audience,omitempty"`
	Scope        string                     `json:"scope,omitempty"`
	Claims       map[string]json.RawMessage `json:"claims,omitempty"`
}

// RefreshRequest is the body of tokens.refresh.
type RefreshRequest struct {
	ClientID     string `json:"client_id"`
	ClientSecret string `json:"client_secret"`
	RefreshToken string `json:"refresh_token"`
	Scope        string `json:"scope,omitempty"`
}

// TokenResponse is the reply of tokens.issue and tokens.refresh.
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

// Token type hints of TokenRequest (RFC 7009 §2.1, RFC 7662 §2.1).
const (
	HintRefreshToken = "refresh_token"
	HintAccessToken  = "access_token"
)

// TokenRequest is the body of tokens.revoke and tokens.introspect.
type TokenRequest struct {
	ClientID      string `json:"client_id"`
	ClientSecret  string `json:"client_secret"`
	Token         string `json:"token"`
	TokenTypeHint string `json:"token_type_hint,omitempty"`
}

// RevokeResponse is the reply of tokens.revoke: always revoked, also for
// unknown tokens and other clients' tokens (RFC 7009 §2.2).
type RevokeResponse struct {
	Revoked bool `json:"revoked"`
}

// Token types reported by introspection: access tokens are bearer tokens
// (RFC 6749 §7.1), refresh tokens are named as their hint.
const (
	TokenTypeBearer  = "Bearer"
	TokenTypeRefresh = "refresh_token"
)

// IntrospectResponse is the reply of tokens.introspect (RFC 7662 §2.2). An
// inactive token is answered with {"active": false} and nothing else.
type IntrospectResponse struct {
	Active bool `json:"active"`
	// TokenType is TokenTypeBearer or TokenTypeRefresh.
	TokenType string   `json:"token_type,omitempty"`
	Subject   string   `json:"sub,omitempty"`
	ClientID  string   `json:"client_id,omitempty"`
	Scope     string   `json:"scope,omitempty"`
	Audience  []string `json:"aud,omitempty"`
	Issuer    string   `json:"iss,omitempty"`
	ExpiresAt int64    `json:"exp,omitzero"`
	IssuedAt  int64    `json:"iat,omitzero"`
	NotBefore int64    `json:"nbf,omitzero"`
	JTI       string   `json:"jti,omitempty"`
	// SID is the family id.
	SID string `json:"sid,omitempty"`
}

// JWK is a public key as RFC 7517 publishes it.
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

// JWKS is the reply of tokens.jwks: the current key and retired keys whose
// tokens can still be valid.
type JWKS struct {
	Keys []JWK `json:"keys"`
}
