package jsstore

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/oklog/ulid/v2"

	"github.com/tokenledger/tokenledger/ledger"
)

// ClockBucket is the KV bucket the clock guards write their probes to.
const ClockBucket = "tokenledger_clock"

// DefaultMaxClockOffset is how far an instance's clock may be from the
// NATS server's before it stops deciding (CockroachDB's default bound).
const DefaultMaxClockOffset = 500 * time.Millisecond

// DefaultClockProbeInterval is how often a ClockGuard measures.
const DefaultClockProbeInterval = 5 * time.Second

// ErrClockOffset: this instance's clock is further from the NATS server's
// than the bound allows, so its decisions (grace windows, lifetimes) could
// be gamed; it refuses them until the clock is back in bound.
var ErrClockOffset = errors.New("jsstore: clock offset from the NATS server out of bound")

// ClockGuardConfig configures a ClockGuard.
type ClockGuardConfig struct {
	// MaxOffset is the bound (default DefaultMaxClockOffset).
	MaxOffset time.Duration
	// Interval is the time between probes in Run (default
	// DefaultClockProbeInterval).
	Interval time.Duration
	// Now is the clock under guard: the Ledger's (default time.Now).
	Now func() time.Time
	// Replicas of the probe bucket (default 1).
	Replicas int
	Log      *slog.Logger
}

// ClockGuard measures the offset between this instance's clock and the
// NATS server's, and reports whether decisions may be made. A probe writes
// the local time to a key of ClockBucket and reads the entry back: the
// server stamps the entry when it stores it, so the offset is that stamp
// minus the midpoint of the local times around the write, known to within
// half the round trip (Cristian's algorithm). The stream order, not these
// clocks, decides "before" and "after" between events; the bound only
// keeps lifetimes and grace windows honest.
type ClockGuard struct {
	kv jetstream.KeyValue
	js jetstream.JetStream
	// getSubject reads the probe's entry back from the bucket stream's
	// leader, which has it once the put is acknowledged (a direct get may
	// reach a replica that has not stored it yet).
	getSubject string
	key        string
	cfg        ClockGuardConfig
	mu         sync.Mutex
	last       clockReading
	// refusal is what Err returns, read on every request without a lock.
	refusal refusal
}

type clockReading struct {
	offset, uncertainty time.Duration
	err                 error // nil, ErrClockOffset or the probe's failure
}

// NewClockGuard creates the probe bucket if needed and takes a first
// reading, so the guard knows where it stands before the first decision.
func NewClockGuard(ctx context.Context, js jetstream.JetStream, cfg ClockGuardConfig) (*ClockGuard, error) {
	if cfg.MaxOffset <= 0 {
		cfg.MaxOffset = DefaultMaxClockOffset
	}
	if cfg.Interval <= 0 {
		cfg.Interval = DefaultClockProbeInterval
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Replicas <= 0 {
		cfg.Replicas = 1
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket: ClockBucket, Description: "tokenledger clock probes (an instance's time against the server's)",
		History: 1, TTL: time.Hour, Storage: jetstream.MemoryStorage, Replicas: cfg.Replicas,
	})
	if err != nil {
		return nil, fmt.Errorf("clock bucket: %w", translate(err))
	}
	g := &ClockGuard{kv: kv, js: js, getSubject: jsAPIPrefix(js) + "STREAM.MSG.GET.KV_" + ClockBucket,
		key: ulid.MustNew(ulid.Now(), rand.Reader).String(), cfg: cfg}
	g.Probe(ctx)
	return g, nil
}

// Probe measures the offset once and returns the reading's error: nil
// while in bound.
func (g *ClockGuard) Probe(ctx context.Context) error {
	r := g.measure(ctx)
	if r.err != nil && !errors.Is(r.err, ErrClockOffset) {
		g.cfg.Log.Warn("clock probe failed; keeping the last reading", "error", r.err)
		return r.err
	}
	g.mu.Lock()
	was := g.last
	g.last = r
	if r.err != nil {
		g.refusal.set(fmt.Errorf("%w: %w", ledger.ErrUnavailable, r.err))
	} else {
		g.refusal.set(nil)
	}
	g.mu.Unlock()
	switch {
	case errors.Is(r.err, ErrClockOffset) && !errors.Is(was.err, ErrClockOffset):
		g.cfg.Log.Error("clock offset from the NATS server out of bound: refusing decisions until it is back",
			"offset", r.offset, "uncertainty", r.uncertainty, "max", g.cfg.MaxOffset)
	case r.err == nil && was.err != nil:
		g.cfg.Log.Info("clock offset back in bound: deciding again", "offset", r.offset, "max", g.cfg.MaxOffset)
	}
	return r.err
}

func (g *ClockGuard) measure(ctx context.Context) clockReading {
	t0 := g.cfg.Now()
	rev, err := g.kv.Put(ctx, g.key, []byte(t0.UTC().Format(time.RFC3339Nano)))
	if err != nil {
		return clockReading{err: fmt.Errorf("clock probe: %w", translate(err))}
	}
	t1 := g.cfg.Now()
	m, err := leaderGetMsg(ctx, g.js, g.getSubject, msgGetRequest{Seq: rev})
	if err != nil {
		return clockReading{err: fmt.Errorf("clock probe: %w", translate(err))}
	}
	half := t1.Sub(t0) / 2
	r := clockReading{offset: m.Time.Sub(t0.Add(half)), uncertainty: half}
	// Out of bound only when even the most favourable reading within the
	// uncertainty is.
	if abs(r.offset)-r.uncertainty > g.cfg.MaxOffset {
		r.err = fmt.Errorf("%w: %s (±%s), bound %s", ErrClockOffset, r.offset, r.uncertainty, g.cfg.MaxOffset)
	}
	return r
}

// Offset is the last measured offset of the server's clock from this
// instance's (positive: this clock is behind) and its uncertainty.
func (g *ClockGuard) Offset() (offset, uncertainty time.Duration) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.last.offset, g.last.uncertainty
}

// Err is nil while the last reading was in bound, ErrClockOffset (wrapped,
// also wrapping ledger.ErrUnavailable) when it was not. A failed probe keeps
// the reading before it: without NATS no decision can be appended anyway.
func (g *ClockGuard) Err() error {
	if g == nil {
		return nil
	}
	return g.refusal.get()
}

// Run probes every interval until ctx ends.
func (g *ClockGuard) Run(ctx context.Context) error {
	every(ctx, g.cfg.Interval, func(ctx context.Context) { g.Probe(ctx) })
	return nil
}

// refusal is an error read on every request without a lock: nil while
// decisions may be made.
type refusal struct{ p atomic.Pointer[error] }

func (r *refusal) get() error {
	if err := r.p.Load(); err != nil {
		return *err
	}
	return nil
}

func (r *refusal) set(err error) {
	if err == nil {
		r.p.Store(nil)
		return
	}
	r.p.Store(&err)
}

// every runs fn each interval until ctx ends.
func every(ctx context.Context, interval time.Duration, fn func(context.Context)) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			fn(ctx)
		}
	}
}

func abs(d time.Duration) time.Duration {
	if d < 0 {
		return -d
	}
	return d
}
