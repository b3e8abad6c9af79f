package audit

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"time"

	"github.com/tokenledger/tokenledger/ledger"
	"github.com/tokenledger/tokenledger/projections"
)

// DiffOptions configures Diff.
type DiffOptions struct {
	// Now is the instant the views are compared at (default: time.Now).
	Now time.Time
	// LiveDigest, LiveSeq and LiveTime are what a live projections.View
	// reported: its Digest(LiveTime) after applying sequence LiveSeq. When
	// set, the view rebuilt from the log is checked against it.
	LiveDigest string
	LiveSeq    uint64
	LiveTime   time.Time
	// Checkpoint, when set, is a view checkpoint (loaded and verified by
	// projections.CheckpointStore.Load): the view rebuilt up to its
	// sequence is compared with it, at its instant, family by family.
	Checkpoint *projections.Checkpoint
	Progress   Progress
}

// Difference is one disagreement between two views of a family.
type Difference struct {
	FamilyID string `json:"family_id,omitempty"`
	// Between names the two sides: "view/fold" (the projections' view
	// against ledger.Apply), "fold/snapshot" (ledger.Apply against the
	// state the ledger stored with the family's last event),
	// "rebuilt/live" (digests) or "rebuilt/checkpoint" (digests, then
	// each family, revoked access token or exemption that differs).
	Between string `json:"between"`
	Field   string `json:"field"`
	A       string `json:"a"`
	B       string `json:"b"`
	Seq     uint64 `json:"seq,omitempty"`
}

// DiffReport is the outcome of Diff.
type DiffReport struct {
	Now           time.Time `json:"now"`
	LastSeq       uint64    `json:"last_seq"`
	Families      int       `json:"families"`
	RebuiltDigest string    `json:"rebuilt_digest"`
	LiveChecked   bool      `json:"live_checked"`
	// Checkpoint names the checkpoint compared (CheckpointChecked: the
	// log reached its sequence).
	Checkpoint        string       `json:"checkpoint,omitempty"`
	CheckpointChecked bool         `json:"checkpoint_checked,omitempty"`
	OK                bool         `json:"ok"`
	Differences       []Difference `json:"differences"`
}

// Diff rebuilds the projections' valid-token view from sequence 1 and
// compares it, family by family, with an independent fold (ledger.Apply)
// and with the state the live ledger stored with each family's last event;
// given a live view's digest, it also compares the rebuilt view with it at
// the same sequence and instant, and given a checkpoint, the view rebuilt
// up to its sequence with the checkpoint's.
func Diff(ctx context.Context, src *Source, opts DiffOptions) (DiffReport, error) {
	if opts.Now.IsZero() {
		opts.Now = time.Now()
	}
	rep := DiffReport{Now: opts.Now, Differences: []Difference{}}
	if opts.LiveDigest != "" && (opts.LiveSeq == 0 || opts.LiveTime.IsZero()) {
		return rep, fmt.Errorf("diff: a live digest needs the sequence and time it was taken at")
	}
	if opts.Progress != nil {
		st, err := src.State(ctx)
		if err != nil {
			return rep, err
		}
		opts.Progress.Start(st.LastSeq)
	}
	view := projections.NewView()
	type fam struct {
		fold    ledger.State
		stored  *ledger.State
		lastSeq uint64
	}
	families := map[string]*fam{}
	var order []string
	type revokedJTI struct {
		family string
		seq    uint64
		d      ledger.AccessRevoked
	}
	var jtis []revokedJTI
	checkLive := func() {
		rep.LiveChecked = true
		if got := view.Digest(opts.LiveTime); got != opts.LiveDigest {
			rep.Differences = append(rep.Differences, Difference{Between: "rebuilt/live", Field: "digest",
				A: got, B: opts.LiveDigest, Seq: opts.LiveSeq})
		}
	}
	cp := opts.Checkpoint
	if cp != nil {
		rep.Checkpoint = cp.Name
	}
	checkCheckpoint := func() {
		rep.CheckpointChecked = true
		got, want := view.Digest(cp.At), cp.View().Digest(cp.At)
		if got == want {
			return
		}
		rep.Differences = append(rep.Differences, Difference{Between: "rebuilt/checkpoint", Field: "digest",
			A: got, B: want, Seq: cp.Seq})
		for _, d := range projections.CompareViews(view, cp.View(), cp.At) {
			rep.Differences = append(rep.Differences, Difference{FamilyID: d.FamilyID, Between: "rebuilt/checkpoint",
				Field: d.Field, A: d.A, B: d.B, Seq: cp.Seq})
		}
	}
	err := src.Scan(ctx, ScanOptions{}, func(m Msg) error {
		if opts.LiveDigest != "" && !rep.LiveChecked && m.Seq > opts.LiveSeq {
			checkLive()
		}
		if cp != nil && !rep.CheckpointChecked && m.Seq > cp.Seq {
			checkCheckpoint()
		}
		rep.LastSeq = m.Seq
		if opts.Progress != nil && m.Seq%4096 == 0 {
			opts.Progress.Set(m.Seq)
		}
		e, err := ledger.DecodeEvent(m.Data)
		if err != nil {
			return nil // verify's business
		}
		view.Apply(m.Seq, e)
		id := src.familyOf(m.Subject)
		if id == "" {
			return nil
		}
		f := families[id]
		if f == nil {
			f = &fam{}
			families[id] = f
			order = append(order, id)
		}
		f.fold = ledger.Apply(f.fold, e)
		f.stored, f.lastSeq = e.State, m.Seq
		if d, ok := e.Data.(ledger.AccessRevoked); ok {
			jtis = append(jtis, revokedJTI{id, m.Seq, d})
		}
		return nil
	})
	if err != nil {
		return rep, err
	}
	if opts.LiveDigest != "" && !rep.LiveChecked {
		if rep.LastSeq < opts.LiveSeq {
			rep.Differences = append(rep.Differences, Difference{Between: "rebuilt/live", Field: "last_seq",
				A: fmt.Sprint(rep.LastSeq), B: fmt.Sprint(opts.LiveSeq)})
		} else {
			checkLive()
		}
	}
	if cp != nil && !rep.CheckpointChecked {
		if rep.LastSeq < cp.Seq {
			rep.Differences = append(rep.Differences, Difference{Between: "rebuilt/checkpoint", Field: "last_seq",
				A: fmt.Sprint(rep.LastSeq), B: fmt.Sprint(cp.Seq)})
		} else {
			checkCheckpoint()
		}
	}
	if opts.Progress != nil {
		opts.Progress.Finish(rep.LastSeq)
	}
	rep.RebuiltDigest = view.Digest(opts.Now)
	rep.Families = len(families)
	now := opts.Now
	for _, id := range order {
		f := families[id]
		add := func(between, field string, a, b any) {
			if fmt.Sprint(a) != fmt.Sprint(b) {
				rep.Differences = append(rep.Differences, Difference{FamilyID: id, Between: between,
					Field: field, A: fmt.Sprint(a), B: fmt.Sprint(b), Seq: f.lastSeq})
			}
		}
		st := f.fold
		if f.stored != nil {
			a, _ := json.Marshal(st)
			b, _ := json.Marshal(*f.stored)
			add("fold/snapshot", "state", string(a), string(b))
		}
		if !st.Exists() {
			continue // no family.issued: verify reports it
		}
		v, ok := view.Family(id)
		if !ok {
			add("view/fold", "exists", false, true)
			continue
		}
		add("view/fold", "client_id", v.ClientID, st.ClientID)
		add("view/fold", "subject", v.Subject, st.Subject)
		add("view/fold", "generation", v.Generation, st.Generation)
		add("view/fold", "version", v.Version, st.Version)
		add("view/fold", "active", v.ActiveAt(now), st.StatusAt(now) == ledger.StatusActive)
		add("view/fold", "revoked", v.Revoked, st.Revoked != nil)
		if st.Revoked != nil {
			add("view/fold", "revoked_cause", v.RevokedCause, st.Revoked.Cause.Kind)
		}
		add("view/fold", "access_cutoff", v.AccessCutoff.UnixNano(), unixNano(st.AccessCutoff))
		active := slices.Contains(view.FamiliesBySubject(st.Subject, now), id)
		add("view/fold", "listed_for_subject", active, st.StatusAt(now) == ledger.StatusActive)
	}
	for _, j := range jtis {
		if now.Before(j.d.ExpiresAt) && !view.AccessRevoked(j.d.JTI, j.family, time.Time{}, 0, now) {
			rep.Differences = append(rep.Differences, Difference{FamilyID: j.family, Between: "view/fold",
				Field: "access_revoked " + j.d.JTI, A: "false", B: "true", Seq: j.seq})
		}
	}
	rep.OK = len(rep.Differences) == 0
	return rep, nil
}

func unixNano(t time.Time) int64 {
	if t.IsZero() {
		return time.Time{}.UnixNano()
	}
	return t.UnixNano()
}
