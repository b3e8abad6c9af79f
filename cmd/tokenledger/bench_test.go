package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/signal"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tokenledger/tokenledger/bench"
)

// benchChildEnv makes the test binary act as the tokenledger binary when
// the bench starts it as a child (the service or the bare pipeline).
const benchChildEnv = "TLBENCH_TEST_CHILD"

func init() {
	if os.Getenv(benchChildEnv) != "1" {
		return
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "tokenledger (bench child):", err)
		os.Exit(1)
	}
	os.Exit(0)
}

func TestBenchReport(t *testing.T) {
	if testing.Short() {
		t.Skip("starts two servers and runs load for several seconds")
	}
	t.Setenv(benchChildEnv, "1")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var out bytes.Buffer
	err := run(ctx, []string{"bench", "--quiet", "--json",
		"--cases", "issue@2,refresh@1,refresh-aged@2,mix@2", "--prior-rotations", "5",
		"--mix", "issue=1,refresh=3",
		"--duration", "1s", "--warmup", "200ms"}, &out)
	if err != nil {
		t.Fatal(err)
	}
	var rep bench.Report
	if err := json.Unmarshal(out.Bytes(), &rep); err != nil {
		t.Fatalf("report is not JSON: %v\n%s", err, out.String())
	}
	want := []string{"bare-issue/c=2", "issue/c=2", "bare-rotate/c=1", "refresh/c=1", "bare-rotate/c=2", "refresh-aged/c=2", "mix/c=2"}
	if len(rep.Results) != len(want) {
		t.Fatalf("got %d results, want %d: %s", len(rep.Results), len(want), out.String())
	}
	for i, r := range rep.Results {
		if r.Name != want[i] {
			t.Errorf("result %d is %s, want %s", i, r.Name, want[i])
		}
		if r.Ops == 0 || r.OpsPerSec <= 0 || r.Errors != 0 || r.Error != "" {
			t.Errorf("%s: ops %d (%.0f/s), errors %d %v %q", r.Name, r.Ops, r.OpsPerSec, r.Errors, r.ErrorsByCode, r.Error)
		}
		if l := r.Latency; !(0 < l.P50 && l.P50 <= l.P90 && l.P90 <= l.P99 && l.P99 <= l.Max) {
			t.Errorf("%s: latency percentiles out of order: %+v", r.Name, l)
		}
		if runtime.GOOS == "linux" && (r.CPUPerOpUS == nil || *r.CPUPerOpUS <= 0 || r.PeakRSSBytes <= 0) {
			t.Errorf("%s: no CPU per op or peak RSS", r.Name)
		}
		if r.Target == "service" && r.Workload != "mix" && r.VsBare == nil {
			t.Errorf("%s: no ratio to the bare pipeline", r.Name)
		}
	}
	aged := rep.Results[5]
	if aged.PriorRotations != 5 || aged.VsFresh == nil || aged.PerOp["refresh-aged"].Ops == 0 || aged.PerOp["refresh-fresh"].Ops == 0 {
		t.Errorf("refresh-aged: prior %d, vs fresh %+v, per op %+v", aged.PriorRotations, aged.VsFresh, aged.PerOp)
	}
	mix := rep.Results[6]
	if mix.PerOp["issue"].Ops == 0 || mix.PerOp["refresh"].Ops == 0 || mix.PerOp["issue"].Ops+mix.PerOp["refresh"].Ops != mix.Ops {
		t.Errorf("mix per operation: %+v, total %d", mix.PerOp, mix.Ops)
	}
	if len(rep.Targets) == 0 {
		t.Error("no targets evaluated")
	}
	// By default each case and its bare pipeline share the window in
	// alternating slices that add up to the duration.
	if rep.Settings.Slices != 5 {
		t.Errorf("measured in %d slices, want 5", rep.Settings.Slices)
	}
	for _, r := range rep.Results {
		if r.DurationS < 0.99 {
			t.Errorf("%s: measured for %.3fs, want the whole 1s", r.Name, r.DurationS)
		}
	}
}

// TestBenchInProcess: with --in-process the service and the bare pipeline
// run inside the bench's process, the callers still go over TCP, and the
// CPU and RSS figures are marked as the whole process's.
func TestBenchInProcess(t *testing.T) {
	if testing.Short() {
		t.Skip("starts two servers and runs load for several seconds")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var out bytes.Buffer
	err := run(ctx, []string{"bench", "--in-process", "--quiet", "--json", "--slices", "1",
		"--cases", "refresh@2,introspect@2", "--duration", "1s", "--warmup", "200ms"}, &out)
	if err != nil {
		t.Fatal(err)
	}
	var rep bench.Report
	if err := json.Unmarshal(out.Bytes(), &rep); err != nil {
		t.Fatalf("report is not JSON: %v\n%s", err, out.String())
	}
	if rep.Target != "embedded (in this process)" || rep.Settings.Slices != 1 {
		t.Errorf("target %q, %d slices", rep.Target, rep.Settings.Slices)
	}
	want := []string{"bare-rotate/c=2", "refresh/c=2", "bare-echo/c=2", "introspect/c=2"}
	if len(rep.Results) != len(want) {
		t.Fatalf("got %d results, want %d: %s", len(rep.Results), len(want), out.String())
	}
	for i, r := range rep.Results {
		if r.Name != want[i] || r.Ops == 0 || r.Errors != 0 || r.Error != "" {
			t.Errorf("result %d: %s: ops %d, errors %d %v %q", i, r.Name, r.Ops, r.Errors, r.ErrorsByCode, r.Error)
		}
		if !r.SharedProcess {
			t.Errorf("%s: not marked as sharing the bench's process", r.Name)
		}
		if runtime.GOOS == "linux" && (r.CPUPerOpUS == nil || *r.CPUPerOpUS <= 0 || r.PeakRSSBytes <= 0) {
			t.Errorf("%s: no CPU per op or peak RSS", r.Name)
		}
		if r.Target == "service" && r.VsBare == nil {
			t.Errorf("%s: no ratio to the bare pipeline", r.Name)
		}
	}
}

// TestBenchParse: the flags become the bench's config, and a config it
// cannot run is refused before anything starts.
func TestBenchParse(t *testing.T) {
	cfg, f, err := parseBench([]string{"--suite", "standard", "--in-process", "--json", "--duration", "3s", "--serve-args", "--workers 8  --grace 0s"})
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Cases) != 6 || cfg.Cases[5] != (bench.Case{Workload: "refresh-aged", Concurrency: 2}) {
		t.Errorf("standard suite: %+v", cfg.Cases)
	}
	if !cfg.InProcess || !f.jsonOut || cfg.Duration != 3*time.Second || strings.Join(cfg.ServeArgs, " ") != "--workers 8 --grace 0s" {
		t.Errorf("flags: %+v %+v", cfg, f)
	}
	for _, bad := range [][]string{
		{"--in-process", "--nats-url", "nats://127.0.0.1:4222"},
		{"--slices", "0"},
		{"--suite", "quick"},
		{"--cases", "refresh@0"},
		{"--mix", "bogus=1"},
		{"--client-id", "a"},
	} {
		if _, _, err := parseBench(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}
