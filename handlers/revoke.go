package handlers

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go/micro"

	"github.com/tokenledger/tokenledger/api"
	"github.com/tokenledger/tokenledger/ledger"
	"github.com/tokenledger/tokenledger/ledger/jsstore"
	"github.com/tokenledger/tokenledger/ledger/token"
)

// errNoView: the service runs without the valid-token view, so the
// endpoints that read it cannot answer.
var errNoView = errors.New("handlers: the valid-token view is not configured")

// addViewEndpoints registers the endpoints that read the valid-token view:
// revoke, introspect, sessions, admin.sessions, admin.revoke,
// admin.digest and, with the rollout read model too, admin.rollout. Run
// calls it. Without a view they are not registered, so requests go to
// instances that have one.
func (s *Service) addViewEndpoints(ctx context.Context, jobs chan<- func(), svc *microService) error {
	if s.cfg.View == nil {
		return nil
	}
	for _, ep := range []struct {
		endpoint
		subject string
	}{
		{endpoint{"revoke", s.revoke}, "revoke"},
		{endpoint{"introspect", s.introspect}, "introspect"},
		{endpoint{"sessions", s.sessions}, "sessions"},
		{endpoint{"admin_sessions", s.adminSessions}, "admin.sessions"},
		{endpoint{"admin_revoke", s.adminRevoke}, "admin.revoke"},
		{endpoint{"admin_digest", s.adminDigest}, "admin.digest"},
		{endpoint{"admin_rollout", s.adminRollout}, "admin.rollout"},
	} {
		if ep.name == "admin_rollout" && s.cfg.Rollouts == nil {
			continue // progress needs the rollout read model too
		}
		h := s.dispatch(ctx, jobs, ep.endpoint)
		if ep.name == "introspect" {
			pooled := h
			h = func(req micro.Request) {
				if !s.introspectNow(req) {
					pooled(req)
				}
			}
		}
		if err := svc.addEndpoint(ep.name, s.cfg.Prefix+"."+ep.subject, h); err != nil {
			return err
		}
	}
	return nil
}

// DecodeTokenRequest decodes and checks the shape of a revoke or
// introspect request.
func DecodeTokenRequest(body []byte, limit int) (api.TokenRequest, error) {
	var r api.TokenRequest
	if err := decodeStrict(body, limit, &r); err != nil {
		return r, err
	}
	if err := clientCredentials(r.ClientID, r.ClientSecret); err != nil {
		return r, err
	}
	if r.Token == "" {
		return r, badRequest("token is required")
	}
	switch r.TokenTypeHint {
	case "", api.HintRefreshToken, api.HintAccessToken:
	default:
		return r, badRequest("token_type_hint must be refresh_token or access_token")
	}
	return r, nil
}

// isRefreshToken tells the two token formats apart: refresh tokens carry
// their prefix and access tokens are JWTs, so the hint only names what the
// format already says and is not needed to find the token.
func isRefreshToken(raw string) bool { return strings.HasPrefix(raw, token.RefreshPrefix) }

// revoke implements RFC 7009. A refresh token revokes its family (and so
// every access token of it); an access token is denied until it expires.
// A token that is unknown, forged, expired or another client's answers
// revoked and changes nothing. The reply is sent only once the view has
// applied the revocation, so an introspection that follows sees it.
func (s *Service) revoke(ctx context.Context, req micro.Request) (any, error) {
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
	cause := ledger.Cause{Kind: ledger.CauseRevoke, ID: s.requestID(req)}
	var seq uint64
	if isRefreshToken(r.Token) {
		seq, err = s.revokeRefresh(ctx, client, r.Token, cause)
	} else {
		seq, err = s.revokeAccess(ctx, client, r.Token, cause)
	}
	if err != nil {
		return nil, err
	}
	if err := s.cfg.View.WaitFor(ctx, seq); err != nil {
		return nil, fmt.Errorf("revoke: %w: %w", ledger.ErrUnavailable, err)
	}
	return api.RevokeResponse{Revoked: true}, nil
}

// revokeRefresh revokes the family of a genuine refresh token of the
// client and returns the sequence to wait for. A string that is not a
// genuine token, or a token of another client's family, revokes nothing
// (RFC 7009 §2.2: the reply is the same).
func (s *Service) revokeRefresh(ctx context.Context, client ledger.Client, raw string, cause ledger.Cause) (uint64, error) {
	st, err := s.cfg.Ledger.RevokeToken(ctx, client.ID, raw, cause)
	switch {
	case errors.Is(err, ledger.ErrInvalidToken), errors.Is(err, ledger.ErrUnknownFamily), errors.Is(err, ledger.ErrWrongClient):
		return 0, nil
	case err != nil:
		return 0, err
	}
	return st.Seq, nil
}

// revokeAccess denies a valid access token of the client until it expires.
// A token the view denies already (its jti, its family or a cutoff) is not
// recorded again: Decide leaves it out, told by the view once the view has
// applied the family's last event.
func (s *Service) revokeAccess(ctx context.Context, client ledger.Client, raw string, cause ledger.Cause) (uint64, error) {
	c, ok := s.verifyAccess(raw)
	if !ok || c.ClientID != client.ID {
		return 0, nil
	}
	denied := func(ctx context.Context, st ledger.State) (bool, error) {
		if err := s.cfg.View.WaitFor(ctx, st.Seq); err != nil {
			return false, fmt.Errorf("revoke: %w: %w", ledger.ErrUnavailable, err)
		}
		return s.cfg.View.AccessRevoked(c.JTI, c.SID, time.Unix(c.IssuedAt, 0), c.FamilyEvent, s.cfg.Ledger.Now()), nil
	}
	at := jsstore.AccessToken{FamilyID: c.SID, JTI: c.JTI, ExpiresAt: time.Unix(c.ExpiresAt, 0)}
	st, err := s.cfg.Ledger.RevokeAccess(ctx, at, cause, denied)
	if errors.Is(err, ledger.ErrUnknownFamily) {
		return 0, nil
	}
	return st.Seq, err
}

// verifyAccess checks an access token's signature, type, issuer and expiry
// against the service's own published keys.
func (s *Service) verifyAccess(raw string) (token.AccessClaims, bool) {
	now := s.cfg.Ledger.Now()
	kv, err := s.keysAt(now)
	if err != nil {
		return token.AccessClaims{}, false
	}
	v, err := token.NewVerifier(kv.set.JWKS(now, kv.maxAge), s.cfg.Algs, s.cfg.Issuer, s.cfg.Ledger.Now)
	if err != nil {
		return token.AccessClaims{}, false
	}
	c, err := v.Verify(raw)
	return c, err == nil
}
