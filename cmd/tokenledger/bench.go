package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/tokenledger/tokenledger/bench"
)

// benchFlags are the flags of `tokenledger bench` that shape its output
// or its NATS connection rather than the run (bench.Config).
type benchFlags struct {
	nats     natsFlags
	jsonOut  bool
	jsonFile string
	quiet    bool
}

func parseBench(args []string) (bench.Config, benchFlags, error) {
	var c bench.Config
	var f benchFlags
	var config, suite, casesS, workload, concurrency, mix, serveArgs string
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	f.nats.register(fs, "")
	fs.StringVar(&config, "config", "", "JSON config file")
	fs.StringVar(&suite, "suite", "", `"standard": the suite of issue 6 (`+bench.StandardSuite+`)`)
	fs.StringVar(&casesS, "cases", "", "cases to run in order, workload@concurrency,... (overrides --workload and --concurrency)")
	fs.StringVar(&workload, "workload", "refresh", "issue, refresh, refresh-aged, introspect, revoke or mix (comma list runs each)")
	fs.StringVar(&concurrency, "concurrency", "64", "concurrent callers (comma list runs each)")
	fs.DurationVar(&c.Duration, "duration", 10*time.Second, "measured time per case")
	fs.DurationVar(&c.Warmup, "warmup", 2*time.Second, "unmeasured load before each case")
	fs.IntVar(&c.Slices, "slices", 5, "measure each case and its bare pipeline in this many alternating slices of the window (1: one after the other; a profiled run is never interleaved)")
	fs.DurationVar(&c.Timeout, "timeout", 5*time.Second, "request timeout")
	fs.IntVar(&c.PriorRotations, "prior-rotations", 10000, "refresh-aged: rotations of each aged family (even callers; odd callers refresh fresh ones) before measuring")
	fs.BoolVar(&c.Bare, "bare", true, "also measure the bare pipelines and report ratios")
	fs.IntVar(&c.BareWorkers, "bare-workers", 128, "bare pipeline handler pool size (the service's --workers default)")
	fs.BoolVar(&f.jsonOut, "json", false, "print the report as JSON on stdout (the table goes to stderr)")
	fs.StringVar(&f.jsonFile, "json-file", "", "also write the JSON report to this file")
	fs.StringVar(&c.ClientID, "client-id", "", "with --nats-url: an existing client (default: create one in the clients bucket)")
	fs.StringVar(&c.ClientSecret, "client-secret", "", "its secret (prefer TOKENLEDGER_CLIENT_SECRET)")
	fs.StringVar(&c.Prefix, "prefix", "tokens", "subject prefix of the service")
	fs.IntVar(&c.ServicePID, "service-pid", 0, "with --nats-url: the service's pid, for its CPU time and peak RSS")
	fs.StringVar(&c.ProfileDir, "cpuprofile", "", "directory for a CPU profile of the service (and bare pipeline) per case")
	fs.IntVar(&c.Conns, "conns", 1, "NATS connections the callers share")
	fs.StringVar(&mix, "mix", "refresh=60,introspect=30,issue=8,revoke=2", "mix workload: operation=weight,...")
	fs.StringVar(&serveArgs, "serve-args", "", "extra flags for the service the bench starts, space separated (it runs with --sync-always=false, as the bare pipeline does, unless these say otherwise)")
	fs.BoolVar(&c.Keep, "keep", false, "keep the temporary data and logs")
	fs.BoolVar(&f.quiet, "quiet", false, "no progress on stderr")
	fs.BoolVar(&c.InProcess, "in-process", false, "run the service and the bare pipeline inside this process (as the reference measurements do) instead of as child processes; the callers still connect over loopback TCP")
	if _, err := parseFlags(fs, args); err != nil {
		return c, f, err
	}
	switch {
	case suite == "standard":
		casesS = bench.StandardSuite
	case suite != "":
		return c, f, fmt.Errorf("--suite %q: only \"standard\"", suite)
	}
	var err error
	if casesS != "" {
		c.Cases, err = bench.ParseCases(casesS)
	} else {
		c.Cases, err = bench.CrossCases(workload, concurrency)
	}
	if err != nil {
		return c, f, err
	}
	if c.Mix, err = bench.ParseMix(mix); err != nil {
		return c, f, fmt.Errorf("--%w", err)
	}
	c.NATSURL = f.nats.url
	c.ServeArgs = strings.Fields(serveArgs)
	return c, f, c.Validate()
}

// benchCmd is `tokenledger bench`: the load tool (package bench) with the
// service that serve wires, in this process or as a child process of this
// binary. `bench bare-child` and `bench serve-child` are those children.
func benchCmd(ctx context.Context, args []string, stdout io.Writer) error {
	// The bare pipeline's server does not fsync each write; the service
	// the bench starts runs with --sync-always=false to match.
	startServer := func(listen, dataDir string) (*server.Server, error) { return startEmbedded(listen, dataDir, false) }
	w := bench.Wiring{Serve: serve, StartServer: startServer, Env: childEnv()}
	if len(args) > 0 && bench.IsChild(args[0]) {
		return bench.RunChild(ctx, args, w, os.Stdin, os.Stdout)
	}
	cfg, f, err := parseBench(args)
	if err != nil {
		return err
	}
	if cfg.NATSURL != "" {
		if cfg.NATSOptions, err = f.nats.options("tokenledger-bench"); err != nil {
			return err
		}
	}
	if w.Executable, err = os.Executable(); err != nil {
		return err
	}
	cfg.Wiring = w
	cfg.Command = append([]string{"tokenledger", "bench"}, args...)
	if !f.quiet {
		cfg.Progress = os.Stderr
	}
	report, err := bench.Run(ctx, cfg)
	if err != nil {
		return err
	}
	table := &strings.Builder{}
	report.WriteTable(table)
	if f.jsonOut {
		fmt.Fprint(os.Stderr, table.String())
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(report); err != nil {
			return err
		}
	} else {
		fmt.Fprint(stdout, table.String())
	}
	if f.jsonFile != "" {
		b, err := json.MarshalIndent(report, "", "  ")
		if err != nil {
			return err
		}
		if err := os.WriteFile(f.jsonFile, append(b, '\n'), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// childEnv is the environment of the bench's child processes: ours without
// TOKENLEDGER_* settings (a TOKENLEDGER_NATS_URL meant for the bench would
// point serve elsewhere).
func childEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, envPrefix) {
			env = append(env, kv)
		}
	}
	return env
}
