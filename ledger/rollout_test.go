package ledger

import (
	"errors"
	"fmt"
	"reflect"
	"testing"
	"time"
)

func setRollout(version, percent int, deadline time.Time) SetRollout {
	return SetRollout{EventID: "R-new", Cause: Cause{Kind: CauseAdmin, ID: "req"}, ClientID: "web",
		Version: version, Percent: percent, Deadline: deadline}
}

func TestDecideRollout(t *testing.T) {
	cur := RolloutState{ID: "R1", ClientID: "web", Version: 2, Percent: 25, StartedAt: t0, Seq: 7, Head: "h"}
	full := cur
	full.Percent = 100
	dated := cur
	dated.Deadline = t0.Add(time.Hour)
	later := t0.Add(24 * time.Hour)

	tests := []struct {
		name     string
		cur      RolloutState
		at       time.Time
		cmd      SetRollout
		wantType EventType // "" for no event
		wantErr  error
		want     RolloutState // the rollout after, when an event is wanted
	}{
		{name: "start", at: t0, cmd: setRollout(2, 25, later), wantType: TypeRolloutStarted,
			want: RolloutState{ID: "R-new", ClientID: "web", Version: 2, Percent: 25, Deadline: later, StartedAt: t0}},
		{name: "raise", cur: cur, at: t0, cmd: setRollout(2, 60, time.Time{}), wantType: TypeRolloutRaised,
			want: RolloutState{ID: "R1", ClientID: "web", Version: 2, Percent: 60, StartedAt: t0}},
		{name: "raise and set a deadline", cur: cur, at: t0, cmd: setRollout(2, 60, later), wantType: TypeRolloutRaised,
			want: RolloutState{ID: "R1", ClientID: "web", Version: 2, Percent: 60, Deadline: later, StartedAt: t0}},
		{name: "set the deadline", cur: cur, at: t0, cmd: setRollout(2, 25, later), wantType: TypeRolloutDeadlineSet,
			want: RolloutState{ID: "R1", ClientID: "web", Version: 2, Percent: 25, Deadline: later, StartedAt: t0}},
		{name: "same request records nothing", cur: cur, at: t0, cmd: setRollout(2, 25, time.Time{})},
		{name: "never lower", cur: cur, at: t0, cmd: setRollout(2, 10, time.Time{}), wantErr: ErrInvalidRequest},
		{name: "lower version", cur: cur, at: t0, cmd: setRollout(1, 100, time.Time{}), wantErr: ErrInvalidRequest},
		{name: "percent 0", at: t0, cmd: setRollout(2, 0, time.Time{}), wantErr: ErrInvalidRequest},
		{name: "percent 101", at: t0, cmd: setRollout(2, 101, time.Time{}), wantErr: ErrInvalidRequest},
		{name: "version 0", at: t0, cmd: setRollout(0, 50, time.Time{}), wantErr: ErrInvalidRequest},
		{name: "deadline in the past", at: t0, cmd: setRollout(2, 50, t0.Add(-time.Second)), wantErr: ErrInvalidRequest},
		{name: "deadline now", at: t0, cmd: setRollout(2, 50, t0), wantErr: ErrInvalidRequest},
		{name: "next version while the current is incomplete", cur: cur, at: t0, cmd: setRollout(3, 10, time.Time{}), wantErr: ErrInvalidRequest},
		{name: "next version after 100 percent", cur: full, at: t0, cmd: setRollout(3, 10, time.Time{}), wantType: TypeRolloutStarted,
			want: RolloutState{ID: "R-new", ClientID: "web", Version: 3, Percent: 10, StartedAt: t0, BaseID: "R1", BaseVersion: 2}},
		{name: "next version past the deadline", cur: dated, at: t0.Add(2 * time.Hour), cmd: setRollout(3, 10, time.Time{}), wantType: TypeRolloutStarted,
			want: RolloutState{ID: "R-new", ClientID: "web", Version: 3, Percent: 10, StartedAt: t0.Add(2 * time.Hour), BaseID: "R1", BaseVersion: 2, BaseDeadline: t0.Add(time.Hour)}},
		{name: "missing cause", at: t0, cmd: func() SetRollout { c := setRollout(2, 50, time.Time{}); c.Cause = Cause{}; return c }(), wantErr: ErrInvalidRequest},
		{name: "another client's rollout", cur: cur, at: t0, cmd: func() SetRollout { c := setRollout(2, 50, time.Time{}); c.ClientID = "api"; return c }(), wantErr: ErrInvalidRequest},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			events, err := DecideRollout(tc.cur, tc.cmd, tc.at)
			if !errors.Is(err, tc.wantErr) || (tc.wantErr == nil && err != nil) {
				t.Fatalf("err = %v, want %v", err, tc.wantErr)
			}
			if tc.wantType == "" {
				if len(events) != 0 {
					t.Fatalf("want no event, got %d", len(events))
				}
				return
			}
			if len(events) != 1 || TypeOf(events[0].Data) != tc.wantType {
				t.Fatalf("want one %s, got %+v", tc.wantType, events)
			}
			got := ApplyRollout(RolloutState{}, events[0])
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("rollout after:\n got %+v\nwant %+v", got, tc.want)
			}
			if why := CheckRolloutEvent(tc.cur, events[0]); why != "" {
				t.Fatalf("the auditor refuses what Decide decided: %s", why)
			}
		})
	}
}

func TestCohort(t *testing.T) {
	in := 0
	const n = 20000
	for i := range n {
		id := fmt.Sprintf("01JDQ8%020d", i)
		b := CohortBucket(id)
		if b < 0 || b > 99 || CohortBucket(id) != b {
			t.Fatalf("bucket %d of %s", b, id)
		}
		r := RolloutState{ID: "R", ClientID: "web", Version: 2, Percent: 25}
		if r.Covers(id, t0) {
			in++
		}
		// Raising only adds families.
		if r.Covers(id, t0) && !(RolloutState{ID: "R", Version: 2, Percent: 60}).Covers(id, t0) {
			t.Fatalf("%s left the cohort when the percent rose", id)
		}
	}
	if share := float64(in) / n; share < 0.23 || share > 0.27 {
		t.Fatalf("share %.3f, want 0.25 ± 0.02", share)
	}
}

func TestRolloutFor(t *testing.T) {
	deadline := t0.Add(time.Hour)
	r := RolloutState{ID: "R2", ClientID: "web", Version: 3, Percent: 1, Deadline: deadline, BaseID: "R1", BaseVersion: 2}
	var in, out string
	for i := 0; in == "" || out == ""; i++ {
		id := fmt.Sprintf("01JDQ8%020d", i)
		if CohortBucket(id) < 1 {
			in = id
		} else {
			out = id
		}
	}
	tests := []struct {
		name string
		r    RolloutState
		fam  string
		at   time.Time
		want *Rollout
	}{
		{"no rollout", RolloutState{}, in, t0, nil},
		{"in the cohort", r, in, t0, &Rollout{ID: "R2", Version: 3, Deadline: deadline}},
		{"outside: the base", r, out, t0, &Rollout{ID: "R1", Version: 2}},
		{"outside past the deadline: everyone", r, out, deadline, &Rollout{ID: "R2", Version: 3, Deadline: deadline}},
		{"outside, no base", RolloutState{ID: "R", Version: 2, Percent: 1}, out, t0, nil},
		{"100 percent", RolloutState{ID: "R", Version: 2, Percent: 100}, out, t0, &Rollout{ID: "R", Version: 2}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.r.For(tc.fam, tc.at); !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

// TestDecideRolloutRefresh: a refresh moved by a rollout names it and the
// versions; past the deadline the refusal is an event, and the state it
// leaves is the family's but for its event count.
func TestDecideRolloutRefresh(t *testing.T) {
	issued := step{t0, issueCmd()}
	ro := func(c Refresh) Refresh {
		c.Rollout = &Rollout{ID: "R7", Version: 4, Deadline: t0.Add(time.Hour)}
		return c
	}
	tests := []struct {
		name     string
		at       time.Time
		cmd      Refresh
		wantType EventType
		wantErr  error
		check    func(t *testing.T, e Event)
	}{
		{name: "moved", at: t0.Add(time.Minute), cmd: ro(refreshCmd("E1", "H0", "H1")), wantType: TypeRefreshRotated,
			check: func(t *testing.T, e Event) {
				d := e.Data.(RefreshRotated)
				if d.RolloutID != "R7" || d.FromVersion != 1 || d.Version != 4 {
					t.Errorf("rotation %+v", d)
				}
			}},
		{name: "not moved", at: t0.Add(time.Minute), cmd: refreshCmd("E1", "H0", "H1"), wantType: TypeRefreshRotated,
			check: func(t *testing.T, e Event) {
				if d := e.Data.(RefreshRotated); d.RolloutID != "" || d.FromVersion != 0 || d.Version != 1 {
					t.Errorf("rotation %+v", d)
				}
			}},
		{name: "refused at the deadline", at: t0.Add(time.Hour), cmd: ro(refreshCmd("E1", "H0", "H1")), wantType: TypeVersionRefused, wantErr: ErrVersionRequired,
			check: func(t *testing.T, e Event) {
				d := e.Data.(VersionRefused)
				want := VersionRefused{Generation: 0, Version: 1, RequiredVersion: 4, RolloutID: "R7", Deadline: t0.Add(time.Hour)}
				if d != want {
					t.Errorf("refusal %+v, want %+v", d, want)
				}
			}},
		{name: "a forged token is not recorded", at: t0.Add(time.Hour), cmd: ro(refreshCmd("E1", "HX", "H1")), wantErr: ErrInvalidToken},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := given(t, issued)
			events, err := Decide(s, tc.cmd, tc.at)
			if !errors.Is(err, tc.wantErr) || (tc.wantErr == nil && err != nil) {
				t.Fatalf("err = %v, want %v", err, tc.wantErr)
			}
			if tc.wantType == "" {
				if len(events) != 0 {
					t.Fatalf("want no event, got %d", len(events))
				}
				return
			}
			if len(events) != 1 || TypeOf(events[0].Data) != tc.wantType {
				t.Fatalf("want one %s, got %+v", tc.wantType, events)
			}
			tc.check(t, events[0])
			after := Apply(s, events[0])
			if tc.wantType == TypeVersionRefused {
				s.Events++
				if !reflect.DeepEqual(after, s) {
					t.Fatalf("a refusal changed the family: %+v", after)
				}
			}
			// The rotation's optional fields survive the codec, by both paths.
			events[0].State = &after
			b, err := EncodeEvent(events[0])
			if err != nil {
				t.Fatal(err)
			}
			back, err := DecodeEvent(b)
			if err != nil || !reflect.DeepEqual(back.Data, events[0].Data) {
				t.Fatalf("round trip %+v (%v), want %+v", back.Data, err, events[0].Data)
			}
		})
	}
}

func TestCheckRolloutEventRefuses(t *testing.T) {
	cur := RolloutState{ID: "R1", ClientID: "web", Version: 2, Percent: 50, StartedAt: t0}
	ev := func(data any) Event {
		return Event{ID: "R2", OccurredAt: t0, Cause: Cause{Kind: CauseAdmin}, Data: data}
	}
	lower := cur
	lower.Percent = 40
	older := RolloutState{ID: "R2", ClientID: "web", Version: 1, Percent: 10, StartedAt: t0}
	for name, e := range map[string]Event{
		"lowered":          ev(RolloutRaised{FromPercent: 50, Rollout: lower}),
		"older version":    ev(RolloutStarted{Rollout: older}),
		"no cause":         {ID: "R2", OccurredAt: t0, Data: RolloutRaised{FromPercent: 50, Rollout: func() RolloutState { r := cur; r.Percent = 60; return r }()}},
		"not a rollout":    ev(FamilyRevoked{}),
		"deadline removed": ev(RolloutDeadlineSet{Rollout: cur}),
	} {
		t.Run(name, func(t *testing.T) {
			if why := CheckRolloutEvent(cur, e); why == "" {
				t.Fatal("accepted")
			}
		})
	}
}
