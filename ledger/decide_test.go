package ledger

import (
	"errors"
	"fmt"
	"reflect"
	"testing"
	"time"
)

var t0 = time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)

const famID = "01JDQ7Z6M3XGJ8Y9W4V2T1S0RQ"

var testPolicy = Policy{
	Rotation: RotateAlways, Grace: 10 * time.Second, AccessTTL: 15 * time.Minute,
	RefreshTTL: 14 * 24 * time.Hour, FamilyTTL: 90 * 24 * time.Hour,
}

func issueCmd() Issue {
	return Issue{
		EventID: "E-issue", FamilyID: famID, Cause: Cause{Kind: CauseRequest, ID: "R0"},
		ClientID: "web", Subject: "alice", Scope: "read write", Audience: []string{"api"},
		TokenHash: "H0", AccessJTI: "J0", Policy: testPolicy,
	}
}

func refreshCmd(id, presented, next string) Refresh {
	return Refresh{
		EventID: id, Cause: Cause{Kind: CauseRequest, ID: "R-" + id}, ClientID: "web",
		Presented: Presented{Hash: presented}, Policy: testPolicy,
		NextHash: next, SealedNext: "sealed-" + next, AccessJTI: "J-" + id,
	}
}

// given folds the events each command produces, in order, from an empty
// family, failing the test if any command is refused.
func given(t *testing.T, steps ...struct {
	at  time.Time
	cmd Command
}) State {
	t.Helper()
	var s State
	for i, st := range steps {
		events, err := Decide(s, st.cmd, st.at)
		if err != nil {
			t.Fatalf("given step %d (%T): %v", i, st.cmd, err)
		}
		for _, e := range events {
			s = Apply(s, e)
		}
	}
	return s
}

type step = struct {
	at  time.Time
	cmd Command
}

func TestDecide(t *testing.T) {
	issued := step{t0, issueCmd()}
	rot1 := step{t0.Add(time.Minute), refreshCmd("E1", "H0", "H1")}
	rot2 := step{t0.Add(2 * time.Minute), refreshCmd("E2", "H1", "H2")}
	revoked := step{t0.Add(3 * time.Minute), Revoke{EventID: "E-rev", Cause: Cause{Kind: CauseAdmin, Reason: "test"}}}
	periodic := func(c Refresh) Refresh {
		c.Policy.Rotation, c.Policy.RotateAfter = RotatePeriodic, time.Hour
		return c
	}
	noGrace := func(c Refresh) Refresh { c.Policy.Grace = 0; return c }
	withScope := func(scope string) func(Refresh) Refresh {
		return func(c Refresh) Refresh { c.Scope = scope; return c }
	}
	older := func(gen uint64) func(Refresh) Refresh {
		return func(c Refresh) Refresh {
			c.Presented.Older = &OlderToken{Generation: gen, RotatedAt: t0.Add(time.Minute), WinnerEventID: "E1", WinnerRequest: "R-E1"}
			return c
		}
	}
	rollout := func(v int, deadline time.Time) func(Refresh) Refresh {
		return func(c Refresh) Refresh { c.Rollout = &Rollout{Version: v, Deadline: deadline}; return c }
	}
	id := func(c Refresh) Refresh { return c }

	tests := []struct {
		name     string
		given    []step
		at       time.Time
		cmd      Command
		wantType EventType // "" for no event
		wantErr  error
		check    func(t *testing.T, e Event)
	}{
		{name: "issue starts a family", at: t0, cmd: issueCmd(), wantType: TypeFamilyIssued,
			check: func(t *testing.T, e Event) {
				d := e.Data.(FamilyIssued)
				if !d.ExpiresAt.Equal(t0.Add(testPolicy.FamilyTTL)) || !d.Access.ExpiresAt.Equal(t0.Add(15*time.Minute)) {
					t.Errorf("lifetimes: %+v", d)
				}
			}},
		{name: "issue twice conflicts", given: []step{issued}, at: t0, cmd: issueCmd(), wantErr: ErrConflict},
		{name: "issue without subject", at: t0, cmd: func() Issue { c := issueCmd(); c.Subject = ""; return c }(), wantErr: ErrInvalidRequest},
		{name: "issue without lifetimes", at: t0, cmd: func() Issue { c := issueCmd(); c.Policy = Policy{}; return c }(), wantErr: ErrInvalidRequest},
		{name: "refresh of unknown family", at: t0, cmd: refreshCmd("E1", "H0", "H1"), wantErr: ErrUnknownFamily},
		{name: "rotate on use", given: []step{issued}, at: t0.Add(time.Minute), cmd: refreshCmd("E1", "H0", "H1"), wantType: TypeRefreshRotated,
			check: func(t *testing.T, e Event) {
				d := e.Data.(RefreshRotated)
				if d.FromGeneration != 0 || d.ToGeneration != 1 || d.TokenHash != "H1" || d.PresentedHash != "H0" {
					t.Errorf("rotation %+v", d)
				}
			}},
		{name: "forged token revokes nothing", given: []step{issued, rot1}, at: t0.Add(time.Hour), cmd: refreshCmd("E2", "HX", "H2"), wantErr: ErrInvalidToken},
		{name: "other client", given: []step{issued}, at: t0, cmd: func() Refresh { c := refreshCmd("E1", "H0", "H1"); c.ClientID = "evil"; return c }(), wantErr: ErrWrongClient},
		{name: "grace retry inside window", given: []step{issued, rot1}, at: t0.Add(time.Minute + 5*time.Second), cmd: refreshCmd("E2", "H0", "H9"), wantType: TypeGraceRetried,
			check: func(t *testing.T, e Event) {
				d := e.Data.(GraceRetried)
				if d.PresentedGeneration != 0 || d.SuccessorGeneration != 1 || d.RotatedAgo != 5*time.Second {
					t.Errorf("retry %+v", d)
				}
			}},
		{name: "grace retry at the window's edge", given: []step{issued, rot1}, at: t0.Add(time.Minute + 10*time.Second), cmd: refreshCmd("E2", "H0", "H9"), wantType: TypeGraceRetried},
		{name: "reuse just after the window", given: []step{issued, rot1}, at: t0.Add(time.Minute + 10*time.Second + time.Nanosecond), cmd: refreshCmd("E2", "H0", "H9"), wantType: TypeReuseDetected, wantErr: ErrRefreshReused,
			check: func(t *testing.T, e Event) {
				d := e.Data.(ReuseDetected)
				if d.PresentedGeneration != 0 || d.CurrentGeneration != 1 || d.WinnerEventID != "E1" || d.WinnerRequest != "R-E1" || d.RotatedAgo <= 10*time.Second {
					t.Errorf("lineage %+v", d)
				}
			}},
		{name: "grace disabled: reuse at once", given: []step{issued, rot1}, at: t0.Add(time.Minute), cmd: noGrace(refreshCmd("E2", "H0", "H9")), wantType: TypeReuseDetected, wantErr: ErrRefreshReused},
		{name: "grace capped at 60s", given: []step{issued, rot1}, at: t0.Add(2*time.Minute + time.Second), cmd: func() Refresh { c := refreshCmd("E2", "H0", "H9"); c.Policy.Grace = time.Hour; return c }(), wantType: TypeReuseDetected, wantErr: ErrRefreshReused},
		{name: "older generation is reuse", given: []step{issued, rot1, rot2}, at: t0.Add(2*time.Minute + time.Second), cmd: older(0)(refreshCmd("E3", "H0", "H9")), wantType: TypeReuseDetected, wantErr: ErrRefreshReused,
			check: func(t *testing.T, e Event) {
				d := e.Data.(ReuseDetected)
				if d.PresentedGeneration != 0 || d.CurrentGeneration != 2 || d.WinnerEventID != "E1" {
					t.Errorf("lineage %+v", d)
				}
			}},
		{name: "revoked family refuses current token", given: []step{issued, rot1, revoked}, at: t0.Add(4 * time.Minute), cmd: refreshCmd("E3", "H1", "H2"), wantErr: ErrFamilyRevoked},
		{name: "revoked family stays dead inside grace", given: []step{issued, rot1, revoked}, at: t0.Add(time.Minute + time.Second), cmd: refreshCmd("E3", "H0", "H2"), wantErr: ErrFamilyRevoked},
		{name: "revoked family: forged is still invalid", given: []step{issued, revoked}, at: t0.Add(4 * time.Minute), cmd: refreshCmd("E3", "HX", "H2"), wantErr: ErrInvalidToken},
		{name: "idle expiry", given: []step{issued}, at: t0.Add(14 * 24 * time.Hour), cmd: refreshCmd("E1", "H0", "H1"), wantErr: ErrExpired},
		{name: "just before idle expiry", given: []step{issued}, at: t0.Add(14*24*time.Hour - time.Second), cmd: refreshCmd("E1", "H0", "H1"), wantType: TypeRefreshRotated},
		{name: "absolute expiry", given: []step{issued}, at: t0.Add(90 * 24 * time.Hour), cmd: refreshCmd("E1", "H0", "H1"), wantErr: ErrFamilyExpired},
		{name: "periodic keeps a young token", given: []step{issued}, at: t0.Add(30 * time.Minute), cmd: periodic(refreshCmd("E1", "H0", "H1")), wantType: TypeRefreshUsed},
		{name: "periodic rotates an old token", given: []step{issued}, at: t0.Add(time.Hour), cmd: periodic(refreshCmd("E1", "H0", "H1")), wantType: TypeRefreshRotated},
		{name: "scope narrows", given: []step{issued}, at: t0, cmd: withScope("read")(refreshCmd("E1", "H0", "H1")), wantType: TypeRefreshRotated,
			check: func(t *testing.T, e Event) {
				if s := e.Data.(RefreshRotated).Access.Scope; s != "read" {
					t.Errorf("scope %q", s)
				}
			}},
		{name: "scope cannot widen", given: []step{issued}, at: t0, cmd: withScope("admin")(refreshCmd("E1", "H0", "H1")), wantErr: ErrInvalidScope},
		{name: "rollout rotates onto the version", given: []step{issued}, at: t0, cmd: periodic(rollout(2, time.Time{})(refreshCmd("E1", "H0", "H1"))), wantType: TypeRefreshRotated,
			check: func(t *testing.T, e Event) {
				if v := e.Data.(RefreshRotated).Version; v != 2 {
					t.Errorf("version %d", v)
				}
			}},
		{name: "rollout past deadline refuses", given: []step{issued}, at: t0.Add(time.Hour), cmd: rollout(2, t0.Add(time.Minute))(refreshCmd("E1", "H0", "H1")), wantType: TypeVersionRefused, wantErr: ErrVersionRequired},
		{name: "rollout already met", given: []step{issued}, at: t0, cmd: rollout(1, t0)(refreshCmd("E1", "H0", "H1")), wantType: TypeRefreshRotated},
		{name: "rotation needs a minted successor", given: []step{issued}, at: t0, cmd: refreshCmd("E1", "H0", ""), wantErr: ErrInvalidRequest},
		{name: "revoke", given: []step{issued}, at: t0, cmd: Revoke{EventID: "E9", Cause: Cause{Kind: CauseRevoke}}, wantType: TypeFamilyRevoked},
		{name: "revoke needs a cause", given: []step{issued}, at: t0, cmd: Revoke{EventID: "E9"}, wantErr: ErrInvalidRequest},
		{name: "revoke twice appends nothing", given: []step{issued, revoked}, at: t0.Add(time.Hour), cmd: Revoke{EventID: "E9", Cause: Cause{Kind: CauseRevoke}}},
		{name: "revoke unknown family", at: t0, cmd: Revoke{EventID: "E9", Cause: Cause{Kind: CauseRevoke}}, wantErr: ErrUnknownFamily},
		{name: "revoke access token", given: []step{issued}, at: t0, cmd: RevokeAccess{EventID: "E9", Cause: Cause{Kind: CauseRevoke}, JTI: "J0", ExpiresAt: t0.Add(15 * time.Minute)}, wantType: TypeAccessRevoked},
		{name: "revoke expired access token appends nothing", given: []step{issued}, at: t0.Add(time.Hour), cmd: RevokeAccess{EventID: "E9", Cause: Cause{Kind: CauseRevoke}, JTI: "J0", ExpiresAt: t0.Add(15 * time.Minute)}},
		{name: "cut access", given: []step{issued}, at: t0, cmd: CutAccess{EventID: "E9", Cause: Cause{Kind: CauseSecurity, ID: "sec-1"}}, wantType: TypeAccessCutoff},
		{name: "cut access of revoked family appends nothing", given: []step{issued, revoked}, at: t0.Add(time.Hour), cmd: CutAccess{EventID: "E9", Cause: Cause{Kind: CauseSecurity, ID: "sec-1"}}},
		{name: "previous token an hour before the rotation (clock behind) is reuse", given: []step{issued, rot1}, at: t0.Add(time.Minute - time.Hour - 5*time.Minute), cmd: refreshCmd("E2", "H0", "H9"), wantType: TypeReuseDetected, wantErr: ErrRefreshReused},
		{name: "previous token 1ns before the rotation is reuse", given: []step{issued, rot1}, at: t0.Add(time.Minute - time.Nanosecond), cmd: refreshCmd("E2", "H0", "H9"), wantType: TypeReuseDetected, wantErr: ErrRefreshReused},
		{name: "previous token at the rotation's instant is a grace retry", given: []step{issued, rot1}, at: t0.Add(time.Minute), cmd: refreshCmd("E2", "H0", "H9"), wantType: TypeGraceRetried},
		{name: "revoke expired family appends nothing", given: []step{issued}, at: t0.Add(90 * 24 * time.Hour), cmd: Revoke{EventID: "E9", Cause: Cause{Kind: CauseRevoke}}},
		{name: "revoke by the family's client", given: []step{issued}, at: t0, cmd: Revoke{EventID: "E9", Cause: Cause{Kind: CauseRevoke}, ClientID: "web"}, wantType: TypeFamilyRevoked},
		{name: "revoke by another client is refused", given: []step{issued}, at: t0, cmd: Revoke{EventID: "E9", Cause: Cause{Kind: CauseRevoke}, ClientID: "evil"}, wantErr: ErrWrongClient},
		{name: "revoke access token already denied appends nothing", given: []step{issued}, at: t0, cmd: RevokeAccess{EventID: "E9", Cause: Cause{Kind: CauseRevoke}, JTI: "J0", ExpiresAt: t0.Add(15 * time.Minute), Denied: true}},
		{name: "revoke access token of revoked family appends nothing", given: []step{issued, revoked}, at: t0.Add(4 * time.Minute), cmd: RevokeAccess{EventID: "E9", Cause: Cause{Kind: CauseRevoke}, JTI: "J0", ExpiresAt: t0.Add(15 * time.Minute)}},
		{name: "revoke access token of expired family appends nothing", given: []step{issued}, at: t0.Add(90 * 24 * time.Hour), cmd: RevokeAccess{EventID: "E9", Cause: Cause{Kind: CauseRevoke}, JTI: "J0", ExpiresAt: t0.Add(100 * 24 * time.Hour)}},
		{name: "revoke access token needs a jti", given: []step{issued}, at: t0, cmd: RevokeAccess{EventID: "E9", Cause: Cause{Kind: CauseRevoke}, ExpiresAt: t0.Add(15 * time.Minute)}, wantErr: ErrInvalidRequest},
		{name: "cut access again by the same handling appends nothing", given: []step{issued, {t0.Add(time.Minute), CutAccess{EventID: "E8", Cause: Cause{Kind: CauseSecurity, ID: "sec-1"}}}}, at: t0.Add(2 * time.Minute), cmd: CutAccess{EventID: "E9", Cause: Cause{Kind: CauseSecurity, ID: "sec-1"}, Since: t0.Add(30 * time.Second)}},
		{name: "cut access after an older cut", given: []step{issued, {t0.Add(time.Minute), CutAccess{EventID: "E8", Cause: Cause{Kind: CauseSecurity, ID: "sec-0"}}}}, at: t0.Add(2 * time.Minute), cmd: CutAccess{EventID: "E9", Cause: Cause{Kind: CauseSecurity, ID: "sec-1"}, Since: t0.Add(90 * time.Second)}, wantType: TypeAccessCutoff},
		{name: "identity helper keeps the command", given: []step{issued}, at: t0, cmd: id(refreshCmd("E1", "H0", "H1")), wantType: TypeRefreshRotated},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := given(t, tc.given...)
			before := fmt.Sprintf("%+v", s)
			events, err := Decide(s, tc.cmd, tc.at)
			if !errors.Is(err, tc.wantErr) || (tc.wantErr == nil && err != nil) {
				t.Fatalf("err = %v, want %v", err, tc.wantErr)
			}
			if got := fmt.Sprintf("%+v", s); got != before {
				t.Fatal("Decide changed its input state")
			}
			if tc.wantType == "" {
				if len(events) != 0 {
					t.Fatalf("want no event, got %d", len(events))
				}
				return
			}
			if len(events) != 1 {
				t.Fatalf("want one %s event, got %d", tc.wantType, len(events))
			}
			e := events[0]
			if TypeOf(e.Data) != tc.wantType || !e.OccurredAt.Equal(tc.at) || e.FamilyID != famID {
				t.Fatalf("event %s at %s for %s, want %s at %s", TypeOf(e.Data), e.OccurredAt, e.FamilyID, tc.wantType, tc.at)
			}
			if tc.check != nil {
				tc.check(t, e)
			}
		})
	}
}

func TestApplyFold(t *testing.T) {
	s := given(t,
		step{t0, issueCmd()},
		step{t0.Add(time.Minute), refreshCmd("E1", "H0", "H1")},
		step{t0.Add(time.Minute + time.Second), refreshCmd("E2", "H0", "HX")}, // grace retry
		step{t0.Add(2 * time.Minute), refreshCmd("E3", "H1", "H2")},
	)
	want := State{
		FamilyID: famID, ClientID: "web", Subject: "alice", Scope: "read write", Audience: []string{"api"},
		Version: 1, CreatedAt: t0, ExpiresAt: t0.Add(testPolicy.FamilyTTL),
		Generation: 2, TokenHash: "H2", TokenIssuedAt: t0.Add(2 * time.Minute),
		RefreshExpiresAt: t0.Add(2*time.Minute + testPolicy.RefreshTTL), RotatedAt: t0.Add(2 * time.Minute),
		Previous: &Previous{Generation: 1, Hash: "H1", RotatedAt: t0.Add(2 * time.Minute), SealedSuccessor: "sealed-H2", EventID: "E3", Request: "R-E3"},
		Events:   4,
	}
	if !reflect.DeepEqual(s, want) {
		t.Fatalf("fold:\n got %+v\nwant %+v", s, want)
	}
	if s.StatusAt(t0) != StatusActive || s.StatusAt(want.ExpiresAt) != StatusExpired {
		t.Fatal("status by time")
	}
	r := Apply(s, Event{ID: "E4", FamilyID: famID, OccurredAt: t0.Add(3 * time.Minute), Cause: Cause{Kind: CauseAdmin, Reason: "x"}, Data: FamilyRevoked{}})
	if r.StatusAt(t0.Add(4*time.Minute)) != StatusRevoked || r.Revoked.Cause.Kind != CauseAdmin || r.Revoked.EventID != "E4" {
		t.Fatalf("revocation %+v", r.Revoked)
	}
	// A later reuse does not overwrite the first cause.
	r2 := Apply(r, Event{ID: "E5", FamilyID: famID, Cause: Cause{Kind: CauseRevoke}, Data: FamilyRevoked{}})
	if r2.Revoked.EventID != "E4" {
		t.Fatalf("second revocation replaced the first: %+v", r2.Revoked)
	}
}

func BenchmarkDecide(b *testing.B) {
	s := given(&testing.T{}, step{t0, issueCmd()})
	cmd := refreshCmd("E1", "H0", "H1")
	now := t0.Add(time.Minute)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Decide(s, cmd, now); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkApply(b *testing.B) {
	s := given(&testing.T{}, step{t0, issueCmd()})
	events, _ := Decide(s, refreshCmd("E1", "H0", "H1"), t0.Add(time.Minute))
	b.ReportAllocs()
	for b.Loop() {
		_ = Apply(s, events[0])
	}
}
