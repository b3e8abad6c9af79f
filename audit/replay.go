package audit

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/tokenledger/tokenledger/ledger"
)

// Filter selects events. Empty fields select everything; several values
// in one field are alternatives, and the fields combine with "and".
type Filter struct {
	// FamilyIDs are read with subject filters on the server, so replaying
	// one family costs only its events.
	FamilyIDs []string
	// Subjects and Clients select the families issued to those token
	// subjects or clients (from each family's family.issued event).
	Subjects []string
	Clients  []string
	// Rollouts selects the events of those rollouts (by id): the
	// rollout's own events and the families' events that name it (issued
	// at its version, moved onto it, refused by it).
	Rollouts []string
	// Types selects event types; it reads the type header, not the body.
	Types []ledger.EventType
	// Since and Until bound the events' occurred_at: Since <= t < Until.
	Since, Until time.Time
}

// ReplayOptions configures Replay.
type ReplayOptions struct {
	Filter
	// StartSeq is the first stream sequence to read (0: from the start).
	StartSeq uint64
	// Follow keeps printing new events until ctx ends.
	Follow bool
	// Format is FormatJSON (default) or FormatTable.
	Format string
	// Progress, when set, is told how far the scan got.
	Progress Progress
}

// Output formats.
const (
	FormatJSON  = "json"
	FormatTable = "table"
)

// ReplaySummary counts what a replay read and printed.
type ReplaySummary struct {
	Read    uint64 `json:"read"`
	Matched uint64 `json:"matched"`
	LastSeq uint64 `json:"last_seq"`
}

// Line is one line of the JSON Lines output: the stored event, verbatim,
// with where the stream keeps it.
type Line struct {
	Seq      uint64          `json:"seq"`
	Subject  string          `json:"subject"`
	StoredAt time.Time       `json:"stored_at"`
	Hash     string          `json:"hash"`
	Event    json.RawMessage `json:"event"`
}

// Replay prints the selected events to w in stream order, one per line.
func Replay(ctx context.Context, src *Source, opts ReplayOptions, w io.Writer) (ReplaySummary, error) {
	var sum ReplaySummary
	if opts.Format == "" {
		opts.Format = FormatJSON
	}
	if opts.Format != FormatJSON && opts.Format != FormatTable {
		return sum, fmt.Errorf("replay: format %q: want json or table", opts.Format)
	}
	scan := ScanOptions{StartSeq: opts.StartSeq, Follow: opts.Follow}
	for _, id := range opts.FamilyIDs {
		if !ledger.ValidFamilyID(id) {
			return sum, fmt.Errorf("replay: %q is not a family id", id)
		}
		scan.Subjects = append(scan.Subjects, src.FamilySubject(id))
	}
	sel := newSelector(src, opts.Filter)
	if opts.Progress != nil {
		state, err := src.State(ctx)
		if err != nil {
			return sum, err
		}
		opts.Progress.Start(state.LastSeq)
	}
	out := bufio.NewWriterSize(w, 256<<10)
	var line []byte
	if opts.Format == FormatTable {
		writeTableHeader(out)
	}
	err := src.Scan(ctx, scan, func(m Msg) error {
		sum.Read++
		sum.LastSeq = m.Seq
		if opts.Progress != nil && sum.Read%4096 == 0 {
			opts.Progress.Set(m.Seq)
		}
		ok, e, err := sel.match(ctx, m)
		if err != nil {
			return err
		}
		if !ok {
			return nil
		}
		sum.Matched++
		if opts.Format == FormatTable {
			if e == nil {
				ev, err := ledger.DecodeEventSkipState(m.Data)
				if err != nil {
					fmt.Fprintf(out, "%-9d undecodable event: %v\n", m.Seq, err)
					return flushIf(out, opts.Follow)
				}
				e = &ev
			}
			writeTableRow(out, m.Seq, *e)
		} else {
			line = appendLine(line[:0], m)
			out.Write(line)
		}
		return flushIf(out, opts.Follow)
	})
	if ferr := out.Flush(); err == nil {
		err = ferr
	}
	if opts.Progress != nil {
		opts.Progress.Finish(sum.LastSeq)
	}
	return sum, err
}

func flushIf(w *bufio.Writer, follow bool) error {
	if follow {
		return w.Flush()
	}
	return nil
}

// appendLine encodes m as a Line. The stored event is embedded verbatim
// when it is valid JSON, and as a JSON string otherwise, so every line
// parses even on a damaged ledger.
func appendLine(b []byte, m Msg) []byte {
	b = append(b, `{"seq":`...)
	b = strconv.AppendUint(b, m.Seq, 10)
	b = append(b, `,"subject":`...)
	b = strconv.AppendQuote(b, m.Subject)
	b = append(b, `,"stored_at":"`...)
	b = m.StoredAt.UTC().AppendFormat(b, time.RFC3339Nano)
	b = append(b, `","hash":"`...)
	b = append(b, ledger.EventHash(m.Data)...)
	if validJSON(m.Data) {
		b = append(b, `","event":`...)
		b = append(b, m.Data...)
	} else {
		b = append(b, `","invalid_event":`...)
		s, _ := json.Marshal(string(m.Data))
		b = append(b, s...)
	}
	return append(b, "}\n"...)
}

// validJSON reports whether an event embeds as JSON: a decoded event is
// (the ledger's codec reads the whole document), anything else gets
// encoding/json's verdict.
func validJSON(b []byte) bool {
	if _, err := ledger.DecodeEvent(b); err == nil {
		return true
	}
	return json.Valid(b)
}

// selector applies a Filter. Subject and client filters need each family's
// family.issued event: it is remembered as the scan passes it, or fetched
// with one direct get when the scan starts after it.
type selector struct {
	src      *Source
	f        Filter
	families map[string]bool // family -> selected by subject and client
}

func newSelector(src *Source, f Filter) *selector {
	return &selector{src: src, f: f, families: map[string]bool{}}
}

// match reports whether m is selected, and the decoded event when
// deciding needed it.
func (s *selector) match(ctx context.Context, m Msg) (bool, *ledger.Event, error) {
	if len(s.f.Types) > 0 && !slices.Contains(s.f.Types, m.Type) {
		return false, nil, nil
	}
	byFamily := len(s.f.Subjects) > 0 || len(s.f.Clients) > 0
	if !byFamily && len(s.f.Rollouts) == 0 && s.f.Since.IsZero() && s.f.Until.IsZero() {
		return true, nil, nil
	}
	e, err := ledger.DecodeEventSkipState(m.Data)
	if err != nil {
		// An undecodable event matches no filter on its content.
		return false, nil, nil
	}
	if !s.f.Since.IsZero() && e.OccurredAt.Before(s.f.Since) {
		return false, nil, nil
	}
	if !s.f.Until.IsZero() && !e.OccurredAt.Before(s.f.Until) {
		return false, nil, nil
	}
	if len(s.f.Rollouts) > 0 && !slices.Contains(s.f.Rollouts, EventRollout(e)) {
		return false, nil, nil
	}
	if byFamily {
		fam := s.src.familyOf(m.Subject)
		if fam == "" {
			return false, nil, nil
		}
		sel, known := s.families[fam]
		if !known {
			issued, ok := e.Data.(ledger.FamilyIssued)
			if !ok {
				if issued, err = s.src.issued(ctx, fam); err != nil {
					return false, nil, err
				}
			}
			sel = (len(s.f.Subjects) == 0 || slices.Contains(s.f.Subjects, issued.Subject)) &&
				(len(s.f.Clients) == 0 || slices.Contains(s.f.Clients, issued.ClientID))
			s.families[fam] = sel
		}
		if !sel {
			return false, nil, nil
		}
	}
	return true, &e, nil
}

// EventRollout is the id of the rollout an event belongs to or names, or
// "": a rollout's own events, a family issued at a rollout's version, a
// rotation that moved a family onto it, a refresh it refused.
func EventRollout(e ledger.Event) string {
	if r, ok := ledger.RolloutOf(e); ok {
		return r.ID
	}
	switch d := e.Data.(type) {
	case ledger.FamilyIssued:
		return d.RolloutID
	case ledger.RefreshRotated:
		return d.RolloutID
	case ledger.VersionRefused:
		return d.RolloutID
	}
	return ""
}

// issued returns a family's family.issued payload with one direct get of
// the first message on its subject.
func (s *Source) issued(ctx context.Context, familyID string) (ledger.FamilyIssued, error) {
	st, err := s.js.Stream(ctx, s.stream)
	if err != nil {
		return ledger.FamilyIssued{}, fmt.Errorf("stream %s: %w", s.stream, err)
	}
	raw, err := st.GetMsg(ctx, 1, jetstream.WithGetMsgSubject(s.FamilySubject(familyID)))
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return ledger.FamilyIssued{}, nil
	}
	if err != nil {
		return ledger.FamilyIssued{}, fmt.Errorf("first event of family %s: %w", familyID, err)
	}
	e, err := ledger.DecodeEvent(raw.Data)
	if err != nil {
		return ledger.FamilyIssued{}, nil // a damaged first event selects nothing
	}
	issued, _ := e.Data.(ledger.FamilyIssued)
	return issued, nil
}

func writeTableHeader(w io.Writer) {
	fmt.Fprintf(w, "%-9s %-24s %-26s %-26s %-15s %s\n", "SEQ", "OCCURRED_AT", "TYPE", "FAMILY", "CAUSE", "DETAIL")
}

func writeTableRow(w io.Writer, seq uint64, e ledger.Event) {
	fam := e.FamilyID
	if fam == "" {
		fam = "-"
	}
	cause := e.Cause.Kind
	if cause == "" {
		cause = "-"
	}
	fmt.Fprintf(w, "%-9d %-24s %-26s %-26s %-15s %s\n", seq,
		e.OccurredAt.UTC().Format("2006-01-02T15:04:05.000Z"), e.Type, fam, cause, detail(e))
}

// detail says in a few words what an event did.
func detail(e ledger.Event) string {
	switch d := e.Data.(type) {
	case ledger.FamilyIssued:
		return fmt.Sprintf("client=%s subject=%s scope=%q version=%d", d.ClientID, d.Subject, d.Scope, d.Version)
	case ledger.RefreshRotated:
		return fmt.Sprintf("generation %d -> %d, access %s", d.FromGeneration, d.ToGeneration, d.Access.JTI)
	case ledger.RefreshUsed:
		return fmt.Sprintf("generation %d kept, access %s", d.Generation, d.Access.JTI)
	case ledger.GraceRetried:
		return fmt.Sprintf("generation %d retried %v after rotation, answered with %d", d.PresentedGeneration, d.RotatedAgo, d.SuccessorGeneration)
	case ledger.ReuseDetected:
		return fmt.Sprintf("generation %d reused at %d, rotated %v before; family revoked", d.PresentedGeneration, d.CurrentGeneration, d.RotatedAgo)
	case ledger.FamilyRevoked:
		return strings.TrimSpace(fmt.Sprintf("at generation %d %s", d.Generation, e.Cause.Reason))
	case ledger.AccessRevoked:
		return fmt.Sprintf("access %s until %s", d.JTI, d.ExpiresAt.UTC().Format(time.RFC3339))
	case ledger.AccessCutoff:
		return fmt.Sprintf("access tokens so far denied, generation %d", d.Generation)
	case ledger.SecurityHandled:
		return fmt.Sprintf("%s/%s: %s %d families", d.EventType, d.Severity, d.Action, len(d.Families))
	case ledger.VersionRefused:
		return fmt.Sprintf("version %d below %d required by rollout %s since %s", d.Version, d.RequiredVersion, d.RolloutID, d.Deadline.UTC().Format(time.RFC3339))
	case ledger.RolloutStarted:
		return fmt.Sprintf("client=%s version %d at %d%%", d.Rollout.ClientID, d.Rollout.Version, d.Rollout.Percent)
	case ledger.RolloutRaised:
		return fmt.Sprintf("client=%s version %d: %d%% -> %d%%", d.Rollout.ClientID, d.Rollout.Version, d.FromPercent, d.Rollout.Percent)
	case ledger.RolloutDeadlineSet:
		return fmt.Sprintf("client=%s version %d: deadline %s", d.Rollout.ClientID, d.Rollout.Version, d.Rollout.Deadline.UTC().Format(time.RFC3339))
	case ledger.KeyPublished:
		return fmt.Sprintf("key %s (%s) published, signs from %s", d.KID, d.Alg, d.ActivatesAt.UTC().Format(time.RFC3339))
	case ledger.KeyActivated:
		return fmt.Sprintf("key %s (%s) signs from %s", d.KID, d.Alg, d.At.UTC().Format(time.RFC3339))
	case ledger.KeyRetired:
		return fmt.Sprintf("key %s retired, published until %s", d.KID, d.PublishedUntil.UTC().Format(time.RFC3339))
	case ledger.KeyRevoked:
		return fmt.Sprintf("key %s revoked: its tokens are inactive", d.KID)
	}
	return ""
}
