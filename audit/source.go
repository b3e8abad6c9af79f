package audit

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/tokenledger/tokenledger/ledger"
	"github.com/tokenledger/tokenledger/ledger/jsstore"
)

// Source reads a ledger stream with read-only permissions: ordered
// consumers (ephemeral, flow-controlled, recreated by the client on a gap)
// and stream info. It never creates a durable consumer and never writes.
type Source struct {
	js     jetstream.JetStream
	stream string
	prefix string
}

// NewSource returns a source over the named stream (jsstore.DefaultStream
// when empty) whose subjects start with prefix (jsstore.DefaultSubjectPrefix
// when empty). Tests point it at tampered copies of a ledger.
func NewSource(js jetstream.JetStream, stream, prefix string) *Source {
	if stream == "" {
		stream = jsstore.DefaultStream
	}
	if prefix == "" {
		prefix = jsstore.DefaultSubjectPrefix
	}
	return &Source{js: js, stream: stream, prefix: prefix}
}

// Stream is the name of the stream the source reads.
func (s *Source) Stream() string { return s.stream }

// FamilySubject is the subject a family's events are stored on.
func (s *Source) FamilySubject(familyID string) string {
	return s.prefix + ".family." + familyID
}

// familyOf returns the family id a subject names, or "" for a subject that
// belongs to no family (security.handled events).
func (s *Source) familyOf(subject string) string {
	if rest, ok := strings.CutPrefix(subject, s.prefix+".family."); ok {
		return rest
	}
	return ""
}

// Msg is one stored event as read from the stream, not yet decoded.
type Msg struct {
	Seq      uint64
	Subject  string
	StoredAt time.Time // the stream's timestamp
	Type     ledger.EventType
	Data     []byte
	// Pending is how many messages matching the scan's filter were still
	// in the stream after this one when it was delivered.
	Pending uint64
}

// ScanOptions selects what a scan reads.
type ScanOptions struct {
	// StartSeq is the first sequence to read (0 or 1: from the start).
	StartSeq uint64
	// Subjects filters on the server; empty reads the whole stream.
	Subjects []string
	// Follow keeps reading new messages until ctx ends; otherwise the scan
	// stops at the last message that matched when it was delivered.
	Follow bool
	// Batch is how many messages the client buffers (default 4096); the
	// byte limit scales with it.
	Batch int
}

// StreamState is the part of the stream's state an audit needs.
type StreamState struct {
	FirstSeq, LastSeq, Msgs uint64
}

// State returns the stream's current state.
func (s *Source) State(ctx context.Context) (StreamState, error) {
	st, err := s.js.Stream(ctx, s.stream)
	if err != nil {
		return StreamState{}, fmt.Errorf("stream %s: %w", s.stream, err)
	}
	info := st.CachedInfo()
	return StreamState{FirstSeq: info.State.FirstSeq, LastSeq: info.State.LastSeq, Msgs: info.State.Msgs}, nil
}

// errStop ends a scan early without an error.
var errStop = errors.New("stop scan")

// Scan delivers the stream's messages in sequence order to fn, one at a
// time, until the end (or ctx ends when following). fn may return errStop
// to end the scan early; any other error ends it and is returned. Each
// message's Data is its own copy, so fn may keep it.
//
// It consumes with a callback rather than an iterator: that costs less a
// message (the iterator arms and stops a heartbeat timer at every Next),
// which an audit of a million events feels. The ordered consumer calls back from its own
// goroutine, and from a new one after a reset, so fn is called under a
// lock and never again once Scan has returned.
func (s *Source) Scan(ctx context.Context, opts ScanOptions, fn func(Msg) error) error {
	st, err := s.js.Stream(ctx, s.stream)
	if err != nil {
		return fmt.Errorf("stream %s: %w", s.stream, err)
	}
	cfg := jetstream.OrderedConsumerConfig{
		FilterSubjects:    opts.Subjects,
		DeliverPolicy:     jetstream.DeliverAllPolicy,
		InactiveThreshold: time.Minute,
	}
	if opts.StartSeq > 1 {
		cfg.DeliverPolicy = jetstream.DeliverByStartSequencePolicy
		cfg.OptStartSeq = opts.StartSeq
	}
	cons, err := st.OrderedConsumer(ctx, cfg)
	if err != nil {
		return fmt.Errorf("ordered consumer on %s: %w", s.stream, err)
	}
	batch := opts.Batch
	if batch <= 0 {
		batch = 4096
	}
	var (
		mu      sync.Mutex
		stopped bool                  // under mu: fn is not called again
		done    = make(chan error, 1) // the outcome, sent once under mu
		failed  = make(chan error, 1) // the connection closed
	)
	finish := func(err error) { // with mu held
		stopped = true
		done <- err
	}
	handle := func(m jetstream.Msg) {
		mu.Lock()
		defer mu.Unlock()
		if stopped {
			return
		}
		md, err := m.Metadata()
		if err != nil {
			finish(fmt.Errorf("read %s: %w", s.stream, err))
			return
		}
		msg := Msg{
			Seq: md.Sequence.Stream, Subject: m.Subject(), StoredAt: md.Timestamp,
			Type: ledger.EventType(m.Headers().Get(jsstore.HeaderEventType)), Data: m.Data(),
			Pending: md.NumPending,
		}
		if err := fn(msg); err != nil {
			if errors.Is(err, errStop) {
				err = nil
			}
			finish(err)
			return
		}
		if !opts.Follow && md.NumPending == 0 {
			finish(nil)
		}
	}
	// The ordered consumer recreates itself on any other error; a closed
	// connection ends it.
	onErr := func(_ jetstream.ConsumeContext, err error) {
		if errors.Is(err, jetstream.ErrConnectionClosed) {
			select {
			case failed <- fmt.Errorf("read %s: %w", s.stream, err):
			default:
			}
		}
	}
	cc, err := cons.Consume(handle, jetstream.PullMaxMessagesWithBytesLimit(batch, batch*4096),
		jetstream.ConsumeErrHandler(onErr))
	if err != nil {
		return fmt.Errorf("read %s: %w", s.stream, err)
	}
	defer cc.Stop()
	if info := cons.CachedInfo(); !opts.Follow && info != nil && info.NumPending == 0 {
		err = nil
	} else {
		select {
		case err = <-done:
		case err = <-failed:
		case <-ctx.Done():
			err = ctx.Err()
			if opts.Follow && errors.Is(err, context.Canceled) {
				err = nil
			}
		}
	}
	mu.Lock()
	stopped = true
	mu.Unlock()
	return err
}
