package jsstore

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// ArchiveSuffix names the archive of a ledger stream: the archive of
// TOKENLEDGER is TOKENLEDGER_ARCHIVE.
const ArchiveSuffix = "_ARCHIVE"

// ArchiveName is the name of the archive of the ledger stream named stream
// (DefaultStream when empty).
func ArchiveName(stream string) string {
	if stream == "" {
		stream = DefaultStream
	}
	return stream + ArchiveSuffix
}

// ErrArchiveMissing is returned by EnsureArchive when the archive is gone
// while the ledger stream has already let events expire: a new archive
// would start at the ledger's first sequence, so the history before it
// would be lost without anyone noticing.
var ErrArchiveMissing = errors.New("ledger archive missing")

// ArchiveConfig configures the archive of the ledger stream.
type ArchiveConfig struct {
	// Stream is the ledger stream it mirrors (default DefaultStream).
	Stream string
	// Name is the archive stream (default ArchiveName(Stream)).
	Name string
	// Replicas of the archive (default 1).
	Replicas int
	// Placement puts the archive on other nodes than the ledger (a cluster
	// or server tags); nil lets the server choose.
	Placement *jetstream.Placement
	// Init creates the archive even though the ledger stream's history no
	// longer starts at sequence 1 (the archive is then partial).
	Init bool
}

// EnsureArchive creates the archive of the ledger stream when it does not
// exist: a stream with no subjects and no limits that denies delete and
// purge and sources every message of the ledger stream, so it keeps every
// event after the ledger stream let it expire (StoreConfig.HistoryMargin).
// It ignores the Nats-TTL headers it copies (it does not allow message
// TTLs). Each copy carries the ledger sequence it had in its
// Nats-Stream-Source header (ArchivedSeq); an archive created with the
// ledger holds them under the same sequences.
//
// It is a source, not a mirror: the server makes every mirror of a stream
// that allows direct gets answer that stream's direct gets too, so reads
// of the ledger would be answered by a copy behind it and holding events
// the ledger has let expire. For the same reason an existing archive that
// is a mirror is refused.
//
// An existing archive is used as it is (an operator may have created it
// with a placement of its own); its configuration is never updated, so
// this process needs no right to change it. It returns the archive's name.
func EnsureArchive(ctx context.Context, js jetstream.JetStream, cfg ArchiveConfig) (string, error) {
	if cfg.Stream == "" {
		cfg.Stream = DefaultStream
	}
	if cfg.Name == "" {
		cfg.Name = ArchiveName(cfg.Stream)
	}
	if cfg.Replicas <= 0 {
		cfg.Replicas = 1
	}
	st, err := js.Stream(ctx, cfg.Name)
	switch {
	case err == nil:
		return cfg.Name, checkArchive(st.CachedInfo(), cfg)
	case !errors.Is(err, jetstream.ErrStreamNotFound):
		return "", fmt.Errorf("archive %s: %w", cfg.Name, translate(err))
	}
	if !cfg.Init {
		led, err := js.Stream(ctx, cfg.Stream)
		if err != nil {
			return "", fmt.Errorf("archive %s: ledger stream %s: %w", cfg.Name, cfg.Stream, translate(err))
		}
		if first := led.CachedInfo().State.FirstSeq; first > 1 {
			return "", fmt.Errorf("%w: %s does not exist while the ledger stream %s starts at sequence %d: restore the archive from a backup, or start with --init to create a partial one",
				ErrArchiveMissing, cfg.Name, cfg.Stream, first)
		}
	}
	_, err = js.CreateStream(ctx, jetstream.StreamConfig{
		Name:        cfg.Name,
		Description: "tokenledger event log archive: every event of " + cfg.Stream + ", no limits, never deleted",
		Sources:     []*jetstream.StreamSource{{Name: cfg.Stream}},
		Storage:     jetstream.FileStorage,
		// JSON compresses about 4:1 (docs/operations.md, sizing), and the
		// archive is read in bulk by auditors, never on a request's path.
		Compression: jetstream.S2Compression,
		Retention:   jetstream.LimitsPolicy,
		Replicas:    cfg.Replicas,
		Placement:   cfg.Placement,
		DenyDelete:  true,
		DenyPurge:   true,
		AllowDirect: true,
		// Full: refuse to mirror rather than drop the oldest events.
		Discard: jetstream.DiscardNew,
	})
	if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
		// Another instance created it meanwhile.
		st, err = js.Stream(ctx, cfg.Name)
		if err != nil {
			return "", fmt.Errorf("archive %s: %w", cfg.Name, translate(err))
		}
		return cfg.Name, checkArchive(st.CachedInfo(), cfg)
	}
	if err != nil {
		return "", fmt.Errorf("create archive %s: %w", cfg.Name, translate(err))
	}
	return cfg.Name, nil
}

// checkArchive refuses an archive that does not copy the whole ledger
// stream, that may lose events, or that answers the ledger's direct gets.
func checkArchive(info *jetstream.StreamInfo, cfg ArchiveConfig) error {
	c := info.Config
	switch {
	case c.Mirror != nil:
		return fmt.Errorf("archive %s is a mirror, which answers direct gets of %s with events it no longer holds: recreate it sourcing %s (docs/operations.md)", cfg.Name, cfg.Stream, cfg.Stream)
	case len(c.Sources) != 1 || c.Sources[0].Name != cfg.Stream || c.Sources[0].FilterSubject != "" ||
		len(c.Sources[0].SubjectTransforms) > 0 || len(c.Subjects) > 0:
		return fmt.Errorf("archive %s exists but does not hold exactly the events of %s (one source, no filter, no subjects of its own)", cfg.Name, cfg.Stream)
	case !c.DenyDelete || !c.DenyPurge:
		return fmt.Errorf("archive %s must deny delete and purge", cfg.Name)
	case c.MaxAge > 0 || c.MaxMsgs > 0 || c.MaxBytes > 0 || c.MaxMsgsPerSubject > 0 || c.AllowMsgTTL:
		return fmt.Errorf("archive %s must have no limits and no message TTLs", cfg.Name)
	}
	return nil
}

// ArchiveLag is how far the archive is behind the ledger stream: the
// ledger's last sequence, the last ledger sequence the archive copied, and
// how long ago the archive last heard from the ledger.
type ArchiveLag struct {
	LedgerLast, ArchiveLast uint64
	Active                  time.Duration
}

// Behind is how many ledger sequences the archive has not copied yet.
func (l ArchiveLag) Behind() uint64 {
	if l.LedgerLast <= l.ArchiveLast {
		return 0
	}
	return l.LedgerLast - l.ArchiveLast
}

// ReadArchiveLag reads how far the archive is behind the ledger stream.
func ReadArchiveLag(ctx context.Context, js jetstream.JetStream, stream, archive string) (ArchiveLag, error) {
	if stream == "" {
		stream = DefaultStream
	}
	if archive == "" {
		archive = ArchiveName(stream)
	}
	led, err := js.Stream(ctx, stream)
	if err != nil {
		return ArchiveLag{}, fmt.Errorf("ledger stream %s: %w", stream, translate(err))
	}
	arc, err := js.Stream(ctx, archive)
	if err != nil {
		return ArchiveLag{}, fmt.Errorf("archive %s: %w", archive, translate(err))
	}
	lag := ArchiveLag{LedgerLast: led.CachedInfo().State.LastSeq}
	if srcs := arc.CachedInfo().Sources; len(srcs) == 1 {
		lag.Active = srcs[0].Active
	}
	last := arc.CachedInfo().State.LastSeq
	if last == 0 {
		return lag, nil
	}
	msg, err := arc.GetMsg(ctx, last)
	if err != nil {
		return ArchiveLag{}, fmt.Errorf("archive %s seq %d: %w", archive, last, translate(err))
	}
	if lag.ArchiveLast, err = ArchivedSeq(msg.Header, stream); err != nil {
		return ArchiveLag{}, fmt.Errorf("archive %s seq %d: %w", archive, last, err)
	}
	return lag, nil
}

// SourceHeader is the header the server puts on every message it copies
// from one stream into another: "<stream> <sequence> ...".
const SourceHeader = "Nats-Stream-Source"

// ArchivedSeq is the ledger sequence of an archived message, from its
// Nats-Stream-Source header, which must name the ledger stream.
func ArchivedSeq(h nats.Header, stream string) (uint64, error) {
	v := h.Get(SourceHeader)
	name, rest, ok := strings.Cut(v, " ")
	if !ok || name != stream {
		return 0, fmt.Errorf("%s header %q does not name %s", SourceHeader, v, stream)
	}
	seqS, _, _ := strings.Cut(rest, " ")
	seq, err := strconv.ParseUint(seqS, 10, 64)
	if err != nil || seq == 0 {
		return 0, fmt.Errorf("%s header %q: no sequence", SourceHeader, v)
	}
	return seq, nil
}

// ArchiveLag is ReadArchiveLag for the store's stream and its archive.
func (s *Store) ArchiveLag(ctx context.Context) (ArchiveLag, error) {
	return ReadArchiveLag(ctx, s.js, s.stream.CachedInfo().Config.Name, "")
}
