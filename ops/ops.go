// Package ops serves what an operator's tooling asks of a running
// instance over HTTP: /healthz (the process is alive), /readyz (it can
// answer correctly now: instance.Instance.Ready) and /metrics in the
// Prometheus text format.
//
// Metrics are read from the instance when scraped (its view, worker, clock
// guard and service counters), so serving requests pays nothing for them.
// Counters derived from the view (events by type, revocations by cause)
// count the whole ledger, whichever instance appended; request counters
// count this instance's requests.
package ops

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/tokenledger/tokenledger/instance"
)

// Metrics are the request metrics an instance reports as it serves: build
// them before the instance, pass Observe to instance.Config.Observe, and
// the same Metrics to the Server.
type Metrics struct {
	requests *prometheus.CounterVec
	latency  *prometheus.HistogramVec
}

// NewMetrics returns empty request metrics.
func NewMetrics() *Metrics {
	return &Metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tokenledger_requests_total",
			Help: "Requests this instance answered, by endpoint and outcome (ok or the OAuth error code).",
		}, []string{"endpoint", "outcome"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "tokenledger_request_duration_seconds",
			Help:    "Time from a request reaching the worker pool to its reply, by endpoint.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
		}, []string{"endpoint"}),
	}
}

// Observe records one request (handlers.Config.Observe).
func (m *Metrics) Observe(endpoint, outcome string, took time.Duration) {
	m.requests.WithLabelValues(endpoint, outcome).Inc()
	if took > 0 {
		m.latency.WithLabelValues(endpoint).Observe(took.Seconds())
	}
}

// Config configures a Server.
type Config struct {
	// Addr is the listen address, such as 127.0.0.1:8080.
	Addr string
	// Instance is the instance to report on.
	Instance *instance.Instance
	// MaxViewLag is the readiness bound on the view's lag (default
	// instance.DefaultMaxViewLag).
	MaxViewLag uint64
	// Metrics are the instance's request metrics (nil: none reported).
	Metrics *Metrics
	Log     *slog.Logger
}

// Server is the HTTP listener of health, readiness and metrics.
type Server struct {
	cfg Config
	reg *prometheus.Registry
}

// New returns a server; Run listens.
func New(cfg Config) *Server {
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		&collector{in: cfg.Instance, maxLag: cfg.MaxViewLag},
	)
	if cfg.Metrics != nil {
		reg.MustRegister(cfg.Metrics.requests, cfg.Metrics.latency)
	}
	return &Server{cfg: cfg, reg: reg}
}

// Handler serves /healthz, /readyz and /metrics.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		if err := s.cfg.Instance.Ready(ctx, s.cfg.MaxViewLag); err != nil {
			http.Error(w, "not ready: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ready")
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(s.reg, promhttp.HandlerOpts{ErrorLog: slog.NewLogLogger(s.cfg.Log.Handler(), slog.LevelWarn)}))
	return mux
}

// Run serves until ctx ends, then shuts the listener down, letting scrapes
// in flight finish (within 5 s).
func (s *Server) Run(ctx context.Context) error {
	ln, err := net.Listen("tcp", s.cfg.Addr)
	if err != nil {
		return fmt.Errorf("--http %s: %w", s.cfg.Addr, err)
	}
	return s.Serve(ctx, ln)
}

// Serve is Run on a listener the caller opened.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	srv := &http.Server{Handler: s.Handler(), ReadHeaderTimeout: 5 * time.Second}
	s.cfg.Log.Info("health and metrics listening", "addr", ln.Addr().String())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	err := srv.Shutdown(sctx)
	if e := <-done; !errors.Is(e, http.ErrServerClosed) && err == nil {
		err = e
	}
	return err
}

// collector reads the instance's figures at scrape time.
type collector struct {
	in     *instance.Instance
	maxLag uint64
}

var (
	descReady = prometheus.NewDesc("tokenledger_ready",
		"1 when the instance can answer correctly now (what /readyz says), else 0.", nil, nil)
	descApplied = prometheus.NewDesc("tokenledger_view_applied_sequence",
		"The last ledger stream sequence the valid-token view applied.", nil, nil)
	descLag = prometheus.NewDesc("tokenledger_view_lag_events",
		"How many events the valid-token view is behind the ledger stream.", nil, nil)
	descArchiveLag = prometheus.NewDesc("tokenledger_archive_lag_events",
		"How many ledger sequences the archive stream has not copied yet. An event that expires from the ledger before the archive copied it is lost to the archive: alert well before --history-margin.", nil, nil)
	descEvents = prometheus.NewDesc("tokenledger_ledger_events_total",
		"Events of the ledger applied by this instance's view, by type (issues, rotations, grace retries, reuse detections, revocations...), whichever instance appended them.", []string{"type"}, nil)
	descRevocations = prometheus.NewDesc("tokenledger_family_revocations_total",
		"Families revoked, by cause kind (reuse, revoke, admin, security_event).", []string{"cause"}, nil)
	descOffset = prometheus.NewDesc("tokenledger_clock_offset_seconds",
		"The NATS server's clock minus this instance's, as last measured.", nil, nil)
	descOffsetUnc = prometheus.NewDesc("tokenledger_clock_offset_uncertainty_seconds",
		"Half the round trip of the last clock probe: the offset is known within it.", nil, nil)
	descSecurity = prometheus.NewDesc("tokenledger_security_events_total",
		"Security events this instance's worker finished, by outcome (handled, duplicate, dead_lettered, retried).", []string{"outcome"}, nil)
	descSecurityBacklog = prometheus.NewDesc("tokenledger_security_backlog_events",
		"Security events waiting for a worker (pending on the shared consumer).", nil, nil)
)

// Describe sends the descriptors of every metric Collect may send.
func (c *collector) Describe(ch chan<- *prometheus.Desc) { prometheus.DescribeByCollect(c, ch) }

// Collect reads the instance's figures.
func (c *collector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	ready := 0.0
	if c.in.Ready(ctx, c.maxLag) == nil {
		ready = 1
	}
	ch <- prometheus.MustNewConstMetric(descReady, prometheus.GaugeValue, ready)
	if r := c.in.Runner(); r != nil {
		if lag, err := r.Lag(ctx); err == nil {
			ch <- prometheus.MustNewConstMetric(descApplied, prometheus.GaugeValue, float64(lag.Applied))
			ch <- prometheus.MustNewConstMetric(descLag, prometheus.GaugeValue, float64(lag.Behind()))
		}
	}
	if st := c.in.Store(); st != nil {
		if lag, err := st.ArchiveLag(ctx); err == nil {
			ch <- prometheus.MustNewConstMetric(descArchiveLag, prometheus.GaugeValue, float64(lag.Behind()))
		}
	}
	if v := c.in.View(); v != nil {
		events, revocations := v.Counts()
		for t, n := range events {
			ch <- prometheus.MustNewConstMetric(descEvents, prometheus.CounterValue, float64(n), string(t))
		}
		for cause, n := range revocations {
			ch <- prometheus.MustNewConstMetric(descRevocations, prometheus.CounterValue, float64(n), cause)
		}
	}
	if g := c.in.ClockGuard(); g != nil {
		off, unc := g.Offset()
		ch <- prometheus.MustNewConstMetric(descOffset, prometheus.GaugeValue, off.Seconds())
		ch <- prometheus.MustNewConstMetric(descOffsetUnc, prometheus.GaugeValue, unc.Seconds())
	}
	if w := c.in.Worker(); w != nil {
		s := w.Stats()
		for outcome, n := range map[string]uint64{"handled": s.Handled, "duplicate": s.Duplicates, "dead_lettered": s.DeadLettered, "retried": s.Retried} {
			ch <- prometheus.MustNewConstMetric(descSecurity, prometheus.CounterValue, float64(n), outcome)
		}
		if n, err := w.Backlog(ctx); err == nil {
			ch <- prometheus.MustNewConstMetric(descSecurityBacklog, prometheus.GaugeValue, float64(n))
		}
	}
}
