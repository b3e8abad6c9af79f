package verifier_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/tokenledger/tokenledger/internal/natstest"
	"github.com/tokenledger/tokenledger/internal/tltest"
	"github.com/tokenledger/tokenledger/ledger/token"
	"github.com/tokenledger/tokenledger/verifier"
)

const issuer = "tokenledger-test"

// startLedger runs tokenledger (the service with its view, runner and
// revocation feed, wired by instance as serve wires it) on a fresh
// embedded server until the test ends.
func startLedger(t *testing.T) *tltest.Env {
	t.Helper()
	e := tltest.New(t, "")
	e.StartInstance(tltest.Options{Grace: 10 * time.Second, Wall: true, Issuer: issuer})
	return e
}

type tokens struct{ access, refresh, family string }

func issue(t *testing.T, e *tltest.Env) tokens {
	t.Helper()
	r := e.Issue("alice")
	tltest.WantOK(t, r)
	return tokens{r.AccessToken, r.RefreshToken, r.FamilyID}
}

func revoke(t *testing.T, e *tltest.Env, token string) {
	t.Helper()
	r := e.Call("tokens.revoke", map[string]any{"client_id": tltest.ClientID, "client_secret": tltest.Secret, "token": token})
	if r.Error != "" {
		t.Fatalf("tokens.revoke: %s", r.Raw)
	}
}

// startVerifier runs a verifier on nc until the test ends and waits until
// it is ready.
func startVerifier(t *testing.T, nc *nats.Conn, maxStale time.Duration) *verifier.Verifier {
	t.Helper()
	return startVerifierWith(t, nc, verifier.Config{Issuer: issuer, Audience: "api", MaxStale: maxStale})
}

// startVerifierWith is startVerifier with the verifier's whole config.
func startVerifierWith(t *testing.T, nc *nats.Conn, cfg verifier.Config) *verifier.Verifier {
	t.Helper()
	v, err := verifier.New(nc, cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- v.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("verifier stopped: %v", err)
		}
	})
	select {
	case <-v.Ready():
	case err := <-done:
		t.Fatalf("verifier stopped before ready: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("verifier not ready")
	}
	return v
}

// waitFor polls Verify until it returns want or the deadline passes, and
// returns how long that took.
func waitFor(t *testing.T, v *verifier.Verifier, token string, want error, within time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	var err error
	for time.Since(start) < within {
		_, err = v.Verify(context.Background(), token)
		if errors.Is(err, want) {
			return time.Since(start)
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("after %s Verify says %v, want %v", within, err, want)
	return 0
}

func TestVerifierDeniesRevokedTokensWithinASecond(t *testing.T) {
	tl := startLedger(t)
	nc, _ := natstest.Connect(t, tl.Srv)

	a, b, c := issue(t, tl), issue(t, tl), issue(t, tl)
	v := startVerifier(t, nc, 0)
	for _, tok := range []tokens{a, b, c} {
		claims, err := v.Verify(context.Background(), tok.access)
		if err != nil || claims.SID != tok.family || claims.Subject != "alice" {
			t.Fatalf("fresh token: %+v %v", claims, err)
		}
	}
	if _, err := v.Verify(context.Background(), a.access+"x"); !errors.Is(err, token.ErrTokenInvalid) {
		t.Fatalf("tampered token: %v", err)
	}

	revoke(t, tl, a.access) // one access token
	took := waitFor(t, v, a.access, verifier.ErrRevoked, time.Second)
	revoke(t, tl, b.refresh) // the whole family
	tookFamily := waitFor(t, v, b.access, verifier.ErrRevoked, time.Second)
	t.Logf("access token denied after %s, family after %s", took, tookFamily)
	if _, err := v.Verify(context.Background(), c.access); err != nil {
		t.Fatalf("unrelated token: %v", err)
	}

	// The HTTP middleware lets the good token through with its claims.
	h := v.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		claims, _ := verifier.ClaimsFrom(r.Context())
		_, _ = io.WriteString(w, claims.SID)
	}))
	for _, tc := range []struct {
		auth string
		code int
		body string
	}{
		{"Bearer " + c.access, http.StatusOK, c.family},
		{"Bearer " + a.access, http.StatusUnauthorized, ""},
		{"Bearer " + b.access, http.StatusUnauthorized, ""},
		{"", http.StatusUnauthorized, ""},
		{"Basic " + c.access, http.StatusUnauthorized, ""},
	} {
		rec := httptest.NewRecorder()
		req := httptest.NewRequest("GET", "/me", nil)
		if tc.auth != "" {
			req.Header.Set("Authorization", tc.auth)
		}
		h.ServeHTTP(rec, req)
		if rec.Code != tc.code || (tc.body != "" && rec.Body.String() != tc.body) || (tc.code == 401 && rec.Header().Get("WWW-Authenticate") == "") {
			t.Errorf("auth %.20q: %d %q", tc.auth, rec.Code, rec.Body.String())
		}
	}
}

func TestVerifierCatchesUpAfterDisconnectAndRestart(t *testing.T) {
	tl := startLedger(t)
	srv := tl.Srv
	proxy := natstest.NewProxy(t, srv.Addr().String())
	nc, err := nats.Connect(proxy.URL(), nats.MaxReconnects(-1), nats.ReconnectWait(20*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)

	a, b, c := issue(t, tl), issue(t, tl), issue(t, tl)
	v := startVerifier(t, nc, 300*time.Millisecond)
	if _, err := v.Verify(context.Background(), a.access); err != nil {
		t.Fatal(err)
	}

	proxy.Stop()
	deadline := time.Now().Add(5 * time.Second)
	for nc.IsConnected() {
		if time.Now().After(deadline) {
			t.Fatal("verifier connection did not notice the disconnect")
		}
		time.Sleep(5 * time.Millisecond)
	}
	// Revocations while the verifier cannot hear them.
	revoke(t, tl, a.refresh)
	revoke(t, tl, b.access)
	// Cut off from the feed for longer than MaxStale, it fails closed.
	waitFor(t, v, c.access, verifier.ErrStale, 5*time.Second)

	proxy.Start()
	waitFor(t, v, a.access, verifier.ErrRevoked, 10*time.Second)
	waitFor(t, v, b.access, verifier.ErrRevoked, time.Second)
	waitFor(t, v, c.access, nil, 5*time.Second) // fresh again once caught up

	// A verifier started afterwards (a restarted resource server) reads
	// every revocation still relevant before it answers.
	fresh, _ := natstest.Connect(t, srv)
	v2 := startVerifier(t, fresh, 0)
	for _, tok := range []string{a.access, b.access} {
		if _, err := v2.Verify(context.Background(), tok); !errors.Is(err, verifier.ErrRevoked) {
			t.Fatalf("restarted verifier accepts a revoked token: %v", err)
		}
	}
	if _, err := v2.Verify(context.Background(), c.access); err != nil {
		t.Fatalf("restarted verifier refuses a good token: %v", err)
	}
}
