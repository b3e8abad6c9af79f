package ledger

import "bytes"

// DecodeFolded is DecodeEvent for a reader that folds a family's events
// itself (the auditor): given the family's state before b, it decodes the
// event and checks that its snapshot is the fold, Apply(before, e), without
// decoding the snapshot. It does so for the events the ledger writes, whose
// snapshot is the last member, encoded as EncodeEvent encodes it.
//
// ok true means: DecodeEvent(b) would succeed with this envelope and
// payload, and with a snapshot that encodes as JSON exactly as
// Apply(before, e) does, which e.State then holds. ok false means only that
// this could not be settled here (the snapshot differs, or it is not last,
// or the bytes need encoding/json); the caller then uses DecodeEvent. buf
// is scratch space, returned for reuse.
func DecodeFolded(b []byte, before State, buf []byte) (e Event, ok bool, _ []byte) {
	// Split b into the members before the snapshot and the snapshot:
	// b = head + `,"state":` + snapshot + `}`.
	i := bytes.Index(b, []byte(`},"state":{`))
	if i < 0 || !fastTypesOK {
		return e, false, buf
	}
	head := b[:i+1]
	if bytes.Contains(head, []byte(`"state"`)) {
		// Another snapshot before it, or a string that reads "state":
		// leave repeated members to DecodeEvent.
		return e, false, buf
	}
	buf = append(append(buf[:0], head...), '}')
	if e, ok = decodeFastOpts(buf, false); !ok {
		return Event{}, false, buf
	}
	next := Apply(before, e)
	buf = append(buf[:0], `,"state":`...)
	if buf, ok = appendState(buf, next); !ok {
		return Event{}, false, buf
	}
	buf = append(buf, '}')
	if !bytes.Equal(b[len(head):], buf) {
		return Event{}, false, buf
	}
	// b is head's members, none of them a snapshot, then the snapshot
	// as appendState writes next: the fast decoder reads b as it read
	// head, then reads the snapshot back as next.
	next.Seq, next.Head = 0, "" // not stored: DecodeEvent leaves them zero
	e.State = &next
	return e, true, buf
}
