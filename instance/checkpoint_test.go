package instance_test

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tokenledger/tokenledger/internal/tltest"
	"github.com/tokenledger/tokenledger/projections"
)

// syncBuffer collects an instance's logs.
type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// A restarted instance loads the view's checkpoint, replays only the
// events after it, is ready, and its view is the one a rebuild gives;
// tokens issued before the checkpoint refresh and revoke as before.
func TestRestartLoadsCheckpoint(t *testing.T) {
	env := tltest.New(t, "")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	first := env.StartInstance(tltest.Options{})
	var tokens []string
	for i := range 40 {
		r := env.Issue("alice")
		tltest.WantOK(t, r)
		if i%2 == 0 {
			r = env.Refresh(r.RefreshToken)
			tltest.WantOK(t, r)
		}
		tokens = append(tokens, r.RefreshToken)
	}
	if err := first.View().WaitFor(ctx, env.LastSeq()); err != nil {
		t.Fatal(err)
	}
	saved, err := first.Runner().Checkpoint(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for range 15 { // the tail
		tltest.WantOK(t, env.Issue("bob"))
	}
	if err := env.StopInstance(0); err != nil {
		t.Fatal(err)
	}
	last := env.LastSeq()

	var log syncBuffer
	second := env.StartInstance(tltest.Options{Log: &log})
	for second.Ready(ctx, 1) != nil || second.View().LastSeq() < last {
		if ctx.Err() != nil {
			t.Fatalf("not ready: %v; log:\n%s", second.Ready(ctx, 1), log.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	got, ok := second.Runner().Restored()
	if !ok || got.Seq != saved.Seq {
		t.Fatalf("restored %+v %v, want the checkpoint at %d", got, ok, saved.Seq)
	}
	if n := second.Runner().Applied(); n < last-saved.Seq || n >= last {
		t.Fatalf("restarted view applied %d events: not the tail of %d (of %d)", n, last-saved.Seq, last)
	}
	if !strings.Contains(log.String(), "view restored from checkpoint") {
		t.Fatalf("no log of the restore:\n%s", log.String())
	}

	rebuilt := projections.NewView()
	r, err := projections.NewRunner(env.JS, rebuilt, projections.RunnerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.RunToEnd(ctx); err != nil {
		t.Fatal(err)
	}
	now := env.Clock.Now()
	for _, at := range []time.Time{now, now.Add(time.Hour), now.Add(100 * 24 * time.Hour)} {
		if a, b := second.View().Digest(at), rebuilt.Digest(at); a != b {
			t.Fatalf("restored view %s, rebuilt %s at %s", a, b, at)
		}
	}
	if n := len(second.View().FamiliesBySubject("alice", now)); n != 40 {
		t.Fatalf("alice has %d families in the restored view, want 40", n)
	}
	tltest.WantOK(t, env.Refresh(tokens[0]))
	if r := env.Call("tokens.revoke", map[string]any{"client_id": tltest.ClientID, "client_secret": tltest.Secret, "token": tokens[1]}); r.Error != "" {
		t.Fatalf("revoke: %s", r.Raw)
	}
}
