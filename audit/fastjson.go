package audit

import (
	"bytes"
	"encoding/json"
	"reflect"
	"slices"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/tokenledger/tokenledger/ledger"
)

// A fast path for verify's two hot spots: decoding stored events and
// encoding folded states. encoding/json costs ~30µs an event here; these
// cost a few. They are exact or they give up: the decoder handles only the
// plain JSON the ledger writes (no escapes, no nulls, known keys) and
// returns ok=false for anything else, and the encoder returns ok=false for
// anything it cannot reproduce byte for byte (escapes, claims); the caller
// then uses encoding/json. A mismatch of the fast encoding is re-checked
// with json.Marshal before it is reported. fastTypesOK switches both off
// if the ledger's types gained, lost or renamed a field since this was
// written, so a schema change can cost speed, never correctness.

var fastTypesOK = func() bool {
	want := map[reflect.Type][]string{
		reflect.TypeFor[ledger.State](): {"family_id", "client_id", "subject", "scope", "audience,omitempty",
			"claims,omitempty", "version", "revoked,omitempty", "created_at", "expires_at", "generation",
			"token_hash", "token_issued_at", "refresh_expires_at", "rotated_at,omitzero", "previous,omitempty",
			"access_cutoff,omitzero", "events", "-", "-"},
		reflect.TypeFor[ledger.Revocation](): {"at", "cause", "event_id"},
		reflect.TypeFor[ledger.Previous](): {"generation", "hash", "rotated_at", "sealed_successor", "event_id",
			"request,omitempty"},
		reflect.TypeFor[ledger.Cause]():       {"kind", "id,omitempty", "reason,omitempty"},
		reflect.TypeFor[ledger.AccessGrant](): {"jti", "scope", "expires_at"},
		reflect.TypeFor[ledger.FamilyIssued](): {"client_id", "subject", "scope", "audience,omitempty",
			"claims,omitempty", "version", "token_hash", "refresh_expires_at", "expires_at", "access"},
		reflect.TypeFor[ledger.RefreshRotated](): {"from_generation", "to_generation", "presented_hash",
			"token_hash", "sealed_successor", "refresh_expires_at", "version", "access"},
		reflect.TypeFor[ledger.RefreshUsed](): {"generation", "refresh_expires_at", "access"},
		reflect.TypeFor[ledger.GraceRetried](): {"presented_generation", "successor_generation",
			"rotated_ago_ns", "access"},
		reflect.TypeFor[ledger.ReuseDetected](): {"presented_generation", "current_generation",
			"presented_hash", "rotated_ago_ns", "winner_event_id,omitempty", "winner_request,omitempty"},
		reflect.TypeFor[ledger.FamilyRevoked](): {"generation"},
		reflect.TypeFor[ledger.AccessRevoked](): {"jti", "expires_at"},
		reflect.TypeFor[ledger.AccessCutoff]():  {"generation"},
		reflect.TypeFor[ledger.SecurityHandled](): {"event_type", "severity", "action", "selector,omitempty",
			"families", "more_families,omitempty"},
		reflect.TypeFor[ledger.Selector](): {"subject,omitempty", "client_id,omitempty", "family_id,omitempty"},
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
	return ledger.SchemaVersion == 1
}()

// decodeFast is decodeStored for the plain JSON the ledger writes.
//
// The state snapshot, when it is the last key as the ledger writes it, is
// not scanned: its bytes are taken up to the document's closing brace and
// stateUnchecked is set. Such a decode may be trusted only once the state
// bytes are found equal to a valid encoding (appendState of the fold):
// then the document is exactly the envelope read plus that state, with
// nothing after it. Otherwise the caller must decode with encoding/json.
func decodeFast(b []byte) (e ledger.Event, state json.RawMessage, ok, stateUnchecked bool) {
	return decodeFastMode(b, false)
}

// decodeEvent decodes a stored event without its state snapshot (State is
// nil): the fast path when it can vouch for the whole document, else
// ledger.DecodeEvent.
func decodeEvent(b []byte) (ledger.Event, error) {
	if e, _, ok, _ := decodeFastMode(b, true); ok {
		return e, nil
	}
	e, err := ledger.DecodeEvent(b)
	e.State = nil
	return e, err
}

// decodeFastMode is decodeFast; with scanState it checks the snapshot's
// structure too, so a success needs no certification.
func decodeFastMode(b []byte, scanState bool) (e ledger.Event, state json.RawMessage, ok, stateUnchecked bool) {
	if !fastTypesOK {
		return e, nil, false, false
	}
	d := dec{b: b}
	var data []byte
	schema := int64(-1)
	d.object(func(key []byte) {
		switch string(key) {
		case "id":
			e.ID = d.str()
		case "type":
			e.Type = knownType(d.strBytes())
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
			if d.null() {
				state = nil
				return
			}
			if scanState {
				state = d.skip()
				return
			}
			d.ws()
			end := len(b)
			for end > d.i && isSpace(b[end-1]) {
				end--
			}
			if end <= d.i || b[end-1] != '}' {
				d.bad = true
				return
			}
			end-- // the document's closing brace
			stop := end
			for stop > d.i && isSpace(b[stop-1]) {
				stop--
			}
			state, stateUnchecked = b[d.i:stop], true
			d.i = end
		default:
			d.bad = true
		}
	})
	d.ws()
	if d.bad || d.i != len(b) || schema != ledger.SchemaVersion || data == nil {
		return e, nil, false, false
	}
	d = dec{b: data}
	switch e.Type {
	case ledger.TypeFamilyIssued:
		var p ledger.FamilyIssued
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
	case ledger.TypeRefreshRotated:
		var p ledger.RefreshRotated
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
	case ledger.TypeRefreshUsed:
		var p ledger.RefreshUsed
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
	case ledger.TypeGraceRetried:
		var p ledger.GraceRetried
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
	case ledger.TypeReuseDetected:
		var p ledger.ReuseDetected
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
	case ledger.TypeFamilyRevoked:
		var p ledger.FamilyRevoked
		d.object(func(key []byte) {
			if string(key) != "generation" {
				d.bad = true
				return
			}
			p.Generation = d.uint()
		})
		e.Data = p
	case ledger.TypeAccessRevoked:
		var p ledger.AccessRevoked
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
	case ledger.TypeAccessCutoff:
		var p ledger.AccessCutoff
		d.object(func(key []byte) {
			if string(key) != "generation" {
				d.bad = true
				return
			}
			p.Generation = d.uint()
		})
		e.Data = p
	case ledger.TypeSecurityHandled:
		var p ledger.SecurityHandled
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
		return e, nil, false, false
	}
	d.ws()
	if d.bad || d.i != len(data) {
		return ledger.Event{}, nil, false, false
	}
	return e, state, true, stateUnchecked
}

func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }

// knownType returns the constant for a known type without allocating.
func knownType(b []byte) ledger.EventType {
	for _, t := range knownTypes {
		if string(b) == string(t) {
			return t
		}
	}
	return ledger.EventType(b)
}

var knownTypes = []ledger.EventType{ledger.TypeRefreshRotated, ledger.TypeFamilyIssued, ledger.TypeGraceRetried,
	ledger.TypeRefreshUsed, ledger.TypeAccessRevoked, ledger.TypeAccessCutoff, ledger.TypeFamilyRevoked,
	ledger.TypeReuseDetected, ledger.TypeSecurityHandled}

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

func (d *dec) cause() ledger.Cause {
	var c ledger.Cause
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

func (d *dec) selector() *ledger.Selector {
	if d.null() {
		return nil
	}
	var sel ledger.Selector
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

func (d *dec) grant() ledger.AccessGrant {
	var g ledger.AccessGrant
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
	d.depth++
	defer func() { d.depth-- }()
	if d.depth > 1000 {
		d.bad = true
		return nil
	}
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
func appendState(b []byte, s ledger.State) ([]byte, bool) {
	if !fastTypesOK || len(s.Claims) > 0 {
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
