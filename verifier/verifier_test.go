package verifier_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/tokenledger/tokenledger/handlers"
	"github.com/tokenledger/tokenledger/internal/natstest"
	"github.com/tokenledger/tokenledger/ledger"
	"github.com/tokenledger/tokenledger/ledger/jsstore"
	"github.com/tokenledger/tokenledger/ledger/token"
	"github.com/tokenledger/tokenledger/projections"
	"github.com/tokenledger/tokenledger/verifier"
)

const (
	clientID = "web"
	secret   = "tlcs_test-secret-0123456789abcdefghijklmnopqrstuvwxyz"
	issuer   = "tokenledger-test"
)

// startLedger runs the service with its view, runner and revocation feed
// on srv until the test ends, and returns a connection for requests.
func startLedger(t *testing.T, srv *server.Server) *nats.Conn {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	nc, js := natstest.Connect(t, srv)
	store, err := jsstore.NewStore(ctx, js, jsstore.StoreConfig{})
	if err != nil {
		t.Fatal(err)
	}
	var kek token.KEK
	keys, err := jsstore.NewKeyStore(ctx, js, kek, 1)
	if err != nil {
		t.Fatal(err)
	}
	keySet, err := keys.LoadOrCreate(ctx, token.AlgEdDSA, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	reg, err := jsstore.NewRegistry(ctx, js, []ledger.Client{{
		ID: clientID, SecretSHA256: ledger.SecretSHA256(secret), Scopes: []string{"read"}, Audiences: []string{"api"},
	}}, 1, nil)
	if err != nil {
		t.Fatal(err)
	}
	view := projections.NewView()
	runner, err := projections.NewRunner(js, view, projections.RunnerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	feed, err := projections.NewFeed(ctx, js, view, projections.FeedConfig{})
	if err != nil {
		t.Fatal(err)
	}
	feed.Follow(runner) // as serve wires it
	svc, err := handlers.NewService(handlers.Config{
		Ledger: jsstore.New(store), Registry: reg, Keys: keySet, Issuer: issuer, View: view,
		Defaults: ledger.Policy{Rotation: ledger.RotateAlways, Grace: 10 * time.Second, AccessTTL: 15 * time.Minute,
			RefreshTTL: time.Hour, FamilyTTL: 24 * time.Hour},
	})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for _, run := range []func(context.Context) error{
		runner.Run, feed.Run, func(ctx context.Context) error { return svc.Run(ctx, nc) },
	} {
		wg.Go(func() {
			if err := run(ctx); err != nil {
				t.Errorf("ledger part stopped: %v", err)
			}
		})
	}
	t.Cleanup(func() { cancel(); wg.Wait() })
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := nc.Request("tokens.jwks", nil, time.Second); err == nil {
			return nc
		}
		if time.Now().After(deadline) {
			t.Fatal("service did not come up")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func request(t *testing.T, nc *nats.Conn, subject string, body map[string]any) map[string]any {
	t.Helper()
	data, _ := json.Marshal(body)
	msg, err := nc.Request(subject, data, 10*time.Second)
	if err != nil {
		t.Fatalf("%s: %v", subject, err)
	}
	var out map[string]any
	if err := json.Unmarshal(msg.Data, &out); err != nil {
		t.Fatal(err)
	}
	if out["error"] != nil {
		t.Fatalf("%s: %s", subject, msg.Data)
	}
	return out
}

type tokens struct{ access, refresh, family string }

func issue(t *testing.T, nc *nats.Conn) tokens {
	t.Helper()
	r := request(t, nc, "tokens.issue", map[string]any{"client_id": clientID, "client_secret": secret, "subject": "alice"})
	return tokens{r["access_token"].(string), r["refresh_token"].(string), r["family_id"].(string)}
}

func revoke(t *testing.T, nc *nats.Conn, token string) {
	t.Helper()
	request(t, nc, "tokens.revoke", map[string]any{"client_id": clientID, "client_secret": secret, "token": token})
}

// startVerifier runs a verifier on nc until the test ends and waits until
// it is ready.
func startVerifier(t *testing.T, nc *nats.Conn, maxStale time.Duration) *verifier.Verifier {
	t.Helper()
	v, err := verifier.New(nc, verifier.Config{Issuer: issuer, Audience: "api", MaxStale: maxStale})
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
	srv := natstest.Start(t, "")
	ledgerConn := startLedger(t, srv)
	nc, _ := natstest.Connect(t, srv)

	a, b, c := issue(t, ledgerConn), issue(t, ledgerConn), issue(t, ledgerConn)
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

	revoke(t, ledgerConn, a.access) // one access token
	took := waitFor(t, v, a.access, verifier.ErrRevoked, time.Second)
	revoke(t, ledgerConn, b.refresh) // the whole family
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
	srv := natstest.Start(t, "")
	ledgerConn := startLedger(t, srv)
	proxy := newProxy(t, srv.Addr().String())
	nc, err := nats.Connect("nats://"+proxy.addr, nats.MaxReconnects(-1), nats.ReconnectWait(20*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)

	a, b, c := issue(t, ledgerConn), issue(t, ledgerConn), issue(t, ledgerConn)
	v := startVerifier(t, nc, 300*time.Millisecond)
	if _, err := v.Verify(context.Background(), a.access); err != nil {
		t.Fatal(err)
	}

	proxy.stop()
	deadline := time.Now().Add(5 * time.Second)
	for nc.IsConnected() {
		if time.Now().After(deadline) {
			t.Fatal("verifier connection did not notice the disconnect")
		}
		time.Sleep(5 * time.Millisecond)
	}
	// Revocations while the verifier cannot hear them.
	revoke(t, ledgerConn, a.refresh)
	revoke(t, ledgerConn, b.access)
	// Cut off from the feed for longer than MaxStale, it fails closed.
	waitFor(t, v, c.access, verifier.ErrStale, 5*time.Second)

	proxy.start()
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

// proxy is a TCP proxy that can cut a client off its server and let it
// back on the same address.
type proxy struct {
	t      *testing.T
	addr   string
	target string
	mu     sync.Mutex
	ln     net.Listener
	conns  []net.Conn
}

func newProxy(t *testing.T, target string) *proxy {
	p := &proxy{t: t, target: target}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p.addr = ln.Addr().String()
	p.serve(ln)
	t.Cleanup(p.stop)
	return p
}

func (p *proxy) start() {
	ln, err := net.Listen("tcp", p.addr)
	if err != nil {
		p.t.Fatal(err)
	}
	p.serve(ln)
}

func (p *proxy) serve(ln net.Listener) {
	p.mu.Lock()
	p.ln = ln
	p.mu.Unlock()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s, err := net.Dial("tcp", p.target)
			if err != nil {
				c.Close()
				continue
			}
			p.mu.Lock()
			p.conns = append(p.conns, c, s)
			p.mu.Unlock()
			go func() { _, _ = io.Copy(s, c); s.Close() }()
			go func() { _, _ = io.Copy(c, s); c.Close() }()
		}
	}()
}

func (p *proxy) stop() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ln != nil {
		p.ln.Close()
		p.ln = nil
	}
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
}
