package handlers

import (
	"context"
	"fmt"

	"github.com/nats-io/nats.go/micro"

	"github.com/tokenledger/tokenledger/api"
	"github.com/tokenledger/tokenledger/ledger"
)

// DecodeSessionsRequest decodes and checks a sessions request.
func DecodeSessionsRequest(body []byte, limit int) (api.SessionsRequest, error) {
	var r api.SessionsRequest
	if err := decodeStrict(body, limit, &r); err != nil {
		return r, err
	}
	if err := clientCredentials(r.ClientID, r.ClientSecret); err != nil {
		return r, err
	}
	return r, validText("subject", r.Subject, 256)
}

// DecodeAdminSessionsRequest decodes and checks an admin sessions request.
func DecodeAdminSessionsRequest(body []byte, limit int) (api.AdminSessionsRequest, error) {
	var r api.AdminSessionsRequest
	if err := decodeStrict(body, limit, &r); err != nil {
		return r, err
	}
	return r, validText("subject", r.Subject, 256)
}

// sessions lists the subject's active families of the authenticated
// client, oldest first: one relying service never learns of another's.
func (s *Service) sessions(ctx context.Context, req micro.Request) (any, error) {
	if s.cfg.View == nil {
		return nil, errNoView
	}
	r, err := DecodeSessionsRequest(req.Data(), s.cfg.MaxRequestBytes)
	if err != nil {
		return nil, err
	}
	client, err := s.cfg.Registry.Authenticate(ctx, r.ClientID, r.ClientSecret)
	if err != nil {
		return nil, err
	}
	return s.listSessions(ctx, r.Subject, client.ID)
}

// adminSessions lists the subject's active families of every client.
func (s *Service) adminSessions(ctx context.Context, req micro.Request) (any, error) {
	if s.cfg.View == nil {
		return nil, errNoView
	}
	r, err := DecodeAdminSessionsRequest(req.Data(), s.cfg.MaxRequestBytes)
	if err != nil {
		return nil, err
	}
	return s.listSessions(ctx, r.Subject, "")
}

// listSessions waits for the view to reach the stream's last sequence, so a
// family issued or revoked before the request is reflected, then lists the
// subject's active families, of clientID only unless it is empty.
func (s *Service) listSessions(ctx context.Context, subject, clientID string) (api.SessionsResponse, error) {
	if err := s.catchUp(ctx); err != nil {
		return api.SessionsResponse{}, err
	}
	out := api.SessionsResponse{Families: []api.Session{}}
	for _, f := range s.cfg.View.FamilyViewsBySubject(subject, s.cfg.Ledger.Now()) {
		if clientID != "" && f.ClientID != clientID {
			continue
		}
		sess := api.Session{
			FamilyID: f.ID, ClientID: f.ClientID, CreatedAt: f.CreatedAt,
			Generation: f.Generation, Version: f.Version, ExpiresAt: f.ExpiresAt,
		}
		if !f.RotatedAt.IsZero() {
			sess.RotatedAt = &f.RotatedAt
		}
		out.Families = append(out.Families, sess)
	}
	return out, nil
}

// catchUp waits until the view has applied everything in the stream now.
func (s *Service) catchUp(ctx context.Context) error {
	last, err := s.cfg.Ledger.LastSeq(ctx)
	if err != nil {
		return err
	}
	if err := s.cfg.View.WaitFor(ctx, last); err != nil {
		return fmt.Errorf("%w: %w", ledger.ErrUnavailable, err)
	}
	return nil
}
