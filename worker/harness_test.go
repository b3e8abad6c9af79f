package worker

// The minimum of handlers/harness_test.go the worker's tests need: an
// embedded JetStream server and the token service on it, so tests issue
// and refresh as clients do. (To be replaced by the one constructor that
// wires the service for serve, worker and the tests.)

import (
	"context"
	"encoding/json"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"

	"github.com/tokenledger/tokenledger/handlers"
	"github.com/tokenledger/tokenledger/internal/natstest"
	"github.com/tokenledger/tokenledger/ledger"
	"github.com/tokenledger/tokenledger/ledger/jsstore"
	"github.com/tokenledger/tokenledger/ledger/token"
)

// testClock is a settable clock shared by a test, the service and the
// worker.
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

// env is one test's running system: an embedded JetStream server and the
// token service on it.
type env struct {
	t     testing.TB
	srv   *server.Server
	nc    *nats.Conn
	js    jetstream.JetStream
	store *jsstore.Store
	clock *testClock
}

// envOptions tunes the service under test.
type envOptions struct {
	useWall bool // real clock instead of the test clock
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

// startService runs the token service on its own connection until the
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
	client := ledger.Client{
		ID: testClientID, SecretSHA256: ledger.SecretSHA256(testSecret),
		Scopes: []string{"read", "write"}, Audiences: []string{"api"},
	}
	reg, err := jsstore.NewRegistry(ctx, js, []ledger.Client{client}, 1, nil)
	if err != nil {
		t.Fatal(err)
	}
	var ledgerOpts []jsstore.Option
	if !opts.useWall {
		ledgerOpts = append(ledgerOpts, jsstore.WithClock(e.clock.Now))
	}
	l := jsstore.New(store, ledgerOpts...)
	svc, err := handlers.NewService(handlers.Config{
		Ledger: l, Registry: reg, Keys: keySet,
		Defaults: ledger.Policy{
			Rotation: ledger.RotateAlways, AccessTTL: 15 * time.Minute,
			RefreshTTL: 14 * 24 * time.Hour, FamilyTTL: 90 * 24 * time.Hour,
		},
		Workers: 32,
	})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- svc.Run(ctx, nc) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("service stopped with %v", err)
		}
	})
	e.waitForService(ctx)
	return l
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
	handlers.TokenResponse
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
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	msg, err := e.nc.RequestWithContext(ctx, subject, e.bytesOf(body))
	if err != nil {
		e.t.Fatalf("request %s: %v", subject, err)
	}
	var r reply
	if err := json.Unmarshal(msg.Data, &r); err != nil {
		e.t.Fatalf("reply of %s is not JSON: %v", subject, err)
	}
	r.Status = msg.Header.Get(micro.ErrorCodeHeader)
	r.Raw = msg.Data
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
