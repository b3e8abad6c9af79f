package worker

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-json-experiment/json"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/sync/errgroup"

	"github.com/tokenledger/tokenledger/ledger"
	"github.com/tokenledger/tokenledger/ledger/jsstore"
)

// Defaults of the security-event worker (docs/contract.md §5).
const (
	DefaultSecurityStream      = "SECURITY_EVENTS"
	DefaultSecurityPrefix      = "security.events"
	DefaultDeadLetterStream    = "SECURITY_DEADLETTER"
	DefaultDeadLetterPrefix    = "security.deadletter"
	DefaultSecurityDurable     = "tokenledger-security"
	DefaultSecurityClaims      = "TOKENLEDGER_SECURITY_CLAIMS"
	DefaultMaxEventBytes       = 16 << 10
	DefaultSecurityMaxDeliver  = 5
	DefaultSecurityAckWait     = 30 * time.Second
	DefaultSecurityRetention   = 30 * 24 * time.Hour
	DefaultSecurityConcurrency = 4
)

// Headers of a dead-lettered security event.
const (
	HeaderDeadLetterReason     = "Tokenledger-Deadletter-Reason"
	HeaderDeadLetterSubject    = "Tokenledger-Deadletter-Subject"
	HeaderDeadLetterSequence   = "Tokenledger-Deadletter-Sequence"
	HeaderDeadLetterDeliveries = "Tokenledger-Deadletter-Deliveries"
)

// ErrInvalidEvent: a security event that can never be handled (bad JSON, no
// selector, unknown severity, bad signature). It is dead-lettered, not
// retried.
var ErrInvalidEvent = errors.New("invalid security event")

const maxReasonBytes = 1024

var eventTypePattern = regexp.MustCompile(`^[a-z0-9][a-z0-9_.-]{0,63}$`)

// SecurityEvent is a security event of docs/contract.md §5, decoded from its JSON form
// or mapped from a Security Event Token.
type SecurityEvent struct {
	ID         string    `json:"id"`
	Type       string    `json:"type"`
	OccurredAt time.Time `json:"occurred_at,omitzero"`
	Severity   Severity  `json:"severity"`
	Subject    string    `json:"subject,omitempty"`
	ClientID   string    `json:"client_id,omitempty"`
	FamilyID   string    `json:"family_id,omitempty"`
	Reason     string    `json:"reason,omitempty"`
}

// DecodeSecurityEvent decodes the JSON form strictly: at most limit bytes,
// one object, member names exactly as docs/contract.md §5 spells them (a name in
// another letter case is unknown), no member twice, no unknown member, and
// a valid event. Every error wraps ErrInvalidEvent and never quotes the
// body.
func DecodeSecurityEvent(body []byte, limit int) (SecurityEvent, error) {
	var ev SecurityEvent
	if err := decodeStrict(body, limit, &ev); err != nil {
		return SecurityEvent{}, fmt.Errorf("%w: %v", ErrInvalidEvent, err)
	}
	if err := ev.validate(); err != nil {
		return SecurityEvent{}, err
	}
	return ev, nil
}

func (ev SecurityEvent) validate() error {
	invalid := func(desc string) error { return fmt.Errorf("%w: %s", ErrInvalidEvent, desc) }
	if err := validText("id", ev.ID, 256); err != nil {
		return invalid(err.Error())
	}
	if !eventTypePattern.MatchString(ev.Type) {
		return invalid("type must be 1 to 64 of a-z, 0-9, '_', '.', '-'")
	}
	if !ev.Severity.Valid() {
		return invalid(fmt.Sprintf("unknown severity %q (want low, medium, high or critical)", clip(string(ev.Severity))))
	}
	if ev.Subject == "" && ev.ClientID == "" && ev.FamilyID == "" {
		return invalid("no selector: one of subject, client_id, family_id is required")
	}
	if ev.Subject != "" {
		if err := validText("subject", ev.Subject, 256); err != nil {
			return invalid(err.Error())
		}
	}
	if ev.ClientID != "" {
		if err := validText("client_id", ev.ClientID, 128); err != nil {
			return invalid(err.Error())
		}
	}
	if ev.FamilyID != "" && !ledger.ValidFamilyID(ev.FamilyID) {
		return invalid("family_id is not a token family id")
	}
	if ev.Reason != "" {
		if err := validText("reason", ev.Reason, maxReasonBytes); err != nil {
			return invalid(err.Error())
		}
	}
	return nil
}

// Selector finds the active families a security event selects. The
// projections' view implements it; the worker needs nothing more.
type Selector interface {
	FamiliesBySubject(subject string, now time.Time) []string
	FamiliesByClient(clientID string, now time.Time) []string
}

// Waiter waits until the Selector has folded the ledger stream up to seq, so
// a family issued just before an event is not missed.
type Waiter interface {
	WaitFor(ctx context.Context, seq uint64) error
}

// Config is what the security-event worker needs. Ledger and Selector
// are required; every other field has a default.
type Config struct {
	Ledger   *jsstore.Ledger
	Selector Selector
	// Waiter, when set, is waited on before each selection.
	Waiter Waiter
	// Policy maps type and severity to an action (default: DefaultPolicy).
	Policy Policy
	// Transmitters may send Security Event Tokens; without any, SETs are
	// dead-lettered.
	Transmitters []Transmitter

	Stream           string // intake stream, default DefaultSecurityStream
	SubjectPrefix    string // intake subjects prefix.>, default DefaultSecurityPrefix
	DeadLetterStream string // default DefaultDeadLetterStream
	DeadLetterPrefix string // default DefaultDeadLetterPrefix
	Durable          string // shared by every worker, default DefaultSecurityDurable
	ClaimBucket      string // default DefaultSecurityClaims
	Replicas         int    // default 1
	// Retention is how long intake events are kept (default 30 days).
	Retention time.Duration
	// DuplicateWindow is the intake's Nats-Msg-Id window (default 2 min).
	// Handling is once-only beyond it: see docs/security-events.md.
	DuplicateWindow time.Duration
	// MaxDeliver bounds deliveries of one event; the last failed one is
	// dead-lettered (default 5).
	MaxDeliver int
	// AckWait is the redelivery timeout and the claim lease (default 30 s);
	// the worker extends both while it works.
	AckWait time.Duration
	// MaxEventBytes bounds an event's size (default 16 KiB).
	MaxEventBytes int
	// Concurrency is how many events one worker handles at once (default 4).
	Concurrency int
	// FamilyConcurrency is how many families one event acts on at once
	// (default 16).
	FamilyConcurrency int
	// Name identifies this worker in claims (default a fresh ULID).
	Name string
	Log  *slog.Logger
}

func (c *Config) defaults() {
	def := func(s *string, v string) {
		if *s == "" {
			*s = v
		}
	}
	def(&c.Stream, DefaultSecurityStream)
	def(&c.SubjectPrefix, DefaultSecurityPrefix)
	def(&c.DeadLetterStream, DefaultDeadLetterStream)
	def(&c.DeadLetterPrefix, DefaultDeadLetterPrefix)
	def(&c.Durable, DefaultSecurityDurable)
	def(&c.ClaimBucket, DefaultSecurityClaims)
	if c.Replicas <= 0 {
		c.Replicas = 1
	}
	if c.Retention <= 0 {
		c.Retention = DefaultSecurityRetention
	}
	if c.DuplicateWindow <= 0 {
		c.DuplicateWindow = 2 * time.Minute
	}
	if c.MaxDeliver <= 0 {
		c.MaxDeliver = DefaultSecurityMaxDeliver
	}
	if c.AckWait <= 0 {
		c.AckWait = DefaultSecurityAckWait
	}
	if c.MaxEventBytes <= 0 {
		c.MaxEventBytes = DefaultMaxEventBytes
	}
	if c.Concurrency <= 0 {
		c.Concurrency = DefaultSecurityConcurrency
	}
	if c.FamilyConcurrency <= 0 {
		c.FamilyConcurrency = 16
	}
	if c.Policy.Default == nil && c.Policy.Types == nil {
		c.Policy = DefaultPolicy()
	}
	if c.Log == nil {
		c.Log = slog.New(slog.DiscardHandler)
	}
}

// CreateSecurityStreams creates or updates the intake and dead-letter
// streams, so events published while no worker runs are kept. serve calls
// it even when the worker is disabled.
func CreateSecurityStreams(ctx context.Context, js jetstream.JetStream, cfg Config) error {
	cfg.defaults()
	if strings.HasPrefix(cfg.DeadLetterPrefix+".", cfg.SubjectPrefix+".") || strings.HasPrefix(cfg.SubjectPrefix+".", cfg.DeadLetterPrefix+".") {
		return fmt.Errorf("security streams: subjects %s.> and %s.> overlap", cfg.SubjectPrefix, cfg.DeadLetterPrefix)
	}
	if _, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:        cfg.Stream,
		Description: "tokenledger security events: intake of the security-event worker",
		Subjects:    []string{cfg.SubjectPrefix + ".>"},
		Storage:     jetstream.FileStorage,
		Retention:   jetstream.LimitsPolicy,
		MaxAge:      cfg.Retention,
		Replicas:    cfg.Replicas,
		Duplicates:  cfg.DuplicateWindow,
	}); err != nil {
		return fmt.Errorf("security stream %s: %w", cfg.Stream, err)
	}
	if _, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:        cfg.DeadLetterStream,
		Description: "tokenledger security events set aside as invalid or failed, with the reason",
		Subjects:    []string{cfg.DeadLetterPrefix + ".>"},
		Storage:     jetstream.FileStorage,
		Retention:   jetstream.LimitsPolicy,
		Replicas:    cfg.Replicas,
		Duplicates:  2 * time.Minute,
	}); err != nil {
		return fmt.Errorf("dead-letter stream %s: %w", cfg.DeadLetterStream, err)
	}
	return nil
}

// Stats counts what a worker did since it started.
type Stats struct {
	Handled      uint64 // events acted on and recorded
	Duplicates   uint64 // events already handled, acknowledged without acting
	DeadLettered uint64 // events set aside as invalid or failed
	Retried      uint64 // deliveries that failed and were retried
}

// Backlog is how many security events wait on the shared consumer: not
// yet delivered, or delivered and not yet acknowledged.
func (w *Worker) Backlog(ctx context.Context) (uint64, error) {
	info, err := w.consumer.Info(ctx)
	if err != nil {
		return 0, fmt.Errorf("security consumer %s: %w", w.cfg.Durable, err)
	}
	return info.NumPending + uint64(info.NumAckPending), nil
}

// Worker acts on security events: it selects the families an event names,
// applies the policy's action through the ledger and records the handling.
// Several workers share one durable consumer and never act twice.
type Worker struct {
	cfg      Config
	js       jetstream.JetStream
	consumer jetstream.Consumer
	claims   jetstream.KeyValue
	sets     *setVerifier

	handled, duplicates, deadLettered, retried atomic.Uint64
}

// New validates the configuration and creates the streams, the shared
// durable consumer and the claims bucket.
func New(ctx context.Context, js jetstream.JetStream, cfg Config) (*Worker, error) {
	switch {
	case cfg.Ledger == nil:
		return nil, errors.New("worker: Ledger is required")
	case cfg.Selector == nil:
		return nil, errors.New("worker: Selector is required")
	}
	cfg.defaults()
	if err := cfg.Policy.Validate(); err != nil {
		return nil, err
	}
	if cfg.Name == "" {
		cfg.Name = cfg.Ledger.NewID()
	}
	sets, err := newSETVerifier(cfg.Transmitters, cfg.Ledger.Now)
	if err != nil {
		return nil, err
	}
	if err := CreateSecurityStreams(ctx, js, cfg); err != nil {
		return nil, err
	}
	consumer, err := js.CreateOrUpdateConsumer(ctx, cfg.Stream, jetstream.ConsumerConfig{
		Durable:       cfg.Durable,
		Description:   "tokenledger security-event workers (competing consumers)",
		DeliverPolicy: jetstream.DeliverAllPolicy,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       cfg.AckWait,
		MaxDeliver:    cfg.MaxDeliver,
		FilterSubject: cfg.SubjectPrefix + ".>",
		MaxAckPending: 1024,
		Replicas:      cfg.Replicas,
	})
	if err != nil {
		return nil, fmt.Errorf("security consumer %s: %w", cfg.Durable, err)
	}
	claims, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      cfg.ClaimBucket,
		Description: "which worker is handling which security event",
		TTL:         24 * time.Hour,
		Replicas:    cfg.Replicas,
	})
	if err != nil {
		return nil, fmt.Errorf("security claims bucket %s: %w", cfg.ClaimBucket, err)
	}
	return &Worker{cfg: cfg, js: js, consumer: consumer, claims: claims, sets: sets}, nil
}

// Stats returns the worker's counters.
func (w *Worker) Stats() Stats {
	return Stats{
		Handled: w.handled.Load(), Duplicates: w.duplicates.Load(),
		DeadLettered: w.deadLettered.Load(), Retried: w.retried.Load(),
	}
}

// Run pulls events until ctx ends, handling Concurrency of them at once,
// then waits for the events in hand.
func (w *Worker) Run(ctx context.Context) error {
	it, err := w.consumer.Messages(jetstream.PullMaxMessages(2 * w.cfg.Concurrency))
	if err != nil {
		return fmt.Errorf("security consumer: %w", err)
	}
	stop := context.AfterFunc(ctx, it.Stop)
	defer stop()
	jobs := make(chan jetstream.Msg)
	var wg sync.WaitGroup
	for range w.cfg.Concurrency {
		wg.Go(func() {
			for msg := range jobs {
				w.handle(ctx, msg)
			}
		})
	}
	w.cfg.Log.Info("security worker ready", "stream", w.cfg.Stream, "durable", w.cfg.Durable, "name", w.cfg.Name)
	for {
		msg, err := it.Next()
		if ctx.Err() != nil {
			break
		}
		if errors.Is(err, jetstream.ErrMsgIteratorClosed) {
			// Closed while we still run: the consumer hit a terminal error
			// (logged below when it came). Returning nil would leave the
			// service up with nobody handling security events.
			close(jobs)
			wg.Wait()
			return fmt.Errorf("security consumer %s: stopped reading: %w", w.cfg.Durable, err)
		}
		if errors.Is(err, jetstream.ErrConsumerDeleted) || errors.Is(err, jetstream.ErrConsumerNotFound) {
			close(jobs)
			wg.Wait()
			return fmt.Errorf("security consumer %s: %w", w.cfg.Durable, err)
		}
		if err != nil {
			// Missed heartbeats and the like: the iterator recovers.
			w.cfg.Log.Warn("security consumer", "error", err)
			select {
			case <-ctx.Done():
			case <-time.After(100 * time.Millisecond):
			}
			continue
		}
		jobs <- msg
	}
	close(jobs)
	wg.Wait()
	return nil
}

// handle takes one delivery to its end: acknowledged (handled or already
// handled), dead-lettered and terminated, or redelivered later.
func (w *Worker) handle(ctx context.Context, msg jetstream.Msg) {
	md, err := msg.Metadata()
	if err != nil {
		w.cfg.Log.Error("security event without metadata", "subject", msg.Subject(), "error", err)
		_ = msg.Term()
		return
	}
	log := w.cfg.Log.With("stream_seq", md.Sequence.Stream, "delivery", md.NumDelivered)
	ev, err := w.decode(msg.Data())
	if err != nil {
		w.deadLetter(ctx, msg, md, "invalid", err.Error(), log)
		return
	}
	log = log.With("event_id", ev.ID, "type", ev.Type, "severity", ev.Severity)
	err = w.process(ctx, msg, ev, log)
	switch {
	case err == nil:
		if err := msg.Ack(); err != nil {
			log.Warn("ack security event", "error", err) // redelivered, then found handled
		}
	case ctx.Err() != nil:
		_ = msg.Nak() // shutting down: another worker takes it over
	case int(md.NumDelivered) >= w.cfg.MaxDeliver:
		w.deadLetter(ctx, msg, md, "failed", fmt.Sprintf("gave up after %d deliveries: %v", md.NumDelivered, err), log)
	default:
		w.retried.Add(1)
		delay := min(250*time.Millisecond<<min(md.NumDelivered-1, 8), w.cfg.AckWait)
		log.Warn("security event failed; will retry", "error", err, "retry_in", delay)
		_ = msg.NakWithDelay(delay)
	}
}

// decode tells the two formats apart: a JSON object is the docs/contract.md §5 event,
// a compact JWS is a Security Event Token.
func (w *Worker) decode(body []byte) (SecurityEvent, error) {
	if len(body) > w.cfg.MaxEventBytes {
		return SecurityEvent{}, fmt.Errorf("%w: larger than %d bytes", ErrInvalidEvent, w.cfg.MaxEventBytes)
	}
	b := bytes.TrimSpace(body)
	switch {
	case len(b) > 0 && b[0] == '{':
		return DecodeSecurityEvent(b, w.cfg.MaxEventBytes)
	case bytes.Count(b, []byte(".")) == 2 && !bytes.ContainsAny(b, " \t\r\n{"):
		return w.sets.decode(string(b))
	}
	return SecurityEvent{}, fmt.Errorf("%w: neither a JSON event nor a Security Event Token", ErrInvalidEvent)
}

// process handles a valid event exactly once. The ledger is the record of
// what was handled: the event's handling is stored on ledger.security.<key>,
// one subject per event id, so "was it handled?" is one direct get however
// old the event is. A claim in a KV bucket, taken before that check, makes
// the check-act-record sequence exclusive across workers and fixes the
// instant the handling began, which makes a takeover after a crash repeat
// nothing.
func (w *Worker) process(ctx context.Context, msg jetstream.Msg, ev SecurityEvent, log *slog.Logger) (err error) {
	key := jsstore.SecurityKey(ev.ID)
	c, err := w.claim(ctx, msg, ev.ID, key)
	if errors.Is(err, errAlreadyHandled) {
		w.duplicates.Add(1)
		return nil
	}
	if err != nil {
		return err
	}
	hctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	rev := w.keepClaim(hctx, cancel, msg, key, c)
	defer func() { w.release(key, rev(), c.claimValue, err == nil) }()

	// Checked under the claim: a previous holder may have recorded the
	// event just before we took it.
	if done, err := w.cfg.Ledger.SecurityHandled(hctx, ev.ID); err != nil || done {
		if done {
			w.duplicates.Add(1)
			log.Debug("security event already handled")
		}
		return err
	}
	families, err := w.selectFamilies(hctx, ev)
	if err != nil {
		return fmt.Errorf("select families: %w", err)
	}
	action, err := w.cfg.Policy.Action(ev.Type, ev.Severity)
	if err != nil {
		return err
	}
	cause := ledger.Cause{Kind: ledger.CauseSecurity, ID: ev.ID, Reason: ev.Reason}
	if err := w.act(hctx, action, families, cause, c.StartedAt); err != nil {
		return fmt.Errorf("%s: %w", action, errors.Join(err, context.Cause(hctx)))
	}
	if err := w.record(hctx, ev, action, families, c.StartedAt); err != nil {
		return fmt.Errorf("record: %w", errors.Join(err, context.Cause(hctx)))
	}
	w.handled.Add(1)
	log.Info("security event handled", "action", action, "families", len(families))
	return nil
}

// claimValue is a claim on a security event. StartedAt, on the ledger's
// clock, survives a takeover: a family whose access tokens were cut at or
// after it needs no second cut.
type claimValue struct {
	Owner      string    `json:"owner"`
	StartedAt  time.Time `json:"started_at"`
	LeaseUntil time.Time `json:"lease_until"`
}

type claim struct {
	claimValue
	rev uint64
}

// claim takes the event's claim: a fresh one, or one whose lease ran out
// (its holder died). While another holder's lease runs it waits, keeping
// the delivery alive, rather than burning redeliveries.
func (w *Worker) claim(ctx context.Context, msg jetstream.Msg, eventID, key string) (claim, error) {
	wait := 20 * time.Millisecond
	lastProgress := time.Now()
	for {
		now := time.Now()
		v := claimValue{Owner: w.cfg.Name, StartedAt: w.cfg.Ledger.Now(), LeaseUntil: now.Add(w.cfg.AckWait)}
		b, _ := json.Marshal(v)
		rev, err := w.claims.Create(ctx, key, b)
		if err == nil {
			return claim{v, rev}, nil
		}
		if !errors.Is(err, jetstream.ErrKeyExists) {
			return claim{}, fmt.Errorf("%w: claim: %w", ledger.ErrUnavailable, err)
		}
		e, err := w.claims.Get(ctx, key)
		switch {
		case errors.Is(err, jetstream.ErrKeyNotFound):
			continue // released meanwhile
		case err != nil:
			return claim{}, fmt.Errorf("%w: claim: %w", ledger.ErrUnavailable, err)
		}
		var cur claimValue
		if err := json.Unmarshal(e.Value(), &cur); err != nil || cur.LeaseUntil.Before(now) {
			if err == nil {
				v.StartedAt = cur.StartedAt
			}
			b, _ := json.Marshal(v)
			if rev, err := w.claims.Update(ctx, key, b, e.Revision()); err == nil {
				return claim{v, rev}, nil
			}
			continue // someone else took it over first
		}
		// Another holder is at work: once it records, we are a duplicate.
		if done, err := w.cfg.Ledger.SecurityHandled(ctx, eventID); err != nil || done {
			if done {
				return claim{}, errAlreadyHandled
			}
			return claim{}, err
		}
		if time.Since(lastProgress) > w.cfg.AckWait/3 {
			_ = msg.InProgress()
			lastProgress = time.Now()
		}
		select {
		case <-ctx.Done():
			return claim{}, ctx.Err()
		case <-time.After(wait):
		}
		wait = min(2*wait, time.Second)
	}
}

var errAlreadyHandled = errors.New("security event already handled")

// keepClaim extends the claim's lease and the delivery's ack deadline
// while the event is handled. If the claim is lost (this worker stalled
// past its lease and another took over) it cancels the handling. The
// returned function stops it and returns the claim's last revision.
func (w *Worker) keepClaim(ctx context.Context, cancel context.CancelCauseFunc, msg jetstream.Msg, key string, c claim) func() uint64 {
	done := make(chan struct{})
	stopped := make(chan uint64, 1)
	go func() {
		rev := c.rev
		defer func() { stopped <- rev }()
		t := time.NewTicker(w.cfg.AckWait / 3)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-ctx.Done():
				return
			case <-t.C:
			}
			_ = msg.InProgress()
			c.LeaseUntil = time.Now().Add(w.cfg.AckWait)
			b, _ := json.Marshal(c.claimValue)
			r, err := w.claims.Update(ctx, key, b, rev)
			if err != nil {
				cancel(fmt.Errorf("claim on %s lost: %w", key, err))
				return
			}
			rev = r
		}
	}()
	return func() uint64 {
		close(done)
		return <-stopped
	}
}

// release gives up the claim if it is still ours. Once the event is
// handled (recorded, by us or before us) the claim is deleted. After a
// failure it is kept with its lease ended: the next delivery takes it over
// with its StartedAt, so the families this attempt already cut are not cut
// again. If this fails, the lease runs out or the bucket's TTL removes it.
func (w *Worker) release(key string, rev uint64, v claimValue, handled bool) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if handled {
		_ = w.claims.Delete(ctx, key, jetstream.LastRevision(rev))
		return
	}
	v.LeaseUntil = time.Time{}
	b, _ := json.Marshal(v)
	_, _ = w.claims.Update(ctx, key, b, rev)
}

// selectFamilies returns the active families the event selects, sorted.
// Selectors combine with AND: subject and client_id select that subject's
// families of that client; a family_id must also match the others given.
func (w *Worker) selectFamilies(ctx context.Context, ev SecurityEvent) ([]string, error) {
	if w.cfg.Waiter != nil {
		// Every event acknowledged so far (see Ledger.LastSeq).
		seq, err := w.cfg.Ledger.LastSeq(ctx)
		if err != nil {
			return nil, err
		}
		if err := w.cfg.Waiter.WaitFor(ctx, seq); err != nil {
			return nil, fmt.Errorf("wait for the families view: %w", err)
		}
	}
	if ev.FamilyID != "" {
		ok, err := w.cfg.Ledger.SecuritySelects(ctx, ev.FamilyID, ev.Subject, ev.ClientID)
		switch {
		case err != nil:
			return nil, err
		case !ok:
			return []string{}, nil
		}
		return []string{ev.FamilyID}, nil
	}
	now := w.cfg.Ledger.Now()
	var families []string
	switch {
	case ev.Subject != "" && ev.ClientID != "":
		byClient := map[string]bool{}
		for _, f := range w.cfg.Selector.FamiliesByClient(ev.ClientID, now) {
			byClient[f] = true
		}
		for _, f := range w.cfg.Selector.FamiliesBySubject(ev.Subject, now) {
			if byClient[f] {
				families = append(families, f)
			}
		}
	case ev.Subject != "":
		families = slices.Clone(w.cfg.Selector.FamiliesBySubject(ev.Subject, now))
	default:
		families = slices.Clone(w.cfg.Selector.FamiliesByClient(ev.ClientID, now))
	}
	slices.Sort(families)
	return slices.Compact(families), nil
}

// act applies the action to each family through the ledger, with the
// event's id as the cause. Both actions are idempotent: revoking a revoked
// family appends nothing, and a family whose access tokens were cut at or
// after the handling began is not cut again.
func (w *Worker) act(ctx context.Context, action Action, families []string, cause ledger.Cause, startedAt time.Time) error {
	var one func(ctx context.Context, fid string) error
	switch action {
	case ActionRecordOnly:
		return nil
	case ActionRevokeFamilies:
		one = func(ctx context.Context, fid string) error {
			_, err := w.cfg.Ledger.Revoke(ctx, fid, cause)
			return err
		}
	case ActionRevokeAccess:
		one = func(ctx context.Context, fid string) error {
			_, err := w.cfg.Ledger.CutAccessSince(ctx, fid, startedAt, cause)
			return err
		}
	default:
		return fmt.Errorf("unknown action %q", action)
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(w.cfg.FamilyConcurrency)
	for _, fid := range families {
		g.Go(func() error {
			if err := one(gctx, fid); err != nil && !errors.Is(err, ledger.ErrUnknownFamily) {
				return fmt.Errorf("family %s: %w", fid, err)
			}
			return nil
		})
	}
	return g.Wait()
}

// record appends the handling's record to the ledger, with the event's id
// as the cause: from then on the event is a duplicate.
func (w *Worker) record(ctx context.Context, ev SecurityEvent, action Action, families []string, startedAt time.Time) error {
	return w.cfg.Ledger.RecordSecurityHandled(ctx,
		ledger.Cause{Kind: ledger.CauseSecurity, ID: ev.ID, Reason: ev.Reason}, startedAt,
		ledger.SecurityHandled{
			EventType: ev.Type, Severity: string(ev.Severity), Action: string(action),
			Selector: &ledger.Selector{Subject: ev.Subject, ClientID: ev.ClientID, FamilyID: ev.FamilyID},
			Families: families,
		})
}

// deadLetter sets the event aside with the reason and terminates it. If
// the dead letter cannot be stored the delivery is retried instead, so an
// event is never dropped silently.
func (w *Worker) deadLetter(ctx context.Context, msg jetstream.Msg, md *jetstream.MsgMetadata, kind, reason string, log *slog.Logger) {
	reason = strings.Map(func(r rune) rune {
		if r == '\r' || r == '\n' {
			return ' '
		}
		return r
	}, reason)
	if len(reason) > 1024 {
		reason = strings.ToValidUTF8(reason[:1024], "")
	}
	dl := nats.NewMsg(w.cfg.DeadLetterPrefix + "." + kind)
	dl.Data = msg.Data()
	dl.Header.Set(HeaderDeadLetterReason, reason)
	dl.Header.Set(HeaderDeadLetterSubject, msg.Subject())
	dl.Header.Set(HeaderDeadLetterSequence, strconv.FormatUint(md.Sequence.Stream, 10))
	dl.Header.Set(HeaderDeadLetterDeliveries, strconv.FormatUint(md.NumDelivered, 10))
	pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if _, err := w.js.PublishMsg(pctx, dl, jetstream.WithMsgID(fmt.Sprintf("%s-%d", md.Stream, md.Sequence.Stream))); err != nil {
		log.Error("dead-letter security event; will retry", "reason", reason, "error", err)
		_ = msg.NakWithDelay(w.cfg.AckWait / 3)
		return
	}
	w.deadLettered.Add(1)
	log.Warn("security event dead-lettered", "reason", reason, "subject", msg.Subject())
	if err := msg.TermWithReason(clip(reason)); err != nil {
		log.Warn("terminate security event", "error", err)
	}
}
