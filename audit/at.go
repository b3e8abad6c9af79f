package audit

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/tokenledger/tokenledger/ledger"
	"github.com/tokenledger/tokenledger/projections"
)

// EventRef names the event that made an answer so.
type EventRef struct {
	Seq        uint64           `json:"seq"`
	ID         string           `json:"id"`
	Type       ledger.EventType `json:"type"`
	OccurredAt time.Time        `json:"occurred_at"`
}

func ref(seq uint64, e ledger.Event) *EventRef {
	return &EventRef{Seq: seq, ID: e.ID, Type: e.Type, OccurredAt: e.OccurredAt}
}

// Statuses an answer of At can have.
const (
	StatusUnknown     = "unknown"      // nothing in the ledger by then
	StatusActive      = "active"       // family active, or access token valid
	StatusCurrent     = "current"      // the family's current refresh token
	StatusGrace       = "grace"        // rotated, but a retry now is answered with its successor
	StatusRotated     = "rotated"      // rotated away, outside the grace window
	StatusRevoked     = "revoked"      // revoked (family, or this access token)
	StatusCutOff      = "cut_off"      // access token denied by a family access cut-off
	StatusExpired     = "expired"      // past its lifetime
	StatusIdleExpired = "idle_expired" // refresh token past its idle lifetime
)

// AtOptions asks At about one instant.
type AtOptions struct {
	Time time.Time
	// At most one of these: the family, the refresh-token hash (as the
	// ledger stores it) or the access-token id to answer about. None: the
	// families active then.
	FamilyID    string
	RefreshHash string
	JTI         string
	// Grace is the grace window the service ran with (default 10s): a
	// token rotated less than Grace before Time is reported as "grace".
	Grace    time.Duration
	Progress Progress
}

// FamilyAt is a family as it was at the instant asked about.
type FamilyAt struct {
	FamilyID   string `json:"family_id"`
	ClientID   string `json:"client_id"`
	Subject    string `json:"subject"`
	Status     string `json:"status"`
	Generation uint64 `json:"generation"`
	Version    int    `json:"version"`
	// VersionRollout names the rollout that set Version (it moved the
	// family onto it, or the family was issued at it); empty for none.
	VersionRollout string    `json:"version_rollout,omitempty"`
	ExpiresAt      time.Time `json:"expires_at"`
	Issued         *EventRef `json:"issued"`
	Last           *EventRef `json:"last"`
}

// AtAnswer is what At found.
type AtAnswer struct {
	Time  time.Time `json:"time"`
	Query string    `json:"query"` // ledger, family, refresh_token, access_token
	Key   string    `json:"key,omitempty"`
	// Valid: the family was active, the refresh token current, or the
	// access token valid at Time.
	Valid  bool   `json:"valid"`
	Status string `json:"status"`
	Reason string `json:"reason"`
	// Event is the event that made the answer so.
	Event      *EventRef  `json:"event,omitempty"`
	Generation *uint64    `json:"generation,omitempty"`
	Family     *FamilyAt  `json:"family,omitempty"`
	Families   []FamilyAt `json:"families,omitempty"`
	// Active counts the families active at Time: set for a query of the
	// whole ledger only (a family or token query answers with Family).
	Active *int `json:"active_families,omitempty"`
	// ViewAgrees is whether the projections' valid-token view, folded from
	// the same events, gives the same answer.
	ViewAgrees bool   `json:"view_agrees"`
	LastSeq    uint64 `json:"last_seq"`
}

// famFold is one family folded with ledger.Apply, with the events that
// matter for answers.
type famFold struct {
	st      ledger.State
	issued  *EventRef
	last    *EventRef
	revoked *EventRef
	// by generation: the event that minted it and the rotation away.
	minted  map[uint64]*EventRef
	rotated map[uint64]*EventRef
	hashes  map[string]uint64 // refresh-token hash -> generation
	// access tokens: jti -> grant, its revocation, and the cut-offs.
	grants    map[string]grantAt
	accessRev map[string]*EventRef
	cutoffs   []cutoffAt
	// rollout set the family's version (see FamilyAt.VersionRollout).
	rollout string
}

// grantAt is an access token handed out, by the family's event number
// event (ledger.State.Events after it: the token's sid_event claim).
type grantAt struct {
	ref   *EventRef
	grant ledger.AccessGrant
	event uint64
}

// cutoffAt is an access cutoff, the family's event number event: it
// denies the tokens granted by earlier events.
type cutoffAt struct {
	ref   *EventRef
	event uint64
}

func (f *famFold) apply(seq uint64, e ledger.Event) {
	r := ref(seq, e)
	if f.minted == nil {
		f.minted, f.rotated = map[uint64]*EventRef{}, map[uint64]*EventRef{}
		f.hashes, f.grants, f.accessRev = map[string]uint64{}, map[string]grantAt{}, map[string]*EventRef{}
	}
	wasRevoked := f.st.Revoked != nil
	f.st = ledger.Apply(f.st, e)
	f.last = r
	if !wasRevoked && f.st.Revoked != nil {
		f.revoked = r
	}
	switch d := e.Data.(type) {
	case ledger.FamilyIssued:
		f.issued, f.rollout = r, d.RolloutID
		f.minted[0], f.hashes[d.TokenHash] = r, 0
		f.grants[d.Access.JTI] = grantAt{r, d.Access, f.st.Events}
	case ledger.RefreshRotated:
		f.rotated[d.FromGeneration] = r
		f.minted[d.ToGeneration], f.hashes[d.TokenHash] = r, d.ToGeneration
		if d.RolloutID != "" {
			f.rollout = d.RolloutID
		}
		f.grants[d.Access.JTI] = grantAt{r, d.Access, f.st.Events}
	case ledger.RefreshUsed:
		f.grants[d.Access.JTI] = grantAt{r, d.Access, f.st.Events}
	case ledger.GraceRetried:
		f.grants[d.Access.JTI] = grantAt{r, d.Access, f.st.Events}
	case ledger.AccessRevoked:
		if _, ok := f.accessRev[d.JTI]; !ok {
			f.accessRev[d.JTI] = r
		}
	case ledger.AccessCutoff:
		f.cutoffs = append(f.cutoffs, cutoffAt{r, f.st.Events})
	}
}

func (f *famFold) view(t time.Time) FamilyAt {
	st := f.st
	return FamilyAt{FamilyID: st.FamilyID, ClientID: st.ClientID, Subject: st.Subject,
		Status: string(st.StatusAt(t)), Generation: st.Generation, Version: st.Version,
		VersionRollout: f.rollout, ExpiresAt: st.ExpiresAt, Issued: f.issued, Last: f.last}
}

// At reconstructs the valid-token view as of opts.Time from the events that
// occurred at or before it, and answers about a family, a refresh token, an
// access token, or (with none given) which families were active.
func At(ctx context.Context, src *Source, opts AtOptions) (AtAnswer, error) {
	t := opts.Time
	if t.IsZero() {
		return AtAnswer{}, fmt.Errorf("at: a time is required")
	}
	if opts.Grace == 0 {
		opts.Grace = 10 * time.Second
	}
	ans := AtAnswer{Time: t, Query: "ledger"}
	scan := ScanOptions{}
	switch {
	case opts.FamilyID != "":
		if !ledger.ValidFamilyID(opts.FamilyID) {
			return ans, fmt.Errorf("at: %q is not a family id", opts.FamilyID)
		}
		ans.Query, ans.Key = "family", opts.FamilyID
		scan.Subjects = []string{src.FamilySubject(opts.FamilyID)}
	case opts.RefreshHash != "":
		ans.Query, ans.Key = "refresh_token", opts.RefreshHash
	case opts.JTI != "":
		ans.Query, ans.Key = "access_token", opts.JTI
	}
	if opts.Progress != nil {
		state, err := src.State(ctx)
		if err != nil {
			return ans, err
		}
		opts.Progress.Start(state.LastSeq)
	}
	// The whole ledger is folded when the question is about it; for one
	// token only the family holding it is, once it is found.
	targeted := opts.RefreshHash != "" || opts.JTI != ""
	families := map[string]*famFold{}
	var target string
	view := projections.NewView()
	err := src.Scan(ctx, scan, func(m Msg) error {
		ans.LastSeq = m.Seq
		if opts.Progress != nil && m.Seq%4096 == 0 {
			opts.Progress.Set(m.Seq)
		}
		fam := src.familyOf(m.Subject)
		if fam == "" || (targeted && target != "" && fam != target) {
			return nil
		}
		e, err := ledger.DecodeEventSkipState(m.Data)
		if err != nil || e.OccurredAt.After(t) {
			return nil // verify reports undecodable events
		}
		// Until the token turns up every family is folded (it may be one
		// whose earlier events were passed); then only its family.
		if targeted && target == "" && holds(e, opts.RefreshHash, opts.JTI) {
			target = fam
			for id := range families {
				if id != fam {
					delete(families, id)
				}
			}
		}
		view.Apply(m.Seq, e)
		f := families[fam]
		if f == nil {
			f = &famFold{}
			families[fam] = f
		}
		f.apply(m.Seq, e)
		return nil
	})
	if err != nil {
		return ans, err
	}
	if opts.Progress != nil {
		opts.Progress.Finish(ans.LastSeq)
	}
	switch ans.Query {
	case "ledger":
		ans.Families = []FamilyAt{}
		ans.ViewAgrees = true
		for id, f := range families {
			fv := f.view(t)
			pv, ok := view.Family(id)
			active := fv.Status == string(ledger.StatusActive)
			if ok && pv.ActiveAt(t) != active || !ok && active {
				ans.ViewAgrees = false
			}
			if active {
				ans.Families = append(ans.Families, fv)
			}
		}
		slices.SortFunc(ans.Families, func(a, b FamilyAt) int { return cmp.Compare(a.Issued.Seq, b.Issued.Seq) })
		active := len(ans.Families)
		ans.Active = &active
		ans.Valid = active > 0
		ans.Status = StatusActive
		ans.Reason = fmt.Sprintf("%d families active", active)
	case "family":
		answerFamily(&ans, families[opts.FamilyID], view, t)
	case "refresh_token":
		answerRefresh(&ans, families[target], opts.RefreshHash, view, t, opts.Grace)
	case "access_token":
		answerAccess(&ans, families[target], opts.JTI, view, t)
	}
	return ans, nil
}

// holds reports whether e mints the refresh token hash or grants the
// access token jti asked about.
func holds(e ledger.Event, hash, jti string) bool {
	switch d := e.Data.(type) {
	case ledger.FamilyIssued:
		return hash != "" && d.TokenHash == hash || jti != "" && d.Access.JTI == jti
	case ledger.RefreshRotated:
		return hash != "" && d.TokenHash == hash || jti != "" && d.Access.JTI == jti
	case ledger.RefreshUsed:
		return jti != "" && d.Access.JTI == jti
	case ledger.GraceRetried:
		return jti != "" && d.Access.JTI == jti
	}
	return false
}

// familyStatus answers for the family alone: revoked, expired or active.
func familyStatus(ans *AtAnswer, f *famFold, t time.Time) bool {
	fv := f.view(t)
	ans.Family = &fv
	switch f.st.StatusAt(t) {
	case ledger.StatusRevoked:
		ans.Status, ans.Event = StatusRevoked, f.revoked
		ans.Reason = fmt.Sprintf("family revoked at %s, cause %s", f.st.Revoked.At.Format(time.RFC3339Nano), f.st.Revoked.Cause.Kind)
		return false
	case ledger.StatusExpired:
		ans.Status, ans.Event = StatusExpired, f.issued
		ans.Reason = fmt.Sprintf("family expired at %s", f.st.ExpiresAt.Format(time.RFC3339Nano))
		return false
	}
	return true
}

func answerFamily(ans *AtAnswer, f *famFold, view *projections.View, t time.Time) {
	if f == nil || f.issued == nil {
		ans.Status, ans.Reason, ans.ViewAgrees = StatusUnknown, "no event of the family by then", true
		return
	}
	if familyStatus(ans, f, t) {
		ans.Valid, ans.Status, ans.Event = true, StatusActive, f.issued
		ans.Reason = fmt.Sprintf("issued, at generation %d", f.st.Generation)
	}
	pv, ok := view.Family(f.st.FamilyID)
	ans.ViewAgrees = ok && pv.ActiveAt(t) == ans.Valid
}

func answerRefresh(ans *AtAnswer, f *famFold, hash string, view *projections.View, t time.Time, grace time.Duration) {
	if f == nil {
		ans.Status, ans.Reason, ans.ViewAgrees = StatusUnknown, "no refresh token with this hash by then", true
		return
	}
	gen := f.hashes[hash]
	ans.Generation = &gen
	active := familyStatus(ans, f, t)
	pv, ok := view.Family(f.st.FamilyID)
	ans.ViewAgrees = ok && pv.ActiveAt(t) == active
	if !active {
		return
	}
	switch rot := f.rotated[gen]; {
	case rot == nil && !t.Before(f.st.RefreshExpiresAt):
		ans.Status, ans.Event = StatusIdleExpired, f.last
		ans.Reason = fmt.Sprintf("idle lifetime ended at %s", f.st.RefreshExpiresAt.Format(time.RFC3339Nano))
	case rot == nil:
		ans.Valid, ans.Status, ans.Event = true, StatusCurrent, f.minted[gen]
		ans.Reason = fmt.Sprintf("current refresh token, generation %d", gen)
		ans.ViewAgrees = ans.ViewAgrees && pv.Generation == gen
	case gen+1 == f.st.Generation && t.Sub(rot.OccurredAt) <= grace:
		ans.Status, ans.Event = StatusGrace, rot
		ans.Reason = fmt.Sprintf("rotated %v before, inside the %v grace window: a retry is answered with generation %d", t.Sub(rot.OccurredAt), grace, gen+1)
	default:
		ans.Status, ans.Event = StatusRotated, rot
		ans.Reason = fmt.Sprintf("rotated to generation %d at %s; presenting it after the grace window revokes the family", gen+1, rot.OccurredAt.Format(time.RFC3339Nano))
	}
}

func answerAccess(ans *AtAnswer, f *famFold, jti string, view *projections.View, t time.Time) {
	if f == nil {
		ans.Status, ans.Reason, ans.ViewAgrees = StatusUnknown, "no access token with this id by then", true
		return
	}
	g := f.grants[jti]
	issuedAt := g.ref.OccurredAt
	denied := view.AccessRevoked(jti, f.st.FamilyID, issuedAt, g.event, t)
	defer func() { ans.ViewAgrees = denied == (ans.Status == StatusRevoked || ans.Status == StatusCutOff) }()
	if !t.Before(g.grant.ExpiresAt) {
		fv := f.view(t)
		ans.Family = &fv
		ans.Status, ans.Event = StatusExpired, g.ref
		ans.Reason = fmt.Sprintf("expired at %s", g.grant.ExpiresAt.Format(time.RFC3339Nano))
		denied = false // the view does not judge expiry
		return
	}
	if !familyStatus(ans, f, t) {
		if ans.Status == StatusExpired {
			denied = false
		}
		return
	}
	if r := f.accessRev[jti]; r != nil {
		ans.Status, ans.Event, ans.Reason = StatusRevoked, r, "this access token was revoked"
		return
	}
	// Stream order decides: a cutoff denies the tokens granted by the
	// family's events before it, whatever the instances' clocks said.
	for _, c := range f.cutoffs {
		if g.event < c.event {
			ans.Status, ans.Event = StatusCutOff, c.ref
			ans.Reason = fmt.Sprintf("the family's access tokens granted before its event %d were cut off at %s",
				c.event, c.ref.OccurredAt.Format(time.RFC3339Nano))
			return
		}
	}
	ans.Valid, ans.Status, ans.Event = true, StatusActive, g.ref
	ans.Reason = fmt.Sprintf("granted, valid until %s", g.grant.ExpiresAt.Format(time.RFC3339Nano))
}
