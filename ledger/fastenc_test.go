package ledger

import (
	"bytes"
	jsonv1 "encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"
)

// fill sets every exported field of v (recursively) to a plain non-zero
// value the hand-written encoder can write, except custom claims, which
// it leaves to the encoder.
func fill(v reflect.Value, at time.Time) {
	switch {
	case v.Type() == reflect.TypeFor[time.Time]():
		v.Set(reflect.ValueOf(at))
	case v.Type() == reflect.TypeFor[jsonv1.RawMessage]():
	case v.Kind() == reflect.String:
		v.SetString("x")
	case v.CanInt():
		v.SetInt(7)
	case v.CanUint():
		v.SetUint(7)
	case v.Kind() == reflect.Pointer:
		v.Set(reflect.New(v.Type().Elem()))
		fill(v.Elem(), at)
	case v.Kind() == reflect.Slice:
		v.Set(reflect.MakeSlice(v.Type(), 1, 1))
		fill(v.Index(0), at)
	case v.Kind() == reflect.Struct:
		for i := range v.NumField() {
			if v.Type().Field(i).IsExported() {
				fill(v.Field(i), at)
			}
		}
	}
}

// TestFastEncoderCoversSchema: with every field of every payload and of
// State set, the hand-written encoder writes what the encoder writes, and
// it is the path taken. A field added to a struct but not to appendEvent
// or appendState fails here.
func TestFastEncoderCoversSchema(t *testing.T) {
	at := time.Date(2026, 11, 27, 10, 0, 0, 123456789, time.FixedZone("CET", 3600))
	var st State
	fill(reflect.ValueOf(&st).Elem(), at)
	st.Seq, st.Head = 0, ""
	for typ, p := range payloads {
		t.Run(string(typ), func(t *testing.T) {
			data := reflect.New(p.goType)
			fill(data.Elem(), at)
			e := Event{ID: "E", FamilyID: famID, OccurredAt: at, Cause: Cause{Kind: "k", ID: "i", Reason: "r"},
				Prev: "p", Data: data.Elem().Interface(), State: &st}
			want, err := marshalEvent(nil, e, typ)
			if err != nil {
				t.Fatal(err)
			}
			got, ok := appendEvent(nil, e, typ)
			if typ == TypeSecurityHandled || typ == TypeVersionRefused || strings.HasPrefix(string(typ), "rollout.") || IsKeyEvent(typ) { // rare: left to the encoder
				if ok {
					t.Fatalf("the hand-written encoder took %s, which it leaves to the encoder", typ)
				}
				return
			}
			if !ok || !bytes.Equal(got, want) {
				t.Fatalf("hand-written encoder (taken: %v):\n%s\nencoder:\n%s", ok, got, want)
			}
		})
	}
	want, err := marshalState(nil, st)
	if err != nil {
		t.Fatal(err)
	}
	got, ok := appendState(nil, st, false)
	if !ok || !bytes.Equal(got, want) {
		t.Fatalf("hand-written state (taken: %v):\n%s\nencoder:\n%s", ok, got, want)
	}
	// Every field zero, as in a base: the omitted ones are omitted alike.
	want, err = marshalState(nil, State{})
	if err != nil {
		t.Fatal(err)
	}
	if got, ok := appendState(nil, State{}, false); !ok || !bytes.Equal(got, want) {
		t.Fatalf("hand-written zero state (taken: %v):\n%s\nencoder:\n%s", ok, got, want)
	}
	// As schema 1 wrote it (for the Folder), with and without zeros.
	for _, s := range []State{st, {}} {
		want, err := jsonv1.Marshal((*stateV1)(&s))
		if err != nil {
			t.Fatal(err)
		}
		if got, ok := appendState(nil, s, true); !ok || !bytes.Equal(got, want) {
			t.Fatalf("hand-written schema-1 state (taken: %v):\n%s\nencoding/json:\n%s", ok, got, want)
		}
	}
}
