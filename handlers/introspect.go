package handlers

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/micro"

	"github.com/tokenledger/tokenledger/ledger"
)

// Token types reported by introspection: access tokens are bearer tokens
// (RFC 6749 §7.1), refresh tokens are named as their hint.
const (
	TokenTypeBearer  = "Bearer"
	TokenTypeRefresh = "refresh_token"
)

// IntrospectResponse is the reply of tokens.introspect (RFC 7662 §2.2). An
// inactive token is answered with {"active": false} and nothing else.
type IntrospectResponse struct {
	Active    bool     `json:"active"`
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
	SID       string   `json:"sid,omitempty"`
}

var inactive = IntrospectResponse{}

// introspect implements RFC 7662 for access and refresh tokens. Any
// authenticated client may introspect an access token (resource servers
// introspect tokens issued to others); a refresh token is reported active
// only to the client it was issued to.
//
// Read-your-writes: the family's last sequence is read from the ledger
// (one direct get) and the view waits for it, so a revocation answered by
// any instance is seen by this one.
func (s *Service) introspect(ctx context.Context, req micro.Request) (any, error) {
	if s.cfg.View == nil {
		return nil, errNoView
	}
	r, err := DecodeTokenRequest(req.Data(), s.cfg.MaxRequestBytes)
	if err != nil {
		return nil, err
	}
	client, err := s.cfg.Registry.Authenticate(ctx, r.ClientID, r.ClientSecret)
	if err != nil {
		return nil, err
	}
	if isRefreshToken(r.Token) {
		return s.introspectRefresh(ctx, client, r.Token)
	}
	return s.introspectAccess(ctx, r.Token)
}

func (s *Service) introspectAccess(ctx context.Context, raw string) (IntrospectResponse, error) {
	c, ok := s.verifyAccess(raw) // signature, issuer, type and expiry
	if !ok {
		return inactive, nil
	}
	st, err := s.cfg.Ledger.Store().Load(ctx, c.SID)
	if errors.Is(err, ledger.ErrUnknownFamily) {
		return inactive, nil
	}
	if err != nil {
		return inactive, err
	}
	now := s.cfg.Ledger.Now()
	if !st.Exists() || st.StatusAt(now) != ledger.StatusActive {
		return inactive, nil
	}
	if err := s.cfg.View.WaitFor(ctx, st.Seq); err != nil {
		return inactive, fmt.Errorf("introspect: %w: %w", ledger.ErrUnavailable, err)
	}
	if s.cfg.View.AccessRevoked(c.JTI, c.SID, time.Unix(c.IssuedAt, 0), now) {
		return inactive, nil
	}
	return IntrospectResponse{
		Active: true, TokenType: TokenTypeBearer, Subject: c.Subject, ClientID: c.ClientID,
		Scope: c.Scope, Audience: c.Audience, Issuer: c.Issuer, ExpiresAt: c.ExpiresAt,
		IssuedAt: c.IssuedAt, NotBefore: c.NotBefore, JTI: c.JTI, SID: c.SID,
	}, nil
}

// introspectRefresh reports a refresh token active while it is the
// family's current one, within its idle lifetime, and the family active.
// The ledger's state is authoritative and one direct get away.
func (s *Service) introspectRefresh(ctx context.Context, client ledger.Client, raw string) (IntrospectResponse, error) {
	tok, err := ledger.ParseRefreshToken(raw)
	if err != nil {
		return inactive, nil
	}
	st, err := s.cfg.Ledger.Store().Load(ctx, tok.FamilyID.String())
	if errors.Is(err, ledger.ErrUnknownFamily) {
		return inactive, nil
	}
	if err != nil {
		return inactive, err
	}
	now := s.cfg.Ledger.Now()
	switch {
	case !st.Exists(), st.ClientID != client.ID,
		!ledger.HashEqual(ledger.HashToken(raw), st.TokenHash),
		st.StatusAt(now) != ledger.StatusActive, !now.Before(st.RefreshExpiresAt):
		return inactive, nil
	}
	return IntrospectResponse{
		Active: true, TokenType: TokenTypeRefresh, Subject: st.Subject, ClientID: st.ClientID,
		Scope: st.Scope, Audience: st.Audience, Issuer: s.cfg.Issuer,
		ExpiresAt: st.RefreshExpiresAt.Unix(), IssuedAt: st.TokenIssuedAt.Unix(), SID: st.FamilyID,
	}, nil
}
