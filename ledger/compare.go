package ledger

import (
	"bytes"

	"github.com/go-json-experiment/json/jsontext"
)

// A Folder decodes events for a reader that folds each family's events
// itself (the auditor), and checks what they store of the family's state
// against its fold without decoding it. The zero Folder is ready; it keeps
// scratch space, so one goroutine uses it at a time.
type Folder struct {
	buf, other []byte
}

// Decode is DecodeEvent for the stored event b of a family whose state
// before it is before: it decodes the event without its stored state,
// folds it, next = Apply(before, e), and compares the stored bytes with
// what the writer stores after before: for schema 2, Base(next, e) encoded
// as EncodeEvent encodes it (and no base for a family.issued); for schema
// 1, next encoded as the build that wrote schema 1 did.
//
// ok true means: DecodeEvent(b) would succeed, with e's envelope and
// payload and with a State that encodes as JSON exactly as next does (e
// itself carries no State). ok false means only that this could not be
// settled here (b does not decode, or what it stores is absent or is not
// the fold's encoding); the caller then uses DecodeEvent and Matches.
func (f *Folder) Decode(b []byte, before State) (e Event, next State, ok bool) {
	e, d, err := decodeEvent[jsontext.Value](b)
	if err != nil || !e.inFamily(before) {
		return Event{}, State{}, false
	}
	next = Apply(before, e)
	next.Seq, next.Head = 0, "" // not stored: DecodeEvent leaves them zero
	var want []byte
	switch {
	case d.schema == 1:
		if len(d.base) != 0 {
			return Event{}, State{}, false
		}
		want = d.state
		f.buf, ok = appendState(f.buf[:0], next, true)
	case len(d.state) != 0:
		return Event{}, State{}, false
	case e.Type == TypeFamilyIssued:
		if len(d.base) != 0 {
			return Event{}, State{}, false
		}
		return e, next, true
	default:
		want = d.base
		f.buf, err = AppendState(f.buf[:0], Base(next, e))
		ok = err == nil
	}
	if !ok || len(want) == 0 || !bytes.Equal(f.buf, want) {
		return Event{}, State{}, false
	}
	return e, next, true
}

// inFamily reports whether e can follow before: the first event of a
// family, or an event of before's family.
func (e Event) inFamily(before State) bool {
	return e.Type == TypeFamilyIssued || before.FamilyID == e.FamilyID
}

// Matches reports whether the stored event b stores what its writer
// stores after a fold whose state after b's event is next: for schema 2,
// a base equal to Base(next, e) (none for a family.issued); for schema 1,
// a state equal to next. It compares encodings (AppendState; Seq and Head
// are not encoded), so a member's spelling does not matter, but a base
// that holds what the event sets does, though Apply would overwrite it.
// It is the check for an event Decode did not settle; false if b does not
// decode.
func (f *Folder) Matches(b []byte, next State) bool {
	e, d, err := decodeEvent[*State](b)
	if err != nil {
		return false
	}
	next.Seq, next.Head = 0, ""
	var want State
	var got *State
	switch {
	case d.schema == 1:
		if d.base != nil {
			return false
		}
		want, got = next, d.state
	case d.state != nil:
		return false
	case e.Type == TypeFamilyIssued:
		return d.base == nil // its Apply starts over: nothing stored to differ
	default:
		want, got = Base(next, e), d.base
	}
	if got == nil {
		return false
	}
	var errA, errB error
	f.buf, errA = AppendState(f.buf[:0], want)
	f.other, errB = AppendState(f.other[:0], *got)
	return errA == nil && errB == nil && bytes.Equal(f.buf, f.other)
}
