package handlers

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/nats-io/nats.go/micro"

	"github.com/tokenledger/tokenledger/api"
	"github.com/tokenledger/tokenledger/ledger"
	"github.com/tokenledger/tokenledger/ledger/jsstore"
	"github.com/tokenledger/tokenledger/ledger/token"
)

// errNoSigningKey: the key set holds no key that may sign now (every key
// revoked, and the ring has not yet stored a new one): retry.
var errNoSigningKey = fmt.Errorf("no signing key: %w", ledger.ErrUnavailable)

// DecodeKeyRevokeRequest decodes and checks a key revocation request.
func DecodeKeyRevokeRequest(body []byte, limit int) (api.KeyRevokeRequest, error) {
	var r api.KeyRevokeRequest
	if err := decodeStrict(body, limit, &r); err != nil {
		return r, err
	}
	if r.KID == "" {
		return r, badRequest("kid is required")
	}
	if !token.ValidKID(r.KID) {
		return r, badRequest("kid is not a key id (1-64 of A-Z a-z 0-9 _ -)")
	}
	if r.Reason != "" {
		if err := validText("reason", r.Reason, 1024); err != nil {
			return r, err
		}
	}
	return r, nil
}

// addKeyEndpoints registers tokens.admin.keys.list, .rotate and .revoke
// when the service has a key ring (Run calls it).
func (s *Service) addKeyEndpoints(ctx context.Context, jobs chan<- func(), svc *microService) error {
	if s.cfg.Ring == nil {
		return nil
	}
	for _, ep := range []struct {
		endpoint
		subject string
	}{
		{endpoint{"admin_keys_list", s.keysList}, "admin.keys.list"},
		{endpoint{"admin_keys_rotate", s.keysRotate}, "admin.keys.rotate"},
		{endpoint{"admin_keys_revoke", s.keysRevoke}, "admin.keys.revoke"},
	} {
		if err := svc.addEndpoint(ep.name, s.cfg.Prefix+"."+ep.subject, s.dispatch(ctx, jobs, ep.endpoint)); err != nil {
			return err
		}
	}
	return nil
}

// emptyBody accepts an empty body or {}.
func (s *Service) emptyBody(req micro.Request) error {
	if strings.TrimSpace(string(req.Data())) == "" {
		return nil
	}
	var empty struct{}
	return decodeStrict(req.Data(), s.cfg.MaxRequestBytes, &empty)
}

func (s *Service) keysReply(ks token.KeySet) api.KeysResponse {
	return api.KeysResponse{Keys: ks.Info(s.cfg.Ledger.Now(), s.cfg.Ring.Config().MaxTokenAge)}
}

// keysList answers with the key set the bucket holds.
func (s *Service) keysList(ctx context.Context, req micro.Request) (any, error) {
	if err := s.emptyBody(req); err != nil {
		return nil, err
	}
	ks, _, err := s.cfg.Ring.Config().Keys.Load(ctx)
	if err != nil {
		return nil, err
	}
	return s.keysReply(ks), nil
}

// keysRotate publishes the next key (it signs one JWKS cache period
// later) unless one is published already.
func (s *Service) keysRotate(ctx context.Context, req micro.Request) (any, error) {
	if err := s.emptyBody(req); err != nil {
		return nil, err
	}
	ks, err := s.cfg.Ring.Rotate(ctx, ledger.Cause{Kind: ledger.CauseAdmin, ID: s.requestID(req)})
	if err != nil {
		return nil, err
	}
	return s.keysReply(ks), nil
}

// keysRevoke revokes a key at once. The reply is sent once the
// key.revoked.v1 event is in the ledger, so an introspection that follows,
// on any instance with the view, answers inactive for the key's tokens.
func (s *Service) keysRevoke(ctx context.Context, req micro.Request) (any, error) {
	r, err := DecodeKeyRevokeRequest(req.Data(), s.cfg.MaxRequestBytes)
	if err != nil {
		return nil, err
	}
	ks, err := s.cfg.Ring.Revoke(ctx, r.KID, ledger.Cause{Kind: ledger.CauseAdmin, ID: s.requestID(req), Reason: r.Reason})
	if errors.Is(err, jsstore.ErrUnknownKey) {
		return nil, badRequest("no signing key has this kid")
	}
	if err != nil {
		return nil, err
	}
	return s.keysReply(ks), nil
}
