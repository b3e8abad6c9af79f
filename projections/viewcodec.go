package projections

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/tokenledger/tokenledger/ledger"
)

// The binary encoding of the read models in a checkpoint (checkpoint.go
// frames them). Everything is little-endian; counts and most integers are
// uvarints; maps are written in key order, so one state always encodes to
// the same bytes. What the models can rebuild (the view's key index, its
// string index and its per-subject and per-client lists) is not written.

// errCorrupt is a checkpoint part that does not decode.
var errCorrupt = errors.New("corrupt checkpoint")

// freeze copies the view's state into a view no one else sees, for a
// checkpoint to encode and digest off the runner's goroutine. The family
// records are copied in one piece; strings are shared (immutable, and the
// interned ones are only ever appended). Indexes are not copied: encode and
// DigestAt do not read them.
func (v *View) freeze() *View {
	v.mu.RLock()
	defer v.mu.RUnlock()
	f := &View{
		fams:         slices.Clone(v.fams),
		strs:         v.strs[:len(v.strs):len(v.strs)],
		causes:       slices.Clone(v.causes),
		revokedJTI:   maps.Clone(v.revokedJTI),
		revokedOther: maps.Clone(v.revokedOther),
		exempt:       maps.Clone(v.exempt),
		applied:      maps.Clone(v.applied),
		revocations:  maps.Clone(v.revocations),
	}
	f.last.Store(v.last.Load())
	return f
}

// appendEncoded appends the view's state in the checkpoint encoding.
func (v *View) appendEncoded(b []byte) []byte {
	v.mu.RLock()
	defer v.mu.RUnlock()
	b = binary.AppendUvarint(b, v.last.Load())
	b = binary.AppendUvarint(b, uint64(len(v.strs)-1)) // strs[0] is always ""
	for _, s := range v.strs[1:] {
		b = appendString(b, s)
	}
	b = binary.AppendUvarint(b, uint64(len(v.causes)-1))
	for _, s := range v.causes[1:] {
		b = appendString(b, s)
	}
	b = binary.AppendUvarint(b, uint64(len(v.fams)))
	for i := range v.fams {
		r := &v.fams[i]
		b = append(b, r.key[:]...)
		b = binary.AppendUvarint(b, r.seq)
		b = binary.AppendUvarint(b, r.generation)
		b = binary.AppendVarint(b, r.cutoff)
		b = binary.AppendUvarint(b, uint64(r.events))
		b = binary.AppendUvarint(b, uint64(r.cutoffEvent))
		b = binary.AppendUvarint(b, uint64(r.client))
		b = binary.AppendUvarint(b, uint64(r.subject))
		b = binary.AppendVarint(b, int64(r.version))
		b = binary.LittleEndian.AppendUint32(b, r.created)
		b = binary.LittleEndian.AppendUint32(b, r.rotated)
		b = binary.LittleEndian.AppendUint32(b, r.expires)
		b = binary.LittleEndian.AppendUint32(b, r.accessUntil)
		b = binary.LittleEndian.AppendUint32(b, r.revokedAt)
		revoked := byte(0)
		if r.revoked {
			revoked = 1
		}
		b = append(b, r.cause, revoked)
	}
	b = binary.AppendUvarint(b, uint64(len(v.revokedJTI)))
	for _, k := range slices.SortedFunc(maps.Keys(v.revokedJTI), compareKey) {
		b = append(b, k[:]...)
		b = binary.LittleEndian.AppendUint32(b, v.revokedJTI[k])
	}
	b = binary.AppendUvarint(b, uint64(len(v.revokedOther)))
	for _, k := range slices.Sorted(maps.Keys(v.revokedOther)) {
		b = appendString(b, k)
		b = binary.LittleEndian.AppendUint32(b, v.revokedOther[k])
	}
	b = binary.AppendUvarint(b, uint64(len(v.exempt)))
	for _, k := range slices.SortedFunc(maps.Keys(v.exempt), compareKey) {
		x := v.exempt[k]
		b = append(b, k[:]...)
		b = append(b, x.family[:]...)
		b = binary.LittleEndian.AppendUint32(b, x.exp)
	}
	b = binary.AppendUvarint(b, uint64(len(v.applied)))
	for _, k := range slices.Sorted(maps.Keys(v.applied)) {
		b = appendString(b, string(k))
		b = binary.AppendUvarint(b, v.applied[k])
	}
	b = binary.AppendUvarint(b, uint64(len(v.revocations)))
	for _, k := range slices.Sorted(maps.Keys(v.revocations)) {
		b = appendString(b, k)
		b = binary.AppendUvarint(b, v.revocations[k])
	}
	return b
}

// The smallest encoding of each repeated item, which bounds a count read
// from the input before anything is allocated for it.
const (
	minFamilyBytes = 16 + 7 + 5*4 + 2
	minStringBytes = 1
	minJTIBytes    = 16 + 4
	minExemptBytes = 16 + 16 + 4
	minCountBytes  = 2
)

// decodeView decodes a view encoded by appendEncoded and rebuilds its
// indexes. It rejects anything that does not decode exactly: trailing
// bytes, indexes out of range, a family twice.
func decodeView(b []byte) (*View, error) {
	d := &reader{b: b}
	v := NewView()
	last := d.uvarint()
	n := d.count(minStringBytes)
	v.strs = slices.Grow(v.strs, n)
	v.strIdx = make(map[string]uint32, n+1)
	v.strIdx[""] = 0
	// The strings are sliced from one copy of their section: one
	// allocation instead of one per subject (millions of them).
	strs := d.strings(n)
	v.strs = append(v.strs, strs...)
	// The string index is built beside the families' decoding: on a
	// checkpoint of millions of subjects each is a map insert, which is
	// most of a load's time.
	dupString := make(chan error, 1)
	go func() {
		var err error
		for i, s := range strs {
			// One map operation a string: a duplicate leaves the
			// map's size where it was.
			if v.strIdx[s] = uint32(i + 1); len(v.strIdx) != i+2 && err == nil {
				err = fmt.Errorf("%w: string %q interned twice", errCorrupt, s)
			}
		}
		dupString <- err
	}()
	n = d.count(minStringBytes)
	if n > 255 {
		d.fail("%d cause kinds", n)
	}
	for i := 0; i < n && d.err == nil; i++ {
		v.causes = append(v.causes, d.string())
	}
	n = d.count(minFamilyBytes)
	v.fams = make([]familyRec, 0, n)
	v.byKey = make(map[[16]byte]uint32, n)
	v.subjectHead = make([]uint32, len(v.strs))
	v.clientHead = make([]uint32, len(v.strs))
	for i := 0; i < n && d.err == nil; i++ {
		var r familyRec
		r.key = d.key()
		r.seq = d.uvarint()
		r.generation = d.uvarint()
		r.cutoff = d.varint()
		r.events = d.uint32v()
		r.cutoffEvent = d.uint32v()
		r.client = d.uint32v()
		r.subject = d.uint32v()
		version := d.varint()
		r.created = d.fixed32()
		r.rotated = d.fixed32()
		r.expires = d.fixed32()
		r.accessUntil = d.fixed32()
		r.revokedAt = d.fixed32()
		r.cause = d.byte()
		revoked := d.byte()
		if d.err != nil {
			break
		}
		r.version, r.revoked = int32(version), revoked == 1
		switch {
		case revoked > 1:
			d.fail("family %x: revoked flag %d", r.key, revoked)
		case int64(r.version) != version:
			d.fail("family %x: version %d", r.key, version)
		case int(r.client) >= len(v.strs) || int(r.subject) >= len(v.strs):
			d.fail("family %x: string index out of range", r.key)
		case int(r.cause) >= len(v.causes):
			d.fail("family %x: cause %d out of range", r.key, r.cause)
		case r.seq > last:
			d.fail("family %x: seq %d after the view's %d", r.key, r.seq, last)
		}
		idx := uint32(len(v.fams))
		if v.byKey[r.key] = idx; len(v.byKey) != len(v.fams)+1 {
			d.fail("family %x twice", r.key)
		}
		if d.err != nil {
			break
		}
		r.nextSubject = v.subjectHead[r.subject]
		v.subjectHead[r.subject] = idx + 1
		r.nextClient = v.clientHead[r.client]
		v.clientHead[r.client] = idx + 1
		v.fams = append(v.fams, r)
	}
	n = d.count(minJTIBytes)
	for i := 0; i < n && d.err == nil; i++ {
		k := d.key()
		v.revokedJTI[k] = d.fixed32()
	}
	n = d.count(minStringBytes + 4)
	for i := 0; i < n && d.err == nil; i++ {
		k := d.string()
		v.revokedOther[k] = d.fixed32()
	}
	n = d.count(minExemptBytes)
	for i := 0; i < n && d.err == nil; i++ {
		k := d.key()
		v.exempt[k] = exemption{family: d.key(), exp: d.fixed32()}
	}
	n = d.count(minCountBytes)
	for i := 0; i < n && d.err == nil; i++ {
		k := ledger.EventType(d.string())
		v.applied[k] = d.uvarint()
	}
	n = d.count(minCountBytes)
	for i := 0; i < n && d.err == nil; i++ {
		k := d.string()
		v.revocations[k] = d.uvarint()
	}
	if err := <-dupString; err != nil && d.err == nil {
		d.err = err
	}
	if err := d.end(); err != nil {
		return nil, fmt.Errorf("view: %w", err)
	}
	v.last.Store(last)
	return v, nil
}

// install replaces the view's state with n's (a view decoded from a
// checkpoint, which no one else holds) and wakes whoever waits for a
// sequence it covers.
func (v *View) install(n *View) {
	v.mu.Lock()
	v.fams, v.byKey = n.fams, n.byKey
	v.strs, v.strIdx, v.causes = n.strs, n.strIdx, n.causes
	v.subjectHead, v.clientHead = n.subjectHead, n.clientHead
	v.revokedJTI, v.revokedOther, v.exempt = n.revokedJTI, n.revokedOther, n.exempt
	v.applied, v.revocations = n.applied, n.revocations
	v.last.Store(n.last.Load())
	v.mu.Unlock()

	v.wmu.Lock()
	if v.notify != nil {
		close(v.notify)
		v.notify = nil
	}
	v.wmu.Unlock()
}

// freeze copies the rollout model for a checkpoint.
func (r *Rollouts) freeze() *Rollouts {
	r.mu.RLock()
	defer r.mu.RUnlock()
	f := &Rollouts{current: maps.Clone(r.current), progress: make(map[string]*rolloutCounts, len(r.progress))}
	for id, c := range r.progress {
		cc := *c
		cc.refused = maps.Clone(c.refused)
		f.progress[id] = &cc
	}
	f.last.Store(r.last.Load())
	return f
}

// appendEncoded appends the rollout model in the checkpoint encoding.
func (r *Rollouts) appendEncoded(b []byte) []byte {
	r.mu.RLock()
	defer r.mu.RUnlock()
	b = binary.AppendUvarint(b, r.last.Load())
	b = binary.AppendUvarint(b, uint64(len(r.current)))
	for _, k := range slices.Sorted(maps.Keys(r.current)) {
		ro := r.current[k]
		b = appendString(b, k)
		b = appendString(b, ro.ID)
		b = appendString(b, ro.ClientID)
		b = binary.AppendVarint(b, int64(ro.Version))
		b = binary.AppendVarint(b, int64(ro.Percent))
		b = appendTime(b, ro.Deadline)
		b = appendTime(b, ro.StartedAt)
		b = appendString(b, ro.BaseID)
		b = binary.AppendVarint(b, int64(ro.BaseVersion))
		b = appendTime(b, ro.BaseDeadline)
		b = binary.AppendUvarint(b, ro.Seq)
		b = appendString(b, ro.Head)
	}
	b = binary.AppendUvarint(b, uint64(len(r.progress)))
	for _, id := range slices.Sorted(maps.Keys(r.progress)) {
		c := r.progress[id]
		b = appendString(b, id)
		b = binary.AppendUvarint(b, uint64(c.moved))
		b = binary.AppendUvarint(b, uint64(c.issued))
		b = binary.AppendUvarint(b, uint64(c.refusals))
		b = binary.AppendUvarint(b, uint64(len(c.refused)))
		for _, f := range slices.Sorted(maps.Keys(c.refused)) {
			b = appendString(b, f)
		}
	}
	return b
}

// decodeRollouts decodes a rollout model encoded by appendEncoded.
func decodeRollouts(b []byte) (*Rollouts, error) {
	d := &reader{b: b}
	r := NewRollouts()
	last := d.uvarint()
	n := d.count(12)
	for i := 0; i < n && d.err == nil; i++ {
		k := d.string()
		var ro ledger.RolloutState
		ro.ID, ro.ClientID = d.string(), d.string()
		ro.Version, ro.Percent = d.int(), d.int()
		ro.Deadline, ro.StartedAt = d.time(), d.time()
		ro.BaseID, ro.BaseVersion, ro.BaseDeadline = d.string(), d.int(), d.time()
		ro.Seq, ro.Head = d.uvarint(), d.string()
		r.current[k] = ro
	}
	n = d.count(5)
	for i := 0; i < n && d.err == nil; i++ {
		id := d.string()
		c := &rolloutCounts{moved: d.uint(), issued: d.uint(), refusals: d.uint()}
		m := d.count(minStringBytes)
		c.refused = make(map[string]struct{}, m)
		for j := 0; j < m && d.err == nil; j++ {
			c.refused[d.string()] = struct{}{}
		}
		r.progress[id] = c
	}
	if err := d.end(); err != nil {
		return nil, fmt.Errorf("rollouts: %w", err)
	}
	r.last.Store(last)
	return r, nil
}

// Digest is a SHA-256 over the rollout model's state and its last
// sequence: two models folded from the same events have the same digest.
func (r *Rollouts) Digest() string {
	// The encoding is canonical (sorted, times in UTC nanoseconds), so
	// its hash is the model's.
	sum := sha256.Sum256(r.appendEncoded(nil))
	return hex.EncodeToString(sum[:])
}

// install replaces the model's state with n's and wakes waiters.
func (r *Rollouts) install(n *Rollouts) {
	r.mu.Lock()
	r.current, r.progress = n.current, n.progress
	r.last.Store(n.last.Load())
	r.mu.Unlock()

	r.wmu.Lock()
	if r.notify != nil {
		close(r.notify)
		r.notify = nil
	}
	r.wmu.Unlock()
}

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

// appendTime appends t as a flag byte and its unix nanoseconds: the zero
// time (which unix nanoseconds cannot hold) is the flag alone.
func appendTime(b []byte, t time.Time) []byte {
	if t.IsZero() {
		return append(b, 0)
	}
	return binary.AppendVarint(append(b, 1), t.UnixNano())
}

// reader decodes the checkpoint encoding; the first error sticks and
// every later read returns zero values.
type reader struct {
	b   []byte
	err error
}

func (d *reader) fail(format string, args ...any) {
	if d.err == nil {
		d.err = fmt.Errorf("%w: "+format, append([]any{errCorrupt}, args...)...)
	}
}

func (d *reader) end() error {
	if d.err == nil && len(d.b) != 0 {
		d.fail("%d bytes after the end", len(d.b))
	}
	return d.err
}

func (d *reader) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	x, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.fail("bad uvarint")
		return 0
	}
	d.b = d.b[n:]
	return x
}

func (d *reader) varint() int64 {
	if d.err != nil {
		return 0
	}
	x, n := binary.Varint(d.b)
	if n <= 0 {
		d.fail("bad varint")
		return 0
	}
	d.b = d.b[n:]
	return x
}

func (d *reader) uint32v() uint32 {
	x := d.uvarint()
	if x > 1<<32-1 {
		d.fail("%d does not fit 32 bits", x)
		return 0
	}
	return uint32(x)
}

func (d *reader) uint() int {
	x := d.uvarint()
	if x > uint64(^uint(0)>>1) {
		d.fail("%d does not fit an int", x)
		return 0
	}
	return int(x)
}

func (d *reader) int() int {
	x := d.varint()
	if int64(int(x)) != x {
		d.fail("%d does not fit an int", x)
	}
	return int(x)
}

// count reads a count of items of at least min bytes each, refusing one
// the remaining input cannot hold.
func (d *reader) count(min int) int {
	n := d.uvarint()
	if d.err == nil && n > uint64(len(d.b)/min) {
		d.fail("%d items in %d bytes", n, len(d.b))
		return 0
	}
	return int(n)
}

func (d *reader) take(n int) []byte {
	if d.err != nil {
		return nil
	}
	if n > len(d.b) {
		d.fail("truncated")
		return nil
	}
	p := d.b[:n]
	d.b = d.b[n:]
	return p
}

func (d *reader) string() string {
	n := d.uvarint()
	if d.err == nil && n > uint64(len(d.b)) {
		d.fail("truncated string")
		return ""
	}
	return string(d.take(int(n)))
}

// strings reads n strings, as string would one by one, sliced from one
// string holding their bytes.
func (d *reader) strings(n int) []string {
	// First pass: the section's length and each string's end in it.
	ends := make([]int, 0, n)
	rest, size := d.b, 0
	for range n {
		l, w := binary.Uvarint(rest)
		if w <= 0 || l > uint64(len(rest)-w) {
			d.fail("truncated string")
			return nil
		}
		size += int(l)
		ends = append(ends, size)
		rest = rest[w+int(l):]
	}
	all := make([]byte, 0, size)
	for range n {
		l := d.uvarint()
		all = append(all, d.take(int(l))...)
	}
	section := string(all)
	out := make([]string, n)
	start := 0
	for i, end := range ends {
		out[i] = section[start:end]
		start = end
	}
	return out
}

func (d *reader) key() (k [16]byte) {
	copy(k[:], d.take(16))
	return k
}

func (d *reader) fixed32() uint32 {
	p := d.take(4)
	if p == nil {
		return 0
	}
	return binary.LittleEndian.Uint32(p)
}

func (d *reader) byte() byte {
	p := d.take(1)
	if p == nil {
		return 0
	}
	return p[0]
}

func (d *reader) time() time.Time {
	switch d.byte() {
	case 0:
		return time.Time{}
	case 1:
		return time.Unix(0, d.varint()).UTC()
	}
	d.fail("bad time flag")
	return time.Time{}
}
