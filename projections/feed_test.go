package projections

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/tokenledger/tokenledger/ledger"
)

// feedAnnouncements reads the whole feed stream.
func feedAnnouncements(t *testing.T, f *fixture) []Announcement {
	t.Helper()
	ctx := context.Background()
	s, err := f.js.Stream(ctx, DefaultFeedStream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var out []Announcement
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		msg, err := s.GetMsg(ctx, seq)
		if err != nil {
			t.Fatal(err)
		}
		var a Announcement
		if err := json.Unmarshal(msg.Data, &a); err != nil {
			t.Fatal(err)
		}
		if msg.Subject != FeedSubject(DefaultFeedPrefix, a.Kind) {
			t.Fatalf("announcement %+v on %s", a, msg.Subject)
		}
		out = append(out, a)
	}
	return out
}

func TestFeedAnnouncesEveryRevocationOnceAndResumes(t *testing.T) {
	f := newFixture(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	view := NewView()
	runner := f.runner(view)
	go func() { _ = runner.Run(ctx) }()

	start := func() (context.CancelFunc, chan error) {
		feed, err := NewFeed(ctx, f.js, view, FeedConfig{})
		if err != nil {
			t.Fatal(err)
		}
		fctx, fcancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- feed.Run(fctx) }()
		return fcancel, done
	}
	waitAnnounced := func(n int) []Announcement {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			got := feedAnnouncements(t, f)
			if len(got) >= n || time.Now().After(deadline) {
				return got
			}
			time.Sleep(10 * time.Millisecond)
		}
	}

	stop, done := start()
	a, b, c := f.issue("alice"), f.issue("bob"), f.issue("carol")
	if _, err := f.l.RevokeAccess(ctx, a.State.FamilyID, a.Access.JTI, a.Access.ExpiresAt, ledger.Cause{Kind: ledger.CauseRevoke}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.l.Revoke(ctx, b.State.FamilyID, ledger.Cause{Kind: ledger.CauseAdmin, Reason: "r"}); err != nil {
		t.Fatal(err)
	}
	got := waitAnnounced(2)
	if len(got) != 2 || got[0].Kind != KindAccess || got[0].JTI != a.Access.JTI || !got[0].ExpiresAt.Equal(a.Access.ExpiresAt) ||
		got[1].Kind != KindFamily || got[1].FamilyID != b.State.FamilyID || got[1].Cause != ledger.CauseAdmin ||
		got[1].ExpiresAt.Before(b.Access.ExpiresAt) {
		t.Fatalf("announcements: %+v", got)
	}
	stop()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	feed, err := NewFeed(ctx, f.js, view, FeedConfig{})
	if err != nil {
		t.Fatal(err)
	}
	if cp, err := feed.Checkpoint(ctx); err != nil || cp != f.lastSeq() {
		t.Fatalf("checkpoint after stop: %d %v, want %d", cp, err, f.lastSeq())
	}

	// Revocations while the feed is down are announced when it restarts,
	// and nothing is announced twice.
	if _, err := f.l.CutAccess(ctx, c.State.FamilyID, ledger.Cause{Kind: ledger.CauseSecurity, ID: "s1"}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.l.Revoke(ctx, a.State.FamilyID, ledger.Cause{Kind: ledger.CauseRevoke}); err != nil {
		t.Fatal(err)
	}
	stop, done = start()
	defer func() { stop(); <-done }()
	got = waitAnnounced(4)
	if len(got) != 4 || got[2].Kind != KindCutoff || got[2].FamilyID != c.State.FamilyID || got[3].Kind != KindFamily || got[3].FamilyID != a.State.FamilyID {
		t.Fatalf("after restart: %+v", got)
	}
	seen := map[string]bool{}
	for _, x := range got {
		if seen[x.EventID] {
			t.Fatalf("announced twice: %+v", x)
		}
		seen[x.EventID] = true
	}
}
