package ledger

import (
	"bytes"
	jsonv1 "encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
)

// foldedCase is a stored event that may follow a family's state, and
// whether Folder.Decode must settle it.
type foldedCase struct {
	name string
	b    []byte
	fold bool
}

// foldedCases returns a family's state and stored events that may follow
// it: one whose stored state is what the writer stores after the fold (a
// schema-2 base, and the same event as schema 1 stored it), the same in
// other spellings, and ways to hide, repeat, misplace or alter it.
func foldedCases(t testing.TB) (before State, cases []foldedCase) {
	t.Helper()
	issued := sampleEvents()[0]
	issued.Data = FamilyIssued{ClientID: "web", Subject: "alice", Scope: "read", Audience: []string{"api"},
		Version: 1, TokenHash: "hash-0", RefreshExpiresAt: issued.OccurredAt, ExpiresAt: issued.OccurredAt,
		Access: AccessGrant{JTI: "j", Scope: "read", ExpiresAt: issued.OccurredAt}}
	before = Apply(State{}, issued)
	e := sampleEvents()[1] // a rotation
	next := Apply(before, e)
	e.State = &next
	enc, err := EncodeEvent(e)
	if err != nil {
		t.Fatal(err)
	}
	old, err := schema1Encode(e)
	if err != nil {
		t.Fatal(err)
	}
	other := next
	other.Events++
	base, _ := AppendState(nil, Base(next, e))
	otherBase, _ := AppendState(nil, Base(other, e))
	snap, _ := jsonv1.Marshal((*stateV1)(&next))
	otherSnap, _ := jsonv1.Marshal((*stateV1)(&other))
	for _, v := range []struct {
		schema, member   string
		enc, fold, other []byte
	}{{"2", "base", enc, base, otherBase}, {"1", "state", old, snap, otherSnap}} {
		member, fold, otherFold := []byte(`,"`+v.member+`":`), v.fold, v.other
		body := v.enc[:len(v.enc)-1-len(member)-len(fold)] // the event up to what it stores
		if !bytes.Equal(append(append(bytes.Clone(body), member...), fold...), v.enc[:len(v.enc)-1]) {
			t.Fatalf("schema %s: %s does not end in %s", v.schema, v.enc, fold)
		}
		with := func(tail ...[]byte) []byte { return bytes.Join(append([][]byte{body}, tail...), nil) }
		Member := []byte(`,"` + strings.ToUpper(v.member[:1]) + v.member[1:] + `":`)
		set := func(field string) []byte { // the fold with field (the rotation sets it) spelt out
			return with(member, bytes.Replace(fold, []byte(`"client_id"`), []byte(field+`,"client_id"`), 1), []byte(`}`))
		}
		cases = append(cases,
			foldedCase{v.schema + ": plain", v.enc, true},
			foldedCase{v.schema + ": repeated", with(member, otherFold, member, fold, []byte(`}`)), false},
			foldedCase{v.schema + ": repeated, fold first", with(member, fold, member, otherFold, []byte(`}`)), false},
			foldedCase{v.schema + ": repeated in another case", with(member, fold, Member, otherFold, []byte(`}`)), false},
			foldedCase{v.schema + ": null, then the fold", with(member, []byte(`null`), member, fold, []byte(`}`)), false},
			foldedCase{v.schema + ": array, then the fold", with(member, []byte(`[1]`), member, fold, []byte(`}`)), false},
			foldedCase{v.schema + ": wrong case", with(Member, fold, []byte(`}`)), false},
			foldedCase{v.schema + ": space before the end", with(member, fold, []byte(` }`)), true},
			foldedCase{v.schema + ": another state", with(member, otherFold, []byte(`}`)), false},
			foldedCase{v.schema + ": null", with(member, []byte(`null}`)), false},
			foldedCase{v.schema + ": absent", with([]byte(`}`)), false},
			foldedCase{v.schema + ": first", append(append(append(append([]byte(`{"`+v.member+`":`), fold...), ','), body[1:]...), '}'), true},
			foldedCase{v.schema + ": fold spelled otherwise", with(member, bytes.Replace(fold, []byte(`"alice"`), []byte(`"\u0061lice"`), 1), []byte(`}`)), false},
			foldedCase{v.schema + ": an escape before it", bytes.Replace(v.enc, []byte(`"id":"0`), []byte(`"id":"\u0030`), 1), true},
			foldedCase{v.schema + ": unknown member", bytes.Replace(v.enc, []byte(`"id":"`), []byte(`"later":1,"id":"`), 1), true},
			foldedCase{v.schema + ": the other schema's member", with(bytes.Replace(member, []byte(v.member), []byte(map[string]string{"base": "state", "state": "base"}[v.member]), 1), fold, []byte(`}`)), false},
			foldedCase{v.schema + ": a family id", with(member, bytes.Replace(fold, []byte(`"client_id"`), []byte(`"family_id":"`+famID+`","client_id"`), 1), []byte(`}`)), false},
			foldedCase{v.schema + ": a field the event sets", set(`"generation":9`), false},
		)
	}
	for i, c := range codecCorpus() {
		b, err := EncodeEvent(c)
		if err != nil {
			continue // the corpus holds events that do not encode
		}
		cases = append(cases, foldedCase{fmt.Sprint("corpus ", i), b, false})
		if b, err := schema1Encode(c); err == nil {
			cases = append(cases, foldedCase{fmt.Sprint("corpus, schema 1, ", i), b, false})
		}
	}
	return before, cases
}

// checkFolded fails unless Folder.Decode's ok=true is what it promises:
// DecodeEvent reads the same event, with a snapshot that encodes as the
// fold does.
func checkFolded(t testing.TB, b []byte, before State) bool {
	t.Helper()
	var f Folder
	got, next, ok := f.Decode(b, before)
	if !ok {
		return false
	}
	want, err := DecodeEvent(b)
	if err != nil {
		t.Fatalf("Folder.Decode read %s, DecodeEvent fails: %v", b, err)
	}
	fold := Apply(before, want)
	jFold, errFold := AppendState(nil, fold)
	jGot, errGot := AppendState(nil, next)
	var jWant []byte
	var errWant error = errors.New("no snapshot")
	if want.State != nil {
		jWant, errWant = AppendState(nil, *want.State)
	}
	if errFold != nil || errWant != nil || errGot != nil || !bytes.Equal(jWant, jFold) || !bytes.Equal(jGot, jFold) {
		t.Fatalf("Folder.Decode read %s with the fold %s as its snapshot, DecodeEvent reads %s", b, jFold, jWant)
	}
	want.State = nil
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("Folder.Decode read %s as %+v, DecodeEvent as %+v", b, got, want)
	}
	return true
}

func TestFolderDecode(t *testing.T) {
	before, cases := foldedCases(t)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			// The corpus's events are checked, not counted: a
			// family.issued, whatever came before, is its own fold.
			if got := checkFolded(t, c.b, before); got != c.fold && !strings.HasPrefix(c.name, "corpus") {
				t.Fatalf("Folder.Decode settled %s: %v, want %v", c.b, got, c.fold)
			}
			// Every event after the state it was encoded from: the
			// snapshot is the fold only if the event changes nothing.
			if e, err := DecodeEvent(c.b); err == nil && e.State != nil {
				checkFolded(t, c.b, *e.State)
			}
		})
	}
}

// TestFolderMatches: Matches accepts what the writer stores after the
// fold however it is spelt, and nothing else: not a base that spells out
// a field its event sets, which Apply would overwrite.
func TestFolderMatches(t *testing.T) {
	before, cases := foldedCases(t)
	var f Folder
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e, err := DecodeEvent(c.b)
			if strings.HasPrefix(c.name, "corpus") {
				// Every event the encoder writes stores what its state's
				// writer stores.
				if err == nil && e.State != nil && !f.Matches(c.b, *e.State) {
					t.Fatalf("%s does not match its own state %+v", c.b, *e.State)
				}
				return
			}
			_, kind, _ := strings.Cut(c.name, ": ")
			want := map[string]bool{"plain": true, "space before the end": true, "first": true,
				"fold spelled otherwise": true, "an escape before it": true, "unknown member": true}[kind]
			var next State
			if err == nil {
				next = Apply(before, e)
			}
			if got := f.Matches(c.b, next); got != want {
				t.Fatalf("Matches(%s) = %v, want %v", c.b, got, want)
			}
		})
	}
}

func FuzzFolderDecode(f *testing.F) {
	before, cases := foldedCases(f)
	for _, c := range cases {
		f.Add(c.b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		checkFolded(t, b, before)
		if e, err := DecodeEvent(b); err == nil && e.State != nil {
			checkFolded(t, b, *e.State)
		}
	})
}

func BenchmarkFolderDecode(b *testing.B) {
	before, cases := foldedCases(b)
	var f Folder
	b.ReportAllocs()
	for b.Loop() {
		if _, _, ok := f.Decode(cases[0].b, before); !ok {
			b.Fatal("fold not recognised")
		}
	}
}
