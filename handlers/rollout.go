package handlers

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/micro"

	"github.com/tokenledger/tokenledger/api"
	"github.com/tokenledger/tokenledger/ledger"
	"github.com/tokenledger/tokenledger/ledger/jsstore"
	"github.com/tokenledger/tokenledger/projections"
)

// rolloutRequest is a decoded RolloutRequest.
type rolloutRequest struct {
	clientID string
	version  int // 0: read only
	percent  int
	deadline time.Time
}

// DecodeRolloutRequest decodes and checks the shape of a rollout request;
// the rules that need the stored rollout are ledger.DecideRollout's.
func DecodeRolloutRequest(body []byte, limit int) (api.RolloutRequest, error) {
	var r api.RolloutRequest
	if err := decodeStrict(body, limit, &r); err != nil {
		return r, err
	}
	if err := validText("client_id", r.ClientID, 128); err != nil {
		return r, err
	}
	if !ledger.ValidClientID(r.ClientID) {
		return r, badRequest("unknown client")
	}
	if r.Version == 0 && (r.Percent != nil || r.Deadline != "") {
		return r, badRequest("version is required to start or change a rollout")
	}
	if r.Version < 0 || r.Version > ledger.MaxTokenVersion {
		return r, badRequest(fmt.Sprintf("version must be between 1 and %d", ledger.MaxTokenVersion))
	}
	if r.Percent != nil && (*r.Percent < 1 || *r.Percent > 100) {
		return r, badRequest("percent must be between 1 and 100")
	}
	return r, nil
}

// parseRollout reads a decoded rollout request into its values.
func parseRollout(r api.RolloutRequest) (rolloutRequest, error) {
	out := rolloutRequest{clientID: r.ClientID, version: r.Version, percent: 100}
	if r.Percent != nil {
		out.percent = *r.Percent
	}
	if r.Deadline != "" {
		t, err := time.Parse(time.RFC3339, r.Deadline)
		if err != nil {
			return out, badRequest("deadline is not an RFC 3339 time")
		}
		out.deadline = t.UTC()
	}
	return out, nil
}

// adminRollout starts, changes or reads a client's rollout. It replies
// once the read models have applied the ledger as of the request (its own
// event included), so the progress is as of the reply.
func (s *Service) adminRollout(ctx context.Context, req micro.Request) (any, error) {
	if s.cfg.View == nil || s.cfg.Rollouts == nil {
		return nil, errNoView
	}
	body, err := DecodeRolloutRequest(req.Data(), s.cfg.MaxRequestBytes)
	if err != nil {
		return nil, err
	}
	r, err := parseRollout(body)
	if err != nil {
		return nil, err
	}
	if _, err := s.cfg.Registry.Get(ctx, r.clientID); errors.Is(err, ledger.ErrInvalidClient) {
		return nil, badRequest("unknown client")
	} else if err != nil {
		return nil, err
	}
	var (
		ro      ledger.RolloutState
		changed bool
	)
	if r.version == 0 {
		ro, err = s.cfg.Ledger.Rollout(ctx, r.clientID)
	} else {
		ro, changed, err = s.cfg.Ledger.SetRollout(ctx, jsstore.RolloutRequest{
			ClientID: r.clientID, Version: r.version, Percent: r.percent, Deadline: r.deadline,
			RequestID: s.requestID(req),
		})
	}
	var refused *ledger.RolloutError
	if errors.As(err, &refused) {
		return nil, badRequest(refused.Reason)
	}
	if err != nil {
		return nil, err
	}
	if err := s.catchUp(ctx); err != nil { // the view first feeds Rollouts
		return nil, err
	}
	return rolloutResponse(r.clientID, ro, changed, s.cfg.View, s.cfg.Rollouts, s.cfg.Ledger.Now()), nil
}

func rolloutResponse(clientID string, ro ledger.RolloutState, changed bool, view *projections.View, rollouts *projections.Rollouts, now time.Time) api.RolloutResponse {
	resp := api.RolloutResponse{
		RolloutID: ro.ID, ClientID: clientID, Version: ro.Version, Percent: ro.Percent,
		BaseVersion: ro.BaseVersion, Changed: changed,
	}
	if !ro.Deadline.IsZero() {
		d := ro.Deadline.UTC()
		resp.Deadline = &d
	}
	if ro.Exists() {
		t := ro.StartedAt.UTC()
		resp.StartedAt = &t
	}
	resp.Progress.AtOrAbove, resp.Progress.Below = view.ClientVersions(clientID, max(ro.Version, 1), now)
	p := rollouts.Progress(ro.ID)
	resp.Progress.Refused, resp.Progress.Moved, resp.Progress.Issued = p.Refused, p.Moved, p.Issued
	return resp
}
