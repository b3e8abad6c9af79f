package handlers_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/tokenledger/tokenledger/api"
	"github.com/tokenledger/tokenledger/audit"
	"github.com/tokenledger/tokenledger/internal/tltest"
	"github.com/tokenledger/tokenledger/ledger"
	"github.com/tokenledger/tokenledger/ledger/jsstore"
)

// rollout asks tokens.admin.rollout and decodes its reply.
func rollout(t *testing.T, env *tltest.Env, body map[string]any) api.RolloutResponse {
	t.Helper()
	r := env.Call("tokens.admin.rollout", body)
	if r.Error != "" {
		t.Fatalf("rollout %v: %s", body, r.Raw)
	}
	var resp api.RolloutResponse
	if err := json.Unmarshal(r.Raw, &resp); err != nil {
		t.Fatal(err)
	}
	return resp
}

// family is one issued family and its current refresh token.
type family struct {
	id, token string
	version   int
}

// refreshAll refreshes every family once on led, in parallel, and keeps
// each one's new token and version.
func refreshAll(t *testing.T, led *jsstore.Ledger, fams []family) {
	t.Helper()
	client := tltest.Client()
	g, ctx := errgroup.WithContext(context.Background())
	g.SetLimit(32)
	for i := range fams {
		g.Go(func() error {
			gr, err := led.Refresh(ctx, jsstore.RefreshRequest{Client: client, Policy: tltest.Policy(0), RefreshToken: fams[i].token})
			if err != nil {
				return err
			}
			fams[i].token, fams[i].version = gr.RefreshToken, gr.State.Version
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}
}

// lastEvent is the family's last event.
func lastEvent(t *testing.T, env *tltest.Env, familyID string) ledger.Event {
	t.Helper()
	msg, err := env.Store.LastMsg(context.Background(), env.Store.FamilySubject(familyID))
	if err != nil {
		t.Fatal(err)
	}
	e, err := ledger.DecodeEvent(msg.Data)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// TestRolloutOverFamilies: a rollout at 25% over 10 000 families moves
// the share the hash selects, exactly those, each move an event naming the
// rollout; 60% adds only new ones; past the deadline a family below the
// version is refused with an event and new families start at it; a
// restarted service and a second instance agree; audit verify passes.
func TestRolloutOverFamilies(t *testing.T) {
	const n = 10000
	env := tltest.New(t, "")
	env.StartInstance(tltest.Options{})
	led := env.Ledger()
	ctx := context.Background()

	fams := make([]family, n)
	client := tltest.Client()
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(32)
	for i := range fams {
		g.Go(func() error {
			gr, err := led.Issue(gctx, jsstore.IssueRequest{Client: client, Policy: tltest.Policy(0), Subject: "user", Scope: "read"})
			fams[i] = family{id: gr.State.FamilyID, token: gr.RefreshToken, version: gr.State.Version}
			return err
		})
	}
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}

	deadline := tltest.Start.Add(24 * time.Hour)
	start := rollout(t, env, map[string]any{"client_id": tltest.ClientID, "version": 2, "percent": 25, "deadline": deadline.Format(time.RFC3339)})
	if start.RolloutID == "" || start.Version != 2 || start.Percent != 25 || !start.Changed || start.Deadline == nil || !start.Deadline.Equal(deadline) {
		t.Fatalf("start: %+v", start)
	}
	if start.Progress.AtOrAbove != 0 || start.Progress.Below != n {
		t.Fatalf("progress before any refresh: %+v", start.Progress)
	}

	env.Clock.Advance(time.Minute)
	refreshAll(t, led, fams)
	moved := map[string]bool{}
	for _, f := range fams {
		inCohort := ledger.CohortBucket(f.id) < 25
		if (f.version == 2) != inCohort {
			t.Fatalf("family %s (bucket %d) at version %d", f.id, ledger.CohortBucket(f.id), f.version)
		}
		if inCohort {
			moved[f.id] = true
		}
	}
	if share := float64(len(moved)) / n; share < 0.23 || share > 0.27 {
		t.Fatalf("moved %.3f of the families, want 0.25 ± 0.02", share)
	}
	t.Logf("25%%: moved %d of %d families (%.2f%%)", len(moved), n, 100*float64(len(moved))/n)
	st := rollout(t, env, map[string]any{"client_id": tltest.ClientID})
	if st.Changed || st.Progress.Moved != len(moved) || st.Progress.AtOrAbove != len(moved) || st.Progress.Below != n-len(moved) {
		t.Fatalf("status after 25%%: %+v (moved %d)", st, len(moved))
	}

	raise := rollout(t, env, map[string]any{"client_id": tltest.ClientID, "version": 2, "percent": 60})
	if raise.RolloutID != start.RolloutID || raise.Percent != 60 || !raise.Changed {
		t.Fatalf("raise: %+v", raise)
	}
	env.Clock.Advance(time.Minute)
	refreshAll(t, led, fams)
	added := 0
	for _, f := range fams {
		inCohort := ledger.CohortBucket(f.id) < 60
		if (f.version == 2) != inCohort {
			t.Fatalf("after 60%%: family %s (bucket %d) at version %d", f.id, ledger.CohortBucket(f.id), f.version)
		}
		e := lastEvent(t, env, f.id)
		rot, ok := e.Data.(ledger.RefreshRotated)
		if !ok {
			t.Fatalf("last event of %s is %s", f.id, e.Type)
		}
		switch {
		case inCohort && !moved[f.id]: // moved by the raise
			added++
			if rot.RolloutID != start.RolloutID || rot.FromVersion != 1 || rot.Version != 2 {
				t.Fatalf("move of %s: %+v", f.id, rot)
			}
		case rot.RolloutID != "": // moved before, or outside the cohort
			t.Fatalf("rotation of %s names the rollout again: %+v", f.id, rot)
		}
	}
	if added == 0 {
		t.Fatal("raising to 60% moved no family")
	}
	t.Logf("60%%: %d more families moved, %d in all", added, len(moved)+added)
	st = rollout(t, env, map[string]any{"client_id": tltest.ClientID})
	if st.Progress.Moved != len(moved)+added {
		t.Fatalf("moved %d, want %d", st.Progress.Moved, len(moved)+added)
	}

	// Past the deadline a family below the version is refused, with an
	// event; a new family starts at the version.
	env.Clock.Set(deadline.Add(time.Minute))
	var below family
	for _, f := range fams {
		if f.version == 1 {
			below = f
			break
		}
	}
	r := env.Refresh(below.token)
	tltest.WantError(t, r, api.CodeInvalidGrant, "400")
	if !strings.Contains(r.Description, "log in again") {
		t.Fatalf("refusal description %q", r.Description)
	}
	refusal := lastEvent(t, env, below.id)
	if d, ok := refusal.Data.(ledger.VersionRefused); !ok || d.RolloutID != start.RolloutID || d.RequiredVersion != 2 || d.Version != 1 {
		t.Fatalf("refusal event %s %+v", refusal.Type, refusal.Data)
	}
	issued := env.Issue("after-deadline")
	tltest.WantOK(t, issued)
	if v := accessVersion(t, issued.AccessToken); v != 2 {
		t.Fatalf("new family's ver %d, want 2", v)
	}
	if e := lastEvent(t, env, issued.FamilyID); e.Data.(ledger.FamilyIssued).RolloutID != start.RolloutID {
		t.Fatalf("issue does not name the rollout: %+v", e.Data)
	}
	first := rollout(t, env, map[string]any{"client_id": tltest.ClientID})
	if first.Progress.Refused != 1 || first.Progress.Issued != 1 {
		t.Fatalf("progress after the deadline: %+v", first.Progress)
	}

	// A restart, and a second instance: both agree on all of it, and
	// decide as the first did.
	if err := env.StopInstance(0); err != nil {
		t.Fatal(err)
	}
	second := env.StartInstance(tltest.Options{})
	third := env.StartInstance(tltest.Options{})
	last := env.LastSeq()
	for _, in := range []*struct {
		name string
		ro   interface {
			WaitFor(context.Context, uint64) error
		}
	}{{"restarted", second.Rollouts()}, {"second", third.Rollouts()}} {
		wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		if err := in.ro.WaitFor(wctx, last); err != nil {
			cancel()
			t.Fatalf("%s: %v", in.name, err)
		}
		cancel()
	}
	for i, in := range env.Instances[1:] {
		cur, ok := in.Rollouts().Current(tltest.ClientID)
		if !ok || cur.ID != start.RolloutID || cur.Percent != 60 || cur.Version != 2 {
			t.Fatalf("instance %d: current rollout %+v", i+1, cur)
		}
		if p := in.Rollouts().Progress(cur.ID); p.Moved != first.Progress.Moved || p.Refused != 1 || p.Issued != 1 {
			t.Fatalf("instance %d: progress %+v, want %+v", i+1, p, first.Progress)
		}
		_, err := in.Ledger().Refresh(ctx, jsstore.RefreshRequest{Client: client, Policy: tltest.Policy(0), RefreshToken: below.token})
		if !errors.Is(err, ledger.ErrVersionRequired) {
			t.Fatalf("instance %d: refresh below the version: %v", i+1, err)
		}
	}
	again := rollout(t, env, map[string]any{"client_id": tltest.ClientID})
	if again.RolloutID != first.RolloutID || again.Progress.Moved != first.Progress.Moved ||
		again.Progress.Refused != 1 || again.Progress.AtOrAbove != first.Progress.AtOrAbove {
		t.Fatalf("after the restart: %+v, before %+v", again, first)
	}

	rep, err := audit.Verify(ctx, audit.NewSource(env.JS, "", ""), audit.VerifyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !rep.OK {
		t.Fatalf("audit verify: %+v", rep.Violations[:min(5, len(rep.Violations))])
	}
	t.Logf("audit verify: %d events, %d families, ok", rep.Events, rep.Families)

	// audit replay --rollout: the rollout's events and the families' events
	// naming it, nothing else.
	var out strings.Builder
	sum, err := audit.Replay(ctx, audit.NewSource(env.JS, "", ""), audit.ReplayOptions{Filter: audit.Filter{Rollouts: []string{start.RolloutID}}}, &out)
	if err != nil {
		t.Fatal(err)
	}
	// started, raised, every move, the new family, the refusals (one by
	// the service, one per other instance).
	if want := uint64(2 + first.Progress.Moved + 1 + 3); sum.Matched != want {
		t.Fatalf("replay --rollout matched %d, want %d", sum.Matched, want)
	}
}

// accessVersion reads the ver claim of an access token (not verified: the
// other tests verify signatures).
func accessVersion(t *testing.T, jwt string) int {
	t.Helper()
	parts := strings.Split(jwt, ".")
	if len(parts) != 3 {
		t.Fatalf("not a JWT: %q", jwt)
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	var c struct {
		Ver int `json:"ver"`
	}
	if err := json.Unmarshal(b, &c); err != nil {
		t.Fatal(err)
	}
	return c.Ver
}

// TestRolloutBadInput: each bad request is invalid_request and appends
// nothing.
func TestRolloutBadInput(t *testing.T) {
	env := tltest.New(t, "")
	env.StartInstance(tltest.Options{})
	rollout(t, env, map[string]any{"client_id": tltest.ClientID, "version": 3, "percent": 10})
	past := tltest.Start.Add(-time.Hour).Format(time.RFC3339)
	var mu sync.Mutex // the table runs in order; the lock documents the shared env
	for _, tc := range []struct {
		name string
		body any
	}{
		{"unknown client", map[string]any{"client_id": "nobody", "version": 4}},
		{"malformed client", map[string]any{"client_id": "a b", "version": 4}},
		{"version lower than current", map[string]any{"client_id": tltest.ClientID, "version": 2}},
		{"percent lowered", map[string]any{"client_id": tltest.ClientID, "version": 3, "percent": 5}},
		{"percent 0", map[string]any{"client_id": tltest.ClientID, "version": 3, "percent": 0}},
		{"percent 101", map[string]any{"client_id": tltest.ClientID, "version": 3, "percent": 101}},
		{"deadline in the past", map[string]any{"client_id": tltest.ClientID, "version": 3, "percent": 20, "deadline": past}},
		{"deadline not RFC 3339", map[string]any{"client_id": tltest.ClientID, "version": 3, "deadline": "tomorrow"}},
		{"next version before this one is complete", map[string]any{"client_id": tltest.ClientID, "version": 4}},
		{"percent without version", map[string]any{"client_id": tltest.ClientID, "percent": 50}},
		{"negative version", map[string]any{"client_id": tltest.ClientID, "version": -1}},
		{"unknown member", map[string]any{"client_id": tltest.ClientID, "version": 3, "cohort": 1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mu.Lock()
			defer mu.Unlock()
			before := env.LastSeq()
			r := env.Call("tokens.admin.rollout", tc.body)
			tltest.WantError(t, r, api.CodeInvalidRequest, "400")
			if after := env.LastSeq(); after != before {
				t.Fatalf("appended %d events", after-before)
			}
		})
	}
}
