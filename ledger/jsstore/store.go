package jsstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/tokenledger/tokenledger/ledger"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Defaults for the ledger stream.
const (
	DefaultStream        = "TOKENLEDGER"
	DefaultSubjectPrefix = "ledger"
)

// HeaderEventType carries the event type on every stored message so readers
// can filter without decoding.
const HeaderEventType = "Tokenledger-Event-Type"

// StoreConfig configures the JetStream event store.
type StoreConfig struct {
	Stream        string // default DefaultStream
	SubjectPrefix string // default DefaultSubjectPrefix
	Replicas      int    // default 1; 3 on a cluster
	// DuplicateWindow is how long message ids are remembered for
	// de-duplication (default 2 minutes). Only events outside the
	// families carry one (AppendTo); family appends are guarded by the
	// expected subject sequence.
	DuplicateWindow time.Duration
	// AttemptTimeout bounds each JetStream call (an append, a get) below
	// the request's own deadline (default DefaultAttemptTimeout). While
	// the stream elects a new leader nothing answers; the call then fails
	// with ledger.ErrUnavailable (temporarily_unavailable, 503) after
	// this long instead of waiting out the request. An append that timed
	// out may have been stored: the next attempt expects the subject's
	// last sequence, so it cannot land twice (a retried refresh is a
	// grace retry).
	AttemptTimeout time.Duration
	// HistoryMargin, when positive, lets every family's events expire
	// from the stream together, this long after the family's absolute
	// lifetime ends: each family event is appended with a per-message TTL
	// (Nats-TTL) reaching ExpiresAt+HistoryMargin. Events of no family
	// (rollouts, keys, handled security events) never expire. The archive
	// (EnsureArchive) keeps every event. Zero keeps every event in the
	// stream, as before.
	HistoryMargin time.Duration
	// Now is the clock the family lifetimes were decided with (default
	// time.Now): a family event's TTL is its ExpiresAt minus Now.
	Now func() time.Time
}

// DefaultAttemptTimeout is StoreConfig.AttemptTimeout's default: far
// above an append's latency on a loaded cluster (milliseconds), well
// below the service's request timeout (5 s) and a leader election
// (seconds).
const DefaultAttemptTimeout = time.Second

// Store is the ledger's event log on a JetStream stream. Every family's
// events live on their own subject; appends are conditional on that
// subject's last sequence.
type Store struct {
	js     jetstream.JetStream
	stream jetstream.Stream
	prefix string
	// directSubject is set when the stream has one replica; reads then
	// use direct gets. With more replicas any of them may answer a direct
	// get, and only the leader is sure to have every acknowledged append,
	// so reads go to the leader's API (getSubject) instead.
	directSubject string
	getSubject    string
	// attemptTimeout bounds each JetStream call (StoreConfig.AttemptTimeout).
	attemptTimeout time.Duration
	// historyMargin and now set family events' TTLs (StoreConfig).
	historyMargin time.Duration
	now           func() time.Time
	// bufs holds *[]byte buffers to encode appended events in: the
	// publish copies them into the connection's buffer, and nothing
	// keeps them after the append.
	bufs sync.Pool
}

// jsAPIPrefix is the JetStream API prefix js uses (as jetstream.New,
// NewWithAPIPrefix and NewWithDomain set it).
func jsAPIPrefix(js jetstream.JetStream) string {
	o := js.Options()
	switch {
	case o.Domain != "":
		return "$JS." + o.Domain + ".API."
	case o.APIPrefix != "":
		return strings.TrimSuffix(o.APIPrefix, ".") + "."
	}
	return jetstream.DefaultAPIPrefix
}

// NewStore creates or updates the ledger stream and returns a store on it.
// The stream denies delete and purge, de-duplicates by message id (the
// events AppendTo publishes) and allows direct gets.
func NewStore(ctx context.Context, js jetstream.JetStream, cfg StoreConfig) (*Store, error) {
	if cfg.Stream == "" {
		cfg.Stream = DefaultStream
	}
	if cfg.SubjectPrefix == "" {
		cfg.SubjectPrefix = DefaultSubjectPrefix
	}
	if cfg.Replicas == 0 {
		cfg.Replicas = 1
	}
	if cfg.DuplicateWindow == 0 {
		cfg.DuplicateWindow = 2 * time.Minute
	}
	if cfg.AttemptTimeout <= 0 {
		cfg.AttemptTimeout = DefaultAttemptTimeout
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	stream, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:        cfg.Stream,
		Description: "tokenledger event log: append-only, never deleted",
		Subjects:    []string{cfg.SubjectPrefix + ".>"},
		Storage:     jetstream.FileStorage,
		Retention:   jetstream.LimitsPolicy,
		Replicas:    cfg.Replicas,
		Duplicates:  cfg.DuplicateWindow,
		DenyDelete:  true,
		DenyPurge:   true,
		AllowDirect: true,
		Discard:     jetstream.DiscardNew,
		Compression: jetstream.S2Compression,
		// Per-message TTLs (HistoryMargin). Always on: the server never
		// lets an update turn them off again, and without a Nats-TTL
		// header a message never expires.
		AllowMsgTTL: true,
	})
	if err != nil {
		return nil, fmt.Errorf("ledger stream %s: %w", cfg.Stream, err)
	}
	st := &Store{js: js, stream: stream, prefix: cfg.SubjectPrefix,
		getSubject:     jsAPIPrefix(js) + "STREAM.MSG.GET." + cfg.Stream,
		attemptTimeout: cfg.AttemptTimeout, historyMargin: cfg.HistoryMargin, now: cfg.Now}
	if info := stream.CachedInfo(); info != nil && info.Config.Replicas <= 1 {
		st.directSubject = jsAPIPrefix(js) + "DIRECT.GET." + cfg.Stream
	}
	return st, nil
}

// Stream is the underlying stream, for readers such as projections.
func (s *Store) Stream() jetstream.Stream { return s.stream }

// FamilySubject is the subject all of a family's events are stored on.
func (s *Store) FamilySubject(familyID string) string {
	return s.prefix + ".family." + familyID
}

// SecuritySubject is the subject of the record of one handled security
// event (keyed by a subject-safe form of its id).
func (s *Store) SecuritySubject(key string) string {
	return s.prefix + ".security." + key
}

// Load returns the family's current state in one direct get: the state
// stored with its last event. A family with no events is the zero State.
func (s *Store) Load(ctx context.Context, familyID string) (ledger.State, error) {
	if !ledger.ValidFamilyID(familyID) {
		return ledger.State{}, ledger.ErrUnknownFamily
	}
	msg, err := s.LastMsg(ctx, s.FamilySubject(familyID))
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return ledger.State{}, nil
	}
	if err != nil {
		return ledger.State{}, fmt.Errorf("load family %s: %w", familyID, unavailable(err))
	}
	st, err := ledger.DecodeState(msg.Data)
	if err != nil {
		return ledger.State{}, fmt.Errorf("load family %s at seq %d: %w", familyID, msg.Sequence, err)
	}
	st.Seq, st.Head = msg.Sequence, ledger.EventHash(msg.Data)
	return st, nil
}

// LastMsg is the last message stored on subject, or
// jetstream.ErrMsgNotFound. It sees every append acknowledged before the
// call: a direct get with one replica, the leader's answer with more.
func (s *Store) LastMsg(ctx context.Context, subject string) (*jetstream.RawStreamMsg, error) {
	ctx, cancel := s.attempt(ctx)
	defer cancel()
	if s.directSubject != "" {
		return s.stream.GetLastMsgForSubject(ctx, subject)
	}
	return s.leaderGet(ctx, msgGetRequest{LastFor: subject})
}

// nextMsg is the first message on subject at or after seq, read as
// LastMsg reads.
func (s *Store) nextMsg(ctx context.Context, seq uint64, subject string) (*jetstream.RawStreamMsg, error) {
	ctx, cancel := s.attempt(ctx)
	defer cancel()
	if s.directSubject != "" {
		return s.stream.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(subject))
	}
	return s.leaderGet(ctx, msgGetRequest{Seq: seq, NextFor: subject})
}

// msgGetRequest is the JetStream API's message get request.
type msgGetRequest struct {
	Seq     uint64 `json:"seq,omitempty"`
	LastFor string `json:"last_by_subj,omitempty"`
	NextFor string `json:"next_by_subj,omitempty"`
}

// leaderGet asks the stream leader for a message (STREAM.MSG.GET, which
// only the leader answers).
func (s *Store) leaderGet(ctx context.Context, req msgGetRequest) (*jetstream.RawStreamMsg, error) {
	return leaderGetMsg(ctx, s.js, s.getSubject, req)
}

// leaderGetMsg sends a STREAM.MSG.GET request to subject (the API subject
// of one stream): only that stream's leader answers, so it has every
// acknowledged message.
func leaderGetMsg(ctx context.Context, js jetstream.JetStream, subject string, req msgGetRequest) (*jetstream.RawStreamMsg, error) {
	body, err := json.Marshal(req)
	if err != nil {
		return nil, err
	}
	reply, err := js.Conn().RequestWithContext(ctx, subject, body)
	if err != nil {
		return nil, err
	}
	var resp struct {
		Message *struct {
			Subject  string    `json:"subject"`
			Sequence uint64    `json:"seq"`
			Data     []byte    `json:"data"`
			Time     time.Time `json:"time"`
		} `json:"message"`
		Error *jetstream.APIError `json:"error"`
	}
	if err := json.Unmarshal(reply.Data, &resp); err != nil {
		return nil, fmt.Errorf("message get: %w", err)
	}
	switch {
	case resp.Error != nil && resp.Error.ErrorCode == jetstream.JSErrCodeMessageNotFound:
		return nil, jetstream.ErrMsgNotFound
	case resp.Error != nil:
		return nil, resp.Error
	case resp.Message == nil:
		return nil, errors.New("message get: empty reply")
	}
	m := resp.Message
	return &jetstream.RawStreamMsg{Subject: m.Subject, Sequence: m.Sequence, Data: m.Data, Time: m.Time}, nil
}

// NextStoredSeq is the sequence of the first message stored in the stream
// at or after seq, as the stream's leader answers, or
// jetstream.ErrMsgNotFound when there is none: how a reader tells that the
// sequences it has not seen expired (StoreConfig.HistoryMargin) rather
// than are still on their way.
func NextStoredSeq(ctx context.Context, js jetstream.JetStream, stream string, seq uint64) (uint64, error) {
	msg, err := leaderGetMsg(ctx, js, jsAPIPrefix(js)+"STREAM.MSG.GET."+stream, msgGetRequest{Seq: seq, NextFor: ">"})
	if err != nil {
		return 0, err
	}
	return msg.Sequence, nil
}

// EventAfter returns the family's first event stored after sequence seq,
// with its sequence: for a token minted at seq, the event that minted it.
func (s *Store) EventAfter(ctx context.Context, familyID string, seq uint64) (ledger.Event, uint64, error) {
	if !ledger.ValidFamilyID(familyID) {
		return ledger.Event{}, 0, ledger.ErrUnknownFamily
	}
	msg, err := s.nextMsg(ctx, seq+1, s.FamilySubject(familyID))
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return ledger.Event{}, 0, ledger.ErrUnknownFamily
	}
	if err != nil {
		return ledger.Event{}, 0, fmt.Errorf("family %s after seq %d: %w", familyID, seq, unavailable(err))
	}
	e, err := ledger.DecodeEvent(msg.Data)
	if err != nil {
		return ledger.Event{}, 0, fmt.Errorf("family %s at seq %d: %w", familyID, msg.Sequence, err)
	}
	return e, msg.Sequence, nil
}

// Append appends the events to the family whose state is st, each
// conditional on the family subject's last sequence, and returns the state
// after them. Each event gets the hash chain link and the state snapshot.
// If another writer got there first it returns ErrConflict and the caller
// reloads and decides again.
func (s *Store) Append(ctx context.Context, st ledger.State, events ...ledger.Event) (ledger.State, error) {
	buf, _ := s.bufs.Get().(*[]byte)
	if buf == nil {
		buf = new([]byte)
	}
	defer s.bufs.Put(buf)
	for _, e := range events {
		msg, next, err := s.familyMsg((*buf)[:0], st, e)
		if err != nil {
			return st, err
		}
		*buf = msg.Data
		// No Nats-Msg-Id: the expected subject sequence already makes a
		// repeated append fail (every attempt decides anew, with a new
		// event id, so an id would never match), and the stream's
		// de-duplication index is one entry per message for two minutes
		// that the server keeps and the garbage collector scans.
		actx, cancel := s.attempt(ctx)
		ack, err := s.js.PublishMsg(actx, msg,
			jetstream.WithExpectLastSequencePerSubject(st.Seq))
		cancel()
		if err != nil {
			return st, fmt.Errorf("append %s to family %s: %w", e.ID, e.FamilyID, translate(err))
		}
		next.Seq = ack.Sequence
		st = next
	}
	return st, nil
}

// FamilyMsg is the message Append publishes for e, the next event of the
// family whose state is st, and the state after it (its Head set, its Seq
// not: the stream assigns that). Tools that write a ledger in bulk, such
// as scripts/sizing, publish it themselves; everything else appends.
func (s *Store) FamilyMsg(st ledger.State, e ledger.Event) (*nats.Msg, ledger.State, error) {
	return s.familyMsg(nil, st, e)
}

// familyMsg encodes e into b (the hash chain link and the state after it
// included) as a message on the family's subject, with its type and TTL
// headers.
func (s *Store) familyMsg(b []byte, st ledger.State, e ledger.Event) (*nats.Msg, ledger.State, error) {
	e.Prev = st.Head
	next := ledger.Apply(st, e)
	snapshot := next
	e.State = &snapshot
	data, err := ledger.AppendEvent(b, e)
	if err != nil {
		return nil, st, err
	}
	msg := nats.NewMsg(s.FamilySubject(e.FamilyID))
	msg.Data = data
	msg.Header.Set(HeaderEventType, string(ledger.TypeOf(e.Data)))
	if ttl := s.familyTTL(next.ExpiresAt); ttl != "" {
		msg.Header.Set(jetstream.MsgTTLHeader, ttl)
	}
	next.Head = ledger.EventHash(data)
	return msg, next, nil
}

// familyTTL is the Nats-TTL of an event of a family that expires at
// expires: whole seconds until HistoryMargin after it, at least one; ""
// (no TTL) without a margin or an expiry. The server counts it from its
// own timestamp of the message, so the events of one family leave the
// stream within a second of each other, HistoryMargin after the family's
// end (give or take the clock offset the clock guard bounds).
func (s *Store) familyTTL(expires time.Time) string {
	if s.historyMargin <= 0 || expires.IsZero() {
		return ""
	}
	d := expires.Sub(s.now()) + s.historyMargin
	secs := max(int64((d+time.Second-1)/time.Second), 1)
	return strconv.FormatInt(secs, 10)
}

// AppendTo publishes an event that belongs to no family (such as a handled
// security event) on prefix.kind.key, de-duplicated by the event id.
func (s *Store) AppendTo(ctx context.Context, kind, key string, e ledger.Event) (uint64, error) {
	data, err := ledger.EncodeEvent(e)
	if err != nil {
		return 0, err
	}
	msg := nats.NewMsg(s.prefix + "." + kind + "." + key)
	if kind == "security" {
		msg.Subject = s.SecuritySubject(key)
	}
	msg.Data = data
	msg.Header.Set(HeaderEventType, string(ledger.TypeOf(e.Data)))
	actx, cancel := s.attempt(ctx)
	defer cancel()
	ack, err := s.js.PublishMsg(actx, msg, jetstream.WithMsgID(e.ID))
	if err != nil {
		return 0, fmt.Errorf("append %s: %w", e.ID, translate(err))
	}
	return ack.Sequence, nil
}

// LastSeq is the sequence of the stream's last stored message: every
// append acknowledged before the call and still stored is at or below it.
// It is read as LastMsg reads (a last-by-subject get on ">", which the
// server answers from its last sequence, so the cost does not grow with
// the number of families); with one replica the direct get is answered
// inline, without the JetStream API queue.
//
// When the message at the stream's last sequence has expired
// (HistoryMargin) that get finds nothing, and lastStored searches for the
// newest message still stored: only on a ledger that has had no append
// since its newest event expired.
func (s *Store) LastSeq(ctx context.Context) (uint64, error) {
	ctx, cancel := s.attempt(ctx)
	defer cancel()
	var (
		seq uint64
		err error
	)
	if s.directSubject != "" {
		seq, err = s.lastSeqDirect(ctx)
	} else {
		var msg *jetstream.RawStreamMsg
		if msg, err = s.leaderGet(ctx, msgGetRequest{LastFor: ">"}); err == nil {
			seq = msg.Sequence
		}
	}
	if errors.Is(err, jetstream.ErrMsgNotFound) { // empty, or its newest message expired
		seq, err = s.lastStored(ctx)
	}
	if err != nil {
		return 0, fmt.Errorf("ledger last sequence: %w", unavailable(err))
	}
	return seq, nil
}

// lastStored is the sequence of the newest message stored (0: none), found
// by bisecting the stream's sequences with the leader's next-message gets:
// about log2(last-first) round trips.
func (s *Store) lastStored(ctx context.Context) (uint64, error) {
	info, err := s.stream.Info(ctx)
	if err != nil {
		return 0, err
	}
	if info.State.Msgs == 0 {
		return 0, nil
	}
	lo, hi := info.State.FirstSeq, info.State.LastSeq // lo is stored
	for lo < hi {
		mid := lo + (hi-lo+1)/2
		seq, err := NextStoredSeq(ctx, s.js, s.stream.CachedInfo().Config.Name, mid)
		switch {
		case errors.Is(err, jetstream.ErrMsgNotFound):
			hi = mid - 1
		case err != nil:
			return 0, err
		default:
			lo = seq
		}
	}
	return lo, nil
}

// lastSeqDirect asks a direct get for the stream's last message.
func (s *Store) lastSeqDirect(ctx context.Context) (uint64, error) {
	msg, err := s.js.Conn().RequestWithContext(ctx, s.directSubject, lastAnyRequest)
	if err != nil {
		return 0, err
	}
	switch status := msg.Header.Get("Status"); status {
	case "":
	case "404":
		return 0, jetstream.ErrMsgNotFound
	default:
		return 0, fmt.Errorf("direct get: status %s %s", status, msg.Header.Get("Description"))
	}
	seq, err := strconv.ParseUint(msg.Header.Get(jetstream.SequenceHeader), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("direct get: sequence header: %w", err)
	}
	return seq, nil
}

// lastAnyRequest asks a direct get for the stream's last message.
var lastAnyRequest = []byte(`{"last_by_subj":">"}`)

// attempt bounds one JetStream call by the attempt timeout, within ctx.
func (s *Store) attempt(ctx context.Context) (context.Context, context.CancelFunc) {
	d := s.attemptTimeout
	if d <= 0 {
		d = DefaultAttemptTimeout
	}
	return context.WithTimeout(ctx, d)
}

func translate(err error) error {
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) {
		switch apiErr.ErrorCode {
		case jetstream.JSErrCodeStreamWrongLastSequence, jetstream.JSErrCodeStreamWrongLastSequenceConstant:
			return fmt.Errorf("%w (%s)", ledger.ErrConflict, apiErr.Description)
		}
	}
	return unavailable(err)
}

func unavailable(err error) error {
	if errors.Is(err, context.Canceled) {
		return err
	}
	return fmt.Errorf("%w: %w", ledger.ErrUnavailable, err)
}
