package bench

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tokenledger/tokenledger/ledger"
	"github.com/tokenledger/tokenledger/ledger/jsstore"
)

// StandardSuite is the suite of issue 6 for ParseCases, in the order it
// runs: each bare pipeline is measured right before the first case that
// compares with it. refresh-aged@2 refreshes a family with
// Config.PriorRotations rotations and a fresh one side by side, so both
// see the same (noisy) machine.
const StandardSuite = "refresh@1,refresh@64,issue@1,issue@64,introspect@64,refresh-aged@2"

// Config is one run of the bench. Validate checks it; Run calls Validate.
type Config struct {
	// Cases are measured in order.
	Cases []Case
	// Duration is the measured time of each case, Warmup the unmeasured
	// load before it.
	Duration, Warmup time.Duration
	// Slices: each case and its bare pipeline are measured in this many
	// alternating slices of the window (1: one after the other). A
	// profiled run is never interleaved.
	Slices int
	// Timeout bounds each request.
	Timeout time.Duration
	// PriorRotations is how often refresh-aged rotates each aged family
	// (even callers; odd callers refresh fresh ones) before measuring.
	PriorRotations int
	// Mix is the mix workload's operations and their weights.
	Mix []MixWeight
	// Conns is how many NATS connections the callers of a target share.
	Conns int
	// Prefix is the service's subject prefix.
	Prefix string
	// Bare also measures the bare pipelines, each with a handler pool of
	// BareWorkers, and reports the service's ratios to them.
	Bare        bool
	BareWorkers int
	// ProfileDir, when set, receives a CPU profile (and the live heap at
	// its end) of the process under load for every case.
	ProfileDir string
	// Keep keeps the temporary directory of the targets' data and logs.
	Keep bool
	// Command is recorded in the report.
	Command []string

	// NATSURL, when set, is a running service to load; the bench starts
	// none and connects with NATSOptions. ClientID and ClientSecret name
	// an existing client there (default: one is registered in the clients
	// bucket), ServicePID the service's process for its CPU and RSS.
	NATSURL                string
	NATSOptions            []nats.Option
	ClientID, ClientSecret string
	ServicePID             int

	// InProcess runs the service and the bare pipelines as goroutines of
	// this process (the callers still connect over loopback TCP) rather
	// than as child processes. Not with NATSURL.
	InProcess bool
	// ServeArgs are extra flags for the service the bench starts (after
	// --sync-always=false, which they may override).
	ServeArgs []string
	// Wiring is how the service and the bare pipeline are started.
	Wiring Wiring

	// Progress, when not nil, receives a line of progress per step.
	Progress io.Writer
}

// Wiring is what the bench takes from the tokenledger command so that it
// never assembles a service of its own: the service is always the one
// `tokenledger serve` runs.
type Wiring struct {
	// Serve runs `tokenledger serve` with args until ctx ends. The bench
	// calls it with InProcess; RunChild calls it in the profiled service's
	// child process.
	Serve func(ctx context.Context, args []string) error
	// StartServer starts an embedded NATS server as serve starts its own,
	// so the bare pipeline runs on the same server configuration.
	StartServer func(listen, dataDir string) (*server.Server, error)
	// Executable is the tokenledger binary child processes run:
	// `serve ...` for the service, `bench serve-child ...` for the service
	// when profiled and `bench bare-child ...` for the bare pipeline; the
	// command hands the last two to RunChild. Env is their environment
	// (nil: this process's).
	Executable string
	Env        []string
}

// Validate reports the first setting that cannot work.
func (c *Config) Validate() error {
	switch {
	case len(c.Cases) == 0:
		return errors.New("no cases")
	case c.Duration <= 0:
		return errors.New("duration must be positive")
	case c.Warmup < 0:
		return errors.New("warm-up must not be negative")
	case c.Slices < 1:
		return errors.New("slices must be at least 1")
	case c.Timeout <= 0:
		return errors.New("timeout must be positive")
	case c.Conns < 1:
		return errors.New("conns must be at least 1")
	case c.PriorRotations < 0:
		return errors.New("prior rotations must not be negative")
	case c.Bare && c.BareWorkers < 1:
		return errors.New("bare workers must be at least 1")
	case c.Prefix == "":
		return errors.New("no subject prefix")
	case c.NATSURL != "" && c.InProcess:
		return errors.New("in-process starts the service itself: not with a NATS URL")
	case c.NATSURL == "" && (c.ClientID != "" || c.ServicePID != 0):
		return errors.New("a client id and a service pid are for a service at a NATS URL")
	case (c.ClientID == "") != (c.ClientSecret == ""):
		return errors.New("a client id and its secret go together")
	}
	for _, cs := range c.Cases {
		if cs.Workload == wlMix && len(c.Mix) == 0 {
			return errors.New("mix workload without a mix")
		}
	}
	return nil
}

// wiringError reports what of the wiring the run needs and lacks.
func (c *Config) wiringError() error {
	w := c.Wiring
	switch {
	case c.InProcess && c.NATSURL == "" && w.Serve == nil:
		return errors.New("bench: in-process without a serve function")
	case c.InProcess && c.Bare && w.StartServer == nil:
		return errors.New("bench: in-process bare pipeline without a server to start")
	case !c.InProcess && (c.NATSURL == "" || c.Bare) && w.Executable == "":
		return errors.New("bench: child processes without an executable")
	}
	return nil
}

// Run starts the service (unless cfg.NATSURL) and, with cfg.Bare, a bare
// pipeline per case, drives the cases against both and returns the report.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if err := cfg.wiringError(); err != nil {
		return nil, err
	}
	log := func(format string, args ...any) {
		if cfg.Progress != nil {
			fmt.Fprintf(cfg.Progress, format+"\n", args...)
		}
	}
	tmp, err := os.MkdirTemp("", "tokenledger-bench-")
	if err != nil {
		return nil, err
	}
	if cfg.Keep {
		log("bench: keeping %s", tmp)
	} else {
		defer os.RemoveAll(tmp)
	}
	if cfg.ProfileDir != "" {
		if err := os.MkdirAll(cfg.ProfileDir, 0o755); err != nil {
			return nil, err
		}
		if cfg.ProfileDir, err = filepath.Abs(cfg.ProfileDir); err != nil {
			return nil, err
		}
	}
	report := &Report{
		Version: 1, StartedAt: time.Now().UTC(), Command: cfg.Command,
		Host: Host{
			CPUs: runtime.NumCPU(), GOMAXPROC: runtime.GOMAXPROCS(0), GoVersion: runtime.Version(),
			OS: runtime.GOOS, Arch: runtime.GOARCH,
		},
		Settings: Settings{
			DurationS: cfg.Duration.Seconds(), WarmupS: cfg.Warmup.Seconds(), Conns: cfg.Conns,
			PriorRotations: cfg.PriorRotations, BareWorkers: cfg.BareWorkers,
		},
	}
	report.Host.Hostname, _ = os.Hostname()
	profiling := cfg.ProfileDir != ""

	// The service under test.
	svc := &loadTarget{kind: "service", prefix: cfg.Prefix, timeout: cfg.Timeout,
		clientID: cfg.ClientID, secret: cfg.ClientSecret, pid: cfg.ServicePID}
	var svcOpts []nats.Option
	url := cfg.NATSURL
	var prof *profiler
	if cfg.InProcess {
		prof = &profiler{}
	}
	if url == "" {
		addr, err := freeAddr()
		if err != nil {
			return nil, err
		}
		// The bench compares pipelines, not disks: the service skips the
		// per-write fsync serve does by default, as the bare pipeline's
		// server does (--serve-args --sync-always=true measures it).
		sargs := append([]string{"--listen", addr, "--data", filepath.Join(tmp, "service"),
			"--log-level", "warn", "--prefix", cfg.Prefix, "--sync-always=false"}, cfg.ServeArgs...)
		var p targetProc
		if cfg.InProcess {
			report.Target = "embedded (in this process)"
			p = startInProcess(ctx, "service", func(ctx context.Context) error { return cfg.Wiring.Serve(ctx, sargs) }, prof)
			svc.pid, svc.shared = os.Getpid(), true
		} else {
			report.Target = "embedded (child process)"
			cargs := append([]string{"serve"}, sargs...)
			if profiling {
				cargs = append([]string{"bench", ServeChild}, sargs...)
			}
			ch, err := startChild("service", cfg.Wiring.Executable, cargs, cfg.Wiring.Env, filepath.Join(tmp, "service.log"), profiling)
			if err != nil {
				return nil, err
			}
			p, svc.pid = ch, ch.pid()
			log("bench: service pid %d (log %s)", ch.pid(), ch.logPath)
		}
		defer func() {
			if err := p.stop(); err != nil {
				log("bench: %v", err)
			}
		}()
		svc.proc = p
		url = "nats://" + addr
		log("bench: service on %s", url)
	} else {
		report.Target = "external " + url
		svcOpts = cfg.NATSOptions
	}
	if svc.conns, err = dialAll(ctx, url, cfg.Conns, svcOpts, svc.proc); err != nil {
		return nil, err
	}
	defer closeAll(svc.conns)
	if svc.clientID == "" {
		if svc.clientID, svc.secret, err = benchClient(ctx, svc.conns[0]); err != nil {
			return nil, err
		}
		log("bench: created client %s", svc.clientID)
	}
	if err := waitServed(ctx, svc, 30*time.Second); err != nil {
		return nil, err
	}

	rs := runSettings{duration: cfg.Duration, warmup: cfg.Warmup, prior: cfg.PriorRotations, mix: cfg.Mix,
		profileDir: cfg.ProfileDir, log: log}
	var bare *bareStarter
	if cfg.Bare {
		bare = &bareStarter{cfg: &cfg, tmp: tmp, prof: prof, log: log}
	}
	// A profile is of one target at a time: a profiled run measures the
	// bare pipeline and the service one after the other.
	interleave := cfg.Slices > 1 && cfg.ProfileDir == ""
	report.Settings.Slices = 1
	if interleave {
		report.Settings.Slices = cfg.Slices
	}
	bareDone := map[string]int{} // bare case name → index in Results
	freshDone := map[int]int{}   // concurrency → index of the latest fresh refresh
	for _, spec := range cfg.Cases {
		if ctx.Err() != nil {
			break
		}
		var r CaseResult
		baseline := -1
		switch {
		case bare != nil && bareName(spec.Workload) != "" && interleave:
			log("bench: %s with %s, in %d alternating slices ...", caseName("service", spec), caseName("bare", spec), cfg.Slices)
			b, s, err := bareInterleaved(ctx, bare, svc, spec, rs, cfg.Slices)
			if err != nil {
				return nil, err
			}
			b.Name, b.Workload = caseName("bare", spec), bareName(spec.Workload)
			log("bench: %s", oneLine(b))
			report.Results = append(report.Results, b)
			baseline, r = len(report.Results)-1, s
		case bare != nil && bareName(spec.Workload) != "":
			key := caseName("bare", spec)
			i, ok := bareDone[key]
			if !ok {
				log("bench: %s ...", key)
				b, err := bareCase(ctx, bare, spec, rs)
				if err != nil {
					return nil, err
				}
				b.Name, b.Workload = key, bareName(spec.Workload)
				log("bench: %s", oneLine(b))
				report.Results = append(report.Results, b)
				i = len(report.Results) - 1
				bareDone[key] = i
			}
			baseline = i
			fallthrough
		default:
			log("bench: %s ...", caseName("service", spec))
			r = runCase(ctx, svc, spec, rs)
		}
		if baseline >= 0 && report.Results[baseline].Ops > 0 && r.Ops > 0 {
			r.VsBare = compare(r, report.Results[baseline])
		}
		if i, ok := freshDone[spec.Concurrency]; ok && spec.Workload == wlAged && r.VsFresh == nil && r.Ops > 0 {
			r.VsFresh = compare(r, report.Results[i])
		}
		log("bench: %s", oneLine(r))
		report.Results = append(report.Results, r)
		if spec.Workload == wlRefresh && r.Ops > 0 {
			freshDone[spec.Concurrency] = len(report.Results) - 1
		}
		if svc.proc != nil {
			if err := svc.proc.exited(); err != nil {
				return nil, err
			}
		}
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	report.Targets = evaluate(report.Results)
	return report, nil
}

func compare(r, base CaseResult) *Ratios {
	q := &Ratios{
		Against: base.Name,
		Ops:     round3(r.OpsPerSec / base.OpsPerSec),
	}
	if base.Latency.P50 > 0 {
		q.P50 = round3(r.Latency.P50 / base.Latency.P50)
	}
	if base.Latency.P99 > 0 {
		q.P99 = round3(r.Latency.P99 / base.Latency.P99)
	}
	if r.CPUPerOpUS != nil && base.CPUPerOpUS != nil && *base.CPUPerOpUS > 0 {
		c := round3(*r.CPUPerOpUS / *base.CPUPerOpUS)
		q.CPUPerOp = &c
	}
	return q
}

// bareStarter starts the bare pipeline, a fresh one for each case.
type bareStarter struct {
	cfg  *Config
	tmp  string
	prof *profiler
	log  func(string, ...any)
	n    int
}

// bareCase measures the bare counterpart of spec on a bare pipeline of its
// own, started for it and stopped (its storage removed) after it. So the
// bare pipeline never carries the data of earlier cases, which with
// --in-process would share the service's heap and garbage collector, and
// every bare case starts from the same empty stream.
func bareCase(ctx context.Context, b *bareStarter, spec Case, rs runSettings) (r CaseResult, err error) {
	t, stop, err := b.start(ctx)
	if err != nil {
		return r, err
	}
	defer func() { err = errors.Join(err, stop()) }()
	return runCase(ctx, t, Case{Workload: bareWorkload(spec.Workload), Concurrency: spec.Concurrency}, rs), nil
}

// bareInterleaved measures spec on the service and its bare counterpart on
// a fresh bare pipeline in alternating slices of one window.
func bareInterleaved(ctx context.Context, b *bareStarter, svc *loadTarget, spec Case, rs runSettings, slices int) (br, sr CaseResult, err error) {
	t, stop, err := b.start(ctx)
	if err != nil {
		return br, sr, err
	}
	defer func() { err = errors.Join(err, stop()) }()
	br, sr = runInterleaved(ctx, t, svc, Case{Workload: bareWorkload(spec.Workload), Concurrency: spec.Concurrency}, spec, rs, slices)
	return br, sr, nil
}

// start starts a bare pipeline, as a child process or in this process, and
// returns it with the function that stops it.
func (b *bareStarter) start(ctx context.Context) (*loadTarget, func() error, error) {
	addr, err := freeAddr()
	if err != nil {
		return nil, nil, err
	}
	b.n++
	dir := filepath.Join(b.tmp, fmt.Sprintf("bare-%d", b.n))
	bargs := []string{"--listen", addr, "--data", dir, "--workers", strconv.Itoa(b.cfg.BareWorkers)}
	bare := &loadTarget{kind: "bare", prefix: barePrefix, timeout: b.cfg.Timeout, clientID: "bench", secret: "bench"}
	var p targetProc
	if b.cfg.InProcess {
		p = startInProcess(ctx, "bare pipeline", func(ctx context.Context) error { return runBare(ctx, bargs, b.cfg.Wiring.StartServer, nil, nil) }, b.prof)
		bare.pid, bare.shared = os.Getpid(), true
	} else {
		bargs = append([]string{"bench", BareChild}, bargs...)
		if b.cfg.ProfileDir != "" {
			bargs = append(bargs, "--control")
		}
		ch, err := startChild("bare pipeline", b.cfg.Wiring.Executable, bargs, b.cfg.Wiring.Env, filepath.Join(b.tmp, fmt.Sprintf("bare-%d.log", b.n)), b.cfg.ProfileDir != "")
		if err != nil {
			return nil, nil, err
		}
		p, bare.pid = ch, ch.pid()
		b.log("bench: bare pipeline pid %d", ch.pid())
	}
	bare.proc = p
	stop := func() error {
		closeAll(bare.conns)
		err := p.stop()
		if b.cfg.InProcess {
			runtime.GC() // its heap is not the service's to carry
		}
		return errors.Join(err, os.RemoveAll(dir))
	}
	if bare.conns, err = dialAll(ctx, "nats://"+addr, b.cfg.Conns, nil, p); err != nil {
		return nil, nil, errors.Join(err, stop())
	}
	if err := waitServed(ctx, bare, 30*time.Second); err != nil {
		return nil, nil, errors.Join(err, stop())
	}
	b.log("bench: bare pipeline on nats://%s", addr)
	return bare, stop, nil
}

// dialAll opens n connections to url, retrying while the server starts.
func dialAll(ctx context.Context, url string, n int, opts []nats.Option, ch targetProc) ([]*nats.Conn, error) {
	deadline := time.Now().Add(30 * time.Second)
	var conns []*nats.Conn
	for len(conns) < n {
		o := append([]nats.Option{nats.Name("tokenledger-bench"), nats.MaxReconnects(-1)}, opts...)
		nc, err := nats.Connect(url, o...)
		if err == nil {
			conns = append(conns, nc)
			continue
		}
		if ch != nil {
			if cerr := ch.exited(); cerr != nil {
				closeAll(conns)
				return nil, cerr
			}
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			closeAll(conns)
			return nil, fmt.Errorf("connect to %s: %w", url, err)
		}
		sleepCtx(ctx, 100*time.Millisecond)
	}
	return conns, nil
}

func closeAll(conns []*nats.Conn) {
	for _, nc := range conns {
		nc.Close()
	}
}

// benchClient registers a throwaway client in the clients bucket, as
// `tokenledger client create` does, and returns its id and secret.
func benchClient(ctx context.Context, nc *nats.Conn) (string, string, error) {
	js, err := jetstream.New(nc)
	if err != nil {
		return "", "", err
	}
	deadline := time.Now().Add(30 * time.Second)
	var reg *jsstore.Registry
	for {
		// The service creates the bucket at start; create it if it has not.
		if reg, err = jsstore.NewRegistry(ctx, js, nil, 1, nil); err == nil || time.Now().After(deadline) {
			break
		}
		sleepCtx(ctx, 200*time.Millisecond)
	}
	if err != nil {
		return "", "", fmt.Errorf("bench client: %w", err)
	}
	secret, err := ledger.NewClientSecret(rand.Reader)
	if err != nil {
		return "", "", err
	}
	id := "bench-" + strings.ToLower(rand.Text()[:10]) // not from the secret: an id is public
	c := ledger.Client{
		ID: id, SecretSHA256: ledger.SecretSHA256(secret),
		Scopes: []string{"read", "write"}, Audiences: []string{"api"}, CreatedAt: time.Now().UTC(),
	}
	if err := reg.Create(ctx, c); err != nil {
		return "", "", fmt.Errorf("bench client: %w", err)
	}
	return id, secret, nil
}

// waitServed waits until the target's issue endpoint answers.
func waitServed(ctx context.Context, t *loadTarget, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	w := newCaller(t, 0, wlIssue, nil)
	for {
		code := w.issue()
		if code == "" {
			return nil
		}
		if t.proc != nil {
			if err := t.proc.exited(); err != nil {
				return err
			}
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("%s: %s.issue does not answer: %s", t.kind, t.prefix, code)
		}
		sleepCtx(ctx, 200*time.Millisecond)
	}
}
