package jsstore

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/tokenledger/tokenledger/ledger"
)

// ErrLedgerMissing: the ledger stream or the signing-key bucket of a
// deployment that was initialised is gone. The service never answers that
// with a fresh, empty ledger: it refuses to start, or stops deciding, until
// an operator restores it (or, knowingly, initialises anew).
var ErrLedgerMissing = errors.New("jsstore: ledger stream or key bucket missing")

// CheckInitialised decides whether this start may create the ledger stream
// and the buckets: yes when they all exist (nothing to create), when none
// of the deployment's stores exists (a deployment never initialised), or
// when init is set (an operator's explicit choice). It refuses a ledger
// stream or key bucket that is missing while other stores of the
// deployment exist: that is a deleted ledger, not a new one.
func CheckInitialised(ctx context.Context, js jetstream.JetStream, stream string, init bool) error {
	if stream == "" {
		stream = DefaultStream
	}
	var present, missing []string
	for _, name := range []string{stream, "KV_" + KeysBucket, "KV_" + ClientsBucket} {
		_, err := js.Stream(ctx, name)
		switch {
		case err == nil:
			present = append(present, name)
		case errors.Is(err, jetstream.ErrStreamNotFound):
			missing = append(missing, name)
		default:
			return fmt.Errorf("look for %s: %w", name, translate(err))
		}
	}
	switch {
	case len(missing) == 0, len(present) == 0, init:
		return nil
	}
	// Only the clients bucket missing is not a lost ledger: clients may
	// all come from the configuration.
	if len(missing) == 1 && missing[0] == "KV_"+ClientsBucket {
		return nil
	}
	return fmt.Errorf("%w: %s missing while %s exist: this deployment was initialised, so refusing to start on an empty ledger; restore the missing stores from a backup, or start with --init to create them empty",
		ErrLedgerMissing, strings.Join(missing, ", "), strings.Join(present, ", "))
}

// WatchdogConfig configures a Watchdog.
type WatchdogConfig struct {
	// Stream is the ledger stream (default DefaultStream).
	Stream string
	// Interval is the time between checks in Run (default 2 s).
	Interval time.Duration
	Log      *slog.Logger
}

// Watchdog checks that the ledger stream and the signing-key bucket still
// exist while the service runs. When one is gone it logs at error level
// and refuses decisions (Err) until it is back; it never recreates either.
type Watchdog struct {
	js      jetstream.JetStream
	cfg     WatchdogConfig
	refusal refusal
}

// NewWatchdog returns a watchdog; it has checked nothing until Check or Run.
func NewWatchdog(js jetstream.JetStream, cfg WatchdogConfig) *Watchdog {
	if cfg.Stream == "" {
		cfg.Stream = DefaultStream
	}
	if cfg.Interval <= 0 {
		cfg.Interval = 2 * time.Second
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	return &Watchdog{js: js, cfg: cfg}
}

// Check looks for the ledger stream and the key bucket once. It returns
// the refusal (nil while both exist). A failed look-up that is not "not
// found" (NATS out of reach) keeps the previous verdict.
func (w *Watchdog) Check(ctx context.Context) error {
	var missing []string
	for _, name := range []string{w.cfg.Stream, "KV_" + KeysBucket} {
		_, err := w.js.Stream(ctx, name)
		switch {
		case errors.Is(err, jetstream.ErrStreamNotFound):
			missing = append(missing, name)
		case err != nil:
			return w.Err()
		}
	}
	was := w.refusal.get()
	if len(missing) == 0 {
		if was != nil {
			w.cfg.Log.Info("ledger stores back: deciding again")
		}
		w.refusal.set(nil)
		return nil
	}
	err := fmt.Errorf("%w: %w: %s", ledger.ErrUnavailable, ErrLedgerMissing, strings.Join(missing, ", "))
	if was == nil {
		w.cfg.Log.Error("ledger stores missing: refusing every decision; restore them from a backup (nothing is recreated)",
			"missing", missing)
	}
	w.refusal.set(err)
	return err
}

// Err is the current refusal: nil while the stores exist.
func (w *Watchdog) Err() error {
	if w == nil {
		return nil
	}
	return w.refusal.get()
}

// Run checks every interval until ctx ends.
func (w *Watchdog) Run(ctx context.Context) error {
	every(ctx, w.cfg.Interval, func(ctx context.Context) { w.Check(ctx) })
	return nil
}
