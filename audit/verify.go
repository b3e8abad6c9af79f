package audit

import (
	"bytes"
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/maphash"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/tokenledger/tokenledger/ledger"
)

// Violation kinds: stable strings an auditor's tooling can match on.
const (
	KindGap        = "gap"        // stream sequences are missing
	KindTruncated  = "truncated"  // the stream ends before it should
	KindCheckpoint = "checkpoint" // the digest at a checkpoint differs
	KindDecode     = "decode"     // the stored bytes are not a ledger event
	KindSubject    = "subject"    // the event is on another family's subject
	KindAltered    = "altered"    // stored bytes differ from what the family's next event chained
	KindMissing    = "missing"    // events of the family are missing before this one
	KindInserted   = "inserted"   // the event is not in its family's chain
	KindReordered  = "reordered"  // the event is stored out of its family's order
	KindChain      = "chain"      // the hash chain is broken otherwise
	KindTransition = "transition" // the event is not a legal transition
	KindState      = "state"      // the state snapshot differs from the fold
)

// Violation is one thing wrong with the ledger, at the stream sequence
// where it is (for a removed event: where it was).
type Violation struct {
	Seq      uint64 `json:"seq"`
	Kind     string `json:"kind"`
	FamilyID string `json:"family_id,omitempty"`
	EventID  string `json:"event_id,omitempty"`
	Detail   string `json:"detail"`
}

// Checkpoint is a stream sequence and the ledger digest through it, as a
// previous verify reported them. Verifying against a checkpoint proves the
// ledger up to it is unchanged, and catches a truncated tail, which no
// per-family chain can.
type Checkpoint struct {
	Seq    uint64
	Digest string
}

// ParseCheckpoint parses "SEQ:DIGEST".
func ParseCheckpoint(s string) (Checkpoint, error) {
	seqS, digest, ok := strings.Cut(s, ":")
	seq, err := strconv.ParseUint(seqS, 10, 64)
	if !ok || err != nil || seq == 0 || len(digest) != 2*sha256.Size {
		return Checkpoint{}, fmt.Errorf("checkpoint %q: want SEQ:DIGEST (hex SHA-256)", s)
	}
	return Checkpoint{Seq: seq, Digest: strings.ToLower(digest)}, nil
}

// VerifyOptions selects what Verify checks.
type VerifyOptions struct {
	// FamilyID restricts verification to one family (read with a subject
	// filter); sequence gaps and the digest are then not checked.
	FamilyID string
	// Checkpoints are digests from earlier runs to check against.
	Checkpoints []Checkpoint
	// Workers is how many goroutines check families (default GOMAXPROCS).
	Workers int
	// Progress, when set, is told how far the scan got.
	Progress Progress
}

// Report is the outcome of Verify.
type Report struct {
	Stream   string `json:"stream"`
	FamilyID string `json:"family_id,omitempty"`
	// StreamLastSeq is the stream's last sequence when the scan began.
	StreamLastSeq uint64 `json:"stream_last_seq"`
	// LastSeq is the last sequence read and Digest the ledger digest
	// through it: record both as a checkpoint for the next run.
	LastSeq    uint64        `json:"last_seq"`
	Digest     string        `json:"digest,omitempty"`
	Events     uint64        `json:"events"`
	Families   int           `json:"families"`
	Elapsed    time.Duration `json:"elapsed_ns"`
	PerSecond  float64       `json:"events_per_second"`
	OK         bool          `json:"ok"`
	Violations []Violation   `json:"violations"`
}

// Digest chains every stored event in sequence order:
// d(n) = SHA-256(d(n-1) || big-endian seq(n) || SHA-256(event n)), d(0) all
// zeros. Two ledgers with the same digest at a sequence hold the same
// events up to it.
func nextDigest(d [sha256.Size]byte, seq uint64, eventHash [sha256.Size]byte) [sha256.Size]byte {
	var buf [2*sha256.Size + 8]byte
	copy(buf[:], d[:])
	binary.BigEndian.PutUint64(buf[sha256.Size:], seq)
	copy(buf[sha256.Size+8:], eventHash[:])
	return sha256.Sum256(buf[:])
}

// item is one message handed to a family worker.
type item struct {
	seq    uint64
	family string // from the subject; "" for events of no family
	// subject is set for events of no family only.
	subject string
	data    []byte
	hash    [sha256.Size]byte
}

// Verify reads the ledger (or one family) and checks that no stream
// sequence is missing, every family's hash chain holds, every event is a
// legal transition from the state before it, and every event's state
// snapshot equals the fold. It returns the violations it found; the error
// is for failures to read.
func Verify(ctx context.Context, src *Source, opts VerifyOptions) (Report, error) {
	start := time.Now()
	rep := Report{Stream: src.Stream(), FamilyID: opts.FamilyID, Violations: []Violation{}}
	state, err := src.State(ctx)
	if err != nil {
		return rep, err
	}
	rep.StreamLastSeq = state.LastSeq
	scan := ScanOptions{}
	whole := opts.FamilyID == ""
	if !whole {
		if !ledger.ValidFamilyID(opts.FamilyID) {
			return rep, fmt.Errorf("verify: %q is not a family id", opts.FamilyID)
		}
		scan.Subjects = []string{src.FamilySubject(opts.FamilyID)}
	}
	workers := opts.Workers
	if workers <= 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	if opts.Progress != nil {
		opts.Progress.Start(state.LastSeq)
	}

	ws := make([]*worker, workers)
	var wg sync.WaitGroup
	for i := range ws {
		ws[i] = &worker{in: make(chan []item, 8), families: map[string]*famState{}}
		wg.Go(ws[i].run)
	}
	seed := maphash.MakeSeed()
	batches := make([][]item, workers)
	for i := range batches {
		batches[i] = make([]item, 0, 256)
	}
	flush := func(i int) {
		if len(batches[i]) > 0 {
			ws[i].in <- batches[i]
			batches[i] = make([]item, 0, 256)
		}
	}
	var reader []Violation
	checkpoints := slices.Clone(opts.Checkpoints)
	slices.SortFunc(checkpoints, func(a, b Checkpoint) int { return cmp.Compare(a.Seq, b.Seq) })
	var digest [sha256.Size]byte
	var last uint64
	err = src.Scan(ctx, scan, func(m Msg) error {
		h := sha256.Sum256(m.Data)
		if whole {
			if m.Seq != last+1 {
				detail := fmt.Sprintf("stream sequence %d is missing", last+1)
				if m.Seq-1 > last+1 {
					detail = fmt.Sprintf("stream sequences %d to %d are missing", last+1, m.Seq-1)
				}
				reader = append(reader, Violation{Seq: last + 1, Kind: KindGap, Detail: detail})
			}
			digest = nextDigest(digest, m.Seq, h)
			for len(checkpoints) > 0 && checkpoints[0].Seq <= m.Seq {
				c := checkpoints[0]
				checkpoints = checkpoints[1:]
				if got := hex.EncodeToString(digest[:]); c.Seq != m.Seq || got != c.Digest {
					reader = append(reader, Violation{Seq: c.Seq, Kind: KindCheckpoint,
						Detail: fmt.Sprintf("digest through seq %d is %s, the checkpoint recorded %s: the ledger up to it changed", m.Seq, got, c.Digest)})
				}
			}
		}
		last = m.Seq
		rep.Events++
		i := 0
		fam := src.familyOf(m.Subject)
		if fam != "" {
			i = int(maphash.String(seed, fam) % uint64(workers))
		}
		it := item{seq: m.Seq, family: fam, data: m.Data, hash: h}
		if fam == "" {
			it.subject = m.Subject
		}
		batches[i] = append(batches[i], it)
		if len(batches[i]) == cap(batches[i]) {
			flush(i)
		}
		if opts.Progress != nil && m.Seq%4096 == 0 {
			opts.Progress.Set(m.Seq)
		}
		return nil
	})
	for i := range ws {
		flush(i)
		close(ws[i].in)
	}
	wg.Wait()
	if err != nil {
		return rep, err
	}
	if opts.Progress != nil {
		opts.Progress.Finish(last)
	}
	rep.LastSeq = last
	if whole {
		rep.Digest = hex.EncodeToString(digest[:])
		if state.LastSeq > last {
			reader = append(reader, Violation{Seq: last + 1, Kind: KindTruncated,
				Detail: fmt.Sprintf("the stream's last sequence is %d but its events end at %d", state.LastSeq, last)})
		}
		for _, c := range checkpoints {
			reader = append(reader, Violation{Seq: last + 1, Kind: KindTruncated,
				Detail: fmt.Sprintf("checkpoint at seq %d, but the ledger ends at seq %d: its tail was removed", c.Seq, last)})
		}
	}
	rep.Violations = append(rep.Violations, reader...)
	for _, w := range ws {
		rep.Families += len(w.families)
		rep.Violations = append(rep.Violations, w.violations...)
	}
	slices.SortStableFunc(rep.Violations, func(a, b Violation) int { return cmp.Compare(a.Seq, b.Seq) })
	rep.OK = len(rep.Violations) == 0
	rep.Elapsed = time.Since(start)
	if s := rep.Elapsed.Seconds(); s > 0 {
		rep.PerSecond = float64(rep.Events) / s
	}
	return rep, nil
}

// famState is what a worker remembers of one family: the fold, the last
// two links of its chain, so an inserted event can be recognised, and the
// hashes that later events said were missing, so a reordering can be. It
// is kept small: a million-event ledger holds one per family.
type famState struct {
	head, before       hash // zero before the first event
	headSeq, beforeSeq uint64
	fold               ledger.State
	headEvent          string
	awaiting           map[[sha256.Size]byte]int // missing hash -> index of its violation
}

// hash is a stored event's SHA-256, kept as bytes rather than hex so that
// following a chain allocates nothing; set is false before a family's first
// event (whose successor's prev is "").
type hash struct {
	sum [sha256.Size]byte
	set bool
}

// is reports whether prev, an event's hex link, names h ("" names the
// unset hash). It compares the lower-case hex the ledger writes, exactly.
func (h hash) is(prev string) bool {
	if !h.set {
		return prev == ""
	}
	var buf [2 * sha256.Size]byte
	hex.Encode(buf[:], h.sum[:])
	return string(buf[:]) == prev
}

func (h hash) String() string {
	if !h.set {
		return ""
	}
	return hex.EncodeToString(h.sum[:])
}

// parseHash reads a link that a hash can match: lower-case hex of 32 bytes.
func parseHash(prev string) ([sha256.Size]byte, bool) {
	var sum [sha256.Size]byte
	if len(prev) != 2*sha256.Size || strings.ToLower(prev) != prev {
		return sum, false
	}
	_, err := hex.Decode(sum[:], []byte(prev))
	return sum, err == nil
}

type worker struct {
	in         chan []item
	families   map[string]*famState
	violations []Violation
	folder     ledger.Folder
	rollouts   map[string]*rolloutChain // client id -> its rollout's chain
}

func (w *worker) run() {
	for batch := range w.in {
		for _, it := range batch {
			w.check(it)
		}
	}
}

func (w *worker) report(v Violation) int {
	w.violations = append(w.violations, v)
	return len(w.violations) - 1
}

func (w *worker) check(it item) {
	f := w.families[it.family]
	if f == nil && it.family != "" {
		f = &famState{}
		w.families[it.family] = f
	}
	if it.family == "" {
		e, err := ledger.DecodeEvent(it.data)
		if err != nil {
			w.report(Violation{Seq: it.seq, Kind: KindDecode, FamilyID: it.family, Detail: err.Error()})
			return
		}
		w.checkUnfamilied(it, e)
		return
	}
	// The usual event stores what its writer stores after the fold (a
	// schema-2 base, or a schema-1 snapshot), as EncodeEvent writes it:
	// the Folder settles that without decoding it. Otherwise the event
	// is decoded whole, as it always was.
	e, next, matched := w.folder.Decode(it.data, f.fold)
	snap := next // the stored snapshot
	var serr error
	if !matched {
		var err error
		if e, err = ledger.DecodeEvent(it.data); err != nil {
			w.report(Violation{Seq: it.seq, Kind: KindDecode, FamilyID: it.family, Detail: err.Error()})
			return
		}
		snap, serr = snapshot(e)
	}
	h := hash{sum: it.hash, set: true}
	if e.FamilyID != it.family {
		w.report(Violation{Seq: it.seq, Kind: KindSubject, FamilyID: it.family, EventID: e.ID,
			Detail: fmt.Sprintf("event of family %q stored on the subject of family %s", e.FamilyID, it.family)})
		return
	}
	v := Violation{Seq: it.seq, FamilyID: it.family, EventID: e.ID}

	if !f.head.is(e.Prev) {
		if i, ok := f.awaiting[it.hash]; ok {
			// An earlier event said this one was missing: it is stored
			// after its successor.
			delete(f.awaiting, it.hash)
			w.violations[i].Kind = KindReordered
			w.violations[i].Detail = fmt.Sprintf("the family's event %s at seq %d belongs before seq %d: events stored out of order", e.ID, it.seq, w.violations[i].Seq)
			return
		}
		switch {
		case f.before.set && f.before.is(e.Prev):
			v.Seq, v.Kind, v.EventID = f.headSeq, KindInserted, f.headEvent
			v.Detail = fmt.Sprintf("event at seq %d is not in the family's chain: the next event (seq %d) chains to seq %d", f.headSeq, it.seq, f.beforeSeq)
			w.report(v)
			if serr == nil {
				f.resync(it.seq, h, e.ID, snap)
				return
			}
			// No snapshot to trust: go on from the fold that includes
			// the inserted event.
			f.head, f.headSeq = f.before, f.beforeSeq
			v = Violation{Seq: it.seq, FamilyID: it.family, EventID: e.ID}
		case f.head.set && serr == nil && snap.Events == f.fold.Events+1:
			v.Seq, v.Kind, v.EventID = f.headSeq, KindAltered, f.headEvent
			v.Detail = fmt.Sprintf("stored event at seq %d hashes to %s, but the family's next event (seq %d) chained %s: the event at seq %d (or the link stored at seq %d) was altered", f.headSeq, f.head, it.seq, e.Prev, f.headSeq, it.seq)
			w.report(v)
			v = Violation{Seq: it.seq, FamilyID: it.family, EventID: e.ID}
		case serr == nil && snap.Events > f.fold.Events+1:
			n := snap.Events - f.fold.Events - 1
			v.Kind = KindMissing
			v.Detail = fmt.Sprintf("%d event(s) of the family are missing before seq %d (it chains %s)", n, it.seq, e.Prev)
			i := w.report(v)
			if prev, ok := parseHash(e.Prev); ok {
				if f.awaiting == nil {
					f.awaiting = map[[sha256.Size]byte]int{}
				}
				f.awaiting[prev] = i
			}
			f.resync(it.seq, h, e.ID, snap)
			return
		default:
			v.Kind = KindChain
			v.Detail = fmt.Sprintf("prev is %q, the family's previous event (seq %d) hashes to %q", e.Prev, f.headSeq, f.head)
			w.report(v)
			if serr == nil {
				f.resync(it.seq, h, e.ID, snap)
				return
			}
		}
	}

	if msg := transition(f.fold, e); msg != "" {
		v.Kind, v.Detail = KindTransition, msg
		w.report(v)
	}
	if !matched {
		next = ledger.Apply(f.fold, e)
		if !w.folder.Matches(it.data, next) {
			v.Kind = KindState
			v.Detail = "the stored state (a schema-2 base, a schema-1 snapshot) differs from the fold of the family's events"
			w.report(v)
			if serr == nil {
				next = snap
			}
		}
	}
	f.before, f.beforeSeq = f.head, f.headSeq
	f.head, f.headSeq, f.headEvent, f.fold = h, it.seq, e.ID, next
}

// resync trusts the stored snapshot after a break, so one tampered event
// is reported once, not again at every later event of the family.
func (f *famState) resync(seq uint64, h hash, eventID string, snap ledger.State) {
	f.before, f.beforeSeq = f.head, f.headSeq
	f.head, f.headSeq, f.headEvent, f.fold = h, seq, eventID, snap
}

// sameState reports whether the fold equals a stored state: whether the
// ledger encodes them alike (its structs are the one schema; Seq and Head
// are not encoded).
func sameState(fold ledger.State, stored *ledger.State) bool {
	if stored == nil {
		return false
	}
	a, errA := ledger.AppendState(nil, fold)
	b, errB := ledger.AppendState(nil, *stored)
	return errA == nil && errB == nil && bytes.Equal(a, b)
}

// snapshot is the event's stored state, to resynchronise on.
func snapshot(e ledger.Event) (ledger.State, error) {
	if e.State == nil {
		return ledger.State{}, errors.New("no state snapshot")
	}
	return *e.State, nil
}

func (w *worker) checkUnfamilied(it item, e ledger.Event) {
	v := Violation{Seq: it.seq, EventID: e.ID, FamilyID: e.FamilyID}
	if _, ok := ledger.RolloutOf(e); ok {
		w.checkRollout(it, e)
		return
	}
	switch {
	case ledger.IsKeyEvent(e.Type): // on ledger.keys.<kid>
		switch {
		case e.Cause.Kind == "":
			v.Kind, v.Detail = KindTransition, fmt.Sprintf("%s without a cause", e.Type)
		case e.State != nil || e.FamilyID != "":
			v.Kind, v.Detail = KindState, fmt.Sprintf("%s carries a family", e.Type)
		default:
			return
		}
	case e.Type != ledger.TypeSecurityHandled:
		v.Kind = KindSubject
		v.Detail = fmt.Sprintf("%s stored outside the family subjects", e.Type)
	case e.Cause.Kind == "":
		v.Kind = KindTransition
		v.Detail = "security.handled without a cause"
	case e.State != nil:
		v.Kind = KindState
		v.Detail = "security.handled carries a family state"
	default:
		return
	}
	w.report(v)
}

// rolloutChain is what a worker remembers of one client's rollout: its
// state and the hash of its last event, the link the next one carries.
type rolloutChain struct {
	state ledger.RolloutState
	head  hash
}

// checkRollout checks a rollout event (all of which reach the one worker
// of events outside the families, in stream order): its subject's hash
// chain and that it is a legal change of the client's rollout.
func (w *worker) checkRollout(it item, e ledger.Event) {
	next, _ := ledger.RolloutOf(e)
	if w.rollouts == nil {
		w.rollouts = map[string]*rolloutChain{}
	}
	c := w.rollouts[next.ClientID]
	if c == nil {
		c = &rolloutChain{}
		w.rollouts[next.ClientID] = c
	}
	v := Violation{Seq: it.seq, EventID: e.ID}
	switch {
	case it.subject != "" && !strings.HasSuffix(it.subject, ".rollout."+next.ClientID):
		v.Kind, v.Detail = KindSubject, fmt.Sprintf("rollout of %s stored on %s", next.ClientID, it.subject)
		w.report(v)
	case !c.head.is(e.Prev):
		v.Kind, v.Detail = KindChain, fmt.Sprintf("rollout of %s links %q, its previous event is %q", next.ClientID, e.Prev, c.head)
		w.report(v)
	}
	if why := ledger.CheckRolloutEvent(c.state, e); why != "" {
		v.Kind, v.Detail = KindTransition, why
		w.report(v)
	}
	c.state, c.head = ledger.ApplyRollout(c.state, e), hash{sum: it.hash, set: true}
}

// transition returns why e is not a legal event after state s, or "".
func transition(s ledger.State, e ledger.Event) string {
	if !s.Exists() {
		if e.Type != ledger.TypeFamilyIssued {
			return fmt.Sprintf("the family's first event is %s, not %s", e.Type, ledger.TypeFamilyIssued)
		}
		return ""
	}
	revoked := ""
	if s.Revoked != nil {
		revoked = fmt.Sprintf(" after the family was revoked (event %s, cause %s)", s.Revoked.EventID, s.Revoked.Cause.Kind)
	}
	switch d := e.Data.(type) {
	case ledger.FamilyIssued:
		return "family issued twice"
	case ledger.RefreshRotated:
		switch {
		case revoked != "":
			return "rotation" + revoked
		case d.FromGeneration != s.Generation:
			return fmt.Sprintf("rotation of generation %d, but the current generation is %d (a generation rotated twice?)", d.FromGeneration, s.Generation)
		case d.ToGeneration != d.FromGeneration+1:
			return fmt.Sprintf("rotation from generation %d to %d skips generations", d.FromGeneration, d.ToGeneration)
		}
	case ledger.RefreshUsed:
		switch {
		case revoked != "":
			return "refresh" + revoked
		case d.Generation != s.Generation:
			return fmt.Sprintf("refresh with generation %d, but the current generation is %d", d.Generation, s.Generation)
		}
	case ledger.GraceRetried:
		switch {
		case revoked != "":
			return "grace retry" + revoked
		case s.Previous == nil || d.PresentedGeneration != s.Previous.Generation || d.SuccessorGeneration != s.Generation:
			return fmt.Sprintf("grace retry of generation %d to %d, but the family is at generation %d", d.PresentedGeneration, d.SuccessorGeneration, s.Generation)
		}
	case ledger.ReuseDetected:
		switch {
		case revoked != "":
			return "reuse detected" + revoked
		case d.CurrentGeneration != s.Generation || d.PresentedGeneration >= s.Generation:
			return fmt.Sprintf("reuse of generation %d recorded at generation %d, but the family is at generation %d", d.PresentedGeneration, d.CurrentGeneration, s.Generation)
		}
	case ledger.FamilyRevoked:
		if e.Cause.Kind == "" {
			return "family revoked without a cause"
		}
	case ledger.AccessRevoked:
		if e.Cause.Kind == "" || d.JTI == "" {
			return "access token revoked without a cause or a jti"
		}
	case ledger.AccessCutoff:
		if e.Cause.Kind == "" {
			return "access cut off without a cause"
		}
	case ledger.SecurityHandled:
		return "security.handled stored on a family subject"
	case ledger.VersionRefused:
		switch {
		case revoked != "":
			return "version refusal" + revoked
		case d.Generation != s.Generation || d.Version != s.Version || d.RequiredVersion <= s.Version:
			return fmt.Sprintf("refusal of generation %d at version %d for version %d, but the family is at generation %d, version %d", d.Generation, d.Version, d.RequiredVersion, s.Generation, s.Version)
		}
	case ledger.RolloutStarted, ledger.RolloutRaised, ledger.RolloutDeadlineSet,
		ledger.KeyPublished, ledger.KeyActivated, ledger.KeyRetired, ledger.KeyRevoked:
		return fmt.Sprintf("%s stored on a family subject", e.Type)
	}
	return ""
}
