package handlers

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"

	"github.com/tokenledger/tokenledger/internal/natstest"
	"github.com/tokenledger/tokenledger/ledger"
	"github.com/tokenledger/tokenledger/ledger/jsstore"
	"github.com/tokenledger/tokenledger/ledger/token"
	"github.com/tokenledger/tokenledger/projections"
)

// testClock is a settable clock shared by a test and the service.
type testClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *testClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *testClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

const (
	testClientID = "web"
	testSecret   = "tlcs_test-secret-0123456789abcdefghijklmnopqrstuvwxyz"
	testKEK      = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=" // 32 bytes
)

// env is one test's running system: an embedded JetStream server and one
// or more service instances on it.
type env struct {
	t     testing.TB
	srv   *server.Server
	nc    *nats.Conn
	js    jetstream.JetStream
	store *jsstore.Store
	clock *testClock
	guard *jsstore.ClockGuard // the last started service's, if any
	first *jsstore.Ledger     // the first service's ledger
	// services are the started service instances, in order, and stops
	// their stop functions (each stops its service once and returns what
	// Run returned; the test's cleanup calls them too).
	services []*Service
	stops    []func() error
}

// ledger is the first started service's ledger (same clock as it).
func (e *env) ledger() *jsstore.Ledger {
	e.t.Helper()
	if e.first == nil {
		e.t.Fatal("no service started")
	}
	return e.first
}

// envOptions tunes the service under test.
type envOptions struct {
	grace   time.Duration
	client  func(*ledger.Client)
	useWall bool      // real clock instead of the test clock
	logTo   io.Writer // service logs (default: discarded)
	// view, when set, is fed by a projection runner on the service's
	// connection and served (revoke, introspect, sessions, admin.revoke).
	view *projections.View
	// clockGuard, when set, guards the ledger's clock with this bound,
	// probing only when the test calls env.guard.Probe.
	clockGuard time.Duration
	// more are clients registered besides the test client.
	more []ledger.Client
}

func newEnv(t testing.TB, dir string) *env {
	t.Helper()
	srv := natstest.Start(t, dir)
	nc, js := natstest.Connect(t, srv)
	store, err := jsstore.NewStore(context.Background(), js, jsstore.StoreConfig{})
	if err != nil {
		t.Fatal(err)
	}
	return &env{t: t, srv: srv, nc: nc, js: js, store: store,
		clock: &testClock{t: time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)}}
}

func testClient(opts envOptions) ledger.Client {
	c := ledger.Client{
		ID: testClientID, SecretSHA256: ledger.SecretSHA256(testSecret),
		Scopes: []string{"read", "write"}, Audiences: []string{"api"},
		AllowedClaims: []string{"tenant"},
	}
	if opts.client != nil {
		opts.client(&c)
	}
	return c
}

// startService runs one service instance on its own connection until the
// test ends and returns its ledger.
func (e *env) startService(opts envOptions) *jsstore.Ledger {
	t := e.t
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	nc, js := natstest.Connect(t, e.srv)
	store, err := jsstore.NewStore(ctx, js, jsstore.StoreConfig{})
	if err != nil {
		t.Fatal(err)
	}
	kek, _ := token.ParseKEK(testKEK)
	keys, err := jsstore.NewKeyStore(ctx, js, kek, 1)
	if err != nil {
		t.Fatal(err)
	}
	keySet, err := keys.LoadOrCreate(ctx, token.AlgEdDSA, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	reg, err := jsstore.NewRegistry(ctx, js, append([]ledger.Client{testClient(opts)}, opts.more...), 1, nil)
	if err != nil {
		t.Fatal(err)
	}
	var ledgerOpts []jsstore.Option
	if !opts.useWall {
		ledgerOpts = append(ledgerOpts, jsstore.WithClock(e.clock.Now))
	}
	if opts.view != nil { // as serve runs it
		ledgerOpts = append(ledgerOpts, jsstore.WithStateCache(opts.view.Newer, 0))
	}
	if opts.clockGuard > 0 {
		if e.guard, err = jsstore.NewClockGuard(ctx, js, jsstore.ClockGuardConfig{MaxOffset: opts.clockGuard, Now: e.clock.Now, Log: logger(opts.logTo)}); err != nil {
			t.Fatal(err)
		}
		ledgerOpts = append(ledgerOpts, jsstore.WithClockGuard(e.guard))
	}
	l := jsstore.New(store, ledgerOpts...)
	svc, err := NewService(Config{
		Ledger: l, Registry: reg, Keys: keySet,
		Defaults: ledger.Policy{
			Rotation: ledger.RotateAlways, Grace: opts.grace, AccessTTL: 15 * time.Minute,
			RefreshTTL: 14 * 24 * time.Hour, FamilyTTL: 90 * 24 * time.Hour,
		},
		Workers: 32,
		Log:     logger(opts.logTo),
		View:    opts.view,
	})
	if err != nil {
		t.Fatal(err)
	}
	// The runner outlives the service, as in serve: requests in flight at
	// the stop may still wait for the view.
	rctx, stopRunner := context.WithCancel(context.Background())
	if opts.view != nil {
		startRunner(rctx, t, js, opts.view)
	}
	e.services = append(e.services, svc)
	done := make(chan error, 1)
	go func() { done <- svc.Run(ctx, nc) }()
	stop := sync.OnceValue(func() error {
		cancel()
		err := <-done
		stopRunner()
		return err
	})
	e.stops = append(e.stops, stop)
	t.Cleanup(func() {
		if err := stop(); err != nil {
			t.Errorf("service stopped with %v", err)
		}
	})
	e.waitForService(ctx)
	if e.first == nil {
		e.first = l
	}
	return l
}

func logger(w io.Writer) *slog.Logger {
	if w == nil {
		return nil
	}
	return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// waitForService polls until the service answers, so tests never sleep.
func (e *env) waitForService(ctx context.Context) {
	e.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		msg, err := e.nc.RequestWithContext(ctx, "tokens.jwks", nil)
		if err == nil && len(msg.Data) > 0 {
			return
		}
		if err != nil && !errors.Is(err, nats.ErrNoResponders) && !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, nats.ErrTimeout) {
			e.t.Fatalf("waiting for service: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	e.t.Fatal("service did not come up")
}

// reply is a decoded service reply: the token response or an OAuth error.
type reply struct {
	TokenResponse
	Error       string `json:"error"`
	Description string `json:"error_description"`
	Status      string `json:"-"`
	Raw         []byte `json:"-"`
}

// bytesOf is body as bytes: raw bytes and strings as they are, anything
// else as JSON.
func (e *env) bytesOf(body any) []byte {
	e.t.Helper()
	switch b := body.(type) {
	case []byte:
		return b
	case string:
		return []byte(b)
	}
	data, err := json.Marshal(body)
	if err != nil {
		e.t.Fatal(err)
	}
	return data
}

// call sends a request body and decodes the reply.
func (e *env) call(subject string, body any) reply {
	e.t.Helper()
	data := e.bytesOf(body)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	msg, err := e.nc.RequestWithContext(ctx, subject, data)
	if err != nil {
		e.t.Fatalf("request %s: %v", subject, err)
	}
	var r reply
	if err := json.Unmarshal(msg.Data, &r); err != nil {
		e.t.Fatalf("reply of %s is not JSON: %v: %q", subject, err, msg.Data)
	}
	r.Status = msg.Header.Get(micro.ErrorCodeHeader)
	r.Raw = msg.Data
	if (r.Error != "") != (r.Status != "") {
		e.t.Fatalf("error body %q and header %q disagree", r.Error, r.Status)
	}
	return r
}

func (e *env) issue(subject string) reply {
	e.t.Helper()
	return e.call("tokens.issue", map[string]any{
		"client_id": testClientID, "client_secret": testSecret, "subject": subject,
	})
}

func (e *env) refresh(token string) reply {
	e.t.Helper()
	return e.call("tokens.refresh", map[string]any{
		"client_id": testClientID, "client_secret": testSecret, "refresh_token": token,
	})
}

// lastSeq is the ledger stream's last sequence.
func (e *env) lastSeq() uint64 {
	e.t.Helper()
	seq, err := e.store.LastSeq(context.Background())
	if err != nil {
		e.t.Fatal(err)
	}
	return seq
}

// events reads every event of the ledger stream in order.
func (e *env) events() []ledger.Event {
	e.t.Helper()
	ctx := context.Background()
	last := e.lastSeq()
	var out []ledger.Event
	for seq := uint64(1); seq <= last; seq++ {
		msg, err := e.store.Stream().GetMsg(ctx, seq)
		if err != nil {
			e.t.Fatalf("get seq %d: %v", seq, err)
		}
		ev, err := ledger.DecodeEvent(msg.Data)
		if err != nil {
			e.t.Fatalf("decode seq %d: %v", seq, err)
		}
		out = append(out, ev)
	}
	return out
}

func countType(events []ledger.Event, typ ledger.EventType) int {
	n := 0
	for _, ev := range events {
		if ev.Type == typ {
			n++
		}
	}
	return n
}

func wantOK(t testing.TB, r reply) {
	t.Helper()
	if r.Error != "" || r.AccessToken == "" || r.RefreshToken == "" {
		t.Fatalf("want tokens, got %s", r.Raw)
	}
}

func wantError(t testing.TB, r reply, code, status string) {
	t.Helper()
	if r.Error != code || r.Status != status {
		t.Fatalf("want %s (%s), got %s (status %q)", code, status, r.Raw, r.Status)
	}
}
