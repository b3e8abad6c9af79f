package ledger

import (
	"bytes"

	"github.com/go-json-experiment/json/jsontext"
)

// A Folder decodes events for a reader that folds each family's events
// itself (the auditor), and checks their snapshots against its fold
// without decoding them. The zero Folder is ready; it keeps scratch space,
// so one goroutine uses it at a time.
type Folder struct {
	buf []byte
}

// Decode is DecodeEvent for the stored event b of a family whose state
// before it is before: it decodes the event without its snapshot, folds
// it, next = Apply(before, e), and compares the stored snapshot's bytes
// with next encoded as EncodeEvent encodes it.
//
// ok true means: DecodeEvent(b) would succeed, with e's envelope and
// payload and with a snapshot that encodes as JSON exactly as next does (e
// itself carries no State). ok false means only that this could not be
// settled here (b does not decode, or its snapshot is absent or is not
// next's encoding); the caller then uses DecodeEvent.
func (f *Folder) Decode(b []byte, before State) (e Event, next State, ok bool) {
	e, snap, err := decodeEvent[jsontext.Value](b)
	if err != nil || len(snap) == 0 {
		return Event{}, State{}, false
	}
	next = Apply(before, e)
	next.Seq, next.Head = 0, "" // not stored: DecodeEvent leaves them zero
	if f.buf, err = AppendState(f.buf[:0], next); err != nil || !bytes.Equal(f.buf, snap) {
		return Event{}, State{}, false
	}
	return e, next, true
}
