package audit

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tokenledger/tokenledger/internal/natstest"
	"github.com/tokenledger/tokenledger/ledger/jsstore"
)

// publishExpiring appends msgs under prefix as the service does with a
// history margin: family events carry a Nats-TTL of ttl, the others none.
func publishExpiring(t *testing.T, js jetstream.JetStream, prefix string, msgs []stored, ttl string) {
	t.Helper()
	for start := 0; start < len(msgs); start += 4000 {
		for _, m := range msgs[start:min(start+4000, len(msgs))] {
			msg := nats.NewMsg(prefix + "." + m.Subject)
			msg.Data = m.Data
			msg.Header.Set(jsstore.HeaderEventType, string(m.Type))
			if strings.HasPrefix(m.Subject, "family.") {
				msg.Header.Set(jetstream.MsgTTLHeader, ttl)
			}
			if _, err := js.PublishMsgAsync(msg); err != nil {
				t.Fatalf("publish: %v", err)
			}
		}
		select {
		case <-js.PublishAsyncComplete():
		case <-time.After(30 * time.Second):
			t.Fatal("publish: acks did not arrive")
		}
	}
}

// waitFor polls cond every 50 ms until it holds or 20 s pass.
func waitFor(t *testing.T, what string, cond func() (bool, error)) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		ok, err := cond()
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 20 s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// msgsIn is how many messages the stream holds.
func msgsIn(ctx context.Context, js jetstream.JetStream, name string) (uint64, error) {
	st, err := js.Stream(ctx, name)
	if err != nil {
		return 0, err
	}
	return st.CachedInfo().State.Msgs, nil
}

// A hot ledger whose family events expire after a second, and its
// archive: once every family event has left the ledger stream, the archive
// still holds them all under their ledger sequences, verify over it
// passes (while over the ledger stream it reports the expired events as
// gaps), audits open it by default, and it catches every kind of
// tampering the plain ledger does.
func TestVerifyOverTheArchive(t *testing.T) {
	ctx := context.Background()
	orig := newGenerator(3).mixed(3000)
	_, js := natstest.Connect(t, natstest.Start(t, ""))
	if _, err := jsstore.NewStore(ctx, js, jsstore.StoreConfig{Stream: "HOT", SubjectPrefix: "ledger"}); err != nil {
		t.Fatal(err)
	}
	archive, err := jsstore.EnsureArchive(ctx, js, jsstore.ArchiveConfig{Stream: "HOT"})
	if err != nil {
		t.Fatal(err)
	}
	publishExpiring(t, js, "ledger", orig, "1")
	others := uint64(0)
	for _, m := range orig {
		if !strings.HasPrefix(m.Subject, "family.") {
			others++
		}
	}
	waitFor(t, "the family events leave the ledger stream", func() (bool, error) {
		n, err := msgsIn(ctx, js, "HOT")
		return n == others, err
	})
	waitFor(t, "the archive holds every event", func() (bool, error) {
		n, err := msgsIn(ctx, js, archive)
		return n == uint64(len(orig)), err
	})

	src, note, err := OpenSource(ctx, js, "HOT", "ledger", false)
	if err != nil || note != "" || src.Stream() != archive {
		t.Fatalf("default source: %v %q %v", src.Stream(), note, err)
	}
	rep, err := Verify(ctx, src, VerifyOptions{})
	if err != nil || !rep.OK {
		t.Fatalf("verify over the archive: %v %+v", err, rep.Violations)
	}
	require(t, "events verified", rep.Events, uint64(len(orig)))
	require(t, "last sequence", rep.LastSeq, uint64(len(orig)))

	hot, _, err := OpenSource(ctx, js, "HOT", "ledger", true)
	if err != nil {
		t.Fatal(err)
	}
	hotRep, err := Verify(ctx, hot, VerifyOptions{})
	if err != nil || hotRep.OK || hotRep.Violations[0].Kind != KindGap {
		t.Fatalf("verify over the hot ledger: %v ok %t %+v", err, hotRep.OK, hotRep.Violations[:min(1, len(hotRep.Violations))])
	}

	// A scan from a ledger sequence starts there.
	var first uint64
	err = src.Scan(ctx, ScanOptions{StartSeq: 1500}, func(m Msg) error { first = m.Seq; return errStop })
	if err != nil || first != 1500 {
		t.Fatalf("scan from 1500: first %d, %v", first, err)
	}

	// A deployment from before the archive: the ledger stream, with a note.
	testStream(t, js, "OLD", "old")
	if src, note, err := OpenSource(ctx, js, "OLD", "old", false); err != nil || src.Stream() != "OLD" || note == "" {
		t.Fatalf("no archive: %v %q %v", src.Stream(), note, err)
	}

	// A tail cut from the ledger before the archive copied it leaves no
	// trace in the archive's own sequences: the checkpoint case catches
	// it (as it catches a copy that was cut short).
	checkTampering(t, js, src, len(orig), storeArchived, "tail truncated (the stream keeps its last sequence)")
}

// storeArchived stores a tampered copy as a ledger stream, its family
// events expiring (not within the test), cuts the sequences given out of
// it, then creates its archive: the archive denies delete and purge, so
// tampering with it means replacing it with an archive of a doctored
// ledger. It returns a source over that archive.
func storeArchived(t *testing.T, js jetstream.JetStream, name, prefix string, msgs []stored, delete []uint64) *Source {
	t.Helper()
	ctx := context.Background()
	_, err := js.CreateStream(ctx, jetstream.StreamConfig{
		Name: name, Subjects: []string{prefix + ".>"}, Storage: jetstream.FileStorage,
		AllowDirect: true, AllowMsgTTL: true, Discard: jetstream.DiscardNew,
	})
	if err != nil {
		t.Fatal(err)
	}
	publishExpiring(t, js, prefix, msgs, "3600")
	deleteSeqs(t, js, name, delete)
	archive, err := jsstore.EnsureArchive(ctx, js, jsstore.ArchiveConfig{Stream: name, Init: true})
	if err != nil && !errors.Is(err, jsstore.ErrArchiveMissing) {
		t.Fatal(err)
	}
	stored, err := msgsIn(ctx, js, name)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the archive copies the doctored ledger", func() (bool, error) {
		n, err := msgsIn(ctx, js, archive)
		return n == stored, err
	})
	return NewArchiveSource(js, archive, name, prefix)
}
