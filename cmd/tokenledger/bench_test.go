package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"os/signal"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go/micro"

	"github.com/tokenledger/tokenledger/internal/natstest"
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
	var rep benchReport
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
		if r.Target == "service" && r.Workload != wlMix && r.VsBare == nil {
			t.Errorf("%s: no ratio to the bare pipeline", r.Name)
		}
	}
	aged := rep.Results[5]
	if aged.PriorRotations != 5 || aged.VsFresh == nil || aged.PerOp[opAged].Ops == 0 || aged.PerOp[opFresh].Ops == 0 {
		t.Errorf("refresh-aged: prior %d, vs fresh %+v, per op %+v", aged.PriorRotations, aged.VsFresh, aged.PerOp)
	}
	mix := rep.Results[6]
	if mix.PerOp[wlIssue].Ops == 0 || mix.PerOp[wlRefresh].Ops == 0 || mix.PerOp[wlIssue].Ops+mix.PerOp[wlRefresh].Ops != mix.Ops {
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
	var rep benchReport
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
	if _, err := parseBench([]string{"--in-process", "--nats-url", "nats://127.0.0.1:4222"}); err == nil {
		t.Error("--in-process with --nats-url accepted")
	}
}

// TestBenchCallCodes: a missing endpoint is reported as no responders, a
// service error by its OAuth code.
func TestBenchCallCodes(t *testing.T) {
	srv := natstest.Start(t, "")
	nc, _ := natstest.Connect(t, srv)
	svc, err := micro.AddService(nc, micro.Config{Name: "fake", Version: "0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	defer svc.Stop()
	g := svc.AddGroup("tokens")
	if err := g.AddEndpoint("refresh", micro.HandlerFunc(func(r micro.Request) {
		_ = r.Error("400", "invalid_grant: no", []byte(`{"error":"invalid_grant","error_description":"no"}`))
	})); err != nil {
		t.Fatal(err)
	}
	if err := g.AddEndpoint("issue", micro.HandlerFunc(func(r micro.Request) {
		_ = r.Error("503", "down", nil)
	})); err != nil {
		t.Fatal(err)
	}
	tgt := &loadTarget{prefix: "tokens", timeout: 2 * time.Second}
	for subject, want := range map[string]string{
		"tokens.introspect": codeNoResponders,
		"tokens.refresh":    "invalid_grant",
		"tokens.issue":      "status_503",
	} {
		if _, got := tgt.call(nc, subject, []byte(`{}`)); got != want {
			t.Errorf("%s: code %q, want %q", subject, got, want)
		}
	}
	msg := (&setupError{subject: "tokens.introspect", code: codeNoResponders}).Error()
	if !strings.Contains(msg, "no responders on tokens.introspect") {
		t.Errorf("setup error %q does not name the endpoint", msg)
	}
}

func TestBenchParse(t *testing.T) {
	cs, err := parseCases(standardSuite)
	if err != nil || len(cs) != 6 || cs[5] != (caseSpec{wlAged, 2}) {
		t.Fatalf("standard suite: %v %v", cs, err)
	}
	for _, bad := range []string{"refresh", "nope@1", "refresh@0", "refresh@x"} {
		if _, err := parseCases(bad); err == nil {
			t.Errorf("parseCases(%q) accepted", bad)
		}
	}
	cs, err = crossCases("issue,refresh", "1,64")
	if err != nil || len(cs) != 4 || cs[3] != (caseSpec{wlRefresh, 64}) {
		t.Errorf("cross: %v %v", cs, err)
	}
	if _, err := parseBench([]string{"--slices", "0"}); err == nil {
		t.Error("--slices 0 accepted")
	}
	if _, err := parseMix("refresh=0,issue=0"); err == nil {
		t.Error("mix of zero weights accepted")
	}
	if _, err := parseMix("refresh=3,bogus=1"); err == nil {
		t.Error("mix with unknown operation accepted")
	}
	lat := []int64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}
	for q, want := range map[float64]int64{0.5: 5, 0.9: 9, 0.99: 10, 0.01: 1} {
		if got := rank(lat, q); got != want {
			t.Errorf("rank(%v) = %d, want %d", q, got, want)
		}
	}
	if got := jsonString([]byte(`{"a":"x","refresh_token":"tlr_abc","b":1}`), "refresh_token"); got != "tlr_abc" {
		t.Errorf("jsonString = %q", got)
	}
}

// An operation counts by the slice it started in, even when it ends after
// its target's next slice opened; starts between slices never count.
func TestBenchWindow(t *testing.T) {
	var w window
	w.start.Store(math.MaxInt64)
	w.end.Store(math.MaxInt64)
	if w.contains(5) {
		t.Fatal("counted before the first slice")
	}
	w.open(10)
	w.end.Store(20)
	w.open(30) // the next slice of this target
	for _, tc := range []struct {
		start int64
		want  bool
	}{
		{9, false}, {10, true}, {19, true}, {20, false}, {25, false}, {30, true}, {1 << 40, true},
	} {
		if got := w.contains(tc.start); got != tc.want {
			t.Errorf("started at %d: counted %t, want %t", tc.start, got, tc.want)
		}
	}
	w.end.Store(40)
	if w.contains(40) || !w.contains(39) {
		t.Error("the closed last slice is [30, 40)")
	}
}
