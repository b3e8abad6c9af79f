package ops_test

import (
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/tokenledger/tokenledger/instance"
	"github.com/tokenledger/tokenledger/internal/natstest"
	"github.com/tokenledger/tokenledger/internal/tltest"
	"github.com/tokenledger/tokenledger/ledger"
	"github.com/tokenledger/tokenledger/ledger/jsstore"
	"github.com/tokenledger/tokenledger/ledger/token"
	"github.com/tokenledger/tokenledger/ops"
)

// get fetches path from the server and returns its status and body.
func get(t *testing.T, base, path string) (int, string) {
	t.Helper()
	resp, err := http.Get(base + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

// serve runs an ops server for in on a random loopback port until the test
// ends and returns its base URL.
func serve(t *testing.T, in *instance.Instance, m *ops.Metrics, maxLag uint64) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ops.New(ops.Config{Instance: in, Metrics: m, MaxViewLag: maxLag}).Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("ops server: %v", err)
		}
	})
	return "http://" + ln.Addr().String()
}

// waitStatus polls path until it answers want.
func waitStatus(t *testing.T, base, path string, want int) string {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		code, body := get(t, base, path)
		if code == want {
			return body
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %d %q, want %d", path, code, body, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// counter is the value of the metric family's sample with the label, 0 if
// absent.
func counter(t *testing.T, base, family, label, value string) float64 {
	t.Helper()
	_, body := get(t, base, "/metrics")
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(body))
	if err != nil {
		t.Fatalf("/metrics does not parse: %v", err)
	}
	f, ok := fams[family]
	if !ok {
		return 0
	}
	for _, m := range f.GetMetric() {
		for _, l := range m.GetLabel() {
			if label == "" || (l.GetName() == label && l.GetValue() == value) {
				if c := m.GetCounter(); c != nil {
					return c.GetValue()
				}
				return m.GetGauge().GetValue()
			}
		}
		if label == "" {
			if c := m.GetCounter(); c != nil {
				return c.GetValue()
			}
			return m.GetGauge().GetValue()
		}
	}
	return 0
}

// requests is tokenledger_requests_total for the endpoint and outcome.
func requests(t *testing.T, base, endpoint, outcome string) float64 {
	t.Helper()
	_, body := get(t, base, "/metrics")
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(body))
	if err != nil {
		t.Fatalf("/metrics does not parse: %v", err)
	}
	for _, m := range fams["tokenledger_requests_total"].GetMetric() {
		labels := map[string]string{}
		for _, l := range m.GetLabel() {
			labels[l.GetName()] = l.GetValue()
		}
		if labels["endpoint"] == endpoint && labels["outcome"] == outcome {
			return m.GetCounter().GetValue()
		}
	}
	return 0
}

// /healthz is alive from the start; /readyz is not ready while the view is
// behind the ledger, nor while the ledger stream is gone, nor once NATS is
// gone, and ready otherwise; /metrics parses and its counters follow the
// requests the test makes.
func TestHealthReadinessAndMetrics(t *testing.T) {
	env := tltest.New(t, "")
	env.StartInstance(tltest.Options{Grace: 10 * time.Second})
	for _, s := range []string{"alice", "bob", "carol"} {
		tltest.WantOK(t, env.Issue(s))
	}

	// A second instance, wired but not running yet: its view is at 0
	// while the ledger holds three issues.
	// Its connection goes through a proxy, so the test can cut it off NATS.
	proxy := natstest.NewProxy(t, env.Srv.Addr().String())
	nc, cerr := nats.Connect(proxy.URL(), nats.MaxReconnects(-1), nats.ReconnectWait(20*time.Millisecond))
	if cerr != nil {
		t.Fatal(cerr)
	}
	t.Cleanup(nc.Close)
	kek, _ := token.ParseKEK(tltest.KEK)
	ctx := context.Background()
	metrics := ops.NewMetrics()
	second, err := instance.New(ctx, nc, nc, instance.Config{
		Service: true, KEK: kek, Clients: []ledger.Client{tltest.Client()}, Defaults: tltest.Policy(10 * time.Second),
		MaxClockOffset: -1, Now: env.Clock.Now, Observe: metrics.Observe,
	})
	if err != nil {
		t.Fatal(err)
	}
	base := serve(t, second, metrics, 1)
	if code, _ := get(t, base, "/healthz"); code != http.StatusOK {
		t.Fatalf("/healthz = %d before running", code)
	}
	if body := waitStatus(t, base, "/readyz", http.StatusServiceUnavailable); !strings.Contains(body, "behind") {
		t.Fatalf("/readyz before the view caught up: %q", body)
	}
	rctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- second.Run(rctx) }()
	t.Cleanup(func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("second instance: %v", err)
		}
	})
	waitStatus(t, base, "/readyz", http.StatusOK)

	// Counters move with the requests: the first instance stops, so this
	// one answers them all.
	if err := env.StopInstance(0); err != nil {
		t.Fatal(err)
	}
	issued := counter(t, base, "tokenledger_ledger_events_total", "type", string(ledger.TypeFamilyIssued))
	rotated := counter(t, base, "tokenledger_ledger_events_total", "type", string(ledger.TypeRefreshRotated))
	g := env.Issue("dave")
	tltest.WantOK(t, g)
	env.Clock.Advance(time.Minute)
	tltest.WantOK(t, env.Refresh(g.RefreshToken))
	deadline := time.Now().Add(10 * time.Second)
	for counter(t, base, "tokenledger_ledger_events_total", "type", string(ledger.TypeFamilyIssued)) != issued+1 ||
		counter(t, base, "tokenledger_ledger_events_total", "type", string(ledger.TypeRefreshRotated)) != rotated+1 {
		if time.Now().After(deadline) {
			t.Fatalf("events counters did not move: issued %v→%v, rotated %v→%v", issued,
				counter(t, base, "tokenledger_ledger_events_total", "type", string(ledger.TypeFamilyIssued)), rotated,
				counter(t, base, "tokenledger_ledger_events_total", "type", string(ledger.TypeRefreshRotated)))
		}
		time.Sleep(20 * time.Millisecond)
	}
	tltest.WantError(t, env.Call("tokens.issue", map[string]string{"client_id": tltest.ClientID, "client_secret": "tlcs_wrong", "subject": "x"}), "invalid_client", "401")
	for _, want := range []struct {
		endpoint, outcome string
		n                 float64
	}{{"issue", "ok", 1}, {"refresh", "ok", 1}, {"issue", "invalid_client", 1}} {
		if got := requests(t, base, want.endpoint, want.outcome); got != want.n {
			t.Errorf("tokenledger_requests_total{endpoint=%q,outcome=%q} = %v, want %v", want.endpoint, want.outcome, got, want.n)
		}
	}
	if r := counter(t, base, "tokenledger_ready", "", ""); r != 1 {
		t.Fatalf("tokenledger_ready = %v while ready", r)
	}
	// The archive copies what the ledger has: its lag is exported and
	// comes down to 0.
	for deadline := time.Now().Add(10 * time.Second); ; {
		_, body := get(t, base, "/metrics")
		if strings.Contains(body, "\ntokenledger_archive_lag_events 0\n") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("tokenledger_archive_lag_events not exported or not 0:\n%s", body)
		}
		time.Sleep(20 * time.Millisecond)
	}

	// The ledger stream deleted: not ready, with the reason; restored: ready.
	if err := env.JS.DeleteStream(ctx, "TOKENLEDGER"); err != nil {
		t.Fatal(err)
	}
	second.Watchdog().Check(ctx)
	if body := waitStatus(t, base, "/readyz", http.StatusServiceUnavailable); !strings.Contains(body, "missing") {
		t.Fatalf("/readyz with the ledger gone: %q", body)
	}
	if _, err := env.Store.Stream().Info(ctx); err == nil {
		t.Fatal("the ledger stream came back by itself")
	}
	if _, err := jsstore.NewStore(ctx, env.JS, jsstore.StoreConfig{}); err != nil { // restored
		t.Fatal(err)
	}
	second.Watchdog().Check(ctx)
	waitStatus(t, base, "/readyz", http.StatusOK)

	// NATS out of reach: not ready, for that reason; the process is alive.
	proxy.Stop()
	deadline = time.Now().Add(20 * time.Second)
	for {
		code, body := get(t, base, "/readyz")
		if code == http.StatusServiceUnavailable && strings.Contains(body, "NATS connection") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("/readyz with NATS out of reach: %d %q", code, body)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if code, _ := get(t, base, "/healthz"); code != http.StatusOK {
		t.Fatalf("/healthz = %d with NATS out of reach: the process is alive", code)
	}
	// Back in reach: ready again once reconnected.
	proxy.Start()
	waitStatus(t, base, "/readyz", http.StatusOK)
}
