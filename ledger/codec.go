package ledger

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"reflect"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/go-json-experiment/json"
	"github.com/go-json-experiment/json/jsontext"
	jsonv1 "github.com/go-json-experiment/json/v1"
)

// The event codec. The structs of events.go and state.go are the schema,
// each spelled once: github.com/go-json-experiment/json (the
// encoding/json/v2 design) marshals and unmarshals them by their tags.
//
// Writing: the bytes are those encoding/json (v1) wrote for the same
// values, which the golden files under testdata/ pin and EventHash
// chains. v2 differs from v1 by default in ways encodeOpts undo:
//   - v1 escaped '<', '>', '&' (EscapeForHTML) and U+2028, U+2029
//     (EscapeForJS) in every string;
//   - v1 wrote a nil slice as null (FormatNilSliceAsNull): Families;
//   - v1 wrote a time.Duration as its integer nanoseconds, which v2 has
//     no default for (FormatDurationAsNano; also for reading);
//   - v1's omitempty omitted a zero number, a nil pointer and an empty
//     byte slice, where v2's omits what encodes as "", null, [] or {}: a
//     zero MoreFamilies, and claims or a selector that encode as {}, would
//     differ (OmitEmptyWithLegacySemantics keeps v1's; the tags stay as
//     they were);
//   - v1 kept the escapes of a raw value (the custom claims) as written,
//     only compacting it (PreserveRawStrings).
//
// Times need no option: v2 writes time.Time as v1 did, RFC 3339 with
// nanoseconds and trailing zeros trimmed (time.RFC3339Nano), and refuses
// the years outside 0-9999 that v1 refused. The experimental format tag
// option is not used: it is being removed from v2 (go.dev/issue/79071).
// One difference is not undone: v1 replaced invalid UTF-8 with the escape
// \ufffd, v2 can only write the raw U+FFFD, so invalid UTF-8 is an
// encoding error (v2's default) rather than a silently different event.
// The ledger's strings come from JSON requests, ULIDs and hex, so none
// has any.
//
// Reading is strict: a repeated member name, a member name in the wrong
// case (which v1 matched to the field), invalid UTF-8 and trailing data are
// errors, so two readers can never see two different events in the same
// bytes. A member no field knows is ignored: STYLE's schema evolution adds
// optional fields, and a reader one build behind (a rolling deploy, an
// older auditor) must still fold the events a newer writer stored; the
// field then takes effect where a build knows it. The ledger writes no
// unknown members itself, so decoding first rejects them (the usual,
// one-pass case) and only on finding one checks every name's case and
// decodes again, ignoring it.
var (
	encodeOpts = json.JoinOptions(
		jsontext.EscapeForHTML(true),
		jsontext.EscapeForJS(true),
		json.FormatNilSliceAsNull(true),
		jsontext.PreserveRawStrings(true),
		jsonv1.FormatDurationAsNano(true),
		jsonv1.OmitEmptyWithLegacySemantics(true),
	)
	decodeOpts  = json.JoinOptions(json.RejectUnknownMembers(true), jsonv1.FormatDurationAsNano(true))
	lenientOpts = json.JoinOptions(json.RejectUnknownMembers(false), jsonv1.FormatDurationAsNano(true))
)

// envelope is the stored event: the Event's envelope with its payload
// (D) and what it stores of its family's state (S), in the member types
// each reader needs: schema 1's state after the event, or schema 2's base
// (see Base).
type envelope[D, S any] struct {
	ID         string    `json:"id"`
	Type       EventType `json:"type"`
	Schema     int       `json:"schema"`
	FamilyID   string    `json:"family_id"`
	OccurredAt time.Time `json:"occurred_at"`
	Cause      Cause     `json:"cause"`
	Prev       string    `json:"prev"`
	Data       D         `json:"data"`
	State      S         `json:"state,omitempty"` // schema 1 only
	Base       S         `json:"base,omitempty"`  // schema 2 only
}

// stored is what a decoded event stores of its family's state, by schema.
type stored[S any] struct {
	schema      int
	state, base S
}

// payload is one member of the closed set (payloads, in events.go): a
// payload struct and its decoders, from bytes and from a decoder in the
// middle of an event.
type payload struct {
	goType     reflect.Type
	decode     func(jsontext.Value) (any, error)
	decodeFrom func(*jsontext.Decoder) (any, error)
}

func payloadOf[T any]() payload {
	return payload{
		goType: reflect.TypeFor[T](),
		decode: func(b jsontext.Value) (any, error) { return unmarshal[T](b) },
		decodeFrom: func(dec *jsontext.Decoder) (any, error) {
			var v T
			err := json.UnmarshalDecode(dec, &v)
			return v, err
		},
	}
}

// skipped reads a member as valid JSON and keeps nothing of it.
type skipped struct{}

// UnmarshalJSONFrom skips the value.
func (*skipped) UnmarshalJSONFrom(dec *jsontext.Decoder) error { return dec.SkipValue() }

// knownSchema reports whether this code reads events of the schema: 1,
// whose family events store the state after them, and 2
// (SchemaVersion), whose family events store their Base.
func knownSchema(schema int) bool { return schema == 1 || schema == SchemaVersion }

// appender is an io.Writer appending to b.
type appender struct{ b []byte }

func (a *appender) Write(p []byte) (int, error) {
	a.b = append(a.b, p...)
	return len(p), nil
}

// EncodeEvent returns the event's stored JSON.
func EncodeEvent(e Event) ([]byte, error) {
	return AppendEvent(make([]byte, 0, 1024), e) // a rotation with its base is ~0.9 KB
}

// AppendEvent is EncodeEvent appending to b, in its spare capacity when
// it can (the bytes then alias b).
func AppendEvent(b []byte, e Event) ([]byte, error) {
	t := TypeOf(e.Data)
	if t == "" {
		return nil, fmt.Errorf("encode event %s: unknown payload %T", e.ID, e.Data)
	}
	if fast, ok := appendEvent(b, e, t); ok {
		return fast, nil
	}
	return marshalEvent(b, e, t)
}

// marshalEvent is AppendEvent by the encoder alone.
func marshalEvent(b []byte, e Event, t EventType) ([]byte, error) {
	w := appender{b: b}
	if err := json.MarshalWrite(&w, &envelope[any, *State]{
		ID: e.ID, Type: t, Schema: SchemaVersion, FamilyID: e.FamilyID,
		OccurredAt: e.OccurredAt.UTC(), Cause: e.Cause, Prev: e.Prev,
		Data: e.Data, Base: baseOf(e),
	}, encodeOpts); err != nil {
		return nil, fmt.Errorf("encode event %s: %w", e.ID, err)
	}
	return w.b, nil
}

// baseOf is the base EncodeEvent stores for e: the Base of its State, or
// nil when e carries no State or is a family.issued (whose Apply starts
// over).
func baseOf(e Event) *State {
	if _, issued := e.Data.(FamilyIssued); issued || e.State == nil {
		return nil
	}
	b := Base(*e.State, e)
	return &b
}

// AppendState appends a state as EncodeEvent writes a base (a zero field
// tagged omitempty or omitzero left out). Equal encodings are equal
// states (Seq and Head are not encoded).
func AppendState(b []byte, s State) ([]byte, error) {
	if fast, ok := appendState(b, s, false); ok {
		return fast, nil
	}
	return marshalState(b, s)
}

// marshalState is AppendState by the encoder alone.
func marshalState(b []byte, s State) ([]byte, error) {
	w := appender{b: b}
	if err := json.MarshalWrite(&w, &s, encodeOpts); err != nil {
		return nil, fmt.Errorf("encode state of family %s: %w", s.FamilyID, err)
	}
	return w.b, nil
}

// DecodeEvent parses a stored event. An unknown type or schema is an error:
// an event this code cannot read must not be folded. Unknown members are
// ignored, so writers may add optional fields (see the top of codec.go).
func DecodeEvent(b []byte) (Event, error) {
	e, d, err := decodeEvent[*State](b)
	if err != nil {
		return Event{}, err
	}
	if e.State, err = stateAfter(e, d); err != nil {
		return Event{}, err
	}
	return e, nil
}

// stateAfter is the state after e that e stores: schema 1's snapshot, or
// Apply of schema 2's base (with the envelope's family id). A family.issued
// of schema 2 stores no base: its Apply starts over. nil when e stores
// none (an event outside the families).
func stateAfter(e Event, d stored[*State]) (*State, error) {
	if d.schema == 1 {
		if d.base != nil {
			return nil, fmt.Errorf("decode event %s: a base in a schema-1 event", e.ID)
		}
		return d.state, nil
	}
	switch {
	case d.state != nil:
		return nil, fmt.Errorf("decode event %s: a state in a schema-%d event", e.ID, d.schema)
	case e.Type == TypeFamilyIssued:
		if d.base != nil {
			return nil, fmt.Errorf("decode event %s: a base in a %s", e.ID, e.Type)
		}
		after := Apply(State{}, e)
		return &after, nil
	case d.base == nil:
		return nil, nil
	case d.base.FamilyID != "":
		return nil, fmt.Errorf("decode event %s: a family id in its base", e.ID)
	}
	base := *d.base
	base.FamilyID = e.FamilyID
	after := Apply(base, e)
	return &after, nil
}

// DecodeEventSkipState is DecodeEvent without the family state (left
// nil), for readers that fold events themselves: it is the cheaper read.
// The stored state or base is checked to be JSON, not decoded.
func DecodeEventSkipState(b []byte) (Event, error) {
	e, _, err := decodeEvent[skipped](b)
	return e, err
}

// DecodeState reads the family state after a stored event, of either
// schema: what a family load needs from the family's last event.
func DecodeState(data []byte) (State, error) {
	e, err := DecodeEvent(data)
	if err != nil {
		return State{}, fmt.Errorf("no readable state: %w", err)
	}
	if e.State == nil {
		return State{}, fmt.Errorf("no state in event %s: %w", e.ID, ErrUnknownEvent)
	}
	return *e.State, nil
}

// decodeEvent decodes a stored event with its stored state or base as an
// S. The usual event is read in one pass, its payload straight from the
// decoder (see payloadField); one with a member no field knows is read
// again as unmarshal reads anything.
func decodeEvent[S any](b []byte) (Event, stored[S], error) {
	var none stored[S]
	w := new(envelope[payloadField, S])
	w.Data.typ = &w.Type
	err := json.Unmarshal(b, w, decodeOpts)
	if errors.Is(err, json.ErrUnknownName) {
		return decodeEventLenient[S](b)
	}
	if err != nil {
		return Event{}, none, fmt.Errorf("decode event: %w", err)
	}
	data := w.Data.v
	if w.Data.v == nil { // data came before type, or neither is known
		if data, err = decodePayload(w.ID, w.Type, w.Schema, w.Data.raw); err != nil {
			return Event{}, none, err
		}
	} else if !knownSchema(w.Schema) {
		return Event{}, none, fmt.Errorf("decode event %s: schema %d: %w", w.ID, w.Schema, ErrUnknownEvent)
	}
	return Event{ID: w.ID, Type: w.Type, FamilyID: w.FamilyID, OccurredAt: w.OccurredAt,
		Cause: w.Cause, Prev: w.Prev, Data: data}, stored[S]{w.Schema, w.State, w.Base}, nil
}

// decodeEventLenient is decodeEvent in two passes, the payload kept raw
// by the first, each pass as unmarshal reads.
func decodeEventLenient[S any](b []byte) (Event, stored[S], error) {
	var none stored[S]
	w, err := unmarshal[envelope[jsontext.Value, S]](b)
	if err != nil {
		return Event{}, none, fmt.Errorf("decode event: %w", err)
	}
	data, err := decodePayload(w.ID, w.Type, w.Schema, w.Data)
	if err != nil {
		return Event{}, none, err
	}
	return Event{ID: w.ID, Type: w.Type, FamilyID: w.FamilyID, OccurredAt: w.OccurredAt,
		Cause: w.Cause, Prev: w.Prev, Data: data}, stored[S]{w.Schema, w.State, w.Base}, nil
}

// decodePayload decodes an event's raw payload by its type.
func decodePayload(id string, t EventType, schema int, raw jsontext.Value) (any, error) {
	if !knownSchema(schema) {
		return nil, fmt.Errorf("decode event %s: schema %d: %w", id, schema, ErrUnknownEvent)
	}
	p, ok := payloads[t]
	if !ok {
		return nil, fmt.Errorf("decode event %s: type %q: %w", id, t, ErrUnknownEvent)
	}
	data, err := p.decode(raw)
	if err != nil {
		return nil, fmt.Errorf("decode event %s (%s): %w", id, t, err)
	}
	return data, nil
}

// payloadField is the data member of an event being decoded. When the
// type member came first, as the ledger writes it, the payload is decoded
// from the decoder into its struct; otherwise it is kept raw until the
// type is known.
type payloadField struct {
	typ *EventType // the envelope's Type
	v   any
	raw jsontext.Value
}

// UnmarshalJSONFrom reads the payload.
func (p *payloadField) UnmarshalJSONFrom(dec *jsontext.Decoder) error {
	if t, ok := payloads[*p.typ]; ok {
		v, err := t.decodeFrom(dec)
		p.v = v
		return err
	}
	raw, err := dec.ReadValue()
	p.raw = raw.Clone()
	return err
}

// unmarshal decodes b into a T strictly (see the top of this file).
func unmarshal[T any](b []byte) (T, error) {
	var v T
	err := json.Unmarshal(b, &v, decodeOpts)
	if !errors.Is(err, json.ErrUnknownName) {
		return v, err
	}
	// A member no field of T knows: added by a newer writer, or a known
	// one in the wrong case.
	if err := checkCase(b, reflect.TypeFor[T]()); err != nil {
		return v, err
	}
	var lenient T
	err = json.Unmarshal(b, &lenient, lenientOpts)
	return lenient, err
}

// errMemberCase is a member whose name is a field's only when case is
// ignored (encoding/json v1 matched it to the field; this codec does not).
var errMemberCase = errors.New("member name in the wrong case")

// checkCase returns an error for a member of b whose name matches a field
// of t (or of a struct within it) only when case is ignored. The field
// names are read from t's json tags: the structs stay the one schema.
func checkCase(b []byte, t reflect.Type) error {
	dec := jsontext.NewDecoder(bytes.NewReader(b))
	return walkCase(dec, t)
}

func walkCase(dec *jsontext.Decoder, t reflect.Type) error {
	for t != nil && t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch dec.PeekKind() {
	case '{':
		if t == nil || t.Kind() != reflect.Struct {
			return dec.SkipValue() // a raw value (claims) or a map: no fields
		}
		fields := jsonFields(t)
		if _, err := dec.ReadToken(); err != nil {
			return err
		}
		for dec.PeekKind() != '}' {
			tok, err := dec.ReadToken()
			if err != nil {
				return err
			}
			name := tok.String()
			ft, known := fields[name]
			if !known {
				for f := range fields {
					if strings.EqualFold(f, name) {
						return fmt.Errorf("%w: %q in %s, want %q", errMemberCase, name, t, f)
					}
				}
			}
			if err := walkCase(dec, ft); err != nil {
				return err
			}
		}
		_, err := dec.ReadToken()
		return err
	case '[':
		var elem reflect.Type
		if t != nil && (t.Kind() == reflect.Slice || t.Kind() == reflect.Array) {
			elem = t.Elem()
		}
		if _, err := dec.ReadToken(); err != nil {
			return err
		}
		for dec.PeekKind() != ']' {
			if err := walkCase(dec, elem); err != nil {
				return err
			}
		}
		_, err := dec.ReadToken()
		return err
	default:
		return dec.SkipValue()
	}
}

// jsonFields maps the member names of struct t to their fields' types.
func jsonFields(t reflect.Type) map[string]reflect.Type {
	fields := map[string]reflect.Type{}
	for f := range t.Fields() {
		tag := f.Tag.Get("json")
		if !f.IsExported() || tag == "-" {
			continue
		}
		name, _, _ := strings.Cut(tag, ",")
		if name == "" {
			name = f.Name
		}
		fields[name] = f.Type
	}
	return fields
}

// The hand-written encoder, kept for the one path where the encoder's
// cost showed at the service: every refresh and issue appends one event.
// Measured against ca8d05a (5 adjacent pairs of "tokenledger bench
// --in-process --cases refresh@64,issue@64 --duration 5s", 2 shared
// cores): with json v2 alone the service spent a median 12% more CPU per
// refresh and 6% per issue (v2 took 2.71x this encoder's time in
// BenchmarkEncodeEvent, and the encoder was 5.9% of the service's CPU in
// a refresh profile); with this encoder kept, +3.6% per refresh and +5.5%
// per issue, the rest being the decoders, which are v2 (1.7x to 2x the
// old hand-written decoders in the micro benchmarks).
//
// It writes exactly the encoder's bytes or gives up (ok false) and
// AppendEvent uses the encoder: strings needing an escape, custom claims,
// times the encoder refuses, security.handled. TestFastEncoderCoversSchema
// fills every field of every payload and of State by reflection and
// compares both, so a field added to a struct but not here fails the
// build's tests, never the wire.

// plainTime reports whether t is a time the encoder writes as
// AppendFormat(RFC3339Nano) does: a four-digit year and a zone offset
// under a day.
func plainTime(t time.Time) bool {
	_, off := t.Zone()
	y := t.Year()
	return y >= 0 && y <= 9999 && off > -24*3600 && off < 24*3600
}

// appendState appends the state as the encoder does, or returns false
// when it cannot be sure to (a string needing escapes, custom claims, a
// time the encoder refuses). With v1 it writes the state as schema 1's
// snapshots were written, every field of State that is now omitted when
// zero spelled out, for Folder to compare them without decoding.
func appendState(b []byte, s State, v1 bool) ([]byte, bool) {
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
		if !plainTime(t) {
			ok = false
		}
		b = append(b, '"')
		b = t.AppendFormat(b, time.RFC3339Nano)
		b = append(b, '"')
	}
	b = append(b, '{')
	if v1 || s.FamilyID != "" {
		str(`"family_id":`, s.FamilyID)
		b = append(b, ',')
	}
	str(`"client_id":`, s.ClientID)
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
	if v1 || s.Version != 0 {
		b = append(b, `,"version":`...)
		b = strconv.AppendInt(b, int64(s.Version), 10)
	}
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
	if v1 || s.Generation != 0 {
		b = append(b, `,"generation":`...)
		b = strconv.AppendUint(b, s.Generation, 10)
	}
	if v1 || s.TokenHash != "" {
		str(`,"token_hash":`, s.TokenHash)
	}
	if v1 || !s.TokenIssuedAt.IsZero() {
		tm(`,"token_issued_at":`, s.TokenIssuedAt)
	}
	if v1 || !s.RefreshExpiresAt.IsZero() {
		tm(`,"refresh_expires_at":`, s.RefreshExpiresAt)
	}
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

// appendString quotes plain ASCII strings; anything the encoder would
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

// appendEvent appends the stored JSON of e as the encoder does, or
// reports false.
func appendEvent(b []byte, e Event, t EventType) ([]byte, bool) {
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
		if p.RolloutID != "" {
			w.str(`,"rollout_id":`, p.RolloutID)
		}
	case RefreshRotated:
		w.uint(`{"from_generation":`, p.FromGeneration)
		w.uint(`,"to_generation":`, p.ToGeneration)
		w.str(`,"presented_hash":`, p.PresentedHash)
		w.str(`,"token_hash":`, p.TokenHash)
		w.str(`,"sealed_successor":`, p.SealedSuccessor)
		w.time(`,"refresh_expires_at":`, p.RefreshExpiresAt)
		w.int(`,"version":`, int64(p.Version))
		w.grant(`,"access":`, p.Access)
		if p.RolloutID != "" {
			w.str(`,"rollout_id":`, p.RolloutID)
		}
		if p.FromVersion != 0 {
			w.int(`,"from_version":`, int64(p.FromVersion))
		}
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
	default: // SecurityHandled, rollouts and anything new: rare, the encoder
		return b, false
	}
	w.raw(`}`)
	if _, issued := e.Data.(FamilyIssued); e.State != nil && !issued { // as baseOf
		w.raw(`,"base":`)
		var ok bool
		if w.b, ok = appendState(w.b, Base(*e.State, e), false); !ok {
			return b, false
		}
	}
	w.raw(`}`)
	if !w.ok {
		return b, false
	}
	return w.b, true
}

// jw appends JSON; ok turns false on anything the encoder would write
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
	if !plainTime(t) {
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

// PlainText reports whether s, found between a JSON string's quotes, is
// its value as it stands: ASCII without control characters or escapes.
// Request decoders use it for their own fast paths.
func PlainText(s []byte) bool { return plainWords(s) }

// plainWords reports whether s is printable ASCII without a backslash,
// eight bytes at a time.
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

// plain marks the bytes PlainText rejects: control characters, the
// backslash, and non-ASCII.
var plain = func() (t [256]byte) {
	for c := range 256 {
		if c < 0x20 || c == '\\' || c >= utf8.RuneSelf {
			t[c] = 1
		}
	}
	return t
}()
