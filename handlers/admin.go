package handlers

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go/micro"
	"golang.org/x/sync/errgroup"

	"github.com/tokenledger/tokenledger/api"
	"github.com/tokenledger/tokenledger/ledger"
)

// adminRevokeParallel bounds the revocations one admin request runs at once.
const adminRevokeParallel = 16

// DecodeAdminRevokeRequest decodes and checks an admin revoke request.
func DecodeAdminRevokeRequest(body []byte, limit int) (api.AdminRevokeRequest, error) {
	var r api.AdminRevokeRequest
	if err := decodeStrict(body, limit, &r); err != nil {
		return r, err
	}
	n := 0
	for _, f := range []string{r.FamilyID, r.Subject, r.ClientID} {
		if f != "" {
			n++
		}
	}
	if n != 1 {
		return r, badRequest("exactly one of family_id, subject and client_id is required")
	}
	if r.FamilyID != "" && !ledger.ValidFamilyID(r.FamilyID) {
		return r, badRequest("family_id is not a family id")
	}
	if r.Subject != "" {
		if err := validText("subject", r.Subject, 256); err != nil {
			return r, err
		}
	}
	if r.ClientID != "" {
		if err := validText("client_id", r.ClientID, 128); err != nil {
			return r, err
		}
	}
	return r, validText("reason", r.Reason, 1024)
}

// adminRevoke revokes the selected active families with cause admin and the
// reason. It replies once the view has applied every revocation, so
// sessions and introspection that follow see them.
func (s *Service) adminRevoke(ctx context.Context, req micro.Request) (any, error) {
	if s.cfg.View == nil {
		return nil, errNoView
	}
	r, err := DecodeAdminRevokeRequest(req.Data(), s.cfg.MaxRequestBytes)
	if err != nil {
		return nil, err
	}
	now := s.cfg.Ledger.Now()
	var ids []string
	switch {
	case r.FamilyID != "":
		ids = []string{r.FamilyID} // Decide records nothing unless it is active
	default:
		if err := s.catchUp(ctx); err != nil {
			return nil, err
		}
		if r.Subject != "" {
			ids = s.cfg.View.FamiliesBySubject(r.Subject, now)
		} else {
			ids = s.cfg.View.FamiliesByClient(r.ClientID, now)
		}
	}

	cause := ledger.Cause{Kind: ledger.CauseAdmin, ID: s.requestID(req), Reason: r.Reason}
	var (
		mu      sync.Mutex
		revoked int
		maxSeq  uint64
	)
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(adminRevokeParallel)
	for _, id := range ids {
		g.Go(func() error {
			st, err := s.cfg.Ledger.Revoke(gctx, id, cause)
			if errors.Is(err, ledger.ErrUnknownFamily) {
				return nil
			}
			if err != nil {
				return err
			}
			mu.Lock()
			defer mu.Unlock()
			maxSeq = max(maxSeq, st.Seq)
			// Count only the families this request revoked, not those
			// another cause got to first.
			if st.Revoked != nil && st.Revoked.Cause == cause {
				revoked++
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, fmt.Errorf("admin revoke (%d of %d done): %w", revoked, len(ids), err)
	}
	if err := s.cfg.View.WaitFor(ctx, maxSeq); err != nil {
		return nil, fmt.Errorf("admin revoke: %w: %w", ledger.ErrUnavailable, err)
	}
	return api.AdminRevokeResponse{RevokedFamilies: revoked}, nil
}

func (s *Service) adminDigest(_ context.Context, req micro.Request) (any, error) {
	if len(bytes.TrimSpace(req.Data())) > 0 {
		var empty struct{}
		if err := decodeStrict(req.Data(), s.cfg.MaxRequestBytes, &empty); err != nil {
			return nil, err
		}
	}
	// The digest has second precision: take it at a whole second.
	now := s.cfg.Ledger.Now().Truncate(time.Second)
	digest, seq := s.cfg.View.DigestAt(now)
	return api.DigestResponse{Seq: seq, Time: now.UTC(), Digest: digest}, nil
}
