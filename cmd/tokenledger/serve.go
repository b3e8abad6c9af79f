package main

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"golang.org/x/sync/errgroup"

	"github.com/tokenledger/tokenledger/handlers"
	"github.com/tokenledger/tokenledger/instance"
	"github.com/tokenledger/tokenledger/ledger"
	"github.com/tokenledger/tokenledger/ledger/jsstore"
	"github.com/tokenledger/tokenledger/ledger/token"
	"github.com/tokenledger/tokenledger/ops"
)

type serveConfig struct {
	nats       natsFlags
	config     string
	listen     string
	data       string
	grace      time.Duration
	accessTTL  time.Duration
	refreshTTL time.Duration
	familyTTL  time.Duration
	prefix     string
	issuer     string
	alg        string
	jwksCache  time.Duration
	keyRotate  time.Duration
	kek        string
	kekFile    string
	replicas   int
	stream     string
	workers    int
	stateCache int
	maxOffset  time.Duration
	init       bool
	history    time.Duration
	attempt    time.Duration
	syncAlways bool
	http       string
	maxRequest int
	logLevel   string
	clients    []ledger.Client
	worker     bool
	security   securityFlags
	ckptEvery  int
	ckptEveryT time.Duration
}

func parseServe(args []string) (serveConfig, error) {
	var c serveConfig
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	c.nats.register(fs, "")
	fs.StringVar(&c.config, "config", "", "JSON config file: any flag by name, plus \"clients\"")
	fs.StringVar(&c.listen, "listen", "127.0.0.1:4222", "embedded NATS server listen address (without --nats-url)")
	fs.StringVar(&c.data, "data", "./tokenledger-data", "embedded NATS server storage directory")
	fs.DurationVar(&c.grace, "grace", 10*time.Second, "grace window for retried refresh tokens (0 disables, at most 60s)")
	fs.DurationVar(&c.accessTTL, "access-ttl", 15*time.Minute, "access token lifetime")
	fs.DurationVar(&c.refreshTTL, "refresh-ttl", 336*time.Hour, "refresh token idle lifetime")
	fs.DurationVar(&c.familyTTL, "family-ttl", 2160*time.Hour, "token family absolute lifetime")
	fs.StringVar(&c.prefix, "prefix", "tokens", "subject prefix of the endpoints")
	fs.StringVar(&c.issuer, "issuer", "tokenledger", "iss claim of access tokens")
	fs.StringVar(&c.alg, "alg", token.AlgEdDSA, "signing algorithm: EdDSA, ES256 or RS256")
	fs.DurationVar(&c.jwksCache, "jwks-cache-period", jsstore.DefaultJWKSCachePeriod, "how long resource servers may cache the JWKS: a next signing key is published this long before it signs")
	fs.DurationVar(&c.keyRotate, "key-rotation-period", jsstore.DefaultKeyRotationPeriod, "how long a signing key signs before the scheduled rotation (0: only on demand, tokenledger keys rotate)")
	fs.StringVar(&c.kek, "kek", "", "key-encryption key, base64 32 bytes (prefer TOKENLEDGER_KEK)")
	fs.StringVar(&c.kekFile, "kek-file", "", "file holding the key-encryption key (default: generated under --data when embedded)")
	fs.IntVar(&c.replicas, "replicas", 1, "stream and bucket replicas (3 on a cluster)")
	fs.StringVar(&c.stream, "stream", jsstore.DefaultStream, "ledger stream name")
	fs.IntVar(&c.workers, "workers", 128, "requests handled at once")
	fs.IntVar(&c.stateCache, "state-cache", jsstore.DefaultStateCacheSize, "families whose last state this instance keeps, to decide their next refresh without reading it (0 disables)")
	fs.StringVar(&c.http, "http", "", "address of the HTTP listener for /healthz, /readyz and Prometheus /metrics (off when empty)")
	fs.BoolVar(&c.syncAlways, "sync-always", true, "embedded server: fsync every ledger write before acknowledging it, so a host crash loses no acknowledged event (false: sync every 2 minutes, 3-4x faster, but a host crash or power cut can lose acknowledged events: for development and throwaway data)")
	fs.BoolVar(&c.init, "init", false, "create the ledger stream and buckets even if other stores of this deployment exist (only to start over knowingly: without it, a missing ledger stops the start)")
	registerHistoryMargin(fs, &c.history)
	fs.DurationVar(&c.attempt, "attempt-timeout", jsstore.DefaultAttemptTimeout, "bound on each JetStream call of the ledger (an append, a get): during a stream-leader election requests fail fast with 503 temporarily_unavailable instead of waiting out the request timeout")
	fs.DurationVar(&c.maxOffset, "max-clock-offset", jsstore.DefaultMaxClockOffset, "largest offset of this instance's clock from the NATS server's before it refuses decisions (503) until back in bound")
	fs.IntVar(&c.maxRequest, "max-request-bytes", handlers.DefaultMaxRequestBytes, "request size limit")
	fs.StringVar(&c.logLevel, "log-level", "info", "debug, info, warn or error")
	fs.BoolVar(&c.worker, "worker", true, "run the security-event worker (false: only create its streams)")
	fs.IntVar(&c.ckptEvery, "checkpoint-every", 100_000, "checkpoint the valid-token view after this many events (0: never by count); a start loads the newest checkpoint and replays only the rest")
	fs.DurationVar(&c.ckptEveryT, "checkpoint-interval", 5*time.Minute, "checkpoint the view this long after the last one if events came since (0: never by time; both 0: no checkpoints, every start rebuilds)")
	c.security.register(fs)
	cf, err := parseFlags(fs, args)
	if err != nil {
		return c, err
	}
	if len(cf.Clients) > 0 {
		if err := json.Unmarshal(cf.Clients, &c.clients); err != nil {
			return c, fmt.Errorf("config clients: %w", err)
		}
		for _, cl := range c.clients {
			if strings.HasPrefix(cl.SecretSHA256, "REPLACE") {
				return c, fmt.Errorf("config %s: client %s: secret_sha256 is still the example's placeholder: run `tokenledger client new-secret`, give the client its client_secret and put its secret_sha256 here", c.config, cl.ID)
			}
		}
	}
	if c.grace < 0 || c.grace > ledger.MaxGrace {
		return c, fmt.Errorf("--grace must be between 0 and %s", ledger.MaxGrace)
	}
	if !token.ValidAlg(c.alg) {
		return c, fmt.Errorf("--alg %q: want EdDSA, ES256 or RS256", c.alg)
	}
	if c.maxOffset <= 0 {
		return c, errors.New("--max-clock-offset must be positive")
	}
	if c.jwksCache <= 0 {
		return c, errors.New("--jwks-cache-period must be positive")
	}
	if c.keyRotate < 0 || (c.keyRotate > 0 && c.keyRotate <= c.jwksCache) {
		return c, errors.New("--key-rotation-period must be 0 (on demand only) or longer than --jwks-cache-period")
	}
	if c.stateCache < 0 {
		return c, errors.New("--state-cache must not be negative")
	}
	if c.ckptEvery < 0 || c.ckptEveryT < 0 {
		return c, errors.New("--checkpoint-every and --checkpoint-interval must not be negative")
	}
	if c.attempt <= 0 {
		return c, errors.New("--attempt-timeout must be positive")
	}
	if c.history < 0 {
		return c, errors.New("--history-margin must not be negative")
	}
	return c, nil
}

// DefaultHistoryMargin is --history-margin's default: a family's events
// leave the ledger stream (the archive keeps them) a day after its absolute
// lifetime ended. docs/operations.md, "History: hot ledger and archive".
const DefaultHistoryMargin = 24 * time.Hour

// registerHistoryMargin registers --history-margin, which serve and worker
// share: both append family events.
func registerHistoryMargin(fs *flag.FlagSet, v *time.Duration) {
	fs.DurationVar(v, "history-margin", DefaultHistoryMargin, "how long after a family's absolute lifetime its events leave the ledger stream (the archive stream keeps every event); 0 keeps every event in the ledger stream")
}

func newLogger(level string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level: %w", err)
	}
	return slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: l})), nil
}

// serve runs the service until ctx ends: the embedded NATS server unless
// --nats-url is given, the stores, the client registry and the endpoints.
func serve(ctx context.Context, args []string) error {
	cfg, err := parseServe(args)
	if err != nil {
		return err
	}
	log, err := newLogger(cfg.logLevel)
	if err != nil {
		return err
	}

	var nc *nats.Conn
	var kek token.KEK
	closed := make(chan struct{})
	onClose := nats.ClosedHandler(func(*nats.Conn) { close(closed) })
	// The projections read every event the service appends. They get a
	// connection of their own, so those deliveries do not queue on the
	// connection that carries requests, replies and appends.
	var connectProjections func() (*nats.Conn, error)
	if cfg.nats.url == "" {
		release, err := lockDataDir(cfg.data)
		if err != nil {
			return err
		}
		defer release()
		ns, err := startEmbedded(cfg.listen, cfg.data, cfg.syncAlways)
		if err != nil {
			return err
		}
		defer func() {
			ns.Shutdown()
			ns.WaitForShutdown()
			log.Info("embedded NATS server stopped")
		}()
		durability := "fsync before every acknowledgement: survives a host crash"
		if !cfg.syncAlways {
			durability = "fsync every 2 minutes: a host crash can lose acknowledged events (--sync-always=false)"
		}
		log.Info("embedded NATS server listening", "url", ns.ClientURL(), "data", cfg.data, "durability", durability)
		if nc, err = nats.Connect("", nats.InProcessServer(ns), nats.Name("tokenledger-serve"), onClose); err != nil {
			return fmt.Errorf("connect to embedded server: %w", err)
		}
		connectProjections = func() (*nats.Conn, error) {
			return nats.Connect("", nats.InProcessServer(ns), nats.Name("tokenledger-serve-projections"))
		}
		if cfg.kek == "" && cfg.kekFile == "" {
			cfg.kekFile = filepath.Join(cfg.data, "kek")
			if kek, err = loadOrCreateKEK(cfg.kekFile); err != nil {
				return err
			}
		}
	} else {
		if nc, err = cfg.nats.connect("tokenledger-serve", onClose); err != nil {
			return err
		}
		connectProjections = func() (*nats.Conn, error) { return cfg.nats.connect("tokenledger-serve-projections") }
		log.Info("connected to NATS", "url", nc.ConnectedUrlRedacted())
	}
	// Runs before the embedded server's shutdown, deferred earlier.
	defer drainAndWait(nc, closed, log)
	if kek == (token.KEK{}) {
		if kek, err = readKEK(cfg.kek, cfg.kekFile); err != nil {
			return err
		}
	}

	pnc, err := connectProjections()
	if err != nil {
		return fmt.Errorf("projections connection: %w", err)
	}
	// Closed after the runner and the feed stop, before nc drains.
	defer pnc.Close()
	secCfg, err := cfg.security.config(log, cfg.replicas)
	if err != nil {
		return err
	}
	stateCache := cfg.stateCache
	if stateCache == 0 {
		stateCache = -1 // 0 disables here; instance reads 0 as its default
	}
	metrics := ops.NewMetrics()
	in, err := instance.New(ctx, nc, pnc, instance.Config{
		Stream: cfg.stream, Prefix: cfg.prefix, Replicas: cfg.replicas, Init: cfg.init, HistoryMargin: cfg.history, AttemptTimeout: cfg.attempt,
		Service: true, Worker: cfg.worker, Security: secCfg,
		KEK: kek, Alg: cfg.alg, Issuer: cfg.issuer, Clients: cfg.clients,
		JWKSCachePeriod: cfg.jwksCache, KeyRotationPeriod: keyRotation(cfg.keyRotate),
		Defaults: ledger.Policy{
			Rotation: ledger.RotateAlways, Grace: cfg.grace, AccessTTL: cfg.accessTTL,
			RefreshTTL: cfg.refreshTTL, FamilyTTL: cfg.familyTTL,
		},
		StateCache: stateCache, MaxRequestBytes: cfg.maxRequest, Workers: cfg.workers,
		MaxClockOffset: cfg.maxOffset, Observe: metrics.Observe, Log: log,
		CheckpointEvery: disabledIfZero(cfg.ckptEvery), CheckpointInterval: disabledIfZero(cfg.ckptEveryT),
	})
	if err != nil {
		return err
	}
	err = runWithOps(ctx, in, metrics, cfg.http, log)
	log.Info("stopping")
	return err
}

// disabledIfZero maps a flag's 0 (off) to instance.Config's negative (its
// 0 is the default).
func disabledIfZero[T int | time.Duration](v T) T {
	if v == 0 {
		return -1
	}
	return v
}

func readKEK(value, file string) (token.KEK, error) {
	switch {
	case value != "":
		return token.ParseKEK(value)
	case file != "":
		b, err := os.ReadFile(file)
		if err != nil {
			return token.KEK{}, fmt.Errorf("--kek-file: %w", err)
		}
		return token.ParseKEK(string(b))
	}
	return token.KEK{}, errors.New("with --nats-url a key-encryption key is required: set TOKENLEDGER_KEK or --kek-file (every instance must share it)")
}

// loadOrCreateKEK reads a KEK file, creating it (mode 0600) with a fresh key
// if it does not exist. Only the embedded default uses this.
func loadOrCreateKEK(path string) (token.KEK, error) {
	b, err := os.ReadFile(path)
	if err == nil {
		return token.ParseKEK(string(b))
	}
	if !errors.Is(err, os.ErrNotExist) {
		return token.KEK{}, fmt.Errorf("read kek: %w", err)
	}
	k, err := token.NewKEK(rand.Reader)
	if err != nil {
		return k, err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		if errors.Is(err, os.ErrExist) { // another process won the race
			return loadOrCreateKEK(path)
		}
		return k, fmt.Errorf("create kek: %w", err)
	}
	_, err = f.WriteString(k.String() + "\n")
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return k, fmt.Errorf("write kek: %w", err)
	}
	return k, nil
}

// startEmbedded starts a NATS server with JetStream storing under dataDir.
// With syncAlways every JetStream write is fsynced before it is
// acknowledged, so a host crash loses no acknowledged event; without it the
// file store syncs every two minutes (a process crash still loses nothing).
// Its log is kept: a failure to start (the port in use, a data directory
// it cannot write) is returned at once with the server's own words, and
// later warnings and errors go to stderr.
func startEmbedded(listen, dataDir string, syncAlways bool) (*server.Server, error) {
	host, portStr, err := net.SplitHostPort(listen)
	if err != nil {
		return nil, fmt.Errorf("--listen %q: %w", listen, err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil {
		return nil, fmt.Errorf("--listen %q: bad port", listen)
	}
	if port == 0 {
		port = server.RANDOM_PORT
	} else if l, err := net.Listen("tcp", listen); err != nil {
		// Checked before the server starts, which would only log it.
		return nil, fmt.Errorf("--listen %s: %w (is another tokenledger or nats-server running? stop it or choose another --listen)", listen, errors.Unwrap(err))
	} else {
		_ = l.Close()
	}
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return nil, fmt.Errorf("--data %s: %w", dataDir, errors.Unwrap(err))
	}
	if err := checkWritable(dataDir); err != nil {
		return nil, err
	}
	ns, err := server.NewServer(&server.Options{
		ServerName: "tokenledger-embedded",
		Host:       host,
		Port:       port,
		JetStream:  true,
		StoreDir:   filepath.Join(dataDir, "jetstream"),
		NoSigs:     true,
		MaxPayload: 1 << 20,
		SyncAlways: syncAlways,
	})
	if err != nil {
		return nil, fmt.Errorf("embedded NATS server: %w", err)
	}
	sl := &startupLog{failed: make(chan string, 1), log: slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))}
	ns.SetLogger(sl, false, false)
	ns.Start()
	deadline := time.Now().Add(15 * time.Second)
	for !ns.ReadyForConnections(100 * time.Millisecond) {
		select {
		case msg := <-sl.failed:
			ns.Shutdown()
			return nil, fmt.Errorf("embedded NATS server (--listen %s, --data %s) failed to start: %s", listen, dataDir, msg)
		default:
		}
		if time.Now().After(deadline) {
			ns.Shutdown()
			return nil, fmt.Errorf("embedded NATS server (--listen %s, --data %s) did not become ready within 15s", listen, dataDir)
		}
	}
	sl.started.Store(true)
	if !ns.JetStreamEnabled() {
		ns.Shutdown()
		return nil, fmt.Errorf("embedded NATS server: JetStream did not start under --data %s", dataDir)
	}
	return ns, nil
}

// runWithOps runs the instance and, when addr is set, the HTTP listener of
// health, readiness and metrics beside it; when one stops, both stop.
func runWithOps(ctx context.Context, in *instance.Instance, metrics *ops.Metrics, addr string, log *slog.Logger) error {
	if addr == "" {
		return in.Run(ctx)
	}
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return in.Run(gctx) })
	g.Go(func() error {
		return ops.New(ops.Config{Addr: addr, Instance: in, Metrics: metrics, Log: log}).Run(gctx)
	})
	return g.Wait()
}

// keyRotation is --key-rotation-period as instance.Config reads it: 0 (on
// demand only) is negative there.
func keyRotation(d time.Duration) time.Duration {
	if d == 0 {
		return -1
	}
	return d
}

// checkWritable fails, naming the directory, when the server could not
// write its store there.
func checkWritable(dir string) error {
	f, err := os.CreateTemp(dir, ".write-check-*")
	if err != nil {
		return fmt.Errorf("--data %s is not writable: %w", dir, errors.Unwrap(err))
	}
	name := f.Name()
	_ = f.Close()
	return os.Remove(name)
}

// startupLog is the embedded server's logger: until the server is ready
// its first error is the reason it failed to start; warnings and errors
// are logged to stderr throughout.
type startupLog struct {
	failed  chan string
	started atomic.Bool
	log     *slog.Logger
}

func (l *startupLog) fail(msg string) {
	if !l.started.Load() {
		select {
		case l.failed <- msg:
		default:
		}
	}
}

// Noticef drops notices.
func (l *startupLog) Noticef(string, ...any) {}

// Warnf logs a warning.
func (l *startupLog) Warnf(format string, v ...any) {
	l.log.Warn(fmt.Sprintf(format, v...), "component", "nats-server")
}

// Fatalf records a fatal error; the server does not exit the process.
func (l *startupLog) Fatalf(format string, v ...any) {
	msg := fmt.Sprintf(format, v...)
	l.log.Error(msg, "component", "nats-server")
	l.fail(msg)
}

// Errorf records an error.
func (l *startupLog) Errorf(format string, v ...any) {
	msg := fmt.Sprintf(format, v...)
	l.log.Error(msg, "component", "nats-server")
	l.fail(msg)
}

// Debugf drops debug lines.
func (l *startupLog) Debugf(string, ...any) {}

// Tracef drops trace lines.
func (l *startupLog) Tracef(string, ...any) {}
