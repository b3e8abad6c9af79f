// Package tltest runs tokenledger for tests the way serve runs it: an
// embedded JetStream server (internal/natstest) and instances wired by
// package instance, the one constructor, with a settable clock; plus the
// client side a test needs (requests, decoded replies, the ledger's
// events).
package tltest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"

	"github.com/tokenledger/tokenledger/api"
	"github.com/tokenledger/tokenledger/handlers"
	"github.com/tokenledger/tokenledger/instance"
	"github.com/tokenledger/tokenledger/internal/natstest"
	"github.com/tokenledger/tokenledger/ledger"
	"github.com/tokenledger/tokenledger/ledger/jsstore"
	"github.com/tokenledger/tokenledger/ledger/token"
	"github.com/tokenledger/tokenledger/worker"
)

// The test client and key-encryption key (test-only secrets).
const (
	ClientID = "web"
	Secret   = "tlcs_test-secret-0123456789abcdefghijklmnopqrstuvwxyz"
	KEK      = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=" // 32 bytes
)

// Start is the instant the test clock starts at.
var Start = time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)

// Clock is a settable clock shared by a test and its instances.
type Clock struct {
	mu sync.Mutex
	t  time.Time
}

// Now is the clock's reading.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

// Advance moves the clock by d (back when d is negative).
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// Set sets the clock to t.
func (c *Clock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = t
}

// Client is the test client: scopes read and write, audience api, custom
// claim tenant allowed.
func Client() ledger.Client {
	return ledger.Client{
		ID: ClientID, SecretSHA256: ledger.SecretSHA256(Secret),
		Scopes: []string{"read", "write"}, Audiences: []string{"api"},
		AllowedClaims: []string{"tenant"},
	}
}

// Options tunes an instance under test.
type Options struct {
	// Grace is the default grace window.
	Grace time.Duration
	// Client changes the test client before it is registered.
	Client func(*ledger.Client)
	// More are clients registered besides the test client.
	More []ledger.Client
	// Wall runs the instance on the real clock instead of the test clock.
	Wall bool
	// NoView runs the service without the valid-token view.
	NoView bool
	// StateCache as instance.Config (0: the default size; negative: none).
	StateCache int
	// Worker runs the security-event worker with Security; WorkerOnly
	// runs it alone, as `tokenledger worker` does (no endpoints).
	Worker     bool
	WorkerOnly bool
	Security   worker.Config
	// JWKSCachePeriod, KeyRotationPeriod and KeyCheckInterval are
	// instance.Config's (0: their defaults).
	JWKSCachePeriod   time.Duration
	KeyRotationPeriod time.Duration
	KeyCheckInterval  time.Duration
	// ClockGuard, when positive, guards the instance's clock with this
	// bound; the guard probes only when the test calls Probe.
	ClockGuard time.Duration
	// Log receives the instance's logs at debug level (default: none).
	Log io.Writer
	// Issuer is the access tokens' iss claim (default instance's).
	Issuer string
	// KEK seals the signing keys (default the test KEK).
	KEK token.KEK
}

// Env is one test's running system: an embedded JetStream server and the
// instances started on it.
type Env struct {
	T     testing.TB
	Srv   *server.Server
	NC    *nats.Conn
	JS    jetstream.JetStream
	Store *jsstore.Store
	Clock *Clock
	// Instances are the started instances, in order.
	Instances []*instance.Instance
	stops     []func() error
}

// New starts an embedded JetStream server storing under dir (a temporary
// directory when empty) and connects to it; the ledger stream exists.
func New(t testing.TB, dir string) *Env {
	t.Helper()
	srv := natstest.Start(t, dir)
	nc, js := natstest.Connect(t, srv)
	store, err := jsstore.NewStore(context.Background(), js, jsstore.StoreConfig{})
	if err != nil {
		t.Fatal(err)
	}
	return &Env{T: t, Srv: srv, NC: nc, JS: js, Store: store, Clock: &Clock{t: Start}}
}

// Logger is a debug-level JSON logger to w, or nil for none.
func Logger(w io.Writer) *slog.Logger {
	if w == nil {
		return nil
	}
	return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// Policy is the tests' default rotation policy with the grace window.
func Policy(grace time.Duration) ledger.Policy {
	return ledger.Policy{
		Rotation: ledger.RotateAlways, Grace: grace, AccessTTL: 15 * time.Minute,
		RefreshTTL: 14 * 24 * time.Hour, FamilyTTL: 90 * 24 * time.Hour,
	}
}

// StartInstance wires an instance with instance.New on connections of its
// own, runs it until the test ends (or StopInstance) and, when it serves,
// waits until it answers.
func (e *Env) StartInstance(opts Options) *instance.Instance {
	t := e.T
	t.Helper()
	nc, _ := natstest.Connect(t, e.Srv)
	pnc, _ := natstest.Connect(t, e.Srv)
	client := Client()
	if opts.Client != nil {
		opts.Client(&client)
	}
	kek := opts.KEK
	if kek == (token.KEK{}) {
		var err error
		if kek, err = token.ParseKEK(KEK); err != nil {
			t.Fatal(err)
		}
	}
	// New made the ledger stream before any instance, so every start
	// initialises what is missing (the buckets).
	cfg := instance.Config{
		Init: true, Issuer: opts.Issuer,
		Service: !opts.WorkerOnly, NoView: opts.NoView, Worker: opts.Worker || opts.WorkerOnly, Security: opts.Security,
		KEK: kek, Clients: append([]ledger.Client{client}, opts.More...),
		Defaults: Policy(opts.Grace), StateCache: opts.StateCache, Workers: 32,
		MaxClockOffset: -1, Now: e.Clock.Now, Log: Logger(opts.Log),
		JWKSCachePeriod: opts.JWKSCachePeriod, KeyRotationPeriod: opts.KeyRotationPeriod, KeyCheckInterval: opts.KeyCheckInterval,
	}
	if opts.Wall {
		cfg.Now = time.Now
	}
	if opts.ClockGuard > 0 {
		cfg.MaxClockOffset, cfg.ClockProbeInterval = opts.ClockGuard, -1
	}
	if opts.NoView {
		cfg.StateCache = -1
	}
	ctx, cancel := context.WithCancel(context.Background())
	in, err := instance.New(ctx, nc, pnc, cfg)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- in.Run(ctx) }()
	stop := sync.OnceValue(func() error {
		cancel()
		return <-done
	})
	e.Instances = append(e.Instances, in)
	e.stops = append(e.stops, stop)
	t.Cleanup(func() {
		if err := stop(); err != nil {
			t.Errorf("instance stopped with %v", err)
		}
	})
	if !opts.WorkerOnly {
		e.WaitForService(ctx)
	}
	return in
}

// StopInstance stops the i-th started instance (once) and returns what its
// Run returned.
func (e *Env) StopInstance(i int) error { return e.stops[i]() }

// Ledger is the first started instance's ledger.
func (e *Env) Ledger() *jsstore.Ledger {
	e.T.Helper()
	if len(e.Instances) == 0 {
		e.T.Fatal("no instance started")
	}
	return e.Instances[0].Ledger()
}

// WaitForService polls until the service answers, so tests never sleep
// longer than that.
func (e *Env) WaitForService(ctx context.Context) {
	e.T.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		msg, err := e.NC.RequestWithContext(ctx, "tokens.jwks", nil)
		if err == nil && len(msg.Data) > 0 {
			return
		}
		if err != nil && !errors.Is(err, nats.ErrNoResponders) && !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, nats.ErrTimeout) {
			e.T.Fatalf("waiting for service: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	e.T.Fatal("service did not come up")
}

// Endpoints is the subjects of the endpoints a running service registered,
// from its micro INFO (one service answers).
func (e *Env) Endpoints() []string {
	e.T.Helper()
	subject, err := micro.ControlSubject(micro.InfoVerb, handlers.ServiceName, "")
	if err != nil {
		e.T.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	msg, err := e.NC.RequestWithContext(ctx, subject, nil)
	if err != nil {
		e.T.Fatalf("%s: %v", subject, err)
	}
	var info micro.Info
	if err := json.Unmarshal(msg.Data, &info); err != nil {
		e.T.Fatalf("%s reply: %v", subject, err)
	}
	var out []string
	for _, ep := range info.Endpoints {
		out = append(out, ep.Subject)
	}
	return out
}

// Reply is a decoded service reply: the token response or an OAuth error.
type Reply struct {
	api.TokenResponse
	api.ErrorResponse
	Status string `json:"-"`
	Raw    []byte `json:"-"`
}

// Bytes is body as bytes: raw bytes and strings as they are, anything else
// as JSON.
func Bytes(body any) ([]byte, error) {
	switch b := body.(type) {
	case []byte:
		return b, nil
	case string:
		return []byte(b), nil
	}
	return json.Marshal(body)
}

// TryCall sends a request and decodes the reply; safe to call from any
// goroutine, it reports failures instead of failing the test.
func (e *Env) TryCall(subject string, body any) (Reply, error) {
	data, err := Bytes(body)
	if err != nil {
		return Reply{}, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	msg, err := e.NC.RequestWithContext(ctx, subject, data)
	if err != nil {
		return Reply{}, fmt.Errorf("request %s: %w", subject, err)
	}
	var r Reply
	if err := json.Unmarshal(msg.Data, &r); err != nil {
		return Reply{}, fmt.Errorf("reply of %s is not JSON: %w: %s", subject, err, msg.Data)
	}
	r.Status = msg.Header.Get(micro.ErrorCodeHeader)
	r.Raw = msg.Data
	if (r.Error != "") != (r.Status != "") {
		return r, fmt.Errorf("reply of %s: error body %q and header %q disagree", subject, r.Error, r.Status)
	}
	return r, nil
}

// Call is TryCall failing the test on error; only from the test goroutine.
func (e *Env) Call(subject string, body any) Reply {
	e.T.Helper()
	r, err := e.TryCall(subject, body)
	if err != nil {
		e.T.Fatal(err)
	}
	return r
}

// IssueBody is the test client's issue request for subject.
func IssueBody(subject string) map[string]any {
	return map[string]any{"client_id": ClientID, "client_secret": Secret, "subject": subject}
}

// RefreshBody is the test client's refresh request for the token.
func RefreshBody(refreshToken string) map[string]any {
	return map[string]any{"client_id": ClientID, "client_secret": Secret, "refresh_token": refreshToken}
}

// Issue asks for tokens for subject as the test client.
func (e *Env) Issue(subject string) Reply {
	e.T.Helper()
	return e.Call("tokens.issue", IssueBody(subject))
}

// Refresh presents a refresh token as the test client.
func (e *Env) Refresh(refreshToken string) Reply {
	e.T.Helper()
	return e.Call("tokens.refresh", RefreshBody(refreshToken))
}

// LastSeq is the ledger stream's last sequence.
func (e *Env) LastSeq() uint64 {
	e.T.Helper()
	seq, err := e.Store.LastSeq(context.Background())
	if err != nil {
		e.T.Fatal(err)
	}
	return seq
}

// Events reads every event of the ledger stream in order.
func (e *Env) Events() []ledger.Event {
	e.T.Helper()
	ctx := context.Background()
	last := e.LastSeq()
	var out []ledger.Event
	for seq := uint64(1); seq <= last; seq++ {
		msg, err := e.Store.Stream().GetMsg(ctx, seq)
		if err != nil {
			e.T.Fatalf("get seq %d: %v", seq, err)
		}
		ev, err := ledger.DecodeEvent(msg.Data)
		if err != nil {
			e.T.Fatalf("decode seq %d: %v", seq, err)
		}
		out = append(out, ev)
	}
	return out
}

// WantOK fails the test unless r carries tokens.
func WantOK(t testing.TB, r Reply) {
	t.Helper()
	if r.Error != "" || r.AccessToken == "" || r.RefreshToken == "" {
		t.Fatalf("want tokens, got %s", r.Raw)
	}
}

// WantError fails the test unless r is the OAuth error code with the
// micro status.
func WantError(t testing.TB, r Reply, code, status string) {
	t.Helper()
	if r.Error != code || r.Status != status {
		t.Fatalf("want %s (%s), got %s (status %q)", code, status, r.Raw, r.Status)
	}
}
