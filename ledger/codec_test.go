package ledger

import (
	"bytes"
	jsonv1 "encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/go-json-experiment/json/jsontext"
)

// v1Encode is what encoding/json (v1) writes for e in schema 2: the
// reference the encoder must equal (the build before this codec wrote
// encoding/json's bytes, and the golden files pin them).
func v1Encode(e Event) ([]byte, error) {
	return jsonv1.Marshal(envelope[any, *State]{
		ID: e.ID, Type: TypeOf(e.Data), Schema: SchemaVersion, FamilyID: e.FamilyID,
		OccurredAt: e.OccurredAt.UTC(), Cause: e.Cause, Prev: e.Prev, Data: e.Data, Base: baseOf(e),
	})
}

// stateV1 is State as schema 1 spelled it: the same fields (a conversion
// from State compiles only while they are), every one this build omits
// when zero written out.
type stateV1 struct {
	FamilyID         string            `json:"family_id"`
	ClientID         string            `json:"client_id"`
	Subject          string            `json:"subject"`
	Scope            string            `json:"scope"`
	Audience         []string          `json:"audience,omitempty"`
	Claims           jsonv1.RawMessage `json:"claims,omitempty"`
	Version          int               `json:"version"`
	Revoked          *Revocation       `json:"revoked,omitempty"`
	CreatedAt        time.Time         `json:"created_at"`
	ExpiresAt        time.Time         `json:"expires_at"`
	Generation       uint64            `json:"generation"`
	TokenHash        string            `json:"token_hash"`
	TokenIssuedAt    time.Time         `json:"token_issued_at"`
	RefreshExpiresAt time.Time         `json:"refresh_expires_at"`
	RotatedAt        time.Time         `json:"rotated_at,omitzero"`
	Previous         *Previous         `json:"previous,omitempty"`
	AccessCutoff     time.Time         `json:"access_cutoff,omitzero"`
	Events           uint64            `json:"events"`
	Seq              uint64            `json:"-"`
	Head             string            `json:"-"`
}

// schema1Encode is what the builds before schema 2 wrote for e (with
// e.State as the snapshot): encoding/json over the schema-1 envelope.
func schema1Encode(e Event) ([]byte, error) {
	return jsonv1.Marshal(envelope[any, *stateV1]{
		ID: e.ID, Type: TypeOf(e.Data), Schema: 1, FamilyID: e.FamilyID,
		OccurredAt: e.OccurredAt.UTC(), Cause: e.Cause, Prev: e.Prev, Data: e.Data, State: (*stateV1)(e.State),
	})
}

// v1Decode is how encoding/json (v1) reads b, lenient about case,
// repeated names and invalid UTF-8, as the build before this codec read
// schema 1, with a schema-2 base applied as Base's documentation says.
func v1Decode(b []byte) (Event, error) {
	var w envelope[jsonv1.RawMessage, *State]
	if err := jsonv1.Unmarshal(b, &w); err != nil {
		return Event{}, err
	}
	p, ok := payloads[w.Type]
	if w.Schema != 1 && w.Schema != 2 || !ok {
		return Event{}, ErrUnknownEvent
	}
	v := reflect.New(p.goType)
	if err := jsonv1.Unmarshal(w.Data, v.Interface()); err != nil {
		return Event{}, err
	}
	e := Event{ID: w.ID, Type: w.Type, FamilyID: w.FamilyID, OccurredAt: w.OccurredAt, Cause: w.Cause,
		Prev: w.Prev, Data: v.Elem().Interface()}
	switch {
	case w.Schema == 1 && w.Base != nil, w.Schema == 2 && w.State != nil:
		return Event{}, errors.New("the other schema's member")
	case w.Schema == 1:
		e.State = w.State
	case w.Type == TypeFamilyIssued:
		if w.Base != nil {
			return Event{}, errors.New("base in an issue")
		}
		st := Apply(State{}, e)
		e.State = &st
	case w.Base != nil:
		if w.Base.FamilyID != "" {
			return Event{}, errors.New("family id in a base")
		}
		base := *w.Base
		base.FamilyID = e.FamilyID
		st := Apply(base, e)
		e.State = &st
	}
	return e, nil
}

// validUTF8 reports whether every string of e is valid UTF-8, which is
// where the encoder refuses what v1 mangled.
func validUTF8(t testing.TB, e Event) bool {
	t.Helper()
	var ok = true
	var walk func(v reflect.Value)
	walk = func(v reflect.Value) {
		switch v.Kind() {
		case reflect.String:
			ok = ok && utf8.ValidString(v.String())
		case reflect.Pointer, reflect.Interface:
			if !v.IsNil() {
				walk(v.Elem())
			}
		case reflect.Struct:
			for i := range v.NumField() {
				if v.Type().Field(i).IsExported() {
					walk(v.Field(i))
				}
			}
		case reflect.Slice:
			if v.Type().Elem().Kind() == reflect.Uint8 {
				ok = ok && utf8.Valid(v.Bytes())
				return
			}
			for i := range v.Len() {
				walk(v.Index(i))
			}
		}
	}
	walk(reflect.ValueOf(e))
	return ok
}

// checkCodec asserts that EncodeEvent writes what encoding/json v1 wrote
// (or refuses invalid UTF-8, which v1 mangled), and that every decoder
// reads back what was written, as v1 read it.
func checkCodec(t testing.TB, e Event) {
	t.Helper()
	want, v1err := v1Encode(e)
	got, err := EncodeEvent(e)
	switch {
	case v1err != nil:
		if err == nil {
			t.Fatalf("encoded %s, encoding/json refuses: %v", got, v1err)
		}
		return
	case !validUTF8(t, e):
		if err == nil {
			t.Fatalf("encoded invalid UTF-8 as %s", got)
		}
		return
	case err != nil:
		t.Fatalf("encode: %v (encoding/json wrote %s)", err, want)
	case !bytes.Equal(got, want):
		t.Fatalf("encoding differs from encoding/json:\n got %s\nwant %s", got, want)
	}
	if slow, err := marshalEvent(nil, e, TypeOf(e.Data)); err != nil || !bytes.Equal(slow, want) {
		t.Fatalf("the encoder alone wrote %s (%v), encoding/json %s", slow, err, want)
	}
	if base := baseOf(e); base != nil {
		fast, err := AppendState(nil, *base)
		slow, serr := marshalState(nil, *base)
		if err != nil || serr != nil || !bytes.Equal(fast, slow) || !bytes.Contains(want, slow) {
			t.Fatalf("base written as %s (%v) and %s (%v), event %s", fast, err, slow, serr, want)
		}
	}
	appended, err := AppendEvent([]byte("prefix"), e)
	if err != nil || !bytes.Equal(appended, append([]byte("prefix"), want...)) {
		t.Fatalf("AppendEvent wrote %s (%v)", appended, err)
	}
	checkDecoders(t, got)
	// The same event as schema 1 stored it reads the same way.
	if old, err := schema1Encode(e); err == nil {
		checkDecoders(t, old)
	}
}

// checkDecoders asserts that every decoder reads b, as encoding/json read
// it.
func checkDecoders(t testing.TB, got []byte) {
	t.Helper()
	back, err := DecodeEvent(got)
	if err != nil {
		t.Fatalf("decode %s: %v", got, err)
	}
	old, err := v1Decode(got)
	if err != nil || !reflect.DeepEqual(back, old) {
		t.Fatalf("decoded %s as\n %+v\nencoding/json as\n %+v (%v)", got, back, old, err)
	}
	skip, err := DecodeEventSkipState(got)
	old.State = nil
	if err != nil || !reflect.DeepEqual(skip, old) {
		t.Fatalf("without state, decoded %s as %+v (%v), want %+v", got, skip, err, old)
	}
	st, err := DecodeState(got)
	switch {
	case back.State == nil && !errors.Is(err, ErrUnknownEvent):
		t.Fatalf("DecodeState without a snapshot: %v, want ErrUnknownEvent", err)
	case back.State != nil && (err != nil || !reflect.DeepEqual(st, *back.State)):
		t.Fatalf("DecodeState read %+v (%v), want %+v", st, err, *back.State)
	}
}

func codecCorpus() []Event {
	events := sampleEvents()
	at := time.Date(2026, 11, 27, 10, 0, 0, 123456789, time.FixedZone("CET", 3600))
	full := State{
		FamilyID: famID, ClientID: "web", Subject: "alice@example.com", Scope: "a b", Audience: []string{"x", "y"},
		Version: 3, Revoked: &Revocation{At: at, Cause: Cause{Kind: CauseAdmin, ID: "t-1", Reason: "off"}, EventID: "E9"},
		CreatedAt: at, ExpiresAt: at.Add(time.Hour), Generation: 1 << 40, TokenHash: "h",
		TokenIssuedAt: at, RefreshExpiresAt: at, RotatedAt: at,
		Previous:     &Previous{Generation: 7, Hash: "p", RotatedAt: at, SealedSuccessor: "s", EventID: "E8", Request: "r"},
		AccessCutoff: at, Events: 99,
	}
	for _, e := range sampleEvents() {
		st := full
		e.State = &st
		e.OccurredAt = at
		events = append(events, e)
	}
	for _, odd := range []string{"", "quote\"d", "back\\slash", "<html>&", "ünïcode", "tab\there", "\u2028\u2029",
		"\x00\x1f\x7f", "\ufffd", "bad \xff utf-8"} {
		e := sampleEvents()[1]
		e.Cause.Reason = odd
		st := full
		st.Subject = odd
		st.Claims = jsonv1.RawMessage(`{"t":"` + strings.ReplaceAll(odd, `"`, `\"`) + `","u":"\u003c\u00e9"}`)
		e.State = &st
		events = append(events, e)
	}
	zero := sampleEvents()[5]
	zero.State = &State{}
	handled := sampleEvents()[8]
	handled.Data = SecurityHandled{EventType: "x"} // nil Families: null, as v1 wrote it
	selector := sampleEvents()[8]
	selector.Data = SecurityHandled{Selector: &Selector{}, Families: []string{}} // {} and [], not omitted
	claims := sampleEvents()[0]
	withClaims := claims.Data.(FamilyIssued)
	withClaims.Claims = jsonv1.RawMessage(`{ }`) // v1 wrote it, compacted
	claims.Data = withClaims
	empty := sampleEvents()[0]
	issued := empty.Data.(FamilyIssued)
	issued.Audience, issued.Claims = []string{}, nil
	empty.Data = issued
	year := sampleEvents()[2]
	year.OccurredAt = time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC) // both refuse
	return append(events, zero, handled, selector, claims, empty, year)
}

func TestCodecMatchesEncodingJSON(t *testing.T) {
	for i, e := range codecCorpus() {
		t.Run(fmt.Sprint(i), func(t *testing.T) { checkCodec(t, e) })
	}
}

// errAny is a wantErr that any error satisfies.
var errAny = errors.New("any error")

func TestDecodeStrict(t *testing.T) {
	e := codecCorpus()[len(sampleEvents())+1] // a rotation with a full state
	good, err := EncodeEvent(e)
	if err != nil {
		t.Fatal(err)
	}
	want, err := DecodeEvent(good)
	if err != nil {
		t.Fatal(err)
	}
	edit := func(old, new string) []byte {
		if !bytes.Contains(good, []byte(old)) {
			t.Fatalf("%s not in %s", old, good)
		}
		return bytes.Replace(good, []byte(old), []byte(new), 1)
	}
	for _, tc := range []struct {
		name    string
		in      []byte
		wantErr error // nil: decodes as the plain event
	}{
		{"plain", good, nil},
		{"type after data", append(edit(`"type":"refresh.rotated.v1",`, ``)[:len(good)-len(`"type":"refresh.rotated.v1",`)-1],
			`,"type":"refresh.rotated.v1"}`...), nil},
		{"whitespace", edit(`"id":`, " \n\t\"id\" : "), nil},
		{"unknown envelope member", edit(`"id":`, `"added_later":{"x":[1,{"y":null}]},"id":`), nil},
		{"unknown payload member", edit(`"from_generation":`, `"added_later":true,"from_generation":`), nil},
		{"unknown base member", edit(`"base":{"client_id"`, `"base":{"added_later":"x","client_id"`), nil},
		{"unknown nested member", edit(`"jti":`, `"added_later":1,"jti":`), nil},
		{"repeated envelope member", edit(`"prev":`, `"prev":"x","prev":`), jsontext.ErrDuplicateName},
		{"repeated payload member", edit(`"token_hash":`, `"token_hash":"x","token_hash":`), jsontext.ErrDuplicateName},
		{"repeated base member", edit(`"events":`, `"events":1,"events":`), jsontext.ErrDuplicateName},
		{"repeated unknown member", edit(`"id":`, `"later":1,"later":2,"id":`), jsontext.ErrDuplicateName},
		{"repeated in another case", edit(`"prev":`, `"Prev":"x","prev":`), errMemberCase},
		{"envelope member case", edit(`"prev":`, `"Prev":`), errMemberCase},
		{"payload member case", edit(`"token_hash":`, `"Token_Hash":`), errMemberCase},
		{"base member case", edit(`"subject":`, `"SUBJECT":`), errMemberCase},
		{"nested member case", edit(`"kind":`, `"Kind":`), errMemberCase},
		{"base case", edit(`"base":`, `"Base":`), errMemberCase},
		{"a state in schema 2", edit(`"base":`, `"state":`), errAny},
		{"a base in schema 1", edit(`"schema":2`, `"schema":1`), errAny},
		{"a family id in the base", edit(`"base":{`, `"base":{"family_id":"`+famID+`",`), errAny},
		{"a base and a state", edit(`"base":`, `"state":{},"base":`), errAny},
		{"invalid utf-8", edit(`"alice@`, "\"\xffalice@"), errAny},
		{"trailing data", append(bytes.Clone(good), ` {}`...), errAny},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := DecodeEvent(tc.in)
			switch {
			case tc.wantErr != nil:
				if err == nil || tc.wantErr != errAny && !errors.Is(err, tc.wantErr) {
					t.Fatalf("err %v, want %v", err, tc.wantErr)
				}
				// The cheaper read skips what is stored of the state.
				if _, err := DecodeEventSkipState(tc.in); err == nil && !strings.Contains(tc.name, "base") && !strings.Contains(tc.name, "state") {
					t.Fatal("DecodeEventSkipState decoded it")
				}
			case err != nil:
				t.Fatal(err)
			case !reflect.DeepEqual(got, want):
				t.Fatalf("decoded as %+v, want %+v", got, want)
			}
		})
	}
}

func FuzzCodecAgrees(f *testing.F) {
	f.Add("alice", "read write", "req-1", "reason", int64(0), uint64(1))
	f.Add("ü\"\\<", "", "", "\x00", int64(-1), uint64(1<<63))
	f.Add("\xff", "\u2028", "&", ">", int64(1<<62), uint64(0))
	f.Fuzz(func(t *testing.T, subject, scope, id, reason string, ns int64, gen uint64) {
		at := time.Unix(0, ns).UTC()
		e := Event{ID: id, FamilyID: famID, OccurredAt: at, Cause: Cause{Kind: CauseRequest, ID: id, Reason: reason},
			Prev: reason, Data: RefreshRotated{FromGeneration: gen, ToGeneration: gen + 1, PresentedHash: id,
				TokenHash: subject, SealedSuccessor: scope, RefreshExpiresAt: at, Version: 1,
				Access: AccessGrant{JTI: id, Scope: scope, ExpiresAt: at}}}
		st := State{FamilyID: famID, Subject: subject, Scope: scope, Generation: gen, CreatedAt: at,
			Audience: []string{scope}, Revoked: &Revocation{At: at, Cause: e.Cause}}
		e.State = &st
		checkCodec(t, e)
	})
}

func BenchmarkEncodeEvent(b *testing.B) {
	e := codecCorpus()[len(sampleEvents())+1] // a rotation with a full state
	b.ReportAllocs()
	for b.Loop() {
		if _, err := EncodeEvent(e); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDecodeState(b *testing.B) {
	data, _ := EncodeEvent(codecCorpus()[len(sampleEvents())+1])
	b.ReportAllocs()
	for b.Loop() {
		if _, err := DecodeState(data); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDecodeEvent(b *testing.B) {
	data, _ := EncodeEvent(codecCorpus()[len(sampleEvents())+1])
	b.Run("full", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := DecodeEvent(data); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("skip-state", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := DecodeEventSkipState(data); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func FuzzPlainWords(f *testing.F) {
	f.Add([]byte("plain ascii text, long enough"))
	f.Add([]byte("with\\backslash and more bytes"))
	f.Add([]byte("ctrl\x1fchar in the middle"))
	f.Add([]byte("ünïcode after eight"))
	f.Fuzz(func(t *testing.T, s []byte) {
		want := true
		for _, c := range s {
			if plain[c] != 0 {
				want = false
			}
		}
		if got := plainWords(s); got != want {
			t.Fatalf("plainWords(%q) = %v, want %v", s, got, want)
		}
	})
}
