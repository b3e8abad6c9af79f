package ledger

import (
	"bytes"
	"encoding/json"
	"reflect"
	"testing"
)

// foldedCases returns a family's state and stored events that may follow
// it: one whose snapshot is the fold, and ways to hide, repeat, misplace or
// alter that snapshot.
func foldedCases(t testing.TB) (before State, events [][]byte) {
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
	snap, _ := json.Marshal(next)
	otherSnap, _ := json.Marshal(other)
	body := enc[:len(enc)-1-len(`,"state":`)-len(snap)] // the event up to its snapshot
	with := func(tail ...[]byte) []byte { return bytes.Join(append([][]byte{body}, tail...), nil) }
	events = append(events, enc,
		with([]byte(`,"state":`), otherSnap, []byte(`,"state":`), snap, []byte(`}`)), // repeated
		with([]byte(`,"state":`), snap, []byte(`,"state":`), otherSnap, []byte(`}`)),
		with([]byte(`,"state":`), snap, []byte(`,"State":`), otherSnap, []byte(`}`)), // encoding/json ignores case
		with([]byte(`,"state":null,"state":`), snap, []byte(`}`)),
		with([]byte(`,"state":[1],"state":`), snap, []byte(`}`)),
		with([]byte(`,"State":`), snap, []byte(`}`)),
		with([]byte(`,"state":`), snap, []byte(` }`)),
		with([]byte(`,"state":`), otherSnap, []byte(`}`)),
		with([]byte(`,"state":null}`)),
		with([]byte(`}`)),
		bytes.Replace(enc, []byte(`"id":"`), []byte(`"id":"\u0030`), 1), // an escape before the snapshot
	)
	for _, c := range codecCorpus() {
		b, err := EncodeEvent(c)
		if err != nil {
			t.Fatal(err)
		}
		events = append(events, b)
	}
	return before, events
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
	jFold, errFold := json.Marshal(fold)
	jWant, errWant := json.Marshal(want.State)
	jGot, errGot := json.Marshal(next)
	if want.State == nil || errFold != nil || errWant != nil || errGot != nil ||
		!bytes.Equal(jWant, jFold) || !bytes.Equal(jGot, jFold) {
		t.Fatalf("Folder.Decode read %s with the fold %s as its snapshot, DecodeEvent reads %s", b, jFold, jWant)
	}
	want.State = nil
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("Folder.Decode read %s as %+v, DecodeEvent as %+v", b, got, want)
	}
	return true
}

func TestFolderDecode(t *testing.T) {
	before, events := foldedCases(t)
	var hits int
	for i, b := range events {
		ok := checkFolded(t, b, before)
		if ok {
			hits++
		}
		if i == 0 && !ok {
			t.Fatalf("the fold not recognised in %s", b)
		}
		// Every event of the corpus after the state it was encoded
		// from: a snapshot that is not the fold is never taken for it.
		if e, err := DecodeEvent(b); err == nil && e.State != nil {
			checkFolded(t, b, *e.State)
		}
	}
	if hits != 1 {
		t.Fatalf("the fold recognised in %d events, want 1 (the plain one)", hits)
	}
}

func FuzzFolderDecode(f *testing.F) {
	before, events := foldedCases(f)
	for _, b := range events {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		checkFolded(t, b, before)
		if e, err := DecodeEvent(b); err == nil && e.State != nil {
			checkFolded(t, b, *e.State)
		}
	})
}

func BenchmarkFolderDecode(b *testing.B) {
	before, events := foldedCases(b)
	var f Folder
	b.ReportAllocs()
	for b.Loop() {
		if _, _, ok := f.Decode(events[0], before); !ok {
			b.Fatal("fold not recognised")
		}
	}
}
