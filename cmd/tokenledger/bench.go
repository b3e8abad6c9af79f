package main

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tokenledger/tokenledger/ledger"
	"github.com/tokenledger/tokenledger/ledger/jsstore"
)

// standardSuite is the suite of issue 6, in the order it runs: each bare
// pipeline is measured right before the first case that compares with it.
// refresh-aged@2 refreshes a family with --prior-rotations rotations and a
// fresh one side by side, so both see the same (noisy) machine.
const standardSuite = "refresh@1,refresh@64,issue@1,issue@64,introspect@64,refresh-aged@2"

type benchConfig struct {
	nats        natsFlags
	config      string
	cases       []caseSpec
	duration    time.Duration
	warmup      time.Duration
	timeout     time.Duration
	prior       int
	bare        bool
	bareWorkers int
	jsonOut     bool
	jsonFile    string
	clientID    string
	secret      string
	prefix      string
	servicePID  int
	profileDir  string
	conns       int
	mix         []mixWeight
	serveArgs   []string
	keep        bool
	quiet       bool
	inProcess   bool
	slices      int
}

func parseBench(args []string) (benchConfig, error) {
	var c benchConfig
	var suite, casesS, workload, concurrency, mix, serveArgs string
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	c.nats.register(fs, "")
	fs.StringVar(&c.config, "config", "", "JSON config file")
	fs.StringVar(&suite, "suite", "", `"standard": the suite of issue 6 (`+standardSuite+`)`)
	fs.StringVar(&casesS, "cases", "", "cases to run in order, workload@concurrency,... (overrides --workload and --concurrency)")
	fs.StringVar(&workload, "workload", wlRefresh, "issue, refresh, refresh-aged, introspect, revoke or mix (comma list runs each)")
	fs.StringVar(&concurrency, "concurrency", "64", "concurrent callers (comma list runs each)")
	fs.DurationVar(&c.duration, "duration", 10*time.Second, "measured time per case")
	fs.DurationVar(&c.warmup, "warmup", 2*time.Second, "unmeasured load before each case")
	fs.IntVar(&c.slices, "slices", 5, "measure each case and its bare pipeline in this many alternating slices of the window (1: one after the other; a profiled run is never interleaved)")
	fs.DurationVar(&c.timeout, "timeout", 5*time.Second, "request timeout")
	fs.IntVar(&c.prior, "prior-rotations", 10000, "refresh-aged: rotations of each aged family (even callers; odd callers refresh fresh ones) before measuring")
	fs.BoolVar(&c.bare, "bare", true, "also measure the bare pipelines and report ratios")
	fs.IntVar(&c.bareWorkers, "bare-workers", 128, "bare pipeline handler pool size (the service's --workers default)")
	fs.BoolVar(&c.jsonOut, "json", false, "print the report as JSON on stdout (the table goes to stderr)")
	fs.StringVar(&c.jsonFile, "json-file", "", "also write the JSON report to this file")
	fs.StringVar(&c.clientID, "client-id", "", "with --nats-url: an existing client (default: create one in the clients bucket)")
	fs.StringVar(&c.secret, "client-secret", "", "its secret (prefer TOKENLEDGER_CLIENT_SECRET)")
	fs.StringVar(&c.prefix, "prefix", "tokens", "subject prefix of the service")
	fs.IntVar(&c.servicePID, "service-pid", 0, "with --nats-url: the service's pid, for its CPU time and peak RSS")
	fs.StringVar(&c.profileDir, "cpuprofile", "", "directory for a CPU profile of the service (and bare pipeline) per case")
	fs.IntVar(&c.conns, "conns", 1, "NATS connections the callers share")
	fs.StringVar(&mix, "mix", "refresh=60,introspect=30,issue=8,revoke=2", "mix workload: operation=weight,...")
	fs.StringVar(&serveArgs, "serve-args", "", "extra flags for the service the bench starts, space separated")
	fs.BoolVar(&c.keep, "keep", false, "keep the temporary data and logs")
	fs.BoolVar(&c.quiet, "quiet", false, "no progress on stderr")
	fs.BoolVar(&c.inProcess, "in-process", false, "run the service and the bare pipeline inside this process (as the reference measurements do) instead of as child processes; the callers still connect over loopback TCP")
	if _, err := parseFlags(fs, args); err != nil {
		return c, err
	}
	switch {
	case suite == "standard":
		casesS = standardSuite
	case suite != "":
		return c, fmt.Errorf("--suite %q: only \"standard\"", suite)
	}
	var err error
	if casesS != "" {
		c.cases, err = parseCases(casesS)
	} else {
		c.cases, err = crossCases(workload, concurrency)
	}
	if err != nil {
		return c, err
	}
	if c.mix, err = parseMix(mix); err != nil {
		return c, err
	}
	switch {
	case c.duration <= 0:
		return c, errors.New("--duration must be positive")
	case c.warmup < 0:
		return c, errors.New("--warmup must not be negative")
	case c.slices < 1:
		return c, errors.New("--slices must be at least 1")
	case c.conns < 1:
		return c, errors.New("--conns must be at least 1")
	case c.prior < 0:
		return c, errors.New("--prior-rotations must not be negative")
	case c.nats.url != "" && c.inProcess:
		return c, errors.New("--in-process starts the service itself: not with --nats-url")
	case c.nats.url == "" && (c.clientID != "" || c.servicePID != 0):
		return c, errors.New("--client-id and --service-pid are for --nats-url")
	case (c.clientID == "") != (c.secret == ""):
		return c, errors.New("--client-id and --client-secret go together")
	}
	c.serveArgs = strings.Fields(serveArgs)
	return c, nil
}

func parseCases(s string) ([]caseSpec, error) {
	var pairs [][2]string
	for _, part := range splitList(s) {
		wl, n, ok := strings.Cut(part, "@")
		if !ok {
			return nil, fmt.Errorf("case %q: want workload@concurrency", part)
		}
		pairs = append(pairs, [2]string{wl, n})
	}
	return casesOf(pairs)
}

func crossCases(wls, ns string) ([]caseSpec, error) {
	var pairs [][2]string
	for _, n := range splitList(ns) {
		for _, wl := range splitList(wls) {
			pairs = append(pairs, [2]string{wl, n})
		}
	}
	return casesOf(pairs)
}

// casesOf makes the cases of (workload, concurrency) pairs.
func casesOf(pairs [][2]string) ([]caseSpec, error) {
	var cs []caseSpec
	for _, p := range pairs {
		spec, err := newCase(p[0], p[1])
		if err != nil {
			return nil, err
		}
		cs = append(cs, spec)
	}
	if len(cs) == 0 {
		return nil, errors.New("no cases")
	}
	return cs, nil
}

func newCase(wl, n string) (caseSpec, error) {
	known := false
	for _, w := range workloads {
		known = known || w == wl
	}
	if !known {
		return caseSpec{}, fmt.Errorf("workload %q: want one of %s", wl, strings.Join(workloads, ", "))
	}
	c, err := strconv.Atoi(n)
	if err != nil || c < 1 || c > 4096 {
		return caseSpec{}, fmt.Errorf("concurrency %q: want 1 to 4096", n)
	}
	return caseSpec{workload: wl, concurrency: c}, nil
}

// benchReport is the --json output.
type benchReport struct {
	Version   int          `json:"version"`
	StartedAt time.Time    `json:"started_at"`
	Command   []string     `json:"command"`
	Host      benchHost    `json:"host"`
	Target    string       `json:"target"`
	Settings  benchSetting `json:"settings"`
	Results   []caseResult `json:"results"`
	Targets   []targetEval `json:"targets"`
}

type benchHost struct {
	CPUs      int    `json:"cpus"`
	GOMAXPROC int    `json:"gomaxprocs"`
	GoVersion string `json:"go_version"`
	OS        string `json:"os"`
	Arch      string `json:"arch"`
	Hostname  string `json:"hostname,omitempty"`
}

type benchSetting struct {
	DurationS      float64 `json:"duration_s"`
	WarmupS        float64 `json:"warmup_s"`
	Conns          int     `json:"conns"`
	PriorRotations int     `json:"prior_rotations"`
	BareWorkers    int     `json:"bare_workers"`
	// Slices is how many alternating slices of the window each case and
	// its bare pipeline were measured in (1: one after the other).
	Slices int `json:"slices"`
}

// bench is `tokenledger bench`: it starts the service (unless --nats-url)
// and the bare pipeline as child processes, drives the cases against both
// and reports. `bench bare-child` and `bench serve-child` are the children.
func bench(ctx context.Context, args []string, stdout io.Writer) error {
	if len(args) > 0 {
		switch args[0] {
		case "bare-child":
			return bareServe(ctx, args[1:])
		case "serve-child":
			// The service with the profiling control loop on stdin.
			go controlLoop(os.Stdin, os.Stdout)
			return serve(ctx, args[1:])
		}
	}
	cfg, err := parseBench(args)
	if err != nil {
		return err
	}
	log := benchLogger(cfg.quiet)
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	tmp, err := os.MkdirTemp("", "tokenledger-bench-")
	if err != nil {
		return err
	}
	if cfg.keep {
		log("bench: keeping %s", tmp)
	} else {
		defer os.RemoveAll(tmp)
	}
	if cfg.profileDir != "" {
		if err := os.MkdirAll(cfg.profileDir, 0o755); err != nil {
			return err
		}
		if cfg.profileDir, err = filepath.Abs(cfg.profileDir); err != nil {
			return err
		}
	}
	report := benchReport{
		Version: 1, StartedAt: time.Now().UTC(), Command: append([]string{"tokenledger", "bench"}, args...),
		Host: benchHost{
			CPUs: runtime.NumCPU(), GOMAXPROC: runtime.GOMAXPROCS(0), GoVersion: runtime.Version(),
			OS: runtime.GOOS, Arch: runtime.GOARCH,
		},
		Settings: benchSetting{
			DurationS: cfg.duration.Seconds(), WarmupS: cfg.warmup.Seconds(), Conns: cfg.conns,
			PriorRotations: cfg.prior, BareWorkers: cfg.bareWorkers,
		},
	}
	report.Host.Hostname, _ = os.Hostname()
	profiling := cfg.profileDir != ""

	// The service under test.
	svc := &loadTarget{kind: "service", prefix: cfg.prefix, timeout: cfg.timeout,
		clientID: cfg.clientID, secret: cfg.secret, pid: cfg.servicePID}
	var svcOpts []nats.Option
	url := cfg.nats.url
	var prof *profiler
	if cfg.inProcess {
		prof = &profiler{}
	}
	if url == "" {
		addr, err := freeAddr()
		if err != nil {
			return err
		}
		sargs := append([]string{"serve", "--listen", addr, "--data", filepath.Join(tmp, "service"),
			"--log-level", "warn", "--prefix", cfg.prefix}, cfg.serveArgs...)
		var p targetProc
		if cfg.inProcess {
			report.Target = "embedded (in this process)"
			p = startInProcess(ctx, "service", func(ctx context.Context) error { return serve(ctx, sargs[1:]) }, prof)
			svc.pid, svc.shared = os.Getpid(), true
		} else {
			report.Target = "embedded (child process)"
			if profiling {
				sargs = append([]string{"bench", "serve-child"}, sargs[1:]...)
			}
			ch, err := startChild("service", exe, sargs, filepath.Join(tmp, "service.log"), profiling)
			if err != nil {
				return err
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
		if svcOpts, err = cfg.nats.options("tokenledger-bench"); err != nil {
			return err
		}
	}
	if svc.conns, err = dialAll(ctx, url, cfg.conns, svcOpts, svc.proc); err != nil {
		return err
	}
	defer closeAll(svc.conns)
	if svc.clientID == "" {
		if svc.clientID, svc.secret, err = benchClient(ctx, svc.conns[0]); err != nil {
			return err
		}
		log("bench: created client %s", svc.clientID)
	}
	if err := waitServed(ctx, svc, 30*time.Second); err != nil {
		return err
	}

	rs := runSettings{duration: cfg.duration, warmup: cfg.warmup, prior: cfg.prior, mix: cfg.mix,
		profileDir: cfg.profileDir, log: log}
	var bare *bareStarter
	if cfg.bare {
		bare = &bareStarter{cfg: cfg, exe: exe, tmp: tmp, prof: prof, log: log}
	}
	// A profile is of one target at a time: a profiled run measures the
	// bare pipeline and the service one after the other.
	interleave := cfg.slices > 1 && cfg.profileDir == ""
	report.Settings.Slices = 1
	if interleave {
		report.Settings.Slices = cfg.slices
	}
	bareDone := map[string]int{} // bare case name → index in Results
	freshDone := map[int]int{}   // concurrency → index of the latest fresh refresh
	for _, spec := range cfg.cases {
		if ctx.Err() != nil {
			break
		}
		var r caseResult
		baseline := -1
		switch {
		case bare != nil && bareName(spec.workload) != "" && interleave:
			log("bench: %s with %s, in %d alternating slices ...", caseName("service", spec), caseName("bare", spec), cfg.slices)
			b, s, err := bareInterleaved(ctx, bare, svc, spec, rs, cfg.slices)
			if err != nil {
				return err
			}
			b.Name, b.Workload = caseName("bare", spec), bareName(spec.workload)
			log("bench: %s", oneLine(b))
			report.Results = append(report.Results, b)
			baseline, r = len(report.Results)-1, s
		case bare != nil && bareName(spec.workload) != "":
			key := caseName("bare", spec)
			i, ok := bareDone[key]
			if !ok {
				log("bench: %s ...", key)
				b, err := bareCase(ctx, bare, spec, rs)
				if err != nil {
					return err
				}
				b.Name, b.Workload = key, bareName(spec.workload)
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
		if i, ok := freshDone[spec.concurrency]; ok && spec.workload == wlAged && r.VsFresh == nil && r.Ops > 0 {
			r.VsFresh = compare(r, report.Results[i])
		}
		log("bench: %s", oneLine(r))
		report.Results = append(report.Results, r)
		if spec.workload == wlRefresh && r.Ops > 0 {
			freshDone[spec.concurrency] = len(report.Results) - 1
		}
		if svc.proc != nil {
			if err := svc.proc.exited(); err != nil {
				return err
			}
		}
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	report.Targets = evaluate(report.Results)

	table := &strings.Builder{}
	printTable(table, report)
	if cfg.jsonOut {
		fmt.Fprint(os.Stderr, table.String())
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(report); err != nil {
			return err
		}
	} else {
		fmt.Fprint(stdout, table.String())
	}
	if cfg.jsonFile != "" {
		b, err := json.MarshalIndent(report, "", "  ")
		if err != nil {
			return err
		}
		if err := os.WriteFile(cfg.jsonFile, append(b, '\n'), 0o644); err != nil {
			return err
		}
	}
	return nil
}

func compare(r, base caseResult) *ratios {
	q := &ratios{
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
	cfg  benchConfig
	exe  string
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
func bareCase(ctx context.Context, b *bareStarter, spec caseSpec, rs runSettings) (r caseResult, err error) {
	t, stop, err := b.start(ctx)
	if err != nil {
		return r, err
	}
	defer func() { err = errors.Join(err, stop()) }()
	return runCase(ctx, t, caseSpec{workload: bareWorkload(spec.workload), concurrency: spec.concurrency}, rs), nil
}

// bareInterleaved measures spec on the service and its bare counterpart on
// a fresh bare pipeline in alternating slices of one window.
func bareInterleaved(ctx context.Context, b *bareStarter, svc *loadTarget, spec caseSpec, rs runSettings, slices int) (br, sr caseResult, err error) {
	t, stop, err := b.start(ctx)
	if err != nil {
		return br, sr, err
	}
	defer func() { err = errors.Join(err, stop()) }()
	br, sr = runInterleaved(ctx, t, svc, caseSpec{workload: bareWorkload(spec.workload), concurrency: spec.concurrency}, spec, rs, slices)
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
	bargs := []string{"--listen", addr, "--data", dir, "--workers", strconv.Itoa(b.cfg.bareWorkers)}
	bare := &loadTarget{kind: "bare", prefix: barePrefix, timeout: b.cfg.timeout, clientID: "bench", secret: "bench"}
	var p targetProc
	if b.cfg.inProcess {
		p = startInProcess(ctx, "bare pipeline", func(ctx context.Context) error { return bareServe(ctx, bargs) }, b.prof)
		bare.pid, bare.shared = os.Getpid(), true
	} else {
		bargs = append([]string{"bench", "bare-child"}, bargs...)
		if b.cfg.profileDir != "" {
			bargs = append(bargs, "--control")
		}
		ch, err := startChild("bare pipeline", b.exe, bargs, filepath.Join(b.tmp, fmt.Sprintf("bare-%d.log", b.n)), b.cfg.profileDir != "")
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
		if b.cfg.inProcess {
			runtime.GC() // its heap is not the service's to carry
		}
		return errors.Join(err, os.RemoveAll(dir))
	}
	if bare.conns, err = dialAll(ctx, "nats://"+addr, b.cfg.conns, nil, p); err != nil {
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
	var buf [32]byte
	if _, err := rand.Read(buf[:]); err != nil {
		return "", "", err
	}
	secret := ledger.ClientSecretPrefix + base64.RawURLEncoding.EncodeToString(buf[:])
	id := "bench-" + base64.RawURLEncoding.EncodeToString(buf[:6])
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
