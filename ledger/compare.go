package ledger

import "bytes"

// A Folder decodes events for a reader that folds each family's events
// itself (the auditor), and checks their snapshots against its fold
// without decoding them. The zero Folder is ready; it keeps scratch space,
// so one goroutine uses it at a time.
type Folder struct {
	buf []byte
}

// Decode is DecodeEvent for the stored event b of a family whose state
// before it is before: it decodes the event without its snapshot and
// checks that the snapshot is the fold, next = Apply(before, e). It does so
// for the events the ledger writes, whose snapshot is the last member,
// encoded as EncodeEvent encodes it.
//
// ok true means: DecodeEvent(b) would succeed, with e's envelope and
// payload and with a snapshot that encodes as JSON exactly as next does (e
// itself carries no State). ok false means only that this could not be
// settled here (the snapshot differs, or it is not last, or the bytes need
// encoding/json); the caller then uses DecodeEvent.
func (f *Folder) Decode(b []byte, before State) (e Event, next State, ok bool) {
	// Split b into the members before the snapshot and the snapshot:
	// b = head + `,"state":` + snapshot + `}`, where head holds no other
	// "state" (a repeated member, or a string that reads "state", is left
	// to DecodeEvent).
	i := bytes.Index(b, []byte(`"state"`))
	if i < 2 || !fastTypesOK || !bytes.HasPrefix(b[i-2:], []byte(`},"state":{`)) {
		return Event{}, State{}, false
	}
	head := b[:i-1]
	f.buf = append(append(f.buf[:0], head...), '}')
	if e, ok = decodeFastOpts(f.buf, false); !ok {
		return Event{}, State{}, false
	}
	next = Apply(before, e)
	f.buf = append(f.buf[:0], `,"state":`...)
	if f.buf, ok = appendState(f.buf, next); !ok {
		return Event{}, State{}, false
	}
	f.buf = append(f.buf, '}')
	if !bytes.Equal(b[len(head):], f.buf) {
		return Event{}, State{}, false
	}
	// b is head's members, none of them a snapshot, then the snapshot
	// as appendState writes next: the fast decoder reads b as it read
	// head, then reads the snapshot back as next.
	next.Seq, next.Head = 0, "" // not stored: DecodeEvent leaves them zero
	return e, next, true
}
