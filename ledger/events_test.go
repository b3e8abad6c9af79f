package ledger

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "write the golden file of an event type that has none (an existing one is never rewritten: a changed golden file is a wire break)")

// sampleEvents holds one event of every type with every field set.
func sampleEvents() []Event {
	at := time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)
	access := AccessGrant{JTI: "01JDQ80000000000000000ACC1", Scope: "read", ExpiresAt: at.Add(15 * time.Minute)}
	base := func(id string, data any) Event {
		return Event{ID: id, FamilyID: famID, OccurredAt: at, Cause: Cause{Kind: CauseRequest, ID: "req-1"},
			Prev: "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08", Data: data}
	}
	issued := base("01JDQ80000000000000000EV01", FamilyIssued{
		ClientID: "web", Subject: "alice", Scope: "read write", Audience: []string{"api"},
		Claims: json.RawMessage(`{"tenant":"acme"}`), Version: 1, TokenHash: "hash-0",
		RefreshExpiresAt: at.Add(336 * time.Hour), ExpiresAt: at.Add(2160 * time.Hour), Access: access,
	})
	issued.Prev = ""
	st := Apply(State{}, issued)
	issued.State = &st
	revoked := base("01JDQ80000000000000000EV06", FamilyRevoked{Generation: 3})
	revoked.Cause = Cause{Kind: CauseAdmin, ID: "ticket-7", Reason: "offboarding"}
	handled := base("01JDQ80000000000000000EV09", SecurityHandled{EventType: "credential_compromised", Severity: "high", Action: "revoke_families",
		Selector: &Selector{Subject: "alice", ClientID: "web"}, Families: []string{famID}, MoreFamilies: 2})
	handled.FamilyID, handled.Prev = "", ""
	handled.Cause = Cause{Kind: CauseSecurity, ID: "sec-42", Reason: "leaked"}
	ro := RolloutState{ID: "01JDQ80000000000000000RO01", ClientID: "web", Version: 3, Percent: 25,
		Deadline: at.Add(720 * time.Hour), StartedAt: at, BaseID: "01JDQ80000000000000000RO00", BaseVersion: 2, BaseDeadline: at.Add(-time.Hour)}
	rollout := func(id string, data any) Event {
		return Event{ID: id, OccurredAt: at, Cause: Cause{Kind: CauseAdmin, ID: "req-9"}, Prev: "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08", Data: data}
	}
	started := rollout(ro.ID, RolloutStarted{Rollout: ro})
	started.Prev = ""
	raised := ro
	raised.Percent = 60
	moved := ro
	moved.Deadline = at.Add(1440 * time.Hour)
	return append([]Event{
		issued,
		base("01JDQ80000000000000000EV02", RefreshRotated{FromGeneration: 0, ToGeneration: 1, PresentedHash: "hash-0", TokenHash: "hash-1", SealedSuccessor: "sealed", RefreshExpiresAt: at.Add(336 * time.Hour), Version: 1, Access: access}),
		base("01JDQ80000000000000000EV03", RefreshUsed{Generation: 1, RefreshExpiresAt: at.Add(336 * time.Hour), Access: access}),
		base("01JDQ80000000000000000EV04", GraceRetried{PresentedGeneration: 0, SuccessorGeneration: 1, RotatedAgo: 2 * time.Second, Access: access}),
		base("01JDQ80000000000000000EV05", ReuseDetected{PresentedGeneration: 0, CurrentGeneration: 2, PresentedHash: "hash-0", RotatedAgo: time.Hour, WinnerEventID: "01JDQ80000000000000000EV02", WinnerRequest: "req-0"}),
		revoked,
		base("01JDQ80000000000000000EV07", AccessRevoked{JTI: access.JTI, ExpiresAt: access.ExpiresAt}),
		base("01JDQ80000000000000000EV08", AccessCutoff{Generation: 2}),
		handled,
		started,
		rollout("01JDQ80000000000000000RO02", RolloutRaised{FromPercent: 25, FromDeadline: ro.Deadline, Rollout: raised}),
		rollout("01JDQ80000000000000000RO03", RolloutDeadlineSet{FromDeadline: ro.Deadline, Rollout: moved}),
		base("01JDQ80000000000000000EV10", VersionRefused{Generation: 4, Version: 2, RequiredVersion: 3, RolloutID: ro.ID, Deadline: ro.Deadline}),
	}, keySampleEvents(at)...)
}

// goldenEvents is sampleEvents with, on each family event, the state
// after it as the store appends it: the issue's own, the rotation's after
// the issue, every other's after the issue and the rotation.
func goldenEvents() []Event {
	events := sampleEvents()
	issued := *events[0].State
	rotated := Apply(issued, events[1])
	for i, e := range events {
		switch {
		case i == 0 || e.FamilyID == "":
		case i == 1:
			events[i].State = &rotated
		default:
			after := Apply(rotated, e)
			events[i].State = &after
		}
	}
	return events
}

// TestEventGolden pins the bytes of every event type as written
// (testdata/schema2) and reads them back.
func TestEventGolden(t *testing.T) {
	seen := map[EventType]bool{}
	for _, e := range goldenEvents() {
		typ := TypeOf(e.Data)
		seen[typ] = true
		t.Run(string(typ), func(t *testing.T) {
			got, err := EncodeEvent(e)
			if err != nil {
				t.Fatal(err)
			}
			var pretty bytes.Buffer
			if err := json.Indent(&pretty, got, "", "  "); err != nil {
				t.Fatal(err)
			}
			pretty.WriteByte('\n')
			path := filepath.Join("testdata", "schema2", string(typ)+".json")
			want, err := os.ReadFile(path)
			if errors.Is(err, fs.ErrNotExist) && *update {
				// A new event type: its first golden file. O_EXCL, so
				// that an existing file is never replaced.
				f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
				if err != nil {
					t.Fatal(err)
				}
				if _, err := f.Write(pretty.Bytes()); err != nil {
					t.Fatal(err)
				}
				if err := f.Close(); err != nil {
					t.Fatal(err)
				}
				t.Logf("wrote %s", path)
				return
			}
			if err != nil {
				t.Fatalf("golden file: %v (run with -update only for a new event type)", err)
			}
			if !bytes.Equal(pretty.Bytes(), want) {
				t.Fatalf("wire format changed for %s:\n got %s\nwant %s", typ, pretty.Bytes(), want)
			}
			back, err := DecodeEvent(got)
			if err != nil {
				t.Fatal(err)
			}
			e.Type = typ
			e.OccurredAt = e.OccurredAt.UTC()
			if !reflect.DeepEqual(back, e) {
				t.Fatalf("round trip:\n got %+v\nwant %+v", back, e)
			}
		})
	}
	for typ := range payloads {
		if !seen[typ] {
			t.Errorf("no golden sample for %s", typ)
		}
	}
}

// TestEventGoldenSchema1: the events schema 1 wrote (the golden files of
// the builds before schema 2, testdata/*.json, never rewritten) still
// decode, each to its sample.
func TestEventGoldenSchema1(t *testing.T) {
	for _, e := range sampleEvents() {
		typ := TypeOf(e.Data)
		t.Run(string(typ), func(t *testing.T) {
			pretty, err := os.ReadFile(filepath.Join("testdata", string(typ)+".json"))
			if err != nil {
				t.Fatal(err)
			}
			var stored bytes.Buffer
			if err := json.Compact(&stored, pretty); err != nil {
				t.Fatal(err)
			}
			if old, err := schema1Encode(e); err != nil || !bytes.Equal(old, stored.Bytes()) {
				t.Fatalf("schema 1 as the tests spell it:\n%s (%v)\nstored:\n%s", old, err, stored.Bytes())
			}
			back, err := DecodeEvent(stored.Bytes())
			if err != nil {
				t.Fatal(err)
			}
			e.Type = typ
			e.OccurredAt = e.OccurredAt.UTC()
			if !reflect.DeepEqual(back, e) {
				t.Fatalf("decoded:\n got %+v\nwant %+v", back, e)
			}
			if e.State != nil {
				if st, err := DecodeState(stored.Bytes()); err != nil || !reflect.DeepEqual(st, *e.State) {
					t.Fatalf("DecodeState %+v (%v)", st, err)
				}
			}
		})
	}
}

func TestDecodeEventRejects(t *testing.T) {
	for name, in := range map[string]string{
		"not json":          `{`,
		"unknown type":      `{"id":"x","type":"family.exploded.v1","schema":1,"data":{}}`,
		"future schema":     `{"id":"x","type":"family.revoked.v1","schema":3,"data":{}}`,
		"no schema":         `{"id":"x","type":"family.revoked.v1","data":{}}`,
		"issue with a base": `{"id":"x","type":"family.issued.v1","schema":2,"family_id":"` + famID + `","data":{},"base":{"events":1}}`,
		"state in schema 2": `{"id":"x","type":"family.revoked.v1","schema":2,"family_id":"` + famID + `","data":{},"state":{"events":1}}`,
		"base in schema 1":  `{"id":"x","type":"family.revoked.v1","schema":1,"family_id":"` + famID + `","data":{},"base":{"events":1}}`,
		"payload type":      `{"id":"x","type":"family.revoked.v1","schema":1,"data":{"generation":"one"}}`,
		"payload absent":    `{"id":"x","type":"refresh.rotated.v1","schema":1,"data":[]}`,
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := DecodeEvent([]byte(in)); err == nil {
				t.Fatal("decoded")
			} else if name == "unknown type" && !errors.Is(err, ErrUnknownEvent) {
				t.Fatalf("err %v, want ErrUnknownEvent", err)
			}
		})
	}
}

func FuzzDecodeEvent(f *testing.F) {
	for _, e := range sampleEvents() {
		b, _ := EncodeEvent(e)
		f.Add(b)
	}
	f.Add([]byte(`{"type":"family.issued.v1","schema":1,"data":null}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		e, err := DecodeEvent(b)
		skip, serr := DecodeEventSkipState(b)
		if err != nil {
			return
		}
		// What this codec reads, the previous one (encoding/json) read the
		// same way: strictness only takes away.
		old, oerr := v1Decode(b)
		if oerr != nil || !reflect.DeepEqual(e, old) {
			t.Fatalf("read %q as %+v, encoding/json as %+v (%v)", b, e, old, oerr)
		}
		want := e
		want.State = nil
		if serr != nil || !reflect.DeepEqual(skip, want) {
			t.Fatalf("without state read %q as %+v (%v), want %+v", b, skip, serr, want)
		}
		if _, err := EncodeEvent(e); err != nil {
			t.Fatalf("decoded event does not encode: %v", err)
		}
	})
}
