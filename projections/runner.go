package projections

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/tokenledger/tokenledger/ledger"
	"github.com/tokenledger/tokenledger/ledger/jsstore"
)

// Projection is a read model a Runner feeds. Apply must ignore a sequence at
// or below LastSeq (redelivery); LastSeq is where the runner resumes.
type Projection interface {
	Apply(seq uint64, e ledger.Event)
	LastSeq() uint64
}

// RunnerConfig configures a Runner.
type RunnerConfig struct {
	// Stream is the ledger stream (default jsstore.DefaultStream).
	Stream string
	// Name names the runner in logs (default "view").
	Name string
	// FamilySubjects is the subject prefix of family events (default
	// "ledger.family."). An undecodable event there stops the runner; one
	// elsewhere (an event type this build does not know, on a subject
	// that holds no family) is logged and stepped over.
	FamilySubjects string
	// PruneEvery is how often a projection that can prune (View) drops
	// what has expired (default 10 minutes; negative disables).
	PruneEvery time.Duration
	// Decode decodes a stored event (default ledger.DecodeEvent, or
	// DecodeForView when the projection is a *View).
	Decode func([]byte) (ledger.Event, error)
	// Now is the clock used for pruning and checkpoints (default
	// time.Now).
	Now func() time.Time
	// Checkpoints, if set, is where Run loads the projections' state from
	// when they start empty, and saves it to every CheckpointEvery events
	// or CheckpointInterval (checkpoint.go). The projection and every one
	// fed with it (Also) must be a *View or *Rollouts.
	Checkpoints *CheckpointStore
	// CheckpointEvery saves a checkpoint once the view is this many
	// events past the last one any instance claimed (0: never by count).
	CheckpointEvery uint64
	// CheckpointInterval saves one this long after the last claimed, if
	// events came since (0: never by time).
	CheckpointInterval time.Duration
	Log                *slog.Logger
}

// Runner feeds a projection from the ledger stream with an ordered
// consumer, starting after the projection's last applied sequence. An
// ordered consumer recreates itself after a disconnect from the last
// sequence it delivered, so no event is skipped or applied twice.
type Runner struct {
	js         jetstream.JetStream
	p          Projection
	cfg        RunnerConfig
	streamLast atomic.Uint64
	lastPrune  time.Time
	// tap, if set (Feed.Follow), sees every event before it is applied,
	// in stream order, on the applying goroutine.
	tap func(seq uint64, e ledger.Event)
	// also are read models fed with p (Also), each event before p.
	also []Projection
	// restored, if set (Feed.Follow), is told the sequence of a
	// checkpoint the runner loaded: the events up to it are never tapped.
	restored func(seq uint64)

	// Checkpoints (checkpointrun.go): freezeReq carries requests for a
	// copy of the projections' state to the applying goroutine, which
	// serves them between events while consuming.
	freezeReq chan chan []checkpointPart
	consuming atomic.Bool
	applied   atomic.Uint64
	loaded    atomic.Pointer[CheckpointInfo]
}

// Also makes the runner feed q with every event it feeds its projection,
// just before it: once the projection has applied a sequence, so has q.
// q must start where the projection starts (both empty, in memory). Call
// it before Run.
func (r *Runner) Also(q Projection) { r.also = append(r.also, q) }

// NewRunner returns a runner feeding p from the ledger stream.
func NewRunner(js jetstream.JetStream, p Projection, cfg RunnerConfig) (*Runner, error) {
	if js == nil || p == nil {
		return nil, errors.New("projections: runner needs a JetStream context and a projection")
	}
	if cfg.Stream == "" {
		cfg.Stream = jsstore.DefaultStream
	}
	if cfg.Name == "" {
		cfg.Name = "view"
	}
	if cfg.FamilySubjects == "" {
		cfg.FamilySubjects = jsstore.DefaultSubjectPrefix + ".family."
	}
	if cfg.PruneEvery == 0 {
		cfg.PruneEvery = 10 * time.Minute
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Decode == nil {
		cfg.Decode = ledger.DecodeEvent
		if _, ok := p.(*View); ok {
			cfg.Decode = DecodeForView
		}
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	return &Runner{js: js, p: p, cfg: cfg, lastPrune: cfg.Now(), freezeReq: make(chan chan []checkpointPart)}, nil
}

// Run applies events as they are appended until ctx ends. It returns nil
// when ctx ends and an error when an event on a family subject cannot be
// decoded: folding past an event it cannot read would make the view lie.
//
// A failure to read (the stream deleted or out of reach beyond the
// consumer's own retries) is logged and retried from the last applied
// sequence: the view stays as it is, and whoever guards the ledger (the
// service's watchdog) refuses decisions meanwhile.
func (r *Runner) Run(ctx context.Context) error {
	if r.cfg.Checkpoints != nil {
		stop := r.startCheckpoints(ctx)
		defer stop()
	}
	for {
		err := r.consume(ctx, 0)
		if ctx.Err() != nil {
			return nil
		}
		var rerr *readError
		if !errors.As(err, &rerr) {
			return err
		}
		r.cfg.Log.Error("projection cannot read the stream; retrying", "runner", r.cfg.Name, "stream", r.cfg.Stream, "error", err)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(time.Second):
		}
	}
}

// readError is a failure to read the stream, as opposed to an event that
// cannot be folded.
type readError struct{ err error }

func (e *readError) Error() string { return e.err.Error() }
func (e *readError) Unwrap() error { return e.err }

// RunToEnd applies every event up to the stream's last sequence at the
// time of the call, then returns: deterministic catch-up for tests,
// rebuilds and tools.
func (r *Runner) RunToEnd(ctx context.Context) error {
	last, err := r.lastStreamSeq(ctx)
	if err != nil {
		return err
	}
	if r.p.LastSeq() >= last {
		return nil
	}
	return r.consume(ctx, last)
}

// Lag is how far a projection is behind the stream.
type Lag struct {
	Applied uint64 // last sequence applied
	Last    uint64 // the stream's last sequence
}

// Behind is the number of sequences not yet applied.
func (l Lag) Behind() uint64 {
	if l.Last <= l.Applied {
		return 0
	}
	return l.Last - l.Applied
}

// Lag asks the stream for its last sequence and compares it with the last
// sequence applied.
func (r *Runner) Lag(ctx context.Context) (Lag, error) {
	applied := r.p.LastSeq() // read first: the stream only grows
	last, err := r.lastStreamSeq(ctx)
	if err != nil {
		return Lag{}, err
	}
	return Lag{Applied: applied, Last: last}, nil
}

// WaitFor blocks until the projection has applied sequence seq or ctx ends.
func (r *Runner) WaitFor(ctx context.Context, seq uint64) error {
	if w, ok := r.p.(interface {
		WaitFor(context.Context, uint64) error
	}); ok {
		return w.WaitFor(ctx, seq)
	}
	t := time.NewTicker(5 * time.Millisecond)
	defer t.Stop()
	for r.p.LastSeq() < seq {
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s at seq %d waiting for %d: %w", r.cfg.Name, r.p.LastSeq(), seq, ctx.Err())
		case <-t.C:
		}
	}
	return nil
}

func (r *Runner) lastStreamSeq(ctx context.Context) (uint64, error) {
	s, err := r.js.Stream(ctx, r.cfg.Stream)
	if err != nil {
		return 0, fmt.Errorf("%s: stream %s: %w", r.cfg.Name, r.cfg.Stream, err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		return 0, fmt.Errorf("%s: stream %s info: %w", r.cfg.Name, r.cfg.Stream, err)
	}
	last := info.State.LastSeq
	// The stream's newest events may have expired (per-message TTLs,
	// jsstore.StoreConfig.HistoryMargin): with nothing stored after what
	// the projection applied, it is caught up.
	if applied := r.p.LastSeq(); last > applied {
		if _, err := jsstore.NextStoredSeq(ctx, r.js, r.cfg.Stream, applied+1); errors.Is(err, jetstream.ErrMsgNotFound) {
			last = applied
		}
	}
	r.streamLast.Store(max(r.streamLast.Load(), last))
	return last, nil
}

// consume applies events from the projection's next sequence until ctx
// ends or, when until > 0, until sequence until is applied.
func (r *Runner) consume(ctx context.Context, until uint64) error {
	cfg := jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverAllPolicy}
	if next := r.p.LastSeq() + 1; next > 1 {
		cfg.DeliverPolicy, cfg.OptStartSeq = jetstream.DeliverByStartSequencePolicy, next
	}
	cons, err := r.js.OrderedConsumer(ctx, r.cfg.Stream, cfg)
	if err != nil {
		return &readError{fmt.Errorf("%s: consumer on %s: %w", r.cfg.Name, r.cfg.Stream, err)}
	}
	it, err := cons.Messages(jetstream.PullMaxMessages(2048))
	if err != nil {
		return fmt.Errorf("%s: consume %s: %w", r.cfg.Name, r.cfg.Stream, err)
	}
	defer it.Stop()

	dec := newDecoder(r.cfg.Decode)
	defer dec.stop()
	r.consuming.Store(true)
	defer r.consuming.Store(false)
	// One goroutine reads and decodes ahead while this one applies in
	// stream order: decoding is most of the cost of a rebuild.
	go func() {
		defer dec.close()
		for {
			msg, err := it.Next(jetstream.NextContext(ctx))
			if err != nil {
				dec.fail(err)
				return
			}
			if !dec.push(msg) {
				return
			}
		}
	}()
	for {
		if until > 0 && r.p.LastSeq() >= until {
			return nil
		}
		var d decoded
		var err error
		if until > 0 && len(dec.ch) == 0 {
			d, err = r.nextBefore(ctx, dec, until)
			if errors.Is(err, errNothingStored) {
				return nil
			}
		} else {
			d, err = dec.next(ctx, r.freezeReq, r.serveFreeze)
		}
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return &readError{fmt.Errorf("%s: read %s: %w", r.cfg.Name, r.cfg.Stream, err)}
		}
		r.streamLast.Store(max(r.streamLast.Load(), d.seq+d.pending))
		if d.err != nil {
			if strings.HasPrefix(d.subject, r.cfg.FamilySubjects) || !errors.Is(d.err, ledger.ErrUnknownEvent) {
				return fmt.Errorf("%s: seq %d on %s: %w", r.cfg.Name, d.seq, d.subject, d.err)
			}
			// An event outside the families that this build cannot read
			// changes no family; step over it so the view keeps up.
			r.cfg.Log.Warn("skipping unknown event outside the families", "runner", r.cfg.Name, "seq", d.seq, "subject", d.subject, "error", d.err)
			d.event = ledger.Event{}
		}
		if r.tap != nil {
			r.tap(d.seq, d.event)
		}
		for _, q := range r.also {
			q.Apply(d.seq, d.event)
		}
		r.p.Apply(d.seq, d.event)
		r.applied.Add(1)
		r.maybePrune()
	}
}

// errNothingStored ends a catch-up whose remaining sequences expired.
var errNothingStored = errors.New("nothing stored up to the catch-up's end")

// nextBefore is dec.next for a catch-up to sequence until. When nothing
// arrives for a second it asks the stream's leader whether anything is
// still stored up to until: the events there may have expired after the
// catch-up began (jsstore.StoreConfig.HistoryMargin), and then it returns
// errNothingStored rather than wait for an event that will never come.
func (r *Runner) nextBefore(ctx context.Context, dec *decoder, until uint64) (decoded, error) {
	for {
		wctx, cancel := context.WithTimeout(ctx, time.Second)
		d, err := dec.next(wctx, r.freezeReq, r.serveFreeze)
		cancel()
		if err == nil || ctx.Err() != nil || !errors.Is(err, context.DeadlineExceeded) {
			return d, err
		}
		seq, err := jsstore.NextStoredSeq(ctx, r.js, r.cfg.Stream, r.p.LastSeq()+1)
		switch {
		case errors.Is(err, jetstream.ErrMsgNotFound), err == nil && seq > until:
			return decoded{}, errNothingStored
		case err != nil && ctx.Err() == nil:
			return decoded{}, fmt.Errorf("%s: next stored sequence: %w", r.cfg.Name, err)
		}
	}
}

func (r *Runner) maybePrune() {
	if r.cfg.PruneEvery < 0 {
		return
	}
	p, ok := r.p.(interface{ Prune(time.Time) })
	if !ok {
		return
	}
	if now := r.cfg.Now(); now.Sub(r.lastPrune) >= r.cfg.PruneEvery {
		r.lastPrune = now
		p.Prune(now)
	}
}

// decoded is one message read and decoded ahead of its application.
type decoded struct {
	seq, pending uint64
	subject      string
	event        ledger.Event
	err          error // decoding error, reported in order
}

// decoder hands decoded messages from the reading goroutine to the
// applying one, in stream order.
type decoder struct {
	ch     chan decoded
	decode func([]byte) (ledger.Event, error)
	done   chan struct{}
	err    error // read error, set before ch is closed
}

func newDecoder(decode func([]byte) (ledger.Event, error)) *decoder {
	return &decoder{decode: decode, ch: make(chan decoded, 1024), done: make(chan struct{})}
}

// push decodes msg and queues it; false when the consumer went away.
func (d *decoder) push(msg jetstream.Msg) bool {
	meta, err := msg.Metadata()
	if err != nil {
		d.fail(fmt.Errorf("message metadata: %w", err))
		return false
	}
	x := decoded{seq: meta.Sequence.Stream, pending: meta.NumPending, subject: msg.Subject()}
	x.event, x.err = d.decode(msg.Data())
	select {
	case d.ch <- x:
		return true
	case <-d.done:
		return false
	}
}

func (d *decoder) fail(err error) { d.err = err }

func (d *decoder) close() { close(d.ch) }

func (d *decoder) stop() { close(d.done) }

// next returns the next decoded message, or ctx's error once it ends: the
// reading goroutine may be stuck in the consumer's own retries (the stream
// was deleted, say) and must not hold up a shutdown. Meanwhile it hands
// every request on reqs to serve, between two events.
func (d *decoder) next(ctx context.Context, reqs <-chan chan []checkpointPart, serve func(chan []checkpointPart)) (decoded, error) {
	var x decoded
	var ok bool
	for wait := true; wait; {
		select {
		case x, ok = <-d.ch:
			wait = false
		case req := <-reqs:
			serve(req)
		case <-ctx.Done():
			return x, ctx.Err()
		}
	}
	if !ok {
		if d.err == nil {
			return x, errors.New("consumer stopped")
		}
		return x, d.err
	}
	return x, nil
}
