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

// Source reads a ledger stream, or its archive, with read-only
// permissions: ordered consumers (ephemeral, flow-controlled, recreated by
// the client on a gap) and stream info. It never creates a durable
// consumer and never writes.
type Source struct {
	js     jetstream.JetStream
	stream string
	prefix string
	// ledger is set when stream is the archive of that ledger stream
	// (jsstore.EnsureArchive): sequences are then the ledger's, read from
	// each copy's Nats-Stream-Source header.
	ledger string
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

// NewArchiveSource returns a source over archive, the archive of the
// ledger stream named ledger (jsstore.EnsureArchive): every event the
// ledger ever held, each under its ledger sequence, so a verify of the
// archive checks the same sequences, chains and digests as one of a
// ledger that never let an event expire.
func NewArchiveSource(js jetstream.JetStream, archive, ledger, prefix string) *Source {
	if ledger == "" {
		ledger = jsstore.DefaultStream
	}
	if archive == "" {
		archive = jsstore.ArchiveName(ledger)
	}
	s := NewSource(js, archive, prefix)
	s.ledger = ledger
	return s
}

// ArchiveCatchUp bounds how long OpenSource waits for the archive to copy
// what the ledger stream held when the audit began.
const ArchiveCatchUp = 10 * time.Second

// OpenSource returns the source audits read by default: the archive of the
// ledger stream, or the ledger stream itself when hot is set or when the
// archive does not exist (a deployment from before the archive); the
// second result then says so. The archive copies the ledger moments after
// each append: it first waits (up to ArchiveCatchUp) until the archive
// holds everything the ledger held at the call, so an audit sees what was
// just appended, and says so if the archive is further behind.
func OpenSource(ctx context.Context, js jetstream.JetStream, ledger, prefix string, hot bool) (*Source, string, error) {
	if ledger == "" {
		ledger = jsstore.DefaultStream
	}
	if hot {
		return NewSource(js, ledger, prefix), "", nil
	}
	archive := jsstore.ArchiveName(ledger)
	_, err := js.Stream(ctx, archive)
	switch {
	case errors.Is(err, jetstream.ErrStreamNotFound):
		return NewSource(js, ledger, prefix), fmt.Sprintf("no archive stream %s: reading the ledger stream %s", archive, ledger), nil
	case err != nil:
		return nil, "", fmt.Errorf("archive %s: %w", archive, err)
	}
	src := NewArchiveSource(js, archive, ledger, prefix)
	lag, err := jsstore.ReadArchiveLag(ctx, js, ledger, archive)
	for deadline := time.Now().Add(ArchiveCatchUp); err == nil && lag.Behind() > 0 && time.Now().Before(deadline); {
		select {
		case <-ctx.Done():
			return nil, "", ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
		var now jsstore.ArchiveLag
		if now, err = jsstore.ReadArchiveLag(ctx, js, ledger, archive); err == nil {
			lag.ArchiveLast = now.ArchiveLast // catching up with the ledger as it was
		}
	}
	switch {
	case err != nil:
		return nil, "", err
	case lag.Behind() > 0:
		return src, fmt.Sprintf("archive %s is %d sequences behind the ledger stream %s (last copied %d, ledger at %d): reading what it holds",
			archive, lag.Behind(), ledger, lag.ArchiveLast, lag.LedgerLast), nil
	}
	return src, "", nil
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

// State returns the stream's current state; for an archive, in ledger
// sequences.
func (s *Source) State(ctx context.Context) (StreamState, error) {
	st, err := s.js.Stream(ctx, s.stream)
	if err != nil {
		return StreamState{}, fmt.Errorf("stream %s: %w", s.stream, err)
	}
	info := st.CachedInfo()
	state := StreamState{FirstSeq: info.State.FirstSeq, LastSeq: info.State.LastSeq, Msgs: info.State.Msgs}
	if s.ledger == "" || state.Msgs == 0 {
		return state, nil
	}
	// The ledger sequences of the archive's first copy and of its last
	// sequence: the last copy may have been removed, and then the
	// archive's own last sequence still counts.
	off, err := s.archiveOffset(ctx, st)
	if err != nil {
		return StreamState{}, err
	}
	state.FirstSeq += off
	last := state.LastSeq
	state.LastSeq += off
	if m, err := st.GetMsg(ctx, last); err == nil {
		if seq, err := jsstore.ArchivedSeq(m.Header, s.ledger); err == nil {
			state.LastSeq = max(state.LastSeq, seq)
		}
	}
	return state, nil
}

// archiveOffset is how far the archive's own sequences are behind the
// ledger's (0 for an archive created with the ledger): where a scan of the
// archive from a ledger sequence starts.
func (s *Source) archiveOffset(ctx context.Context, st jetstream.Stream) (uint64, error) {
	first := st.CachedInfo().State.FirstSeq
	if first == 0 {
		return 0, nil
	}
	m, err := st.GetMsg(ctx, first)
	if err != nil {
		return 0, fmt.Errorf("archive %s seq %d: %w", s.stream, first, err)
	}
	seq, err := jsstore.ArchivedSeq(m.Header, s.ledger)
	if err != nil {
		return 0, fmt.Errorf("archive %s: %w", s.stream, err)
	}
	return seq - min(seq, first), nil
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
	if start := opts.StartSeq; start > 1 {
		if s.ledger != "" {
			// The archive's own sequence of ledger sequence start is at
			// most start - offset; earlier copies are skipped below.
			off, err := s.archiveOffset(ctx, st)
			if err != nil {
				return err
			}
			start = max(start-min(start, off), 1)
		}
		cfg.DeliverPolicy = jetstream.DeliverByStartSequencePolicy
		cfg.OptStartSeq = start
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
		if s.ledger != "" {
			if msg.Seq, err = jsstore.ArchivedSeq(m.Headers(), s.ledger); err != nil {
				finish(fmt.Errorf("read %s seq %d: %w", s.stream, md.Sequence.Stream, err))
				return
			}
		}
		if msg.Seq >= opts.StartSeq { // an archive's scan may start before it
			if err := fn(msg); err != nil {
				if errors.Is(err, errStop) {
					err = nil
				}
				finish(err)
				return
			}
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
