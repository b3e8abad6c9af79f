package handlers

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/micro"

	"github.com/tokenledger/tokenledger/ledger"
)

// SessionsRequest is the body of tokens.sessions.
type SessionsRequest struct {
	Subject string `json:"subject"`
}

// Session is one active family in the reply of tokens.sessions.
type Session struct {
	FamilyID  string    `json:"family_id"`
	ClientID  string    `json:"client_id"`
	CreatedAt time.Time `json:"created_at"`
	// RotatedAt is null for a family never rotated: every key of SPEC §3
	// is always there.
	RotatedAt  *time.Time `json:"rotated_at"`
	Generation uint64     `json:"generation"`
	Version    int        `json:"version"`
	ExpiresAt  time.Time  `json:"expires_at"`
}

// SessionsResponse is the reply of tokens.sessions.
type SessionsResponse struct {
	Families []Session `json:"families"`
}

// DecodeSessionsRequest decodes and checks a sessions request.
func DecodeSessionsRequest(body []byte, limit int) (SessionsRequest, error) {
	var r SessionsRequest
	if err := decodeStrict(body, limit, &r); err != nil {
		return r, err
	}
	return r, validText("subject", r.Subject, 256)
}

// sessions lists the subject's active families, oldest first. It first
// waits for the view to reach the stream's last sequence, so a family
// issued or revoked before the request is reflected.
func (s *Service) sessions(ctx context.Context, req micro.Request) (any, error) {
	if s.cfg.View == nil {
		return nil, errNoView
	}
	r, err := DecodeSessionsRequest(req.Data(), s.cfg.MaxRequestBytes)
	if err != nil {
		return nil, err
	}
	if err := s.catchUp(ctx); err != nil {
		return nil, err
	}
	out := SessionsResponse{Families: []Session{}}
	for _, f := range s.cfg.View.FamilyViewsBySubject(r.Subject, s.cfg.Ledger.Now()) {
		sess := Session{
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
