package projections

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tokenledger/tokenledger/ledger"
	"github.com/tokenledger/tokenledger/ledger/jsstore"
	"github.com/tokenledger/tokenledger/revocation"
)

// The feed's wire types (stream, subjects, Announcement) are in package
// revocation and documented in docs/revocation-feed.md.
const (
	// CheckpointBucket is the KV bucket of the projections' checkpoints.
	CheckpointBucket      = "tokenledger_checkpoints"
	defaultFeedCheckpoint = "revocation-feed"
)

// FeedConfig configures a Feed.
type FeedConfig struct {
	Prefix       string // subject prefix (default "tokens"): <prefix>.revocations.<kind>
	Stream       string // the feed's stream (default revocation.DefaultStream)
	LedgerStream string // default jsstore.DefaultStream
	// MaxAge is how long announcements are kept (default 24 h). It must
	// exceed the longest access-token lifetime: a subscriber that starts
	// reads the whole stream and must find every revocation still relevant.
	MaxAge   time.Duration
	Replicas int
	// Checkpoint is the key of the feed's position in the
	// tokenledger_checkpoints bucket (default "revocation-feed").
	Checkpoint string
	Log        *slog.Logger
}

// Feed announces every revocation in the ledger on the revocation feed. It
// reads the ledger stream after its checkpoint, skips (by header, without
// decoding) everything that is not a revocation, and publishes each one
// de-duplicated by the ledger event id. Following the view's runner
// (Follow), it reads on its own only until it has caught up and is then
// handed the revocations the runner reads.
type Feed struct {
	js   jetstream.JetStream
	view *View
	kv   jetstream.KeyValue
	cfg  FeedConfig

	// handled is the last ledger sequence whose revocations are announced;
	// saved is the checkpoint stored last, at lastSave (the feed's
	// goroutine only).
	handled  atomic.Uint64
	saved    uint64
	lastSave time.Time

	// Following a runner (Follow): while follow is set, the runner's tap
	// queues every revocation after tapSeq.
	queue  chan tapped
	mu     sync.Mutex
	follow bool   // under mu
	tapSeq uint64 // under mu: the last sequence the runner's tap saw

	rode, overflows atomic.Uint64 // revocations announced from the queue; queue overflows

	// onKeyRevoked, if set (OnKeyRevoked), hears of every key.revoked.v1
	// the runner reads, before the runner applies it.
	onKeyRevoked func(kid string, at time.Time)
}

// OnKeyRevoked makes the runner the feed follows (Follow) call fn with
// every signing key revoked in the ledger, from the runner's goroutine,
// before the view applies the event: whoever waits for the view to reach
// a sequence (read-your-writes) finds every key revoked up to it already
// handed to fn. fn must not block. Call it before either runs.
func (f *Feed) OnKeyRevoked(fn func(kid string, at time.Time)) { f.onKeyRevoked = fn }

// NewFeed creates or updates the feed stream and the checkpoint bucket.
// The view supplies each announcement's expiry (the family's latest access
// token expiry) and must be fed by a runner.
func NewFeed(ctx context.Context, js jetstream.JetStream, view *View, cfg FeedConfig) (*Feed, error) {
	if js == nil || view == nil {
		return nil, errors.New("projections: feed needs a JetStream context and a view")
	}
	if cfg.Prefix == "" {
		cfg.Prefix = revocation.DefaultPrefix
	}
	if cfg.Stream == "" {
		cfg.Stream = revocation.DefaultStream
	}
	if cfg.LedgerStream == "" {
		cfg.LedgerStream = jsstore.DefaultStream
	}
	if cfg.MaxAge <= 0 {
		cfg.MaxAge = 24 * time.Hour
	}
	if cfg.Replicas <= 0 {
		cfg.Replicas = 1
	}
	if cfg.Checkpoint == "" {
		cfg.Checkpoint = defaultFeedCheckpoint
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if _, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:        cfg.Stream,
		Description: "tokenledger revocation feed: every revocation, kept while it matters",
		Subjects:    []string{revocation.Subjects(cfg.Prefix)},
		Storage:     jetstream.FileStorage,
		Retention:   jetstream.LimitsPolicy,
		MaxAge:      cfg.MaxAge,
		Replicas:    cfg.Replicas,
		Duplicates:  2 * time.Minute,
	}); err != nil {
		return nil, fmt.Errorf("feed stream %s: %w", cfg.Stream, err)
	}
	kv, err := js.CreateOrUpdateKeyValue(ctx, checkpointKVConfig(cfg.Replicas))
	if err != nil {
		return nil, fmt.Errorf("checkpoint bucket: %w", err)
	}
	return &Feed{js: js, view: view, kv: kv, cfg: cfg}, nil
}

// Checkpoint is the last ledger sequence the feed has fully handled.
func (f *Feed) Checkpoint(ctx context.Context) (uint64, error) {
	e, err := f.kv.Get(ctx, f.cfg.Checkpoint)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("feed checkpoint: %w", err)
	}
	return strconv.ParseUint(string(e.Value()), 10, 64)
}

func (f *Feed) save(ctx context.Context, seq uint64) error {
	if _, err := f.kv.Put(ctx, f.cfg.Checkpoint, []byte(strconv.FormatUint(seq, 10))); err != nil {
		return fmt.Errorf("feed checkpoint: %w", err)
	}
	return nil
}

// revocationTypes are the ledger events the feed announces.
var revocationTypes = map[ledger.EventType]bool{
	ledger.TypeReuseDetected: true, ledger.TypeFamilyRevoked: true,
	ledger.TypeAccessRevoked: true, ledger.TypeAccessCutoff: true,
	ledger.TypeKeyRevoked: true,
}

// feedQueue bounds the revocations the runner's tap holds for the feed.
const feedQueue = 4096

// tapped is a revocation the runner handed over.
type tapped struct {
	seq uint64
	e   ledger.Event
}

// Follow makes the feed ride on r's reads instead of reading every event
// of the ledger a second time: r hands over each revocation before
// applying it. The feed still reads on its own from its checkpoint until
// it has caught up with r, and again whenever it falls more than
// feedQueue revocations behind, so r never waits for the feed (a feed
// stream that is down never stalls the view). Call it before either
// runs.
func (f *Feed) Follow(r *Runner) {
	f.queue = make(chan tapped, feedQueue)
	r.tap = f.tap
	r.restored = f.restored
}

// restored is the runner's hook when it loads a checkpoint at seq: it
// will never hand over the revocations up to seq, so the feed reads them
// on its own, as after an overflow.
func (f *Feed) restored(seq uint64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.tapSeq = max(f.tapSeq, seq)
	f.follow = false
}

// tap is the runner's hook: it sees every event, in stream order, before
// the runner applies it.
func (f *Feed) tap(seq uint64, e ledger.Event) {
	if d, ok := e.Data.(ledger.KeyRevoked); ok && f.onKeyRevoked != nil {
		f.onKeyRevoked(d.KID, e.OccurredAt)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.tapSeq = seq
	if !f.follow || seq <= f.handled.Load() || !revocationTypes[e.Type] {
		return
	}
	select {
	case f.queue <- tapped{seq, e}:
	default:
		f.follow = false // too far behind: the feed reads the rest itself
		f.overflows.Add(1)
	}
}

// arm starts queueing the runner's revocations and returns the last
// sequence the runner had seen: every revocation after it is queued (or
// arm's effect is undone by an overflow).
func (f *Feed) arm() uint64 {
	for len(f.queue) > 0 { // left from an overflow: read again on our own
		<-f.queue
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.follow = true
	return f.tapSeq
}

// following reports whether the runner's revocations are being queued,
// the last sequence the runner has seen, and whether the queue is empty.
func (f *Feed) following() (on bool, seen uint64, empty bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.follow, f.tapSeq, len(f.queue) == 0
}

// Run announces revocations until ctx ends, resuming after the checkpoint.
func (f *Feed) Run(ctx context.Context) error {
	from, err := f.Checkpoint(ctx)
	if err != nil {
		return err
	}
	f.handled.Store(from)
	f.saved, f.lastSave = from, time.Now()
	defer func() {
		if h := f.handled.Load(); h > f.saved {
			sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
			defer cancel()
			if err := f.save(sctx, h); err != nil {
				f.cfg.Log.Warn("feed checkpoint on stop", "error", err)
			}
		}
	}()
	for {
		err := f.read(ctx)
		if err == nil && ctx.Err() == nil {
			err = f.ride(ctx)
		}
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// maybeSave stores the handled sequence as the checkpoint, at most once a
// second.
func (f *Feed) maybeSave(ctx context.Context) {
	h := f.handled.Load()
	if h <= f.saved || time.Since(f.lastSave) < time.Second {
		return
	}
	if err := f.save(ctx, h); err != nil {
		f.cfg.Log.Warn("feed checkpoint", "error", err)
		return
	}
	f.saved, f.lastSave = h, time.Now()
}

// read reads the ledger on its own from after the handled sequence. It
// returns once it has caught up with the runner it follows, and never
// when it follows none.
func (f *Feed) read(ctx context.Context) error {
	cfg := jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverAllPolicy}
	if from := f.handled.Load(); from > 0 {
		cfg.DeliverPolicy, cfg.OptStartSeq = jetstream.DeliverByStartSequencePolicy, from+1
	}
	cons, err := f.js.OrderedConsumer(ctx, f.cfg.LedgerStream, cfg)
	if err != nil {
		return fmt.Errorf("feed: consumer on %s: %w", f.cfg.LedgerStream, err)
	}
	it, err := cons.Messages()
	if err != nil {
		return fmt.Errorf("feed: consume %s: %w", f.cfg.LedgerStream, err)
	}
	defer it.Stop()
	armed, until := false, uint64(0)
	for {
		// Wait at most a second so the checkpoint moves on while idle.
		msg, err := it.Next(jetstream.NextMaxWait(time.Second))
		if ctx.Err() != nil {
			return nil
		}
		caughtUp := err != nil
		if err == nil {
			meta, merr := msg.Metadata()
			if merr != nil {
				return fmt.Errorf("feed: message metadata: %w", merr)
			}
			if revocationTypes[ledger.EventType(msg.Headers().Get(jsstore.HeaderEventType))] {
				e, err := DecodeForView(msg.Data())
				if err != nil {
					return fmt.Errorf("feed: seq %d: %w", meta.Sequence.Stream, err)
				}
				if err := f.announce(ctx, meta.Sequence.Stream, e); err != nil {
					return err
				}
			}
			f.handled.Store(meta.Sequence.Stream)
			// Close enough that what is left cannot overflow the queue;
			// under steady load the consumer may never see zero pending.
			caughtUp = meta.NumPending < uint64(cap(f.queue))
		} else if !errors.Is(err, nats.ErrTimeout) && !errors.Is(err, context.DeadlineExceeded) {
			return fmt.Errorf("feed: read %s: %w", f.cfg.LedgerStream, err)
		}
		f.maybeSave(ctx)
		if f.queue == nil {
			continue
		}
		if armed {
			if on, _, _ := f.following(); !on {
				armed = false // overflowed already: catch up again first
			}
		}
		if !armed && caughtUp {
			armed, until = true, f.arm()
		}
		if armed && f.handled.Load() >= until {
			return nil // every revocation after until is queued
		}
	}
}

// ride announces the revocations the runner hands over, until the queue
// overflows.
func (f *Feed) ride(ctx context.Context) error {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case t := <-f.queue:
			if t.seq > f.handled.Load() {
				if err := f.announce(ctx, t.seq, t.e); err != nil {
					return err
				}
				f.handled.Store(t.seq)
				f.rode.Add(1)
			}
		case <-tick.C:
		}
		on, seen, empty := f.following()
		if !on {
			return nil
		}
		// Every revocation up to seen was queued, and the queue is
		// empty: all of them are announced.
		if empty && seen > f.handled.Load() {
			f.handled.Store(seen)
		}
		f.maybeSave(ctx)
	}
}

// announce publishes the announcement for the revocation e at seq,
// retrying until it is stored or ctx ends: a revocation must never be
// skipped.
func (f *Feed) announce(ctx context.Context, seq uint64, e ledger.Event) error {
	if err := f.view.WaitFor(ctx, seq); err != nil {
		return err
	}
	a := revocation.Announcement{FamilyID: e.FamilyID, At: e.OccurredAt.UTC(), Cause: e.Cause.Kind, EventID: e.ID, LedgerSeq: seq}
	until := e.OccurredAt.Add(f.cfg.MaxAge) // when the view no longer knows the family
	var cutoffEvent uint64
	if fv, ok := f.view.Family(e.FamilyID); ok {
		// The view has applied seq, and maybe later events: a later
		// cutoff's number denies more, as that cutoff's own announcement
		// will anyway.
		until, cutoffEvent = fv.AccessUntil, fv.CutoffEvent
	}
	switch d := e.Data.(type) {
	case ledger.ReuseDetected:
		a.Kind, a.Cause, a.ExpiresAt = revocation.KindFamily, ledger.CauseReuse, until
	case ledger.FamilyRevoked:
		a.Kind, a.ExpiresAt = revocation.KindFamily, until
	case ledger.AccessRevoked:
		a.Kind, a.JTI, a.ExpiresAt = revocation.KindAccess, d.JTI, d.ExpiresAt.UTC()
	case ledger.AccessCutoff:
		a.Kind, a.ExpiresAt, a.FamilyEvent = revocation.KindCutoff, until, cutoffEvent
	case ledger.KeyRevoked:
		a.Kind, a.KID, a.ExpiresAt = revocation.KindKey, d.KID, d.TokensUntil.UTC()
	default:
		return nil
	}
	if a.ExpiresAt.Before(a.At) {
		a.ExpiresAt = a.At
	}
	body, err := json.Marshal(a)
	if err != nil {
		return err
	}
	for backoff := 50 * time.Millisecond; ; backoff = min(2*backoff, 5*time.Second) {
		_, err := f.js.Publish(ctx, revocation.Subject(f.cfg.Prefix, a.Kind), body, jetstream.WithMsgID(a.EventID))
		if err == nil {
			return nil
		}
		f.cfg.Log.Warn("feed publish failed; retrying", "seq", seq, "error", err)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(backoff):
		}
	}
}
