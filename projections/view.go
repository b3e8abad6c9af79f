package projections

import (
	"bytes"
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"maps"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/oklog/ulid/v2"

	"github.com/tokenledger/tokenledger/ledger"
)

// View is the valid-token view: every family with its client, subject,
// generation, version and lifetimes, indexed by subject and by client, and
// the access tokens revoked before their expiry. It is folded from the
// ledger stream by a Runner and is safe for concurrent reads while one
// writer applies.
//
// Memory is kept compact for a million families: family ids are 16-byte
// keys, client ids and subjects are interned, instants are unix seconds
// (the access cutoff keeps nanoseconds, it is compared with event order),
// and the per-subject and per-client indexes are linked lists threaded
// through the family records rather than a slice or map per family.
type View struct {
	mu sync.RWMutex

	fams  []familyRec
	byKey map[[16]byte]uint32 // family key -> index in fams

	strs   []string // interned client ids and subjects; 0 is ""
	strIdx map[string]uint32
	causes []string // interned cause kinds; 0 is ""

	// subjectHead and clientHead are indexed like strs: for an interned
	// subject (client id), index+1 of its newest family, 0 for none.
	// Slices rather than maps: no hashing on the apply path, and a
	// checkpoint of millions of subjects loads without a map insert each.
	subjectHead []uint32
	clientHead  []uint32

	// revokedJTI maps the id of each revoked access token to its expiry.
	revokedJTI map[[16]byte]uint32
	// revokedOther holds revoked jtis that are not ULIDs (never written by
	// this ledger, kept so nothing is silently dropped).
	revokedOther map[string]uint32
	// exempt holds access tokens granted after a family's cutoff but in
	// the same second: their iat equals the cutoff's second, and only
	// event order tells them apart from the tokens the cutoff denies.
	exempt map[[16]byte]exemption

	// applied counts the events applied by type, and revocations of
	// families by cause kind: the ledger-wide rates operators watch
	// (rotations, grace retries, reuse detections, revocations).
	applied     map[ledger.EventType]uint64
	revocations map[string]uint64

	last   atomic.Uint64
	wmu    sync.Mutex
	notify chan struct{}
}

type exemption struct {
	family [16]byte
	exp    uint32
}

// familyRec is one family, 96 bytes.
type familyRec struct {
	key        [16]byte
	seq        uint64 // stream sequence of the family's last event
	generation uint64
	cutoff     int64 // unix ns of the latest access cutoff, 0 for none
	// events counts the family's events applied (ledger.State.Events);
	// cutoffEvent is the number of its latest access cutoff among them
	// (0 for none): access tokens granted by an earlier event are denied.
	events      uint32
	cutoffEvent uint32
	client      uint32
	subject     uint32
	nextSubject uint32 // index+1 of the previous family of the subject
	nextClient  uint32 // index+1 of the previous family of the client
	version     int32
	created     uint32
	rotated     uint32
	expires     uint32
	accessUntil uint32 // latest expiry of an access token handed out
	revokedAt   uint32
	cause       uint8
	revoked     bool
}

// FamilyView is one family as the view knows it. Instants have second
// precision, except AccessCutoff.
type FamilyView struct {
	ID         string
	ClientID   string
	Subject    string
	Generation uint64
	Version    int
	CreatedAt  time.Time
	RotatedAt  time.Time // zero if never rotated
	ExpiresAt  time.Time // absolute lifetime
	// AccessUntil is the latest expiry of any access token handed out for
	// the family: after it, no access token of the family can be valid.
	AccessUntil time.Time
	Revoked     bool
	RevokedAt   time.Time
	// RevokedCause is the cause kind (ledger.CauseReuse, CauseRevoke,
	// CauseAdmin, CauseSecurity); the full cause is in the ledger.
	RevokedCause string
	// AccessCutoff is when the latest access cutoff happened, and
	// CutoffEvent its number among the family's events: access tokens
	// granted by an earlier event are denied (tokens that carry no event
	// number, from older builds: those issued at or before AccessCutoff).
	AccessCutoff time.Time
	CutoffEvent  uint64
}

// ActiveAt reports whether the family is active at now: not revoked and
// within its absolute lifetime, as ledger.State.StatusAt decides.
func (f FamilyView) ActiveAt(now time.Time) bool {
	return !f.Revoked && now.Before(f.ExpiresAt)
}

// NewView returns an empty view.
func NewView() *View {
	return &View{
		byKey:        map[[16]byte]uint32{},
		strs:         []string{""},
		strIdx:       map[string]uint32{"": 0},
		causes:       []string{""},
		subjectHead:  []uint32{0},
		clientHead:   []uint32{0},
		revokedJTI:   map[[16]byte]uint32{},
		revokedOther: map[string]uint32{},
		exempt:       map[[16]byte]exemption{},
		applied:      map[ledger.EventType]uint64{},
		revocations:  map[string]uint64{},
	}
}

// Counts returns how many events of each type the view has applied, and
// how many families were revoked by each cause kind (the first revocation
// of a family counts). Both are copies.
func (v *View) Counts() (events map[ledger.EventType]uint64, revocations map[string]uint64) {
	v.mu.RLock()
	defer v.mu.RUnlock()
	return maps.Clone(v.applied), maps.Clone(v.revocations)
}

// LastSeq is the stream sequence of the last event applied.
func (v *View) LastSeq() uint64 { return v.last.Load() }

// WaitFor blocks until the view has applied sequence seq, or ctx ends. A
// caller that appended an event waits for its sequence to read its write.
func (v *View) WaitFor(ctx context.Context, seq uint64) error {
	for {
		v.wmu.Lock()
		if v.notify == nil {
			v.notify = make(chan struct{})
		}
		ch := v.notify
		v.wmu.Unlock()
		if v.last.Load() >= seq {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("view at seq %d waiting for %d: %w", v.last.Load(), seq, ctx.Err())
		}
	}
}

// Apply folds the event stored at stream sequence seq. A sequence at or
// below the last one applied is ignored, so redelivery changes nothing.
// Events that belong to no family only advance the sequence.
func (v *View) Apply(seq uint64, e ledger.Event) {
	v.mu.Lock()
	if seq <= v.last.Load() {
		v.mu.Unlock()
		return
	}
	v.apply(seq, e)
	if t := e.Type; t != "" {
		v.applied[t]++
	} else if e.Data != nil {
		v.applied[ledger.TypeOf(e.Data)]++
	}
	v.last.Store(seq)
	v.mu.Unlock()

	v.wmu.Lock()
	if v.notify != nil {
		close(v.notify)
		v.notify = nil
	}
	v.wmu.Unlock()
}

func (v *View) apply(seq uint64, e ledger.Event) {
	key, ok := parseKey(e.FamilyID)
	if !ok {
		return
	}
	if d, ok := e.Data.(ledger.FamilyIssued); ok {
		if _, exists := v.byKey[key]; exists {
			return
		}
		idx := uint32(len(v.fams))
		r := familyRec{
			key: key, seq: seq, client: v.intern(d.ClientID), subject: v.intern(d.Subject),
			version: int32(d.Version), created: secs(e.OccurredAt), expires: ceilSecs(d.ExpiresAt),
			accessUntil: ceilSecs(d.Access.ExpiresAt), events: 1,
		}
		r.nextSubject = v.subjectHead[r.subject]
		v.subjectHead[r.subject] = idx + 1
		r.nextClient = v.clientHead[r.client]
		v.clientHead[r.client] = idx + 1
		v.fams = append(v.fams, r)
		v.byKey[key] = idx
		return
	}
	idx, ok := v.byKey[key]
	if !ok {
		return // a family pruned or never issued: nothing can refer to it
	}
	r := &v.fams[idx]
	r.seq = seq
	r.events++
	switch d := e.Data.(type) {
	case ledger.RefreshRotated:
		r.generation = d.ToGeneration
		r.version = int32(d.Version)
		r.rotated = secs(e.OccurredAt)
		v.granted(r, e, d.Access)
	case ledger.RefreshUsed:
		v.granted(r, e, d.Access)
	case ledger.GraceRetried:
		v.granted(r, e, d.Access)
	case ledger.ReuseDetected:
		v.revoke(r, e.OccurredAt, ledger.CauseReuse)
	case ledger.FamilyRevoked:
		v.revoke(r, e.OccurredAt, e.Cause.Kind)
	case ledger.AccessRevoked:
		exp := ceilSecs(d.ExpiresAt)
		if k, ok := parseKey(d.JTI); ok {
			v.revokedJTI[k] = max(v.revokedJTI[k], exp)
		} else {
			v.revokedOther[d.JTI] = max(v.revokedOther[d.JTI], exp)
		}
	case ledger.AccessCutoff:
		r.cutoff = e.OccurredAt.UnixNano()
		r.cutoffEvent = r.events
		for k, x := range v.exempt {
			if x.family == r.key {
				delete(v.exempt, k)
			}
		}
	}
}

// granted records an access token handed out.
func (v *View) granted(r *familyRec, e ledger.Event, g ledger.AccessGrant) {
	exp := ceilSecs(g.ExpiresAt)
	r.accessUntil = max(r.accessUntil, exp)
	if r.cutoff != 0 && e.OccurredAt.Unix() == r.cutoff/int64(time.Second) {
		if k, ok := parseKey(g.JTI); ok {
			v.exempt[k] = exemption{family: r.key, exp: exp}
		}
	}
}

func (v *View) revoke(r *familyRec, at time.Time, cause string) {
	if r.revoked {
		return // the first revocation is the one that counts
	}
	r.revoked, r.revokedAt = true, secs(at)
	v.revocations[cause]++
	i := slices.Index(v.causes, cause)
	if i < 0 {
		i = len(v.causes)
		if i > 255 {
			i = 0 // more than 255 cause kinds: keep the revocation, lose the name
		} else {
			v.causes = append(v.causes, cause)
		}
	}
	r.cause = uint8(i)
}

func (v *View) intern(s string) uint32 {
	if i, ok := v.strIdx[s]; ok {
		return i
	}
	i := uint32(len(v.strs))
	s = string([]byte(s)) // do not pin the decoded event's buffer
	v.strs = append(v.strs, s)
	v.strIdx[s] = i
	v.subjectHead = append(v.subjectHead, 0)
	v.clientHead = append(v.clientHead, 0)
	return i
}

// Newer reports whether the view has applied an event of the family after
// stream sequence seq. It is the check jsstore.WithStateCache needs: the
// view reads every event of the stream, whoever appended it.
func (v *View) Newer(familyID string, seq uint64) bool {
	key, ok := parseKey(familyID)
	if !ok {
		return false
	}
	v.mu.RLock()
	defer v.mu.RUnlock()
	idx, ok := v.byKey[key]
	return ok && v.fams[idx].seq > seq
}

// Family returns the family, or false if the view does not know it.
func (v *View) Family(id string) (FamilyView, bool) {
	key, ok := parseKey(id)
	if !ok {
		return FamilyView{}, false
	}
	v.mu.RLock()
	defer v.mu.RUnlock()
	idx, ok := v.byKey[key]
	if !ok {
		return FamilyView{}, false
	}
	return v.familyView(&v.fams[idx]), true
}

func (v *View) familyView(r *familyRec) FamilyView {
	f := FamilyView{
		ID: ulid.ULID(r.key).String(), ClientID: v.strs[r.client], Subject: v.strs[r.subject],
		Generation: r.generation, Version: int(r.version),
		CreatedAt: unix(r.created), RotatedAt: unix(r.rotated), ExpiresAt: unix(r.expires),
		AccessUntil: unix(r.accessUntil), Revoked: r.revoked, RevokedAt: unix(r.revokedAt),
		RevokedCause: v.causes[r.cause],
	}
	if r.cutoff != 0 {
		f.AccessCutoff = time.Unix(0, r.cutoff).UTC()
		f.CutoffEvent = uint64(r.cutoffEvent)
	}
	return f
}

// FamiliesBySubject returns the ids of the subject's families active at
// now, oldest first.
func (v *View) FamiliesBySubject(subject string, now time.Time) []string {
	v.mu.RLock()
	defer v.mu.RUnlock()
	i, ok := v.strIdx[subject]
	if !ok {
		return nil
	}
	return v.collect(v.subjectHead[i], now, func(r *familyRec) uint32 { return r.nextSubject })
}

// FamiliesByClient returns the ids of the client's families active at now,
// oldest first.
func (v *View) FamiliesByClient(clientID string, now time.Time) []string {
	v.mu.RLock()
	defer v.mu.RUnlock()
	i, ok := v.strIdx[clientID]
	if !ok {
		return nil
	}
	return v.collect(v.clientHead[i], now, func(r *familyRec) uint32 { return r.nextClient })
}

// FamilyViewsBySubject returns the subject's families active at now,
// oldest first.
func (v *View) FamilyViewsBySubject(subject string, now time.Time) []FamilyView {
	v.mu.RLock()
	defer v.mu.RUnlock()
	i, ok := v.strIdx[subject]
	if !ok {
		return nil
	}
	var out []FamilyView
	n := now.Unix()
	for p := v.subjectHead[i]; p != 0; p = v.fams[p-1].nextSubject {
		if r := &v.fams[p-1]; r.activeAt(n) {
			out = append(out, v.familyView(r))
		}
	}
	slices.Reverse(out)
	return out
}

func (v *View) collect(head uint32, now time.Time, next func(*familyRec) uint32) []string {
	var out []string
	n := now.Unix()
	for p := head; p != 0; {
		r := &v.fams[p-1]
		if r.activeAt(n) {
			out = append(out, ulid.ULID(r.key).String())
		}
		p = next(r)
	}
	slices.Reverse(out) // the lists run newest first
	return out
}

func (r *familyRec) activeAt(now int64) bool { return !r.revoked && now < int64(r.expires) }

// AccessRevoked reports whether an unexpired access token is denied: its
// jti was revoked, its family (sid) was revoked, or the family's access was
// cut off after the event that granted it (grantEvent, its sid_event claim;
// for a token without one, 0, a cutoff at or after issuedAt). It does not
// check expiry or signature, nor that the family exists: an unknown family
// has revoked nothing.
func (v *View) AccessRevoked(jti string, sid string, issuedAt time.Time, grantEvent uint64, now time.Time) bool {
	jkey, jok := parseKey(jti)
	fkey, fok := parseKey(sid)
	v.mu.RLock()
	defer v.mu.RUnlock()
	if v.jtiRevoked(jti, jkey, jok, now.Unix()) {
		return true
	}
	if !fok {
		return false
	}
	idx, ok := v.byKey[fkey]
	if !ok {
		return false
	}
	return v.familyDenies(&v.fams[idx], jkey, jok, issuedAt, grantEvent)
}

// AccessActive reports whether the view lets an access token of family sid
// with id jti, issued at issuedAt by the family's event grantEvent, be
// active at now: the family is known and active (not revoked, within its
// lifetime) and AccessRevoked is false.
// It does not check the token's own signature or expiry. A family the view
// does not know (never issued, or pruned because nothing of it can be
// valid) lets nothing be active.
func (v *View) AccessActive(jti string, sid string, issuedAt time.Time, grantEvent uint64, now time.Time) bool {
	fkey, ok := parseKey(sid)
	if !ok {
		return false
	}
	jkey, jok := parseKey(jti)
	n := now.Unix()
	v.mu.RLock()
	defer v.mu.RUnlock()
	idx, ok := v.byKey[fkey]
	if !ok {
		return false
	}
	r := &v.fams[idx]
	return r.activeAt(n) && !v.jtiRevoked(jti, jkey, jok, n) && !v.familyDenies(r, jkey, jok, issuedAt, grantEvent)
}

// jtiRevoked reports whether the access token itself was revoked and is
// not yet past the expiry recorded with its revocation. v.mu is held.
func (v *View) jtiRevoked(jti string, jkey [16]byte, jok bool, n int64) bool {
	if jok {
		if exp, ok := v.revokedJTI[jkey]; ok && n < int64(exp) {
			return true
		}
	} else if exp, ok := v.revokedOther[jti]; ok && n < int64(exp) {
		return true
	}
	return false
}

// familyDenies reports whether the family denies its access token jti
// granted by its event grantEvent at issuedAt: the family is revoked, or
// its access was cut off by a later event. Stream order decides, never the
// clocks of the instances that issued and cut: only a token without an
// event number (from a build before it) is compared by time, cut off at or
// after issuedAt unless exempt. v.mu is held.
func (v *View) familyDenies(r *familyRec, jkey [16]byte, jok bool, issuedAt time.Time, grantEvent uint64) bool {
	if r.revoked {
		return true
	}
	if r.cutoff != 0 && grantEvent != 0 {
		return grantEvent < uint64(r.cutoffEvent)
	}
	if r.cutoff != 0 {
		iat, cut := issuedAt.Unix(), r.cutoff/int64(time.Second)
		if iat < cut {
			return true
		}
		if iat == cut {
			x, ok := v.exempt[jkey]
			return !(jok && ok && x.family == r.key)
		}
	}
	return false
}

// Len is the number of families the view holds (active or not, until
// pruned).
func (v *View) Len() int {
	v.mu.RLock()
	defer v.mu.RUnlock()
	return len(v.fams)
}

// relevant reports whether anything valid at now can still depend on the
// family: it is active, or an access token it handed out is unexpired.
func (r *familyRec) relevant(now int64) bool {
	return r.activeAt(now) || now < int64(r.accessUntil)
}

// Prune drops what can no longer matter at now: families that are neither
// active nor have an unexpired access token, and revoked access tokens past
// their expiry. Later events for a pruned family are ignored, which is safe
// because no token of it can be valid again. It costs one pass over the
// view under the write lock; the runner calls it rarely.
func (v *View) Prune(now time.Time) {
	n := now.Unix()
	v.mu.Lock()
	defer v.mu.Unlock()
	for k, exp := range v.revokedJTI {
		if n >= int64(exp) {
			delete(v.revokedJTI, k)
		}
	}
	for k, exp := range v.revokedOther {
		if n >= int64(exp) {
			delete(v.revokedOther, k)
		}
	}
	for k, x := range v.exempt {
		if n >= int64(x.exp) {
			delete(v.exempt, k)
		}
	}
	keep := 0
	for i := range v.fams {
		if v.fams[i].relevant(n) {
			keep++
		}
	}
	if keep == len(v.fams) {
		return
	}
	fams := make([]familyRec, 0, keep)
	byKey := make(map[[16]byte]uint32, keep)
	clear(v.subjectHead)
	clear(v.clientHead)
	for _, r := range v.fams {
		if !r.relevant(n) {
			continue
		}
		idx := uint32(len(fams))
		r.nextSubject = v.subjectHead[r.subject]
		v.subjectHead[r.subject] = idx + 1
		r.nextClient = v.clientHead[r.client]
		v.clientHead[r.client] = idx + 1
		fams = append(fams, r)
		byKey[r.key] = idx
	}
	v.fams, v.byKey = fams, byKey
}

// Digest is a stable SHA-256 over what is valid at now: every family that
// still matters (active, or with an unexpired access token) with all its
// fields, the unexpired revoked access tokens and the cutoff exemptions.
// Two views folded from the same events give the same digest whenever and
// however often they were pruned, so a live view can be checked against
// one rebuilt from sequence 1.
func (v *View) Digest(now time.Time) string {
	d, _ := v.DigestAt(now)
	return d
}

// DigestAt is Digest together with the sequence the view had applied when
// it was taken, both read under one lock: what a live view reports so an
// auditor can rebuild the view up to that sequence and compare.
func (v *View) DigestAt(now time.Time) (digest string, seq uint64) {
	n := now.Unix()
	v.mu.RLock()
	defer v.mu.RUnlock()
	seq = v.last.Load()
	// Sorted by key in a compact array of their own: sorting pointers
	// into the records reads a random record at every comparison.
	type keyed struct {
		hi, lo uint64 // the key, big-endian: their order is the key's
		idx    uint32
	}
	order := make([]keyed, 0, len(v.fams))
	for i := range v.fams {
		if r := &v.fams[i]; r.relevant(n) {
			order = append(order, keyed{binary.BigEndian.Uint64(r.key[:8]), binary.BigEndian.Uint64(r.key[8:]), uint32(i)})
		}
	}
	slices.SortFunc(order, func(a, b keyed) int {
		if c := cmp.Compare(a.hi, b.hi); c != 0 {
			return c
		}
		return cmp.Compare(a.lo, b.lo)
	})
	// The lines are what fmt.Fprintf(h, "f %x %q %q %d ...") wrote, built
	// by hand: fmt took most of the time of a digest of a million
	// families, which a checkpoint load pays (TestDigestFormat pins the
	// bytes to the fmt version).
	h := sha256.New()
	buf := make([]byte, 0, 64<<10)
	flush := func(force bool) {
		if force || len(buf) > 60<<10 {
			h.Write(buf)
			buf = buf[:0]
		}
	}
	// The family lines are formatted in batches by as many goroutines
	// as there are processors, and hashed in order.
	const batch = 8192
	workers := runtime.GOMAXPROCS(0)
	bufs := make([][]byte, workers)
	for lo := 0; lo < len(order); lo += batch * workers {
		var wg sync.WaitGroup
		for w := range workers {
			from := lo + w*batch
			if from >= len(order) {
				bufs[w] = bufs[w][:0]
				continue
			}
			to := min(from+batch, len(order))
			wg.Go(func() {
				b := bufs[w][:0]
				for _, o := range order[from:to] {
					b = v.appendFamilyLine(b, &v.fams[o.idx])
				}
				bufs[w] = b
			})
		}
		wg.Wait()
		for _, b := range bufs {
			h.Write(b)
		}
	}
	jtis := make([][16]byte, 0, len(v.revokedJTI))
	for k, exp := range v.revokedJTI {
		if n < int64(exp) {
			jtis = append(jtis, k)
		}
	}
	slices.SortFunc(jtis, compareKey)
	for _, k := range jtis {
		buf = append(buf, "j "...)
		buf = hex.AppendEncode(buf, k[:])
		buf = append(buf, ' ')
		buf = strconv.AppendUint(buf, uint64(v.revokedJTI[k]), 10)
		buf = append(buf, '\n')
		flush(false)
	}
	others := make([]string, 0, len(v.revokedOther))
	for k, exp := range v.revokedOther {
		if n < int64(exp) {
			others = append(others, k)
		}
	}
	slices.Sort(others)
	for _, k := range others {
		buf = append(buf, "o "...)
		buf = strconv.AppendQuote(buf, k)
		buf = append(buf, ' ')
		buf = strconv.AppendUint(buf, uint64(v.revokedOther[k]), 10)
		buf = append(buf, '\n')
		flush(false)
	}
	ex := make([][16]byte, 0, len(v.exempt))
	for k, x := range v.exempt {
		if n < int64(x.exp) {
			ex = append(ex, k)
		}
	}
	slices.SortFunc(ex, compareKey)
	for _, k := range ex {
		x := v.exempt[k]
		buf = append(buf, "x "...)
		buf = hex.AppendEncode(buf, k[:])
		buf = append(buf, ' ')
		buf = hex.AppendEncode(buf, x.family[:])
		buf = append(buf, ' ')
		buf = strconv.AppendUint(buf, uint64(x.exp), 10)
		buf = append(buf, '\n')
		flush(false)
	}
	flush(true)
	return hex.EncodeToString(h.Sum(nil)), seq
}

// appendFamilyLine appends the digest's line of the family r, and its
// cutoff line if it has one. v.mu is held.
func (v *View) appendFamilyLine(buf []byte, r *familyRec) []byte {
	buf = append(buf, "f "...)
	buf = hex.AppendEncode(buf, r.key[:])
	buf = append(buf, ' ')
	buf = appendQuote(buf, v.strs[r.client])
	buf = append(buf, ' ')
	buf = appendQuote(buf, v.strs[r.subject])
	buf = append(buf, ' ')
	buf = strconv.AppendUint(buf, r.generation, 10)
	buf = append(buf, ' ')
	buf = strconv.AppendInt(buf, int64(r.version), 10)
	for _, x := range [...]uint32{r.created, r.rotated, r.expires, r.accessUntil} {
		buf = append(buf, ' ')
		buf = strconv.AppendUint(buf, uint64(x), 10)
	}
	buf = append(buf, ' ')
	buf = strconv.AppendBool(buf, r.revoked)
	buf = append(buf, ' ')
	buf = strconv.AppendUint(buf, uint64(r.revokedAt), 10)
	buf = append(buf, ' ')
	buf = strconv.AppendQuote(buf, v.causes[r.cause])
	buf = append(buf, ' ')
	buf = strconv.AppendInt(buf, r.cutoff, 10)
	buf = append(buf, '\n')
	if r.cutoffEvent != 0 {
		buf = append(buf, "c "...)
		buf = hex.AppendEncode(buf, r.key[:])
		buf = append(buf, ' ')
		buf = strconv.AppendUint(buf, uint64(r.cutoffEvent), 10)
		buf = append(buf, '\n')
	}
	return buf
}

// appendQuote is strconv.AppendQuote, quicker for the strings that need
// no escaping (printable ASCII without quotes or backslashes).
func appendQuote(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x7f || c == '"' || c == '\\' {
			return strconv.AppendQuote(b, s)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}

func compareKey(a, b [16]byte) int { return bytes.Compare(a[:], b[:]) }

// parseKey turns a ULID string into its 16 bytes.
func parseKey(id string) ([16]byte, bool) {
	if len(id) != ulid.EncodedSize {
		return [16]byte{}, false
	}
	u, err := ulid.ParseStrict(id)
	if err != nil {
		return [16]byte{}, false
	}
	return u, true
}

// secs is t in unix seconds, clamped to what a uint32 holds (years 1970
// to 2106); zero stays zero.
func secs(t time.Time) uint32 {
	if t.IsZero() {
		return 0
	}
	s := t.Unix()
	switch {
	case s <= 0:
		return 0
	case s >= 1<<32-1:
		return 1<<32 - 1
	}
	return uint32(s)
}

// ceilSecs is secs rounded up: expiries are kept until their last instant.
func ceilSecs(t time.Time) uint32 {
	if t.IsZero() {
		return 0
	}
	if t.Truncate(time.Second).Equal(t) {
		return secs(t)
	}
	return secs(t.Add(time.Second))
}

func unix(s uint32) time.Time {
	if s == 0 {
		return time.Time{}
	}
	return time.Unix(int64(s), 0).UTC()
}
