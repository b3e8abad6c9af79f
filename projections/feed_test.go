package projections

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/tokenledger/tokenledger/ledger"
	"github.com/tokenledger/tokenledger/ledger/jsstore"
	"github.com/tokenledger/tokenledger/revocation"
)

// feedAnnouncements reads the whole feed stream.
func feedAnnouncements(t *testing.T, f *fixture) []revocation.Announcement {
	t.Helper()
	ctx := context.Background()
	s, err := f.js.Stream(ctx, revocation.DefaultStream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var out []revocation.Announcement
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		msg, err := s.GetMsg(ctx, seq)
		if err != nil {
			t.Fatal(err)
		}
		var a revocation.Announcement
		if err := json.Unmarshal(msg.Data, &a); err != nil {
			t.Fatal(err)
		}
		if msg.Subject != revocation.Subject(revocation.DefaultPrefix, a.Kind) {
			t.Fatalf("announcement %+v on %s", a, msg.Subject)
		}
		out = append(out, a)
	}
	return out
}

// The feed announces every revocation once, across restarts, whether it
// reads the ledger on its own, follows the view's runner, or follows it
// with a queue so small that it overflows and the feed catches up on its
// own again.
func TestFeedAnnouncesEveryRevocationOnceAndResumes(t *testing.T) {
	for _, tc := range []struct {
		name   string
		follow bool
		queue  int // capacity of the runner's queue when following
	}{
		{name: "reading on its own"},
		{name: "following the runner", follow: true, queue: feedQueue},
		{name: "following with a queue that overflows", follow: true, queue: 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			var rode, overflows uint64
			// start runs a view, its runner and a feed; stop ends all three.
			start := func() (stop func()) {
				view := NewView()
				runner := f.runner(view)
				feed, err := NewFeed(ctx, f.js, view, FeedConfig{})
				if err != nil {
					t.Fatal(err)
				}
				if tc.follow {
					feed.Follow(runner)
					feed.queue = make(chan tapped, tc.queue)
				}
				rctx, rcancel := context.WithCancel(ctx)
				done := make(chan error, 2)
				go func() { done <- runner.Run(rctx) }()
				go func() { done <- feed.Run(rctx) }()
				return func() {
					rcancel()
					for range 2 {
						if err := <-done; err != nil {
							t.Fatal(err)
						}
					}
					rode += feed.rode.Load()
					overflows += feed.overflows.Load()
				}
			}
			waitAnnounced := func(n int) []revocation.Announcement {
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

			stop := start()
			a, b, c := f.issue("alice"), f.issue("bob"), f.issue("carol")
			if _, err := f.l.RevokeAccess(ctx, jsstore.AccessToken{FamilyID: a.State.FamilyID, JTI: a.Access.JTI, ExpiresAt: a.Access.ExpiresAt}, ledger.Cause{Kind: ledger.CauseRevoke}, nil); err != nil {
				t.Fatal(err)
			}
			if _, err := f.l.Revoke(ctx, b.State.FamilyID, ledger.Cause{Kind: ledger.CauseAdmin, Reason: "r"}); err != nil {
				t.Fatal(err)
			}
			got := waitAnnounced(2)
			if len(got) != 2 || got[0].Kind != revocation.KindAccess || got[0].JTI != a.Access.JTI || !got[0].ExpiresAt.Equal(a.Access.ExpiresAt) ||
				got[1].Kind != revocation.KindFamily || got[1].FamilyID != b.State.FamilyID || got[1].Cause != ledger.CauseAdmin ||
				got[1].ExpiresAt.Before(b.Access.ExpiresAt) {
				t.Fatalf("announcements: %+v", got)
			}
			stop()
			feed, err := NewFeed(ctx, f.js, NewView(), FeedConfig{})
			if err != nil {
				t.Fatal(err)
			}
			if cp, err := feed.Checkpoint(ctx); err != nil || cp != f.lastSeq() {
				t.Fatalf("checkpoint after stop: %d %v, want %d", cp, err, f.lastSeq())
			}

			// Revocations while the feed is down are announced when it
			// restarts (the runner rebuilds the view from the start
			// meanwhile), and nothing is announced twice.
			if _, err := f.l.CutAccess(ctx, c.State.FamilyID, ledger.Cause{Kind: ledger.CauseSecurity, ID: "s1"}); err != nil {
				t.Fatal(err)
			}
			if _, err := f.l.Revoke(ctx, a.State.FamilyID, ledger.Cause{Kind: ledger.CauseRevoke}); err != nil {
				t.Fatal(err)
			}
			stop = start()
			got = waitAnnounced(4)
			if len(got) != 4 || got[2].Kind != revocation.KindCutoff || got[2].FamilyID != c.State.FamilyID || got[2].FamilyEvent != 2 || got[3].Kind != revocation.KindFamily || got[3].FamilyID != a.State.FamilyID {
				t.Fatalf("after restart: %+v", got)
			}
			// A burst of revocations from concurrent writers, with
			// ordinary events between them.
			const burst = 40
			var wg sync.WaitGroup
			for i := range burst {
				wg.Go(func() {
					g, err := f.l.Issue(ctx, jsstore.IssueRequest{Client: testClient, Policy: testPolicy, Subject: fmt.Sprint("u", i), Scope: "read"})
					if err == nil {
						_, err = f.l.Revoke(ctx, g.State.FamilyID, ledger.Cause{Kind: ledger.CauseRevoke})
					}
					if err != nil {
						t.Error(err)
					}
				})
			}
			wg.Wait()
			got = waitAnnounced(4 + burst)
			stop()
			if len(got) != 4+burst {
				t.Fatalf("%d announcements, want %d", len(got), 4+burst)
			}
			seen := map[string]bool{}
			for _, x := range got {
				if seen[x.EventID] {
					t.Fatalf("announced twice: %+v", x)
				}
				seen[x.EventID] = true
			}
			switch {
			case !tc.follow && rode != 0:
				t.Fatalf("a feed that follows no runner announced %d revocations from a queue", rode)
			case tc.follow && rode == 0:
				t.Fatal("following the runner, the feed announced nothing the runner handed over")
			case tc.queue == 1 && overflows == 0:
				t.Fatal("a queue of one never overflowed")
			}
		})
	}
}
