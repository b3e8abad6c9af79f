package instance

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/sync/errgroup"

	"github.com/tokenledger/tokenledger/handlers"
	"github.com/tokenledger/tokenledger/ledger"
	"github.com/tokenledger/tokenledger/ledger/jsstore"
	"github.com/tokenledger/tokenledger/ledger/token"
	"github.com/tokenledger/tokenledger/projections"
	"github.com/tokenledger/tokenledger/worker"
)

// Config is everything an instance needs besides its NATS connections.
// The zero value of a field is its documented default.
type Config struct {
	// Stream is the ledger stream (default jsstore.DefaultStream).
	Stream string
	// Prefix is the endpoints' subject prefix (default "tokens").
	Prefix string
	// Replicas of every stream and bucket (default 1; 3 on a cluster).
	Replicas int
	// Init lets this start create the ledger stream and buckets although
	// other stores of the deployment exist (jsstore.CheckInitialised),
	// and a partial archive (jsstore.ArchiveConfig.Init).
	Init bool
	// HistoryMargin, when positive, lets each family's events expire from
	// the ledger stream this long after the family's absolute lifetime
	// (jsstore.StoreConfig.HistoryMargin); the archive keeps them. Zero
	// keeps every event in the ledger stream.
	HistoryMargin time.Duration
	// AttemptTimeout bounds each JetStream call of the ledger below the
	// request's deadline (jsstore.StoreConfig.AttemptTimeout; zero:
	// jsstore.DefaultAttemptTimeout).
	AttemptTimeout time.Duration

	// Service runs the endpoints (and with them the signing keys, the
	// client registry and the revocation feed). Without it the instance
	// is a security worker only.
	Service bool
	// NoView runs the service without the valid-token view and its
	// endpoints (revoke, introspect, sessions, admin): an instance that
	// only issues and refreshes. Only with Service.
	NoView bool
	// Worker runs the security-event worker. Without it, a service still
	// creates the intake streams, so events wait for a worker elsewhere.
	Worker bool
	// Security configures the worker and its streams (its Ledger,
	// Selector and Waiter are filled in here).
	Security worker.Config

	// KEK seals the signing keys (required with Service).
	KEK token.KEK
	// Alg is the signing algorithm of new keys (default EdDSA).
	Alg string
	// JWKSCachePeriod is how long resource servers may cache the JWKS: a
	// next key is published this long before it signs (default
	// jsstore.DefaultJWKSCachePeriod, 15 min).
	JWKSCachePeriod time.Duration
	// KeyRotationPeriod is how long a key signs before the scheduled
	// rotation (default jsstore.DefaultKeyRotationPeriod, 30 days;
	// negative: only on demand).
	KeyRotationPeriod time.Duration
	// KeyCheckInterval is how often the key ring looks for a key change
	// falling due (default 1 s).
	KeyCheckInterval time.Duration
	// Issuer is the iss claim (default "tokenledger").
	Issuer  string
	Clients []ledger.Client
	// Defaults is the rotation policy of clients that set none.
	Defaults ledger.Policy
	// StateCache is how many families' last states the service's ledger
	// keeps (0: jsstore.DefaultStateCacheSize; negative: none).
	StateCache      int
	MaxRequestBytes int
	Workers         int
	// FeedMaxAge is how long the revocation feed keeps announcements
	// (default the longer of 24 h and twice the access-token lifetime).
	FeedMaxAge time.Duration
	// CheckpointEvery and CheckpointInterval are how often the view is
	// checkpointed (projections.RunnerConfig; 0: the defaults, 100 000
	// events and 5 minutes; negative: never by that measure). Both
	// negative: no checkpoints, and every start rebuilds the view.
	CheckpointEvery    int
	CheckpointInterval time.Duration

	// MaxClockOffset bounds this instance's clock offset from the NATS
	// server's (default jsstore.DefaultMaxClockOffset); negative disables
	// the guard (tests with a clock far from the server's).
	MaxClockOffset time.Duration
	// ClockProbeInterval is the time between clock probes in Run
	// (default jsstore.DefaultClockProbeInterval; negative: never, the
	// caller probes).
	ClockProbeInterval time.Duration
	// Now is the instance's clock (default time.Now).
	Now func() time.Time
	// Observe, when set, is told every request's endpoint, outcome and
	// duration (handlers.Config.Observe): ops.Metrics.Observe.
	Observe func(endpoint, outcome string, took time.Duration)
	// Version is the micro service's version.
	Version string
	Log     *slog.Logger
}

func (c *Config) defaults() error {
	if c.Stream == "" {
		c.Stream = jsstore.DefaultStream
	}
	if c.Prefix == "" {
		c.Prefix = "tokens"
	}
	if c.Replicas <= 0 {
		c.Replicas = 1
	}
	if c.Alg == "" {
		c.Alg = token.AlgEdDSA
	}
	if c.StateCache == 0 {
		c.StateCache = jsstore.DefaultStateCacheSize
	}
	if c.FeedMaxAge <= 0 {
		c.FeedMaxAge = max(24*time.Hour, 2*c.Defaults.AccessTTL)
	}
	if c.MaxClockOffset == 0 {
		c.MaxClockOffset = jsstore.DefaultMaxClockOffset
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Log == nil {
		c.Log = slog.New(slog.DiscardHandler)
	}
	switch {
	case !c.Service && !c.Worker:
		return errors.New("instance: nothing to run (neither Service nor Worker)")
	case c.Service && c.KEK == (token.KEK{}):
		return errors.New("instance: a key-encryption key is required to serve")
	case c.NoView && !c.Service:
		return errors.New("instance: NoView only applies to the service")
	case c.HistoryMargin < 0:
		return errors.New("instance: HistoryMargin must not be negative")
	case c.AttemptTimeout < 0:
		return errors.New("instance: AttemptTimeout must not be negative")
	}
	return nil
}

// Instance is one wired tokenledger process: its stores, its read models
// and the parts it runs. Build it with New, then Run it.
type Instance struct {
	cfg   Config
	nc    *nats.Conn
	store *jsstore.Store
	ring  *jsstore.KeyRing
	reg   *jsstore.Registry
	clock *jsstore.ClockGuard
	dog   *jsstore.Watchdog
	// led is the ledger of the service (with the state cache), or the
	// worker's when there is no service.
	led  *jsstore.Ledger
	view *projections.View
	// rollouts is the rollout read model, fed with the view.
	rollouts *projections.Rollouts
	runner   *projections.Runner
	feed     *projections.Feed
	svc      *handlers.Service
	worker   *worker.Worker
}

// New wires an instance. nc carries requests, replies and appends; pnc,
// the projections' connection, carries the ledger stream to the view and
// the feed, so those deliveries do not queue behind requests (it may be nc).
// The caller keeps both connections and closes them after Run returns.
func New(ctx context.Context, nc, pnc *nats.Conn, cfg Config) (*Instance, error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("jetstream: %w", err)
	}
	pjs, err := jetstream.New(pnc)
	if err != nil {
		return nil, fmt.Errorf("jetstream: %w", err)
	}
	in := &Instance{cfg: cfg, nc: nc}

	// A ledger that is gone is an alarm, never a fresh start.
	if err := jsstore.CheckInitialised(ctx, js, cfg.Stream, cfg.Init); err != nil {
		return nil, err
	}
	if in.store, err = jsstore.NewStore(ctx, js, jsstore.StoreConfig{Stream: cfg.Stream, Replicas: cfg.Replicas,
		HistoryMargin: cfg.HistoryMargin, AttemptTimeout: cfg.AttemptTimeout, Now: cfg.Now}); err != nil {
		return nil, err
	}
	// The archive: every event, after the ledger stream let it expire.
	if _, err := jsstore.EnsureArchive(ctx, js, jsstore.ArchiveConfig{Stream: cfg.Stream, Replicas: cfg.Replicas, Init: cfg.Init}); err != nil {
		return nil, err
	}
	opts := []jsstore.Option{jsstore.WithClock(cfg.Now)}
	if cfg.MaxClockOffset > 0 {
		// Every ledger of this instance refuses decisions while its clock
		// is out of bound from the NATS server's.
		in.clock, err = jsstore.NewClockGuard(ctx, js, jsstore.ClockGuardConfig{
			MaxOffset: cfg.MaxClockOffset, Interval: cfg.ClockProbeInterval, Now: cfg.Now,
			Replicas: cfg.Replicas, Log: cfg.Log,
		})
		if err != nil {
			return nil, err
		}
		opts = append(opts, jsstore.WithClockGuard(in.clock))
	}
	in.dog = jsstore.NewWatchdog(js, jsstore.WatchdogConfig{Stream: cfg.Stream, Log: cfg.Log})
	opts = append(opts, jsstore.WithWatchdog(in.dog))

	if cfg.Service {
		if err := in.wireService(ctx, js, pjs, opts); err != nil {
			return nil, err
		}
	} else {
		// A worker alone folds its own view to select families.
		in.view = projections.NewView()
		in.runner, err = projections.NewRunner(pjs, in.view, projections.RunnerConfig{Stream: cfg.Stream, Name: "worker-view", Log: cfg.Log})
		if err != nil {
			return nil, err
		}
		in.led = jsstore.New(in.store, opts...)
	}
	if cfg.Worker {
		wcfg := cfg.Security
		if wcfg.Log == nil {
			wcfg.Log = cfg.Log
		}
		if wcfg.Replicas <= 0 {
			wcfg.Replicas = cfg.Replicas
		}
		// Its own ledger: no state cache, which only pays for refreshes.
		wcfg.Ledger, wcfg.Selector, wcfg.Waiter = jsstore.New(in.store, opts...), in.view, in.view
		if in.worker, err = worker.New(ctx, js, wcfg); err != nil {
			return nil, err
		}
	}
	return in, nil
}

func (in *Instance) wireService(ctx context.Context, js, pjs jetstream.JetStream, opts []jsstore.Option) error {
	cfg := in.cfg
	keys, err := jsstore.NewKeyStore(ctx, js, cfg.KEK, cfg.Replicas)
	if err != nil {
		return err
	}
	// A retired key stays published while a token it signed can be
	// valid: the longest access-token lifetime of any client, plus a
	// minute for clocks.
	maxTTL := cfg.Defaults.AccessTTL
	for _, c := range cfg.Clients {
		maxTTL = max(maxTTL, time.Duration(c.AccessTTL))
	}
	if maxTTL <= 0 {
		maxTTL = 15 * time.Minute
	}
	in.ring, err = jsstore.NewKeyRing(jsstore.KeyRingConfig{
		Keys: keys, Store: in.store, Alg: cfg.Alg, CachePeriod: cfg.JWKSCachePeriod,
		RotationPeriod: cfg.KeyRotationPeriod, MaxTokenAge: maxTTL + time.Minute,
		CheckInterval: cfg.KeyCheckInterval, Now: cfg.Now, Log: cfg.Log,
	})
	if err != nil {
		return err
	}
	if err := in.ring.Start(ctx); err != nil {
		return err
	}
	if in.reg, err = jsstore.NewRegistry(ctx, js, cfg.Clients, cfg.Replicas, cfg.Log); err != nil {
		return err
	}
	if !cfg.NoView {
		// The valid-token view, fed from the ledger stream, and the
		// revocation feed that announces every revocation to resource
		// servers; the feed is handed the revocations the runner reads
		// rather than reading every event a second time.
		in.view = projections.NewView()
		rcfg, err := in.checkpoints(ctx, pjs)
		if err != nil {
			return err
		}
		if in.runner, err = projections.NewRunner(pjs, in.view, rcfg); err != nil {
			return err
		}
		in.feed, err = projections.NewFeed(ctx, pjs, in.view, projections.FeedConfig{
			Prefix: cfg.Prefix, LedgerStream: cfg.Stream, Replicas: cfg.Replicas, MaxAge: cfg.FeedMaxAge, Log: cfg.Log,
		})
		if err != nil {
			return err
		}
		in.feed.Follow(in.runner)
		in.rollouts = projections.NewRollouts()
		in.runner.Also(in.rollouts)
		// A client with no rollout in the read model is decided without
		// reading the stored rollout: no extra read per issue or refresh
		// for the clients that never roll out.
		opts = append(opts, jsstore.WithRolloutHint(in.rollouts.Has))
		// A key revoked in the ledger is out of use here before the view
		// passes its event: introspection's read-your-writes.
		in.feed.OnKeyRevoked(in.ring.Deny)
		// The service's ledger decides a refresh on the state it appended
		// last for the family unless the view has seen a later event.
		if cfg.StateCache > 0 {
			opts = append(opts, jsstore.WithStateCache(in.view.Newer, cfg.StateCache))
		}
	}
	in.led = jsstore.New(in.store, opts...)
	svcCfg := handlers.Config{
		Ledger: in.led, Registry: in.reg, Ring: in.ring,
		Issuer: cfg.Issuer, Prefix: cfg.Prefix, Defaults: cfg.Defaults,
		MaxRequestBytes: cfg.MaxRequestBytes, Workers: cfg.Workers, Version: cfg.Version, Log: cfg.Log,
		Observe: cfg.Observe,
	}
	if in.view != nil {
		svcCfg.View, svcCfg.Rollouts = in.view, in.rollouts
	}
	if in.svc, err = handlers.NewService(svcCfg); err != nil {
		return err
	}
	if !cfg.Worker {
		// The security-event intake exists even without a worker here,
		// so events published meanwhile wait for one.
		sec := cfg.Security
		if sec.Replicas <= 0 {
			sec.Replicas = cfg.Replicas
		}
		return worker.CreateSecurityStreams(ctx, js, sec)
	}
	return nil
}

// checkpoints is the service runner's configuration with its checkpoint
// store: a starting instance loads the newest checkpoint and replays only
// the events after it.
func (in *Instance) checkpoints(ctx context.Context, js jetstream.JetStream) (projections.RunnerConfig, error) {
	cfg := in.cfg
	rcfg := projections.RunnerConfig{Stream: cfg.Stream, Log: cfg.Log}
	if cfg.CheckpointEvery < 0 && cfg.CheckpointInterval < 0 {
		return rcfg, nil
	}
	store, err := projections.NewCheckpointStore(ctx, js, projections.CheckpointConfig{Replicas: cfg.Replicas, Log: cfg.Log})
	if err != nil {
		return rcfg, err
	}
	rcfg.Checkpoints = store
	switch {
	case cfg.CheckpointEvery == 0:
		rcfg.CheckpointEvery = projections.DefaultCheckpointEvery
	case cfg.CheckpointEvery > 0:
		rcfg.CheckpointEvery = uint64(cfg.CheckpointEvery)
	}
	switch {
	case cfg.CheckpointInterval == 0:
		rcfg.CheckpointInterval = projections.DefaultCheckpointInterval
	case cfg.CheckpointInterval > 0:
		rcfg.CheckpointInterval = cfg.CheckpointInterval
	}
	return rcfg, nil
}

// Run runs every part until ctx ends or one fails, then stops them in
// order: the endpoints and the worker first (requests in flight are
// answered), then the projections they read, then the rest. It returns the
// first error.
func (in *Instance) Run(ctx context.Context) error {
	g, gctx := errgroup.WithContext(ctx)
	// The projections stop after the service and the worker, which read
	// the view: a request in flight at shutdown may still wait for it.
	pctx, stopProjections := context.WithCancel(context.WithoutCancel(gctx))
	defer stopProjections()
	var readers sync.WaitGroup
	reader := func(run func(context.Context) error) {
		readers.Add(1)
		g.Go(func() error {
			defer readers.Done()
			return run(gctx)
		})
	}
	if in.worker != nil {
		reader(in.worker.Run)
	}
	if in.svc != nil {
		g.Go(func() error { return in.reg.Run(gctx) })
		g.Go(func() error { return in.ring.Run(gctx) })
		reader(func(ctx context.Context) error { return in.svc.Run(ctx, in.nc) })
	}
	if in.clock != nil && in.cfg.ClockProbeInterval >= 0 {
		g.Go(func() error { return in.clock.Run(gctx) })
	}
	g.Go(func() error { return in.dog.Run(gctx) })
	g.Go(func() error {
		<-gctx.Done()
		readers.Wait()
		stopProjections()
		return nil
	})
	if in.runner != nil {
		g.Go(func() error { return in.runner.Run(pctx) })
	}
	if in.feed != nil {
		g.Go(func() error { return in.feed.Run(pctx) })
	}
	err := g.Wait()
	if errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}

// DefaultMaxViewLag is how many events the view may be behind the ledger
// stream for the instance to be ready.
const DefaultMaxViewLag = 1000

// Ready is nil when the instance can answer correctly now: its NATS
// connection is up, the ledger stream and key bucket exist, its clock is in
// bound, it has a signing key (when it serves), and its view is within
// maxLag events of the stream's end (DefaultMaxViewLag if not positive).
// The error says which condition fails.
func (in *Instance) Ready(ctx context.Context, maxLag uint64) error {
	if maxLag == 0 {
		maxLag = DefaultMaxViewLag
	}
	if s := in.nc.Status(); s != nats.CONNECTED {
		return fmt.Errorf("NATS connection %s", s)
	}
	if err := in.led.Ready(); err != nil {
		return err
	}
	if in.svc != nil {
		if _, ok := in.Keys().Signing(in.cfg.Now()); !ok {
			return errors.New("no signing key")
		}
	}
	if in.runner != nil {
		lag, err := in.runner.Lag(ctx)
		if err != nil {
			return fmt.Errorf("view lag: %w", err)
		}
		if lag.Behind() > maxLag {
			return fmt.Errorf("view %d events behind the ledger (bound %d)", lag.Behind(), maxLag)
		}
	}
	return nil
}

// Runner is the view's runner (nil without a view).
func (in *Instance) Runner() *projections.Runner { return in.runner }

// Ledger is the instance's ledger: the service's, or the worker's when the
// instance serves no endpoints.
func (in *Instance) Ledger() *jsstore.Ledger { return in.led }

// Store is the ledger's event store (for tools and tests that read the
// stream; state changes go through Ledger).
func (in *Instance) Store() *jsstore.Store { return in.store }

// View is the valid-token view (nil without one).
func (in *Instance) View() *projections.View { return in.view }

// Rollouts is the rollout read model (nil without a view).
func (in *Instance) Rollouts() *projections.Rollouts { return in.rollouts }

// Service is the micro service (nil for a worker alone).
func (in *Instance) Service() *handlers.Service { return in.svc }

// Worker is the security-event worker (nil without one).
func (in *Instance) Worker() *worker.Worker { return in.worker }

// Keys is the signing key set the instance holds now (empty for a
// worker alone).
func (in *Instance) Keys() token.KeySet {
	if in.ring == nil {
		return token.KeySet{}
	}
	if snap := in.ring.Snapshot(); snap != nil {
		return snap.Set
	}
	return token.KeySet{}
}

// KeyRing is the signing-key lifecycle (nil for a worker alone).
func (in *Instance) KeyRing() *jsstore.KeyRing { return in.ring }

// Registry is the client registry (nil for a worker alone).
func (in *Instance) Registry() *jsstore.Registry { return in.reg }

// ClockGuard is the clock guard (nil when disabled).
func (in *Instance) ClockGuard() *jsstore.ClockGuard { return in.clock }

// Watchdog watches the ledger stream and the key bucket.
func (in *Instance) Watchdog() *jsstore.Watchdog { return in.dog }
