package ledger

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"reflect"
	"slices"
	"strconv"
	"time"
	"unicode/utf8"
)

// The event codec's fast path. encoding/json costs tens of microseconds an
// event, which is a large share of a refresh; these cost a few. They are
// exact or they give up: the decoder handles only the plain JSON the ledger
// writes (no escapes, known keys) and reports ok=false for anything else,
// and the encoder reports ok=false for anything it cannot reproduce byte for
// byte as json.Marshal would (escapes, custom claims, years outside
// 0-9999); the callers (EncodeEvent, DecodeEvent, Store.Load) then use
// encoding/json. fastTypesOK switches both off if an event type gained,
// lost or renamed a field since this was written, so a schema change can
// cost speed, never correctness. codec_test.go checks both paths agree.

var fastTypesOK = func() bool {
	want := map[reflect.Type][]string{
		reflect.TypeFor[State](): {"family_id", "client_id", "subject", "scope", "audience,omitempty",
			"claims,omitempty", "version", "revoked,omitempty", "created_at", "expires_at", "generation",
			"token_hash", "token_issued_at", "refresh_expires_at", "rotated_at,omitzero", "previous,omitempty",
			"access_cutoff,omitzero", "events", "-", "-"},
		reflect.TypeFor[Revocation](): {"at", "cause", "event_id"},
		reflect.TypeFor[Previous](): {"generation", "hash", "rotated_at", "sealed_successor", "event_id",
			"request,omitempty"},
		reflect.TypeFor[Cause]():       {"kind", "id,omitempty", "reason,omitempty"},
		reflect.TypeFor[AccessGrant](): {"jti", "scope", "expires_at"},
		reflect.TypeFor[FamilyIssued](): {"client_id", "subject", "scope", "audience,omitempty",
			"claims,omitempty", "version", "token_hash", "refresh_expires_at", "expires_at", "access"},
		reflect.TypeFor[RefreshRotated](): {"from_generation", "to_generation", "presented_hash",
			"token_hash", "sealed_successor", "refresh_expires_at", "version", "access"},
		reflect.TypeFor[RefreshUsed](): {"generation", "refresh_expires_at", "access"},
		reflect.TypeFor[GraceRetried](): {"presented_generation", "successor_generation",
			"rotated_ago_ns", "access"},
		reflect.TypeFor[ReuseDetected](): {"presented_generation", "current_generation",
			"presented_hash", "rotated_ago_ns", "winner_event_id,omitempty", "winner_request,omitempty"},
		reflect.TypeFor[FamilyRevoked](): {"generation"},
		reflect.TypeFor[AccessRevoked](): {"jti", "expires_at"},
		reflect.TypeFor[AccessCutoff]():  {"generation"},
		reflect.TypeFor[SecurityHandled](): {"event_type", "severity", "action", "selector,omitempty",
			"families", "more_families,omitempty"},
		reflect.TypeFor[Selector](): {"subject,omitempty", "client_id,omitempty", "family_id,omitempty"},
	}
	for t, tags := range want {
		var got []string
		for f := range t.Fields() {
			got = append(got, f.Tag.Get("json"))
		}
		if !slices.Equal(got, tags) {
			return false
		}
	}
	return SchemaVersion == 1
}()

// decodeFast is DecodeEvent for the plain JSON the ledger writes; ok is
// false when it cannot be sure, and the caller uses encoding/json.
func decodeFast(b []byte) (e Event, ok bool) { return decodeFastOpts(b, true) }

// decodeFastOpts is decodeFast; withState false skips the snapshot.
func decodeFastOpts(b []byte, withState bool) (e Event, ok bool) {
	if !fastTypesOK {
		return e, false
	}
	d := dec{b: b}
	var data []byte
	schema := int64(-1)
	d.object(func(key []byte) {
		switch string(key) {
		case "id":
			e.ID = d.str()
		case "type":
			e.Type = EventType(d.str())
		case "schema":
			schema = d.int()
		case "family_id":
			e.FamilyID = d.str()
		case "occurred_at":
			e.OccurredAt = d.time()
		case "cause":
			e.Cause = d.cause()
		case "prev":
			e.Prev = d.str()
		case "data":
			data = d.skip()
		case "state":
			switch {
			case d.null():
			case withState:
				e.State = d.state()
			default:
				// Not decoded, but read: what follows it still counts.
				d.skip()
			}
		default:
			d.bad = true
		}
	})
	d.ws()
	if d.bad || d.i != len(b) || schema != SchemaVersion || data == nil {
		return e, false
	}
	d = dec{b: data}
	switch e.Type {
	case TypeFamilyIssued:
		var p FamilyIssued
		d.object(func(key []byte) {
			switch string(key) {
			case "client_id":
				p.ClientID = d.str()
			case "subject":
				p.Subject = d.str()
			case "scope":
				p.Scope = d.str()
			case "audience":
				p.Audience = d.strs()
			case "claims":
				if d.null() {
					d.bad = true
				} else {
					p.Claims = append(json.RawMessage(nil), d.skip()...)
				}
			case "version":
				p.Version = int(d.int())
			case "token_hash":
				p.TokenHash = d.str()
			case "refresh_expires_at":
				p.RefreshExpiresAt = d.time()
			case "expires_at":
				p.ExpiresAt = d.time()
			case "access":
				p.Access = d.grant()
			default:
				d.bad = true
			}
		})
		e.Data = p
	case TypeRefreshRotated:
		var p RefreshRotated
		d.object(func(key []byte) {
			switch string(key) {
			case "from_generation":
				p.FromGeneration = d.uint()
			case "to_generation":
				p.ToGeneration = d.uint()
			case "presented_hash":
				p.PresentedHash = d.str()
			case "token_hash":
				p.TokenHash = d.str()
			case "sealed_successor":
				p.SealedSuccessor = d.str()
			case "refresh_expires_at":
				p.RefreshExpiresAt = d.time()
			case "version":
				p.Version = int(d.int())
			case "access":
				p.Access = d.grant()
			default:
				d.bad = true
			}
		})
		e.Data = p
	case TypeRefreshUsed:
		var p RefreshUsed
		d.object(func(key []byte) {
			switch string(key) {
			case "generation":
				p.Generation = d.uint()
			case "refresh_expires_at":
				p.RefreshExpiresAt = d.time()
			case "access":
				p.Access = d.grant()
			default:
				d.bad = true
			}
		})
		e.Data = p
	case TypeGraceRetried:
		var p GraceRetried
		d.object(func(key []byte) {
			switch string(key) {
			case "presented_generation":
				p.PresentedGeneration = d.uint()
			case "successor_generation":
				p.SuccessorGeneration = d.uint()
			case "rotated_ago_ns":
				p.RotatedAgo = time.Duration(d.int())
			case "access":
				p.Access = d.grant()
			default:
				d.bad = true
			}
		})
		e.Data = p
	case TypeReuseDetected:
		var p ReuseDetected
		d.object(func(key []byte) {
			switch string(key) {
			case "presented_generation":
				p.PresentedGeneration = d.uint()
			case "current_generation":
				p.CurrentGeneration = d.uint()
			case "presented_hash":
				p.PresentedHash = d.str()
			case "rotated_ago_ns":
				p.RotatedAgo = time.Duration(d.int())
			case "winner_event_id":
				p.WinnerEventID = d.str()
			case "winner_request":
				p.WinnerRequest = d.str()
			default:
				d.bad = true
			}
		})
		e.Data = p
	case TypeFamilyRevoked:
		var p FamilyRevoked
		d.object(func(key []byte) {
			if string(key) != "generation" {
				d.bad = true
				return
			}
			p.Generation = d.uint()
		})
		e.Data = p
	case TypeAccessRevoked:
		var p AccessRevoked
		d.object(func(key []byte) {
			switch string(key) {
			case "jti":
				p.JTI = d.str()
			case "expires_at":
				p.ExpiresAt = d.time()
			default:
				d.bad = true
			}
		})
		e.Data = p
	case TypeAccessCutoff:
		var p AccessCutoff
		d.object(func(key []byte) {
			if string(key) != "generation" {
				d.bad = true
				return
			}
			p.Generation = d.uint()
		})
		e.Data = p
	case TypeSecurityHandled:
		var p SecurityHandled
		d.object(func(key []byte) {
			switch string(key) {
			case "event_type":
				p.EventType = d.str()
			case "severity":
				p.Severity = d.str()
			case "action":
				p.Action = d.str()
			case "selector":
				p.Selector = d.selector()
			case "families":
				p.Families = d.strs()
			case "more_families":
				p.MoreFamilies = int(d.int())
			default:
				d.bad = true
			}
		})
		e.Data = p
	default:
		return e, false
	}
	d.ws()
	if d.bad || d.i != len(data) {
		return Event{}, false
	}
	return e, true
}

// dec reads the subset of JSON the ledger writes. Any surprise sets bad,
// after which results are meaningless and the caller falls back.
type dec struct {
	b     []byte
	i     int
	bad   bool
	depth int
}

func (d *dec) ws() {
	for d.i < len(d.b) {
		switch d.b[d.i] {
		case ' ', '\t', '\n', '\r':
			d.i++
		default:
			return
		}
	}
}

func (d *dec) peek() byte {
	d.ws()
	if d.i >= len(d.b) {
		d.bad = true
		return 0
	}
	return d.b[d.i]
}

func (d *dec) expect(c byte) {
	if d.peek() != c {
		d.bad = true
		return
	}
	d.i++
}

// object calls fn for each key; fn must read the value.
func (d *dec) object(fn func(key []byte)) {
	d.expect('{')
	if d.bad {
		return
	}
	if d.peek() == '}' {
		d.i++
		return
	}
	for !d.bad {
		key := d.strBytes()
		d.expect(':')
		if d.bad {
			return
		}
		fn(key) // callers switch on string(key), which does not allocate
		switch d.peek() {
		case ',':
			d.i++
		case '}':
			d.i++
			return
		default:
			d.bad = true
		}
	}
}

// strBytes returns a string's contents; escapes and control characters
// are left to encoding/json, and so is invalid UTF-8 (which it replaces).
func (d *dec) strBytes() []byte {
	d.expect('"')
	if d.bad {
		return nil
	}
	n := bytes.IndexByte(d.b[d.i:], '"')
	if n < 0 {
		d.bad = true
		return nil
	}
	s := d.b[d.i : d.i+n]
	if plainWords(s) {
		d.i += n + 1
		return s
	}
	ascii := true
	for _, c := range s {
		if plain[c] != 0 {
			if c < utf8.RuneSelf {
				d.bad = true // a backslash or a control character
				return nil
			}
			ascii = false
		}
	}
	if !ascii && !utf8.Valid(s) {
		d.bad = true
		return nil
	}
	d.i += n + 1
	return s
}

// PlainText reports whether s, found between a JSON string's quotes, is
// its value as it stands: ASCII without control characters or escapes.
// Request decoders use it for their own fast paths.
func PlainText(s []byte) bool { return plainWords(s) }

// plainWords reports whether s is printable ASCII without a backslash,
// eight bytes at a time; false sends the caller to the byte-wise check.
func plainWords(s []byte) bool {
	const ones, highs = 0x0101010101010101, 0x8080808080808080
	for len(s) >= 8 {
		w := binary.LittleEndian.Uint64(s)
		control := (w - 0x20*ones) & ^w & highs // a byte below 0x20
		backslash := (w ^ '\\'*ones - ones) & ^(w ^ '\\'*ones) & highs
		if control|backslash|w&highs != 0 {
			return false
		}
		s = s[8:]
	}
	for _, c := range s {
		if plain[c] != 0 {
			return false
		}
	}
	return true
}

// plain marks the bytes a string fast path must look at: control
// characters, the backslash, and non-ASCII.
var plain = func() (t [256]byte) {
	for c := range 256 {
		if c < 0x20 || c == '\\' || c >= utf8.RuneSelf {
			t[c] = 1
		}
	}
	return t
}()

func (d *dec) str() string { return string(d.strBytes()) }

func (d *dec) strs() []string {
	out := []string{}
	d.expect('[')
	if d.bad {
		return nil
	}
	if d.peek() == ']' {
		d.i++
		return out
	}
	for !d.bad {
		out = append(out, d.str())
		switch d.peek() {
		case ',':
			d.i++
		case ']':
			d.i++
			return out
		default:
			d.bad = true
		}
	}
	return nil
}

func (d *dec) null() bool {
	d.ws()
	if len(d.b)-d.i >= 4 && string(d.b[d.i:d.i+4]) == "null" {
		d.i += 4
		return true
	}
	return false
}

func (d *dec) time() time.Time {
	d.ws()
	start := d.i
	d.strBytes()
	var t time.Time
	if d.bad {
		return t
	}
	if err := t.UnmarshalJSON(d.b[start:d.i]); err != nil {
		d.bad = true
	}
	return t
}

// number returns the literal of an integer: digits with an optional
// minus sign, nothing else.
func (d *dec) number() []byte {
	d.ws()
	start := d.i
	if d.i < len(d.b) && d.b[d.i] == '-' {
		d.i++
	}
	digits := d.i
	for d.i < len(d.b) && d.b[d.i] >= '0' && d.b[d.i] <= '9' {
		d.i++
	}
	if d.i == digits || (d.b[digits] == '0' && d.i-digits > 1) {
		d.bad = true
	}
	if d.i < len(d.b) {
		if c := d.b[d.i]; c == '.' || c == 'e' || c == 'E' {
			d.bad = true
		}
	}
	return d.b[start:d.i]
}

func (d *dec) uint() uint64 {
	n, err := strconv.ParseUint(string(d.number()), 10, 64)
	if err != nil {
		d.bad = true
	}
	return n
}

func (d *dec) int() int64 {
	n, err := strconv.ParseInt(string(d.number()), 10, 64)
	if err != nil {
		d.bad = true
	}
	return n
}

func (d *dec) cause() Cause {
	var c Cause
	d.object(func(key []byte) {
		switch string(key) {
		case "kind":
			c.Kind = d.str()
		case "id":
			c.ID = d.str()
		case "reason":
			c.Reason = d.str()
		default:
			d.bad = true
		}
	})
	return c
}

func (d *dec) selector() *Selector {
	if d.null() {
		return nil
	}
	var sel Selector
	d.object(func(key []byte) {
		switch string(key) {
		case "subject":
			sel.Subject = d.str()
		case "client_id":
			sel.ClientID = d.str()
		case "family_id":
			sel.FamilyID = d.str()
		default:
			d.bad = true
		}
	})
	return &sel
}

func (d *dec) grant() AccessGrant {
	var g AccessGrant
	d.object(func(key []byte) {
		switch string(key) {
		case "jti":
			g.JTI = d.str()
		case "scope":
			g.Scope = d.str()
		case "expires_at":
			g.ExpiresAt = d.time()
		default:
			d.bad = true
		}
	})
	return g
}

// skip reads any value and returns its bytes. It checks the structure;
// the caller gets encoding/json's verdict wherever it matters (an invalid
// snapshot never equals a valid encoding, and a payload is decoded).
func (d *dec) skip() []byte {
	if d.depth >= 1000 {
		d.bad = true
		return nil
	}
	d.depth++
	b := d.skipValue()
	d.depth--
	return b
}

func (d *dec) skipValue() []byte {
	d.ws()
	start := d.i
	switch c := d.peek(); {
	case d.bad:
	case c == '{':
		d.i++
		if d.peek() == '}' {
			d.i++
			break
		}
		for !d.bad {
			d.strBytes()
			d.expect(':')
			d.skip()
			if d.peek() == ',' {
				d.i++
				continue
			}
			d.expect('}')
			break
		}
	case c == '[':
		d.i++
		if d.peek() == ']' {
			d.i++
			break
		}
		for !d.bad {
			d.skip()
			if d.peek() == ',' {
				d.i++
				continue
			}
			d.expect(']')
			break
		}
	case c == '"':
		d.strBytes()
	case c == 't' || c == 'f' || c == 'n':
		for _, lit := range []string{"true", "false", "null"} {
			if len(d.b)-d.i >= len(lit) && string(d.b[d.i:d.i+len(lit)]) == lit {
				d.i += len(lit)
				return d.b[start:d.i]
			}
		}
		d.bad = true
	default:
		d.number()
	}
	return d.b[start:d.i]
}

// appendState appends the state as json.Marshal would, or returns false
// when it cannot be sure to (a string needing escapes, custom claims, a
// year outside 0-9999).
func appendState(b []byte, s State) ([]byte, bool) {
	if len(s.Claims) > 0 {
		return b, false
	}
	ok := true
	str := func(key, v string) {
		b = append(b, key...)
		b, ok = appendString(b, v, ok)
	}
	tm := func(key string, t time.Time) {
		b = append(b, key...)
		if y := t.Year(); y < 0 || y > 9999 {
			ok = false
		}
		b = append(b, '"')
		b = t.AppendFormat(b, time.RFC3339Nano)
		b = append(b, '"')
	}
	str(`{"family_id":`, s.FamilyID)
	str(`,"client_id":`, s.ClientID)
	str(`,"subject":`, s.Subject)
	str(`,"scope":`, s.Scope)
	if len(s.Audience) > 0 {
		b = append(b, `,"audience":[`...)
		for i, a := range s.Audience {
			if i > 0 {
				b = append(b, ',')
			}
			b, ok = appendString(b, a, ok)
		}
		b = append(b, ']')
	}
	b = append(b, `,"version":`...)
	b = strconv.AppendInt(b, int64(s.Version), 10)
	if r := s.Revoked; r != nil {
		tm(`,"revoked":{"at":`, r.At)
		str(`,"cause":{"kind":`, r.Cause.Kind)
		if r.Cause.ID != "" {
			str(`,"id":`, r.Cause.ID)
		}
		if r.Cause.Reason != "" {
			str(`,"reason":`, r.Cause.Reason)
		}
		str(`},"event_id":`, r.EventID)
		b = append(b, '}')
	}
	tm(`,"created_at":`, s.CreatedAt)
	tm(`,"expires_at":`, s.ExpiresAt)
	b = append(b, `,"generation":`...)
	b = strconv.AppendUint(b, s.Generation, 10)
	str(`,"token_hash":`, s.TokenHash)
	tm(`,"token_issued_at":`, s.TokenIssuedAt)
	tm(`,"refresh_expires_at":`, s.RefreshExpiresAt)
	if !s.RotatedAt.IsZero() {
		tm(`,"rotated_at":`, s.RotatedAt)
	}
	if p := s.Previous; p != nil {
		b = append(b, `,"previous":{"generation":`...)
		b = strconv.AppendUint(b, p.Generation, 10)
		str(`,"hash":`, p.Hash)
		tm(`,"rotated_at":`, p.RotatedAt)
		str(`,"sealed_successor":`, p.SealedSuccessor)
		str(`,"event_id":`, p.EventID)
		if p.Request != "" {
			str(`,"request":`, p.Request)
		}
		b = append(b, '}')
	}
	if !s.AccessCutoff.IsZero() {
		tm(`,"access_cutoff":`, s.AccessCutoff)
	}
	b = append(b, `,"events":`...)
	b = strconv.AppendUint(b, s.Events, 10)
	b = append(b, '}')
	return b, ok
}

// appendString quotes plain ASCII strings; anything encoding/json would
// escape makes ok false.
func appendString(b []byte, s string, ok bool) ([]byte, bool) {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= utf8.RuneSelf || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			ok = false
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"'), ok
}

func (d *dec) state() *State {
	var s State
	d.object(func(key []byte) {
		switch string(key) {
		case "family_id":
			s.FamilyID = d.str()
		case "client_id":
			s.ClientID = d.str()
		case "subject":
			s.Subject = d.str()
		case "scope":
			s.Scope = d.str()
		case "audience":
			s.Audience = d.strs()
		case "claims":
			if d.null() {
				d.bad = true
			} else {
				s.Claims = append(json.RawMessage(nil), d.skip()...)
			}
		case "version":
			s.Version = int(d.int())
		case "revoked":
			if !d.null() {
				s.Revoked = d.revocation()
			}
		case "created_at":
			s.CreatedAt = d.time()
		case "expires_at":
			s.ExpiresAt = d.time()
		case "generation":
			s.Generation = d.uint()
		case "token_hash":
			s.TokenHash = d.str()
		case "token_issued_at":
			s.TokenIssuedAt = d.time()
		case "refresh_expires_at":
			s.RefreshExpiresAt = d.time()
		case "rotated_at":
			s.RotatedAt = d.time()
		case "previous":
			if !d.null() {
				s.Previous = d.previous()
			}
		case "access_cutoff":
			s.AccessCutoff = d.time()
		case "events":
			s.Events = d.uint()
		default:
			d.bad = true
		}
	})
	return &s
}

func (d *dec) revocation() *Revocation {
	var r Revocation
	d.object(func(key []byte) {
		switch string(key) {
		case "at":
			r.At = d.time()
		case "cause":
			r.Cause = d.cause()
		case "event_id":
			r.EventID = d.str()
		default:
			d.bad = true
		}
	})
	return &r
}

func (d *dec) previous() *Previous {
	var p Previous
	d.object(func(key []byte) {
		switch string(key) {
		case "generation":
			p.Generation = d.uint()
		case "hash":
			p.Hash = d.str()
		case "rotated_at":
			p.RotatedAt = d.time()
		case "sealed_successor":
			p.SealedSuccessor = d.str()
		case "event_id":
			p.EventID = d.str()
		case "request":
			p.Request = d.str()
		default:
			d.bad = true
		}
	})
	return &p
}

// decodeStateFast reads only the state member of a stored event.
func decodeStateFast(b []byte) (st *State, schema int64, ok bool) {
	if !fastTypesOK {
		return nil, 0, false
	}
	d := dec{b: b}
	schema = -1
	d.object(func(key []byte) {
		switch string(key) {
		case "schema":
			schema = d.int()
		case "state":
			if !d.null() {
				st = d.state()
			}
		default:
			d.skip()
		}
	})
	d.ws()
	if d.bad || d.i != len(b) {
		return nil, 0, false
	}
	return st, schema, true
}

// appendEvent appends the stored JSON of e as json.Marshal of outEvent
// would, or reports false.
func appendEvent(b []byte, e Event, t EventType) ([]byte, bool) {
	if !fastTypesOK {
		return b, false
	}
	w := jw{b: b, ok: true}
	w.str(`{"id":`, e.ID)
	w.str(`,"type":`, string(t))
	w.raw(`,"schema":`)
	w.b = strconv.AppendInt(w.b, SchemaVersion, 10)
	w.str(`,"family_id":`, e.FamilyID)
	w.time(`,"occurred_at":`, e.OccurredAt.UTC())
	w.cause(`,"cause":`, e.Cause)
	w.str(`,"prev":`, e.Prev)
	w.raw(`,"data":`)
	switch p := e.Data.(type) {
	case FamilyIssued:
		if len(p.Claims) > 0 {
			return b, false
		}
		w.str(`{"client_id":`, p.ClientID)
		w.str(`,"subject":`, p.Subject)
		w.str(`,"scope":`, p.Scope)
		w.strsOmit(`,"audience":`, p.Audience)
		w.int(`,"version":`, int64(p.Version))
		w.str(`,"token_hash":`, p.TokenHash)
		w.time(`,"refresh_expires_at":`, p.RefreshExpiresAt)
		w.time(`,"expires_at":`, p.ExpiresAt)
		w.grant(`,"access":`, p.Access)
	case RefreshRotated:
		w.uint(`{"from_generation":`, p.FromGeneration)
		w.uint(`,"to_generation":`, p.ToGeneration)
		w.str(`,"presented_hash":`, p.PresentedHash)
		w.str(`,"token_hash":`, p.TokenHash)
		w.str(`,"sealed_successor":`, p.SealedSuccessor)
		w.time(`,"refresh_expires_at":`, p.RefreshExpiresAt)
		w.int(`,"version":`, int64(p.Version))
		w.grant(`,"access":`, p.Access)
	case RefreshUsed:
		w.uint(`{"generation":`, p.Generation)
		w.time(`,"refresh_expires_at":`, p.RefreshExpiresAt)
		w.grant(`,"access":`, p.Access)
	case GraceRetried:
		w.uint(`{"presented_generation":`, p.PresentedGeneration)
		w.uint(`,"successor_generation":`, p.SuccessorGeneration)
		w.int(`,"rotated_ago_ns":`, int64(p.RotatedAgo))
		w.grant(`,"access":`, p.Access)
	case ReuseDetected:
		w.uint(`{"presented_generation":`, p.PresentedGeneration)
		w.uint(`,"current_generation":`, p.CurrentGeneration)
		w.str(`,"presented_hash":`, p.PresentedHash)
		w.int(`,"rotated_ago_ns":`, int64(p.RotatedAgo))
		if p.WinnerEventID != "" {
			w.str(`,"winner_event_id":`, p.WinnerEventID)
		}
		if p.WinnerRequest != "" {
			w.str(`,"winner_request":`, p.WinnerRequest)
		}
	case FamilyRevoked:
		w.uint(`{"generation":`, p.Generation)
	case AccessRevoked:
		w.str(`{"jti":`, p.JTI)
		w.time(`,"expires_at":`, p.ExpiresAt)
	case AccessCutoff:
		w.uint(`{"generation":`, p.Generation)
	default: // SecurityHandled and anything new: rare, encoding/json
		return b, false
	}
	w.raw(`}`)
	if e.State != nil {
		w.raw(`,"state":`)
		var ok bool
		if w.b, ok = appendState(w.b, *e.State); !ok {
			return b, false
		}
	}
	w.raw(`}`)
	if !w.ok {
		return b, false
	}
	return w.b, true
}

// jw appends JSON; ok turns false on anything json.Marshal would write
// differently.
type jw struct {
	b  []byte
	ok bool
}

func (w *jw) raw(s string) { w.b = append(w.b, s...) }

func (w *jw) str(key, v string) {
	w.b = append(w.b, key...)
	w.b, w.ok = appendString(w.b, v, w.ok)
}

func (w *jw) strsOmit(key string, v []string) {
	if len(v) == 0 {
		return
	}
	w.b = append(w.b, key...)
	w.b = append(w.b, '[')
	for i, s := range v {
		if i > 0 {
			w.b = append(w.b, ',')
		}
		w.b, w.ok = appendString(w.b, s, w.ok)
	}
	w.b = append(w.b, ']')
}

func (w *jw) int(key string, v int64) {
	w.b = append(w.b, key...)
	w.b = strconv.AppendInt(w.b, v, 10)
}

func (w *jw) uint(key string, v uint64) {
	w.b = append(w.b, key...)
	w.b = strconv.AppendUint(w.b, v, 10)
}

func (w *jw) time(key string, t time.Time) {
	w.b = append(w.b, key...)
	if y := t.Year(); y < 0 || y > 9999 {
		w.ok = false
	}
	w.b = append(w.b, '"')
	w.b = t.AppendFormat(w.b, time.RFC3339Nano)
	w.b = append(w.b, '"')
}

func (w *jw) cause(key string, c Cause) {
	w.str(key+`{"kind":`, c.Kind)
	if c.ID != "" {
		w.str(`,"id":`, c.ID)
	}
	if c.Reason != "" {
		w.str(`,"reason":`, c.Reason)
	}
	w.raw(`}`)
}

func (w *jw) grant(key string, g AccessGrant) {
	w.str(key+`{"jti":`, g.JTI)
	w.str(`,"scope":`, g.Scope)
	w.time(`,"expires_at":`, g.ExpiresAt)
	w.raw(`}`)
}

// DecodeState reads only the state snapshot of a stored event.
func DecodeState(data []byte) (State, error) {
	snap, schema, ok := decodeStateFast(data)
	if !ok {
		var w struct {
			Schema int64  `json:"schema"`
			State  *State `json:"state"`
		}
		if err := json.Unmarshal(data, &w); err != nil {
			return State{}, fmt.Errorf("no readable state: %w", err)
		}
		snap, schema = w.State, w.Schema
	}
	if schema != SchemaVersion || snap == nil {
		return State{}, fmt.Errorf("no state of schema %d: %w", SchemaVersion, ErrUnknownEvent)
	}
	return *snap, nil
}
