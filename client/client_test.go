package client_test

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/tokenledger/tokenledger/api"
	"github.com/tokenledger/tokenledger/client"
	"github.com/tokenledger/tokenledger/internal/tltest"
)

var creds = client.Credentials{ID: tltest.ClientID, Secret: tltest.Secret}

func start(t *testing.T) (*tltest.Env, *client.Client) {
	t.Helper()
	env := tltest.New(t, "")
	env.StartInstance(tltest.Options{Grace: 10 * time.Second})
	return env, client.New(env.NC)
}

// TestEndpoints calls every endpoint the service registers through the
// client and checks the typed replies.
func TestEndpoints(t *testing.T) {
	_, tl := start(t)
	ctx := context.Background()

	tok, err := tl.Issue(ctx, creds, client.IssueRequest{Subject: "alice", Scope: "read"})
	if err != nil {
		t.Fatal(err)
	}
	if tok.AccessToken == "" || !strings.HasPrefix(tok.RefreshToken, "tlr_") || tok.Scope != "read" || tok.FamilyID == "" || tok.TokenType != "Bearer" {
		t.Fatalf("issue: %+v", tok)
	}
	next, err := tl.Refresh(ctx, creds, client.RefreshRequest{RefreshToken: tok.RefreshToken})
	if err != nil {
		t.Fatal(err)
	}
	if next.FamilyID != tok.FamilyID || next.RefreshToken == tok.RefreshToken {
		t.Fatalf("refresh: %+v", next)
	}
	// Inside the grace window the spent token gets the same successor.
	again, err := tl.Refresh(ctx, creds, client.RefreshRequest{RefreshToken: tok.RefreshToken})
	if err != nil || again.RefreshToken != next.RefreshToken {
		t.Fatalf("grace retry: %v, same successor %v", err, err == nil && again.RefreshToken == next.RefreshToken)
	}

	in, err := tl.Introspect(ctx, creds, client.TokenRequest{Token: next.AccessToken})
	if err != nil {
		t.Fatal(err)
	}
	if !in.Active || in.TokenType != "Bearer" || in.Subject != "alice" || in.SID != tok.FamilyID || in.ClientID != tltest.ClientID {
		t.Fatalf("introspect: %+v", in)
	}

	keys, err := tl.JWKS(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(keys.Keys) == 0 || keys.Keys[0].Kid == "" || keys.Keys[0].Use != "sig" {
		t.Fatalf("jwks: %+v", keys)
	}

	s, err := tl.Sessions(ctx, creds, "alice")
	if err != nil {
		t.Fatal(err)
	}
	if len(s.Families) != 1 || s.Families[0].FamilyID != tok.FamilyID || s.Families[0].RotatedAt == nil {
		t.Fatalf("sessions: %+v", s)
	}
	as, err := tl.AdminSessions(ctx, "alice")
	if err != nil || len(as.Families) != 1 {
		t.Fatalf("admin sessions: %+v, %v", as, err)
	}

	if err := tl.Revoke(ctx, creds, client.TokenRequest{Token: next.AccessToken, TokenTypeHint: api.HintAccessToken}); err != nil {
		t.Fatal(err)
	}
	if in, err := tl.Introspect(ctx, creds, client.TokenRequest{Token: next.AccessToken}); err != nil || in.Active {
		t.Fatalf("introspect after revoke: %+v, %v", in, err)
	}

	bob, err := tl.Issue(ctx, creds, client.IssueRequest{Subject: "bob"})
	if err != nil {
		t.Fatal(err)
	}
	ar, err := tl.AdminRevoke(ctx, client.AdminRevokeRequest{Subject: "bob", Reason: "offboarding"})
	if err != nil || ar.RevokedFamilies != 1 {
		t.Fatalf("admin revoke: %+v, %v", ar, err)
	}
	if _, err := tl.Refresh(ctx, creds, client.RefreshRequest{RefreshToken: bob.RefreshToken}); !errors.Is(err, client.ErrInvalidGrant) {
		t.Fatalf("refresh of a revoked family: %v", err)
	}

	d, err := tl.AdminDigest(ctx)
	if err != nil || d.Seq == 0 || d.Digest == "" || d.Time.IsZero() {
		t.Fatalf("digest: %+v, %v", d, err)
	}

	signing, err := tl.Keys(ctx)
	if err != nil || len(signing.Keys) != 1 || signing.Keys[0].State != "active" {
		t.Fatalf("keys: %+v, %v", signing, err)
	}
	rotated, err := tl.RotateKey(ctx)
	if err != nil || len(rotated.Keys) != 2 || rotated.Keys[1].State != "published" {
		t.Fatalf("rotate key: %+v, %v", rotated, err)
	}
	revoked, err := tl.RevokeKey(ctx, api.KeyRevokeRequest{KID: rotated.Keys[1].KID, Reason: "test"})
	if err != nil || revoked.Keys[1].State != "revoked" {
		t.Fatalf("revoke key: %+v, %v", revoked, err)
	}
	if _, err := tl.RevokeKey(ctx, api.KeyRevokeRequest{KID: "no such kid"}); !errors.Is(err, client.ErrInvalidRequest) {
		t.Fatalf("revoke of a malformed kid: %v", err)
	}

	pct := 50
	ro, err := tl.SetRollout(ctx, api.RolloutRequest{ClientID: tltest.ClientID, Version: 2, Percent: &pct})
	if err != nil || ro.Version != 2 || ro.Percent != 50 || !ro.Changed {
		t.Fatalf("set rollout: %+v, %v", ro, err)
	}
	if ro, err = tl.Rollout(ctx, tltest.ClientID); err != nil || ro.Percent != 50 || ro.Changed {
		t.Fatalf("read rollout: %+v, %v", ro, err)
	}
	if _, err := tl.SetRollout(ctx, api.RolloutRequest{ClientID: "nobody", Version: 2}); !errors.Is(err, client.ErrInvalidRequest) {
		t.Fatalf("rollout of an unknown client: %v", err)
	}
}

// TestServiceErrors maps each error the service returns today to its
// sentinel, code and status.
func TestServiceErrors(t *testing.T) {
	_, tl := start(t)
	ctx := context.Background()
	tok, err := tl.Issue(ctx, creds, client.IssueRequest{Subject: "carol"})
	if err != nil {
		t.Fatal(err)
	}
	wrong := client.Credentials{ID: tltest.ClientID, Secret: "tlcs_wrong"}
	tests := []struct {
		name   string
		call   func() error
		want   error
		code   string
		status int
	}{
		{"missing subject", func() error { _, err := tl.Issue(ctx, creds, client.IssueRequest{}); return err },
			client.ErrInvalidRequest, api.CodeInvalidRequest, 400},
		{"wrong secret", func() error { _, err := tl.Issue(ctx, wrong, client.IssueRequest{Subject: "x"}); return err },
			client.ErrInvalidClient, api.CodeInvalidClient, 401},
		{"unknown client", func() error {
			_, err := tl.Sessions(ctx, client.Credentials{ID: "nobody", Secret: "tlcs_x"}, "x")
			return err
		}, client.ErrInvalidClient, api.CodeInvalidClient, 401},
		{"forged refresh token", func() error {
			_, err := tl.Refresh(ctx, creds, client.RefreshRequest{RefreshToken: "tlr_forged"})
			return err
		}, client.ErrInvalidGrant, api.CodeInvalidGrant, 400},
		{"scope not allowed", func() error {
			_, err := tl.Issue(ctx, creds, client.IssueRequest{Subject: "x", Scope: "admin"})
			return err
		}, client.ErrInvalidScope, api.CodeInvalidScope, 400},
		{"wider refresh scope", func() error {
			_, err := tl.Refresh(ctx, creds, client.RefreshRequest{RefreshToken: tok.RefreshToken, Scope: "admin"})
			return err
		}, client.ErrInvalidScope, api.CodeInvalidScope, 400},
		{"admin revoke without reason", func() error {
			_, err := tl.AdminRevoke(ctx, client.AdminRevokeRequest{Subject: "x"})
			return err
		}, client.ErrInvalidRequest, api.CodeInvalidRequest, 400},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.call()
			if !errors.Is(err, tt.want) {
				t.Fatalf("got %v, want %v", err, tt.want)
			}
			var e *client.Error
			if !errors.As(err, &e) || e.Code != tt.code || e.Status != tt.status || e.Description == "" {
				t.Fatalf("got %#v", err)
			}
			if strings.Contains(err.Error(), "tlcs_") {
				t.Fatalf("error echoes a secret: %v", err)
			}
		})
	}
}

// TestErrorMapping pins every OAuth code of the contract to its sentinel,
// including those no endpoint returns today (unauthorized_client,
// unsupported_token_type, 429, 500), with a stand-in responder on the test
// server that answers as the service does.
func TestErrorMapping(t *testing.T) {
	env := tltest.New(t, "")
	codes := []struct {
		code, status string
		want         error
	}{
		{"invalid_request", "400", client.ErrInvalidRequest},
		{"invalid_client", "401", client.ErrInvalidClient},
		{"invalid_grant", "400", client.ErrInvalidGrant},
		{"invalid_scope", "400", client.ErrInvalidScope},
		{"unauthorized_client", "403", client.ErrUnauthorizedClient},
		{"unsupported_token_type", "400", client.ErrUnsupportedTokenType},
		{"temporarily_unavailable", "503", client.ErrTemporarilyUnavailable},
		{"temporarily_unavailable", "429", client.ErrTemporarilyUnavailable},
		{"server_error", "500", client.ErrServerError},
	}
	for _, tc := range codes {
		t.Run(tc.code+"_"+tc.status, func(t *testing.T) {
			prefix := "map" + tc.status + strings.ReplaceAll(tc.code, "_", "")
			sub, err := env.NC.Subscribe(prefix+".jwks", func(m *nats.Msg) {
				_ = m.RespondMsg(&nats.Msg{
					Data:   []byte(`{"error":"` + tc.code + `","error_description":"why"}`),
					Header: nats.Header{"Nats-Service-Error-Code": {tc.status}, "Nats-Service-Error": {tc.code + ": why"}},
				})
			})
			if err != nil {
				t.Fatal(err)
			}
			defer sub.Unsubscribe()
			tl := client.New(env.NC, client.WithPrefix(prefix), client.WithRetries(1, 0))
			_, err = tl.JWKS(context.Background())
			if !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
			for _, other := range codes {
				if other.want != tc.want && errors.Is(err, other.want) {
					t.Fatalf("%v also matches %v", err, other.want)
				}
			}
			var e *client.Error
			if !errors.As(err, &e) || e.Status == 0 || e.Description != "why" || err.Error() != tc.code+": why" {
				t.Fatalf("got %#v", err)
			}
		})
	}
}

// TestRetries: what is retried and what is not.
func TestRetries(t *testing.T) {
	env := tltest.New(t, "")
	var calls atomic.Int64
	unavailable := func(m *nats.Msg) {
		calls.Add(1)
		_ = m.RespondMsg(&nats.Msg{
			Data:   []byte(`{"error":"temporarily_unavailable","error_description":"retry"}`),
			Header: nats.Header{"Nats-Service-Error-Code": {"503"}},
		})
	}
	for _, ep := range []string{"issue", "refresh", "introspect"} {
		sub, err := env.NC.Subscribe("retry."+ep, unavailable)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = sub.Unsubscribe() })
	}
	ctx := context.Background()
	tests := []struct {
		name string
		tl   *client.Client
		call func(*client.Client) error
		want int64
	}{
		{"issue is not retried", client.New(env.NC, client.WithPrefix("retry"), client.WithRetries(3, time.Millisecond)),
			func(tl *client.Client) error {
				_, err := tl.Issue(ctx, creds, client.IssueRequest{Subject: "x"})
				return err
			}, 1},
		{"introspect is retried", client.New(env.NC, client.WithPrefix("retry"), client.WithRetries(3, time.Millisecond)),
			func(tl *client.Client) error {
				_, err := tl.Introspect(ctx, creds, client.TokenRequest{Token: "x"})
				return err
			}, 3},
		{"refresh is retried within the window", client.New(env.NC, client.WithPrefix("retry"), client.WithRetries(3, time.Millisecond)),
			func(tl *client.Client) error {
				_, err := tl.Refresh(ctx, creds, client.RefreshRequest{RefreshToken: "tlr_x"})
				return err
			}, 3},
		{"refresh is not retried after the window", client.New(env.NC, client.WithPrefix("retry"), client.WithRetries(3, time.Millisecond), client.WithRefreshRetryWindow(0)),
			func(tl *client.Client) error {
				_, err := tl.Refresh(ctx, creds, client.RefreshRequest{RefreshToken: "tlr_x"})
				return err
			}, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			calls.Store(0)
			if err := tt.call(tt.tl); !errors.Is(err, client.ErrTemporarilyUnavailable) {
				t.Fatalf("got %v", err)
			}
			if got := calls.Load(); got != tt.want {
				t.Fatalf("%d attempts, want %d", got, tt.want)
			}
		})
	}
}

// TestNoService: nobody answers: ErrNoService naming the subject.
func TestNoService(t *testing.T) {
	env := tltest.New(t, "")
	tl := client.New(env.NC, client.WithRetries(2, time.Millisecond))
	_, err := tl.JWKS(context.Background())
	if !errors.Is(err, client.ErrNoService) || !strings.Contains(err.Error(), "tokens.jwks") {
		t.Fatalf("got %v", err)
	}
}

// TestRequestID: the request id reaches the service and the ledger.
func TestRequestID(t *testing.T) {
	env, tl := start(t)
	ctx := client.WithRequestID(context.Background(), "ticket-42")
	if _, err := tl.Issue(ctx, creds, client.IssueRequest{Subject: "dave"}); err != nil {
		t.Fatal(err)
	}
	events := env.Events()
	if got := events[len(events)-1].Cause.ID; got != "ticket-42" {
		t.Fatalf("cause id %q", got)
	}
}
