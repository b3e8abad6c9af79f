package ledger

import (
	"bytes"
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
// it: one whose snapshot is the fold, the same in other spellings, and
// ways to hide, repeat, misplace or alter that snapshot.
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
	other := next
	other.Events++
	snap, _ := AppendState(nil, next)
	otherSnap, _ := AppendState(nil, other)
	body := enc[:len(enc)-1-len(`,"state":`)-len(snap)] // the event up to its snapshot
	with := func(tail ...[]byte) []byte { return bytes.Join(append([][]byte{body}, tail...), nil) }
	cases = append(cases,
		foldedCase{"plain", enc, true},
		foldedCase{"repeated", with([]byte(`,"state":`), otherSnap, []byte(`,"state":`), snap, []byte(`}`)), false},
		foldedCase{"repeated, fold first", with([]byte(`,"state":`), snap, []byte(`,"state":`), otherSnap, []byte(`}`)), false},
		foldedCase{"repeated in another case", with([]byte(`,"state":`), snap, []byte(`,"State":`), otherSnap, []byte(`}`)), false},
		foldedCase{"null, then the fold", with([]byte(`,"state":null,"state":`), snap, []byte(`}`)), false},
		foldedCase{"array, then the fold", with([]byte(`,"state":[1],"state":`), snap, []byte(`}`)), false},
		foldedCase{"wrong case", with([]byte(`,"State":`), snap, []byte(`}`)), false},
		foldedCase{"space before the end", with([]byte(`,"state":`), snap, []byte(` }`)), true},
		foldedCase{"another snapshot", with([]byte(`,"state":`), otherSnap, []byte(`}`)), false},
		foldedCase{"null", with([]byte(`,"state":null}`)), false},
		foldedCase{"absent", with([]byte(`}`)), false},
		foldedCase{"first", append(append(append(append([]byte(`{"state":`), snap...), ','), body[1:]...), '}'), true},
		foldedCase{"fold spelled otherwise", with([]byte(`,"state":`), bytes.Replace(snap, []byte(`"alice"`), []byte(`"\u0061lice"`), 1), []byte(`}`)), false},
		foldedCase{"an escape before the snapshot", bytes.Replace(enc, []byte(`"id":"0`), []byte(`"id":"\u0030`), 1), true},
		foldedCase{"unknown member", bytes.Replace(enc, []byte(`"id":"`), []byte(`"later":1,"id":"`), 1), true},
	)
	for i, c := range codecCorpus() {
		b, err := EncodeEvent(c)
		if err != nil {
			continue // the corpus holds events that do not encode
		}
		cases = append(cases, foldedCase{fmt.Sprint("corpus ", i), b, false})
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
