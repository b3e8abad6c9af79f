package jsstore

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tokenledger/tokenledger/internal/natstest"
	"github.com/tokenledger/tokenledger/ledger"
)

// shortPolicy gives families an absolute lifetime of two seconds.
var shortPolicy = ledger.Policy{
	Rotation: ledger.RotateAlways, Grace: time.Second, AccessTTL: time.Second,
	RefreshTTL: 2 * time.Second, FamilyTTL: 2 * time.Second,
}

// subjectCounts is how many messages the stream holds on each subject.
func subjectCounts(t *testing.T, ctx context.Context, st jetstream.Stream) map[string]uint64 {
	t.Helper()
	info, err := st.Info(ctx, jetstream.WithSubjectFilter(">"))
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Subjects
}

// The hot ledger with a history margin of one second: the events of a
// family that lived two seconds leave it together, those of a family that
// lives on and every event of no family stay, and the archive keeps every
// event under its original sequence. Refreshing the live family is
// unaffected, and LastSeq stays the last stored message's sequence after
// the stream's newest event expired.
func TestHistoryMarginExpiresDeadFamiliesOnly(t *testing.T) {
	ctx := context.Background()
	_, js := natstest.Connect(t, natstest.Start(t, ""))
	store, err := NewStore(ctx, js, StoreConfig{HistoryMargin: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	archive, err := EnsureArchive(ctx, js, ArchiveConfig{})
	if err != nil {
		t.Fatal(err)
	}
	if archive != "TOKENLEDGER_ARCHIVE" {
		t.Fatalf("archive %q", archive)
	}
	l := New(store)
	client := ledger.Client{ID: "web", Scopes: []string{"read"}, Audiences: []string{"api"}}

	// Events of no family: a rollout and a handled security event.
	if _, ok, err := l.SetRollout(ctx, RolloutRequest{ClientID: "web", Version: 2, Percent: 100, RequestID: "r1"}); err != nil || !ok {
		t.Fatalf("rollout: %t %v", ok, err)
	}
	if err := l.RecordSecurityHandled(ctx, ledger.Cause{Kind: ledger.CauseSecurity, ID: "sec-1"}, time.Now(),
		ledger.SecurityHandled{EventType: "credential_compromised", Severity: "low", Action: "record"}); err != nil {
		t.Fatal(err)
	}
	// A family that lives on, and one that lives two seconds; the short
	// one's refresh is the stream's newest event.
	long, err := l.Issue(ctx, IssueRequest{Client: client, Policy: testPolicy, Subject: "alice", Scope: "read", Audience: []string{"api"}})
	if err != nil {
		t.Fatal(err)
	}
	if long, err = l.Refresh(ctx, RefreshRequest{Client: client, Policy: testPolicy, RefreshToken: long.RefreshToken}); err != nil {
		t.Fatal(err)
	}
	short, err := l.Issue(ctx, IssueRequest{Client: client, Policy: shortPolicy, Subject: "bob", Scope: "read", Audience: []string{"api"}})
	if err != nil {
		t.Fatal(err)
	}
	if short, err = l.Refresh(ctx, RefreshRequest{Client: client, Policy: shortPolicy, RefreshToken: short.RefreshToken}); err != nil {
		t.Fatal(err)
	}
	shortSubject, longSubject := store.FamilySubject(short.State.FamilyID), store.FamilySubject(long.State.FamilyID)
	lastSeq := short.State.Seq

	// What the hot stream held before anything expired, by sequence.
	before := map[uint64]*jetstream.RawStreamMsg{}
	for seq := uint64(1); seq <= lastSeq; seq++ {
		m, err := store.Stream().GetMsg(ctx, seq)
		if err != nil {
			t.Fatalf("seq %d: %v", seq, err)
		}
		before[seq] = m
		_, hasTTL := m.Header[jetstream.MsgTTLHeader]
		if hasTTL != (m.Subject == shortSubject || m.Subject == longSubject) {
			t.Errorf("seq %d on %s: Nats-TTL header %q", seq, m.Subject, m.Header.Get(jetstream.MsgTTLHeader))
		}
	}

	natstest.PollUntil(t, "the short family's events leave the hot stream", 10*time.Second, func() (bool, error) {
		info, err := store.Stream().Info(ctx)
		if err != nil || info.State.Msgs != 4 {
			return false, err
		}
		return true, nil
	})
	// The server answers a get of the stream's last message from its
	// last sequence only: that get finds nothing now.
	if _, err := store.lastSeqDirect(ctx); !errors.Is(err, jetstream.ErrMsgNotFound) {
		t.Fatalf("last message after the newest expired: %v", err)
	}
	counts := subjectCounts(t, ctx, store.Stream())
	if counts[longSubject] != 2 || counts[store.RolloutSubject("web")] != 1 || counts[store.SecuritySubject(SecurityKey("sec-1"))] != 1 {
		t.Fatalf("hot stream after the short family expired: %v", counts)
	}
	info, err := store.Stream().Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.LastSeq != lastSeq || info.State.Msgs != 4 {
		t.Fatalf("hot stream state %+v", info.State)
	}

	// The stream's newest event is gone: LastSeq is the newest one
	// stored, read either way.
	leader := &Store{js: store.js, stream: store.stream, prefix: store.prefix, getSubject: store.getSubject}
	for name, st := range map[string]*Store{"direct get": store, "leader get": leader} {
		if got, err := st.LastSeq(ctx); err != nil || got != long.State.Seq {
			t.Errorf("%s: LastSeq = %d, %v; want %d, the last stored", name, got, err, long.State.Seq)
		}
	}

	// Deciding: the dead family is unknown, the live one refreshes.
	if st, err := store.Load(ctx, short.State.FamilyID); err != nil || st.Seq != 0 {
		t.Fatalf("load of the expired family: seq %d, %v", st.Seq, err)
	}
	if _, err := l.Refresh(ctx, RefreshRequest{Client: client, Policy: shortPolicy, RefreshToken: short.RefreshToken}); err == nil {
		t.Fatal("a refresh token of the expired family was accepted")
	}
	after, err := l.Refresh(ctx, RefreshRequest{Client: client, Policy: testPolicy, RefreshToken: long.RefreshToken})
	if err != nil {
		t.Fatalf("refresh of the live family: %v", err)
	}
	if after.State.Generation != 2 || after.State.Seq != lastSeq+1 {
		t.Fatalf("live family after its refresh: generation %d at seq %d", after.State.Generation, after.State.Seq)
	}

	// The archive: every event, at its original sequence, with the
	// bytes it was appended with; the expired family's events carry
	// their Nats-TTL header and stay.
	arc, err := js.Stream(ctx, archive)
	if err != nil {
		t.Fatal(err)
	}
	natstest.PollUntil(t, "the archive copies the last append", 10*time.Second, func() (bool, error) {
		info, err := arc.Info(ctx)
		return err == nil && info.State.LastSeq == after.State.Seq, err
	})
	time.Sleep(1500 * time.Millisecond) // well past the short family's TTL in the archive too
	for seq := uint64(1); seq <= lastSeq; seq++ {
		m, err := arc.GetMsg(ctx, seq)
		if err != nil {
			t.Fatalf("archive seq %d: %v", seq, err)
		}
		want := before[seq]
		if m.Subject != want.Subject || string(m.Data) != string(want.Data) {
			t.Fatalf("archive seq %d: %s %q, the hot stream had %s %q", seq, m.Subject, m.Data, want.Subject, want.Data)
		}
		if orig, err := ArchivedSeq(m.Header, DefaultStream); err != nil || orig != seq {
			t.Fatalf("archive seq %d: ledger sequence %d, %v", seq, orig, err)
		}
		if m.Subject == shortSubject && m.Header.Get(jetstream.MsgTTLHeader) == "" {
			t.Errorf("archive seq %d: the Nats-TTL header was dropped", seq)
		}
	}
	ainfo, err := arc.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if ainfo.State.FirstSeq != 1 || ainfo.State.Msgs != after.State.Seq {
		t.Fatalf("archive state %+v", ainfo.State)
	}
	lag, err := ReadArchiveLag(ctx, js, "", "")
	if err != nil || lag.Behind() != 0 || lag.ArchiveLast != after.State.Seq {
		t.Fatalf("archive lag %+v %v", lag, err)
	}
}

// A ledger stream created by an earlier build (no message TTLs) gets them
// on the next start; the stream keeps denying delete and purge.
func TestNewStoreAllowsMessageTTLsOnAnOldLedger(t *testing.T) {
	ctx := context.Background()
	_, js := natstest.Connect(t, natstest.Start(t, ""))
	old := jetstream.StreamConfig{
		Name: DefaultStream, Subjects: []string{"ledger.>"}, Storage: jetstream.FileStorage,
		Duplicates: 2 * time.Minute, DenyDelete: true, DenyPurge: true, AllowDirect: true, Discard: jetstream.DiscardNew,
	}
	if _, err := js.CreateStream(ctx, old); err != nil {
		t.Fatal(err)
	}
	if _, err := js.Publish(ctx, "ledger.family.OLD", []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	for range 2 { // the upgrade, then an ordinary restart
		store, err := NewStore(ctx, js, StoreConfig{HistoryMargin: time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		c := store.Stream().CachedInfo().Config
		if !c.AllowMsgTTL || !c.DenyDelete || !c.DenyPurge {
			t.Fatalf("config after NewStore: ttl %t deny delete %t deny purge %t", c.AllowMsgTTL, c.DenyDelete, c.DenyPurge)
		}
	}
	// A deployment that turns the margin off again still starts.
	if _, err := NewStore(ctx, js, StoreConfig{}); err != nil {
		t.Fatal(err)
	}
	// The old ledger gets its archive, from sequence 1.
	name, err := EnsureArchive(ctx, js, ArchiveConfig{})
	if err != nil {
		t.Fatal(err)
	}
	arc, _ := js.Stream(ctx, name)
	natstest.PollUntil(t, "the archive copies the old ledger", 10*time.Second, func() (bool, error) {
		info, err := arc.Info(ctx)
		return err == nil && info.State.FirstSeq == 1 && info.State.Msgs == 1, err
	})
}

// EnsureArchive uses a sound archive as it is, refuses a mirror and a
// stream that does not copy the ledger, and refuses to create a missing
// archive once the ledger's history no longer starts at sequence 1 (unless
// told to).
func TestEnsureArchive(t *testing.T) {
	ctx := context.Background()
	_, js := natstest.Connect(t, natstest.Start(t, ""))
	if _, err := NewStore(ctx, js, StoreConfig{}); err != nil {
		t.Fatal(err)
	}
	// An archive an operator created with settings of their own is kept.
	custom := jetstream.StreamConfig{Name: ArchiveName(""), Sources: []*jetstream.StreamSource{{Name: DefaultStream}},
		Storage: jetstream.FileStorage, DenyDelete: true, DenyPurge: true, Description: "operator's"}
	if _, err := js.CreateStream(ctx, custom); err != nil {
		t.Fatal(err)
	}
	if _, err := EnsureArchive(ctx, js, ArchiveConfig{}); err != nil {
		t.Fatalf("operator's archive: %v", err)
	}
	arc, _ := js.Stream(ctx, ArchiveName(""))
	if d := arc.CachedInfo().Config.Description; d != "operator's" {
		t.Fatalf("the operator's archive was changed: %q", d)
	}

	for name, cfg := range map[string]jetstream.StreamConfig{
		"a mirror":          {Mirror: &jetstream.StreamSource{Name: DefaultStream}, DenyDelete: true, DenyPurge: true},
		"not sourcing":      {Subjects: []string{"other.>"}, DenyDelete: true, DenyPurge: true},
		"filtered":          {Sources: []*jetstream.StreamSource{{Name: DefaultStream, FilterSubject: "ledger.family.>"}}, DenyDelete: true, DenyPurge: true},
		"deletes allowed":   {Sources: []*jetstream.StreamSource{{Name: DefaultStream}}, DenyPurge: true},
		"with an age limit": {Sources: []*jetstream.StreamSource{{Name: DefaultStream}}, DenyDelete: true, DenyPurge: true, MaxAge: time.Hour},
	} {
		cfg.Name = "BAD_" + strings.ReplaceAll(name, " ", "_")
		if _, err := js.CreateStream(ctx, cfg); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if _, err := EnsureArchive(ctx, js, ArchiveConfig{Name: cfg.Name}); err == nil {
			t.Errorf("%s accepted as the archive", name)
		}
	}

	// A ledger whose first events expired, and no archive.
	hot, err := NewStore(ctx, js, StoreConfig{Stream: "HOT", SubjectPrefix: "hot"})
	if err != nil {
		t.Fatal(err)
	}
	for _, ttl := range []string{"1", "1", ""} {
		msg := nats.NewMsg("hot.family.A")
		if ttl != "" {
			msg.Header.Set(jetstream.MsgTTLHeader, ttl)
		}
		if _, err := js.PublishMsg(ctx, msg); err != nil {
			t.Fatal(err)
		}
	}
	natstest.PollUntil(t, "the first two events expire", 10*time.Second, func() (bool, error) {
		info, err := hot.Stream().Info(ctx)
		return err == nil && info.State.FirstSeq == 3, err
	})
	_, err = EnsureArchive(ctx, js, ArchiveConfig{Stream: "HOT"})
	if !errors.Is(err, ErrArchiveMissing) {
		t.Fatalf("missing archive of an expired history: %v", err)
	}
	name, err := EnsureArchive(ctx, js, ArchiveConfig{Stream: "HOT", Init: true})
	if err != nil {
		t.Fatal(err)
	}
	// The partial archive numbers its copies from 1; each names its
	// ledger sequence.
	partial, _ := js.Stream(ctx, name)
	natstest.PollUntil(t, "the partial archive copies", 10*time.Second, func() (bool, error) {
		info, err := partial.Info(ctx)
		return err == nil && info.State.Msgs == 1, err
	})
	m, err := partial.GetMsg(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	if seq, err := ArchivedSeq(m.Header, "HOT"); err != nil || seq != 3 || m.Subject != "hot.family.A" {
		t.Fatalf("partial archive seq 1: %s, ledger seq %d, %v", m.Subject, seq, err)
	}
}

// Why the archive is no mirror: the server makes a mirror of a stream that
// allows direct gets answer that stream's direct gets (it cannot be turned
// off), so a direct get of the ledger may be answered by the mirror, with
// an event the ledger has let expire.
func TestAMirrorAnswersTheLedgersDirectGets(t *testing.T) {
	ctx := context.Background()
	_, js := natstest.Connect(t, natstest.Start(t, ""))
	store, err := NewStore(ctx, js, StoreConfig{})
	if err != nil {
		t.Fatal(err)
	}
	msg := nats.NewMsg(store.FamilySubject("A"))
	msg.Header.Set(jetstream.MsgTTLHeader, "1")
	if _, err := js.PublishMsg(ctx, msg); err != nil {
		t.Fatal(err)
	}
	mirror, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "MIRROR", Mirror: &jetstream.StreamSource{Name: DefaultStream}})
	if err != nil {
		t.Fatal(err)
	}
	if !mirror.CachedInfo().Config.MirrorDirect {
		t.Fatal("the server no longer makes the mirror answer the ledger's direct gets: the archive could be a mirror")
	}
	natstest.PollUntil(t, "the event expires from the ledger and stays in the mirror", 10*time.Second, func() (bool, error) {
		info, err := store.Stream().Info(ctx)
		if err != nil || info.State.Msgs != 0 {
			return false, err
		}
		info, err = mirror.Info(ctx)
		return err == nil && info.State.Msgs == 1, err
	})
	for range 200 {
		m, err := store.LastMsg(ctx, store.FamilySubject("A"))
		if err == nil && m.Header.Get("Nats-Stream") == "MIRROR" {
			return // a read of the ledger answered by the mirror
		}
	}
	t.Fatal("200 direct gets of an expired event, none answered by the mirror")
}
