package bench

import (
	"context"
	"errors"
	"math"
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/micro"

	"github.com/tokenledger/tokenledger/internal/natstest"
)

// The service's side of the bench (Run with the service in this process or
// as a child) is tested where the service is wired, in cmd/tokenledger.

// startServer starts an embedded JetStream server on listen, as the bare
// pipeline's Wiring.StartServer.
func startServer(listen, dataDir string) (*server.Server, error) {
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return nil, err
	}
	p, err := strconv.Atoi(port)
	if err != nil {
		return nil, err
	}
	ns, err := server.NewServer(&server.Options{
		Host: host, Port: p, JetStream: true, StoreDir: filepath.Join(dataDir, "jetstream"),
		NoLog: true, NoSigs: true, MaxPayload: 1 << 20,
	})
	if err != nil {
		return nil, err
	}
	ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		ns.Shutdown()
		return nil, errors.New("embedded server not ready")
	}
	return ns, nil
}

func testBare(t *testing.T) *bareStarter {
	t.Helper()
	cfg := &Config{InProcess: true, BareWorkers: 8, Timeout: 5 * time.Second, Conns: 1,
		Wiring: Wiring{StartServer: startServer}}
	return &bareStarter{cfg: cfg, tmp: t.TempDir(), prof: &profiler{}, log: t.Logf}
}

// TestBareCase drives each bare pipeline, in this process, with the load
// generator: every operation succeeds and the result has its numbers.
func TestBareCase(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	b := testBare(t)
	rs := runSettings{duration: 400 * time.Millisecond, warmup: 100 * time.Millisecond, log: t.Logf}
	for _, wl := range []string{wlIssue, wlRefresh, wlIntrospect} {
		t.Run(wl, func(t *testing.T) {
			r, err := bareCase(ctx, b, Case{Workload: wl, Concurrency: 2}, rs)
			if err != nil {
				t.Fatal(err)
			}
			if r.Target != "bare" || r.Ops == 0 || r.Errors != 0 || r.Error != "" {
				t.Errorf("%s: target %s, ops %d, errors %d %v %q", r.Name, r.Target, r.Ops, r.Errors, r.ErrorsByCode, r.Error)
			}
			if l := r.Latency; !(0 < l.P50 && l.P50 <= l.P99 && l.P99 <= l.Max) {
				t.Errorf("%s: latency percentiles out of order: %+v", r.Name, l)
			}
			if !r.SharedProcess {
				t.Errorf("%s: in-process result not marked as shared", r.Name)
			}
		})
	}
}

// TestInterleaved measures two targets in alternating slices: each is
// measured for the whole duration, not half of it.
func TestInterleaved(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	b := testBare(t)
	t1, stop1, err := b.start(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = stop1() }()
	t2, stop2, err := b.start(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = stop2() }()
	rs := runSettings{duration: 600 * time.Millisecond, warmup: 100 * time.Millisecond, log: t.Logf}
	spec := Case{Workload: wlRefresh, Concurrency: 2}
	r1, r2 := runInterleaved(ctx, t1, t2, spec, spec, rs, 3)
	for _, r := range []CaseResult{r1, r2} {
		if r.Ops == 0 || r.Errors != 0 {
			t.Errorf("%s: ops %d, errors %d %v", r.Name, r.Ops, r.Errors, r.ErrorsByCode)
		}
		if r.DurationS < 0.59 || r.DurationS > 0.9 {
			t.Errorf("%s: measured for %.3fs, want 0.6s", r.Name, r.DurationS)
		}
	}
}

func TestValidate(t *testing.T) {
	good := func() Config {
		return Config{Cases: []Case{{Workload: wlRefresh, Concurrency: 1}}, Duration: time.Second,
			Slices: 5, Timeout: time.Second, Conns: 1, Prefix: "tokens", Bare: true, BareWorkers: 1}
	}
	for _, tc := range []struct {
		name   string
		change func(*Config)
		want   string // "" for valid
	}{
		{"valid", func(*Config) {}, ""},
		{"no cases", func(c *Config) { c.Cases = nil }, "no cases"},
		{"zero duration", func(c *Config) { c.Duration = 0 }, "duration"},
		{"negative warm-up", func(c *Config) { c.Warmup = -1 }, "warm-up"},
		{"zero slices", func(c *Config) { c.Slices = 0 }, "slices"},
		{"zero conns", func(c *Config) { c.Conns = 0 }, "conns"},
		{"negative prior", func(c *Config) { c.PriorRotations = -1 }, "prior"},
		{"in-process with URL", func(c *Config) { c.InProcess, c.NATSURL = true, "nats://127.0.0.1:4222" }, "in-process"},
		{"client id without URL", func(c *Config) { c.ClientID, c.ClientSecret = "a", "b" }, "NATS URL"},
		{"client id without secret", func(c *Config) { c.NATSURL, c.ClientID = "nats://127.0.0.1:4222", "a" }, "secret"},
		{"mix without weights", func(c *Config) { c.Cases = []Case{{Workload: wlMix, Concurrency: 1}} }, "mix"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := good()
			tc.change(&c)
			err := c.Validate()
			switch {
			case tc.want == "" && err != nil:
				t.Errorf("rejected: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Errorf("error %v, want one about %q", err, tc.want)
			}
		})
	}
	c := good()
	c.InProcess = true
	if err := c.wiringError(); err == nil {
		t.Error("in-process without a serve function accepted")
	}
	if err := RunChild(context.Background(), []string{"serve"}, Wiring{}, nil, nil); err == nil {
		t.Error("RunChild ran a command that is no child")
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
	cs, err := ParseCases(StandardSuite)
	if err != nil || len(cs) != 6 || cs[5] != (Case{Workload: wlAged, Concurrency: 2}) {
		t.Fatalf("standard suite: %v %v", cs, err)
	}
	for _, bad := range []string{"refresh", "nope@1", "refresh@0", "refresh@x"} {
		if _, err := ParseCases(bad); err == nil {
			t.Errorf("ParseCases(%q) accepted", bad)
		}
	}
	cs, err = CrossCases("issue,refresh", "1,64")
	if err != nil || len(cs) != 4 || cs[3] != (Case{Workload: wlRefresh, Concurrency: 64}) {
		t.Errorf("cross: %v %v", cs, err)
	}
	if _, err := ParseMix("refresh=0,issue=0"); err == nil {
		t.Error("mix of zero weights accepted")
	}
	if _, err := ParseMix("refresh=3,bogus=1"); err == nil {
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
