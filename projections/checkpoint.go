package projections

import (
	"bytes"
	"cmp"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/oklog/ulid/v2"
)

// Checkpoints of the read models a Runner folds: the view and whatever the
// runner feeds with it (Also), saved together at one stream sequence into a
// JetStream object store, so a starting instance loads the newest one it
// can verify and replays only the events after it.
//
// A checkpoint object is
//
//	"TLCP" | format (1 byte) | uvarint seq | varint unix ns of at |
//	string stream | varint unix ns of the stream's creation |
//	uvarint parts | per part: string kind, string digest, uvarint length, bytes
//
// (strings are a uvarint length and the bytes; viewcodec.go encodes the
// parts). Each part's digest is the live model's own digest at at (for the
// view, View.DigestAt), taken from the copy that was encoded: a load checks
// the object's SHA-256 (the object store's), then decodes every part and
// recomputes its digest (and checks that it encodes back to the same
// bytes), so an encoder or decoder bug is caught as surely as a flipped
// byte. The object's metadata repeats seq, format, at and the
// view's digest, so checkpoints are listed without being read.

const (
	// DefaultCheckpointBucket is the object store bucket of the view
	// checkpoints (its stream is OBJ_tokenledger_checkpoints; the KV
	// bucket of the same name, KV_tokenledger_checkpoints, holds the
	// feed's position and the checkpoint claim).
	DefaultCheckpointBucket = "tokenledger_checkpoints"
	// CheckpointFormat is the checkpoint format this build writes and
	// reads; a checkpoint of another format is ignored.
	CheckpointFormat = 1
	// DefaultCheckpointKeep is how many checkpoints are kept.
	DefaultCheckpointKeep = 2
	// DefaultCheckpointEvery and DefaultCheckpointInterval are how often
	// a runner saves a checkpoint: after that many events or that long
	// since the last one (if any event came since).
	DefaultCheckpointEvery    = 100_000
	DefaultCheckpointInterval = 5 * time.Minute

	checkpointMagic    = "TLCP"
	checkpointPrefix   = "view."
	checkpointClaimKey = "view-checkpoint"
)

// ErrNoCheckpoint is returned when no checkpoint matches.
var ErrNoCheckpoint = errors.New("no checkpoint")

// CheckpointConfig configures a CheckpointStore.
type CheckpointConfig struct {
	// Bucket is the object store bucket (default DefaultCheckpointBucket).
	Bucket   string
	Replicas int
	// Keep is how many checkpoints are kept, newest first (default
	// DefaultCheckpointKeep): more than one, so a corrupt newest one
	// falls back to the previous rather than to a rebuild.
	Keep int
	// LoadTimeout bounds the download of one checkpoint (default 2
	// minutes), after which the next older one is tried.
	LoadTimeout time.Duration
	Log         *slog.Logger
}

// CheckpointStore saves, lists and loads checkpoints of the read models.
type CheckpointStore struct {
	obj jetstream.ObjectStore
	kv  jetstream.KeyValue // the claim; nil when opened read-only
	cfg CheckpointConfig
}

// NewCheckpointStore creates or updates the checkpoint object store, and
// the KV bucket tokenledger_checkpoints where writers claim a checkpoint.
func NewCheckpointStore(ctx context.Context, js jetstream.JetStream, cfg CheckpointConfig) (*CheckpointStore, error) {
	cfg.defaults()
	obj, err := js.CreateOrUpdateObjectStore(ctx, jetstream.ObjectStoreConfig{
		Bucket:      cfg.Bucket,
		Description: "tokenledger view checkpoints (derived from the ledger; safe to delete)",
		Storage:     jetstream.FileStorage,
		Replicas:    cfg.Replicas,
	})
	if err != nil {
		return nil, fmt.Errorf("checkpoint object store %s: %w", cfg.Bucket, err)
	}
	kv, err := js.CreateOrUpdateKeyValue(ctx, checkpointKVConfig(cfg.Replicas))
	if err != nil {
		return nil, fmt.Errorf("checkpoint bucket: %w", err)
	}
	return &CheckpointStore{obj: obj, kv: kv, cfg: cfg}, nil
}

// OpenCheckpointStore opens an existing checkpoint object store to list
// and load checkpoints (auditors: no write permission needed).
func OpenCheckpointStore(ctx context.Context, js jetstream.JetStream, bucket string) (*CheckpointStore, error) {
	cfg := CheckpointConfig{Bucket: bucket}
	cfg.defaults()
	obj, err := js.ObjectStore(ctx, cfg.Bucket)
	if err != nil {
		return nil, fmt.Errorf("checkpoint object store %s: %w", cfg.Bucket, err)
	}
	return &CheckpointStore{obj: obj, cfg: cfg}, nil
}

func (c *CheckpointConfig) defaults() {
	if c.Bucket == "" {
		c.Bucket = DefaultCheckpointBucket
	}
	if c.Replicas <= 0 {
		c.Replicas = 1
	}
	if c.Keep <= 0 {
		c.Keep = DefaultCheckpointKeep
	}
	if c.LoadTimeout <= 0 {
		c.LoadTimeout = 2 * time.Minute
	}
	if c.Log == nil {
		c.Log = slog.New(slog.DiscardHandler)
	}
}

// checkpointKVConfig is the KV bucket tokenledger_checkpoints, shared with
// the feed (which must create it the same way).
func checkpointKVConfig(replicas int) jetstream.KeyValueConfig {
	return jetstream.KeyValueConfig{
		Bucket: CheckpointBucket, Description: "tokenledger projection checkpoints",
		History: 1, Storage: jetstream.FileStorage, Replicas: replicas,
	}
}

// CheckpointInfo describes a stored checkpoint, from its metadata.
type CheckpointInfo struct {
	Name string `json:"name"`
	// Seq is the last stream sequence the checkpoint covers.
	Seq uint64 `json:"seq"`
	// Format is the checkpoint format (CheckpointFormat).
	Format int `json:"format"`
	// At is the instant Digest was taken at; Digest is the view's digest
	// (View.DigestAt(At)) when the checkpoint was taken.
	At     time.Time `json:"at"`
	Digest string    `json:"digest"`
	// Size is the object's size in bytes.
	Size    uint64    `json:"size"`
	ModTime time.Time `json:"mod_time"`
}

// Checkpoint is a checkpoint loaded and verified.
type Checkpoint struct {
	CheckpointInfo
	// Stream and StreamCreated identify the ledger stream it was folded
	// from: a stream recreated under the same name is another ledger.
	Stream        string
	StreamCreated time.Time
	parts         []checkpointPart
}

// View is the checkpoint's valid-token view (nil if it has none). It is
// the checkpoint's own: load it into a runner with Runner.Restore.
func (c *Checkpoint) View() *View {
	for _, p := range c.parts {
		if v, ok := p.(*View); ok {
			return v
		}
	}
	return nil
}

// checkpointPart is a read model's state frozen for a checkpoint (or
// decoded from one): it encodes itself and knows its digest.
type checkpointPart interface {
	checkpointKind() string
	appendEncoded(b []byte) []byte
	checkpointDigest(at time.Time) string
	LastSeq() uint64
}

// checkpointable is a projection a runner can checkpoint: freeze copies its
// state between two events; install replaces its state with a decoded one.
type checkpointable interface {
	Projection
	freezePart() checkpointPart
	installPart(checkpointPart) error
}

var partDecoders = map[string]func([]byte) (checkpointPart, error){
	"view":     func(b []byte) (checkpointPart, error) { return decodeView(b) },
	"rollouts": func(b []byte) (checkpointPart, error) { return decodeRollouts(b) },
}

func (v *View) checkpointKind() string                 { return "view" }
func (v *View) checkpointDigest(at time.Time) string   { return v.Digest(at) }
func (v *View) freezePart() checkpointPart             { return v.freeze() }
func (r *Rollouts) checkpointKind() string             { return "rollouts" }
func (r *Rollouts) checkpointDigest(time.Time) string  { return r.Digest() }
func (r *Rollouts) freezePart() checkpointPart         { return r.freeze() }
func (v *View) installPart(p checkpointPart) error     { return installAs(p, v.install) }
func (r *Rollouts) installPart(p checkpointPart) error { return installAs(p, r.install) }

func installAs[T checkpointPart](p checkpointPart, install func(T)) error {
	t, ok := p.(T)
	if !ok {
		return fmt.Errorf("checkpoint part %s does not fit %T", p.checkpointKind(), *new(T))
	}
	install(t)
	return nil
}

// encodeCheckpoint frames parts, all frozen at the same sequence.
func encodeCheckpoint(parts []checkpointPart, at time.Time, stream string, created time.Time) ([]byte, []string, error) {
	seq := parts[0].LastSeq()
	b := append([]byte(checkpointMagic), CheckpointFormat)
	b = binary.AppendUvarint(b, seq)
	b = binary.AppendVarint(b, at.UnixNano())
	b = appendString(b, stream)
	b = binary.AppendVarint(b, created.UnixNano())
	b = binary.AppendUvarint(b, uint64(len(parts)))
	digests := make([]string, len(parts))
	var body []byte
	for i, p := range parts {
		if p.LastSeq() != seq {
			return nil, nil, fmt.Errorf("checkpoint: %s at seq %d, %s at %d", parts[0].checkpointKind(), seq, p.checkpointKind(), p.LastSeq())
		}
		digests[i] = p.checkpointDigest(at)
		body = p.appendEncoded(body[:0])
		b = appendString(b, p.checkpointKind())
		b = appendString(b, digests[i])
		b = binary.AppendUvarint(b, uint64(len(body)))
		b = append(b, body...)
	}
	return b, digests, nil
}

// decodeCheckpoint unframes a checkpoint, decodes every part and checks
// each part's digest; it does not check the metadata.
func decodeCheckpoint(b []byte) (*Checkpoint, error) {
	if !bytes.HasPrefix(b, []byte(checkpointMagic)) || len(b) < len(checkpointMagic)+1 {
		return nil, fmt.Errorf("%w: not a checkpoint", errCorrupt)
	}
	if f := b[len(checkpointMagic)]; f != CheckpointFormat {
		return nil, fmt.Errorf("checkpoint format %d, this build reads %d", f, CheckpointFormat)
	}
	d := &reader{b: b[len(checkpointMagic)+1:]}
	c := &Checkpoint{CheckpointInfo: CheckpointInfo{Format: CheckpointFormat}}
	c.Seq = d.uvarint()
	c.At = time.Unix(0, d.varint()).UTC()
	c.Stream = d.string()
	c.StreamCreated = time.Unix(0, d.varint()).UTC()
	n := d.count(3)
	for i := 0; i < n && d.err == nil; i++ {
		kind, digest := d.string(), d.string()
		ln := d.uvarint()
		if d.err == nil && ln > uint64(len(d.b)) {
			d.fail("truncated part %s", kind)
		}
		data := d.take(int(ln))
		if d.err != nil {
			break
		}
		dec := partDecoders[kind]
		if dec == nil {
			return nil, fmt.Errorf("%w: unknown part %q", errCorrupt, kind)
		}
		p, err := dec(data)
		if err != nil {
			return nil, err
		}
		// The encoding is canonical: what decodes must encode to the
		// same bytes, which catches a field the decoder drops or
		// misplaces even where no digest looks (counts, sequences).
		if !bytes.Equal(p.appendEncoded(make([]byte, 0, len(data))), data) {
			return nil, fmt.Errorf("%w: part %s does not encode back to its bytes", errCorrupt, kind)
		}
		if p.LastSeq() != c.Seq {
			return nil, fmt.Errorf("%w: part %s at seq %d, checkpoint at %d", errCorrupt, kind, p.LastSeq(), c.Seq)
		}
		if got := p.checkpointDigest(c.At); got != digest {
			return nil, fmt.Errorf("%w: part %s decodes to digest %s, recorded %s", errCorrupt, kind, got, digest)
		}
		if kind == "view" {
			c.Digest = digest
		}
		c.parts = append(c.parts, p)
	}
	if err := d.end(); err != nil {
		return nil, err
	}
	return c, nil
}

func checkpointName(seq uint64) string { return fmt.Sprintf("%s%020d", checkpointPrefix, seq) }

// save stores a checkpoint of parts and drops the oldest beyond Keep.
func (s *CheckpointStore) save(ctx context.Context, parts []checkpointPart, at time.Time, stream string, created time.Time) (CheckpointInfo, error) {
	body, digests, err := encodeCheckpoint(parts, at, stream, created)
	if err != nil {
		return CheckpointInfo{}, err
	}
	info := CheckpointInfo{Name: checkpointName(parts[0].LastSeq()), Seq: parts[0].LastSeq(), Format: CheckpointFormat,
		At: at.UTC(), Size: uint64(len(body))}
	for i, p := range parts {
		if p.checkpointKind() == "view" {
			info.Digest = digests[i]
		}
	}
	meta := jetstream.ObjectMeta{
		Name:        info.Name,
		Description: fmt.Sprintf("view checkpoint of %s at seq %d", stream, info.Seq),
		Metadata: map[string]string{
			"seq": strconv.FormatUint(info.Seq, 10), "format": strconv.Itoa(CheckpointFormat),
			"at": info.At.Format(time.RFC3339Nano), "digest": info.Digest, "stream": stream,
		},
	}
	if _, err := s.obj.Put(ctx, meta, bytes.NewReader(body)); err != nil {
		return CheckpointInfo{}, fmt.Errorf("checkpoint %s: %w", info.Name, err)
	}
	s.prune(ctx)
	return info, nil
}

// prune deletes all but the newest Keep checkpoints; a failure is logged
// (an extra checkpoint costs only space).
func (s *CheckpointStore) prune(ctx context.Context) {
	list, err := s.List(ctx)
	if err != nil {
		s.cfg.Log.Warn("checkpoint retention: list", "error", err)
		return
	}
	for _, c := range list[min(len(list), s.cfg.Keep):] {
		if err := s.obj.Delete(ctx, c.Name); err != nil && !errors.Is(err, jetstream.ErrObjectNotFound) {
			s.cfg.Log.Warn("checkpoint retention: delete", "checkpoint", c.Name, "error", err)
		}
	}
}

// List returns the stored checkpoints, newest (highest sequence) first.
// Objects whose metadata does not parse are listed with Seq 0, last.
func (s *CheckpointStore) List(ctx context.Context) ([]CheckpointInfo, error) {
	objs, err := s.obj.List(ctx)
	if errors.Is(err, jetstream.ErrNoObjectsFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list checkpoints: %w", err)
	}
	out := make([]CheckpointInfo, 0, len(objs))
	for _, o := range objs {
		if !strings.HasPrefix(o.Name, checkpointPrefix) {
			continue
		}
		c := CheckpointInfo{Name: o.Name, Size: o.Size, ModTime: o.ModTime, Digest: o.Metadata["digest"]}
		c.Seq, _ = strconv.ParseUint(o.Metadata["seq"], 10, 64)
		c.Format, _ = strconv.Atoi(o.Metadata["format"])
		c.At, _ = time.Parse(time.RFC3339Nano, o.Metadata["at"])
		out = append(out, c)
	}
	slices.SortFunc(out, func(a, b CheckpointInfo) int {
		if a.Seq != b.Seq {
			return -cmp.Compare(a.Seq, b.Seq)
		}
		return strings.Compare(b.Name, a.Name)
	})
	return out, nil
}

// Find returns the newest checkpoint, or with seq > 0 the one at seq.
func (s *CheckpointStore) Find(ctx context.Context, seq uint64) (CheckpointInfo, error) {
	list, err := s.List(ctx)
	if err != nil {
		return CheckpointInfo{}, err
	}
	for _, c := range list {
		if seq == 0 || c.Seq == seq {
			return c, nil
		}
	}
	if seq == 0 {
		return CheckpointInfo{}, ErrNoCheckpoint
	}
	return CheckpointInfo{}, fmt.Errorf("%w at seq %d", ErrNoCheckpoint, seq)
}

// Load downloads the checkpoint and verifies it: the object's SHA-256,
// the format, the framing, every part's decoding and digest, and that the
// content agrees with the metadata it was listed by.
func (s *CheckpointStore) Load(ctx context.Context, info CheckpointInfo) (*Checkpoint, error) {
	if info.Format != CheckpointFormat {
		return nil, fmt.Errorf("checkpoint %s: format %d, this build reads %d", info.Name, info.Format, CheckpointFormat)
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.LoadTimeout)
	defer cancel()
	b, err := s.obj.GetBytes(ctx, info.Name) // checks the object's SHA-256
	if err != nil {
		return nil, fmt.Errorf("checkpoint %s: %w", info.Name, err)
	}
	c, err := decodeCheckpoint(b)
	if err != nil {
		return nil, fmt.Errorf("checkpoint %s: %w", info.Name, err)
	}
	if c.Seq != info.Seq || c.Digest != info.Digest || !c.At.Equal(info.At) {
		return nil, fmt.Errorf("checkpoint %s: %w: content (seq %d, digest %s) differs from its metadata (seq %d, digest %s)",
			info.Name, errCorrupt, c.Seq, c.Digest, info.Seq, info.Digest)
	}
	c.Name, c.Size, c.ModTime = info.Name, info.Size, info.ModTime
	return c, nil
}

// claim is the checkpoint writers' record in the KV bucket: the sequence
// and time of the last checkpoint claimed. A writer takes it with an
// optimistic update (the revision it read) before it saves, so of several
// instances due at once exactly one writes.
type claim struct {
	Seq uint64    `json:"seq"`
	At  time.Time `json:"at"`
}

// readClaim returns the claim and its revision (0: none yet).
func (s *CheckpointStore) readClaim(ctx context.Context) (claim, uint64, error) {
	e, err := s.kv.Get(ctx, checkpointClaimKey)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return claim{}, 0, nil
	}
	if err != nil {
		return claim{}, 0, fmt.Errorf("checkpoint claim: %w", err)
	}
	var c claim
	if err := json.Unmarshal(e.Value(), &c); err != nil {
		return claim{}, e.Revision(), nil // unreadable: anyone may take it over
	}
	return c, e.Revision(), nil
}

// takeClaim replaces the claim read at revision rev; it fails if another
// writer replaced it since.
func (s *CheckpointStore) takeClaim(ctx context.Context, c claim, rev uint64) error {
	b, err := json.Marshal(c)
	if err != nil {
		return err
	}
	if rev == 0 {
		_, err = s.kv.Create(ctx, checkpointClaimKey, b)
	} else {
		_, err = s.kv.Update(ctx, checkpointClaimKey, b, rev)
	}
	return err
}

// ViewDifference is one disagreement between two views (CompareViews).
type ViewDifference struct {
	// FamilyID is the family that differs, or "" for a revoked access
	// token or an exemption (Field says which).
	FamilyID string
	Field    string
	A, B     string
}

// CompareViews lists what differs between two views at the instant at,
// over what their digests cover: the families that still matter, the
// unexpired revoked access tokens and the cutoff exemptions. Two views
// with the same Digest(at) have no differences.
func CompareViews(a, b *View, at time.Time) []ViewDifference {
	var out []ViewDifference
	n := at.Unix()
	fams := func(v *View) map[[16]byte]FamilyView {
		v.mu.RLock()
		defer v.mu.RUnlock()
		m := map[[16]byte]FamilyView{}
		for i := range v.fams {
			if r := &v.fams[i]; r.relevant(n) {
				m[r.key] = v.familyView(r)
			}
		}
		return m
	}
	fa, fb := fams(a), fams(b)
	keys := map[[16]byte]bool{}
	for k := range fa {
		keys[k] = true
	}
	for k := range fb {
		keys[k] = true
	}
	for _, k := range slices.SortedFunc(maps.Keys(keys), compareKey) {
		x, okx := fa[k]
		y, oky := fb[k]
		if sx, sy := describeFamily(x, okx), describeFamily(y, oky); sx != sy {
			out = append(out, ViewDifference{FamilyID: ulid.ULID(k).String(), Field: "family", A: sx, B: sy})
		}
	}
	sets := func(v *View) map[string]string {
		v.mu.RLock()
		defer v.mu.RUnlock()
		m := map[string]string{}
		for k, exp := range v.revokedJTI {
			if n < int64(exp) {
				m["revoked_jti "+ulid.ULID(k).String()] = fmt.Sprint(exp)
			}
		}
		for k, exp := range v.revokedOther {
			if n < int64(exp) {
				m["revoked_jti "+k] = fmt.Sprint(exp)
			}
		}
		for k, x := range v.exempt {
			if n < int64(x.exp) {
				m["exempt "+ulid.ULID(k).String()] = fmt.Sprintf("family %s until %d", ulid.ULID(x.family), x.exp)
			}
		}
		return m
	}
	sa, sb := sets(a), sets(b)
	all := maps.Clone(sa)
	maps.Copy(all, sb)
	for _, k := range slices.Sorted(maps.Keys(all)) {
		x, okx := sa[k]
		y, oky := sb[k]
		if x != y || okx != oky {
			out = append(out, ViewDifference{Field: k, A: orAbsent(x, okx), B: orAbsent(y, oky)})
		}
	}
	return out
}

func describeFamily(f FamilyView, ok bool) string {
	if !ok {
		return "absent"
	}
	return fmt.Sprintf("%+v", f)
}

func orAbsent(s string, ok bool) string {
	if !ok {
		return "absent"
	}
	return s
}
