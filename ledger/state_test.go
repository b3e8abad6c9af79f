package ledger

import (
	jsonv1 "encoding/json"
	"fmt"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"
	"time"
)

// randomFill sets every exported field of v (recursively) to a random
// value, zero about a quarter of the time: nil slices (never empty ones,
// which decode as nil), UTC times, printable strings.
func randomFill(r *rand.Rand, v reflect.Value) {
	if r.IntN(4) == 0 {
		v.SetZero()
		return
	}
	switch {
	case v.Type() == reflect.TypeFor[time.Time]():
		v.Set(reflect.ValueOf(time.Unix(r.Int64N(1<<34), r.Int64N(1e9)).UTC()))
	case v.Type() == reflect.TypeFor[jsonv1.RawMessage]():
		v.Set(reflect.ValueOf(jsonv1.RawMessage(fmt.Sprintf(`{"k":%d}`, r.IntN(100)))))
	case v.Type() == reflect.TypeFor[time.Duration]():
		v.SetInt(r.Int64N(1 << 40))
	case v.Kind() == reflect.String:
		v.SetString(fmt.Sprintf("s%x", r.Uint32()))
	case v.CanInt():
		v.SetInt(r.Int64N(1000) + 1)
	case v.CanUint():
		v.SetUint(r.Uint64N(1000) + 1)
	case v.Kind() == reflect.Pointer:
		v.Set(reflect.New(v.Type().Elem()))
		randomFill(r, v.Elem())
	case v.Kind() == reflect.Slice:
		v.Set(reflect.MakeSlice(v.Type(), 1+r.IntN(2), 2))
		for i := range v.Len() {
			randomFill(r, v.Index(i))
			for v.Index(i).IsZero() {
				randomFill(r, v.Index(i))
			}
		}
	case v.Kind() == reflect.Struct:
		for i := range v.NumField() {
			if v.Type().Field(i).IsExported() {
				randomFill(r, v.Field(i))
			}
		}
	}
}

// randomEvent is an event of type typ with random payload and envelope,
// of the family whose state is prev.
func randomEvent(r *rand.Rand, typ EventType, prev State) Event {
	data := reflect.New(payloads[typ].goType).Elem()
	randomFill(r, data)
	e := Event{ID: fmt.Sprintf("E%x", r.Uint64()), Type: typ, FamilyID: prev.FamilyID,
		OccurredAt: time.Unix(r.Int64N(1<<34), r.Int64N(1e9)).UTC(), Data: data.Interface()}
	randomFill(r, reflect.ValueOf(&e.Cause).Elem())
	return e
}

// randomState is a family's random state (any field may be zero but the
// family id).
func randomState(r *rand.Rand) State {
	var s State
	randomFill(r, reflect.ValueOf(&s).Elem())
	s.FamilyID = famID
	return s
}

// unstored clears what State holds but no event stores.
func unstored(s State) State {
	s.Seq, s.Head = 0, ""
	return s
}

// TestBase: for every event type and many random states before it, the
// state after the event comes back from its Base (as DecodeEvent gets it,
// in memory and through the codec), the Base keeps the count of events
// before, and it keeps nothing the event sets: a field whose value after
// the event does not depend on its value before is zero in the base, and
// omitted from the encoding when zero. Every field and event type is
// found by reflection, so a new one, or a change to Apply that Base does
// not follow, fails here.
func TestBase(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	stateType := reflect.TypeFor[State]()
	for typ := range payloads {
		t.Run(string(typ), func(t *testing.T) {
			for i := range 400 {
				prev := randomState(r)
				e := randomEvent(r, typ, prev)
				after := Apply(prev, e)
				base := Base(after, e)
				if typ == TypeFamilyIssued {
					if !reflect.DeepEqual(base, State{}) {
						t.Fatalf("base of %s: %+v, want none", typ, base)
					}
				} else if base.FamilyID != "" || base.Seq != 0 || base.Head != "" || base.Events != prev.Events {
					t.Fatalf("base %+v: family id, seq, head set or events not %d", base, prev.Events)
				}
				withID := base
				withID.FamilyID = e.FamilyID
				if got := Apply(withID, e); !reflect.DeepEqual(unstored(got), unstored(after)) {
					t.Fatalf("case %d: Apply(Base(after)) =\n %+v\nwant\n %+v", i, got, after)
				}
				// Through the codec, as the store writes and loads it.
				snap := after
				e.State = &snap
				b, err := EncodeEvent(e)
				if err != nil {
					t.Fatal(err)
				}
				back, err := DecodeEvent(b)
				if err != nil || back.State == nil || !reflect.DeepEqual(*back.State, unstored(after)) {
					t.Fatalf("case %d: %s decodes to %+v (%v), want %+v", i, b, back.State, err, after)
				}
				if st, err := DecodeState(b); err != nil || !reflect.DeepEqual(st, unstored(after)) {
					t.Fatalf("case %d: DecodeState %+v (%v)", i, st, err)
				}
				// Each field the event sets, whatever it was before, is
				// zeroed (and, zero, not written).
				for f := range stateType.Fields() {
					if f.Name == "FamilyID" || f.Name == "Seq" || f.Name == "Head" || f.Name == "Events" {
						continue
					}
					other := prev
					for reflect.DeepEqual(reflect.ValueOf(other).FieldByIndex(f.Index).Interface(),
						reflect.ValueOf(prev).FieldByIndex(f.Index).Interface()) {
						randomFill(r, reflect.ValueOf(&other).Elem().FieldByIndex(f.Index))
					}
					a, o := reflect.ValueOf(after).FieldByIndex(f.Index), reflect.ValueOf(Apply(other, e)).FieldByIndex(f.Index)
					if !reflect.DeepEqual(a.Interface(), o.Interface()) {
						continue // after depends on before: the base keeps it
					}
					if !reflect.ValueOf(base).FieldByIndex(f.Index).IsZero() {
						t.Fatalf("%s sets %s, yet its base keeps %v", typ, f.Name, reflect.ValueOf(base).FieldByIndex(f.Index))
					}
					if tag := f.Tag.Get("json"); typ != TypeFamilyIssued && !strings.Contains(tag, ",omitempty") && !strings.Contains(tag, ",omitzero") {
						t.Fatalf("%s sets %s, which its base writes even when zero (tag %q)", typ, f.Name, tag)
					}
				}
			}
		})
	}
}

// TestBaseSize: a rotation's base leaves out what its payload says.
func TestBaseSize(t *testing.T) {
	issued := sampleEvents()[0]
	st := Apply(State{}, issued)
	rot := sampleEvents()[1]
	after := Apply(st, rot)
	rot.State = &after
	b, err := EncodeEvent(rot)
	if err != nil {
		t.Fatal(err)
	}
	for _, absent := range []string{`"state"`, `"family_id":"` + famID + `","client`, `"generation"`, `"token_hash":"hash-1","token_issued`, `"previous"`, `"rotated_at"`, `"version":1,"created`} {
		if strings.Contains(string(b), absent) {
			t.Errorf("%s in %s", absent, b)
		}
	}
	t.Logf("%d bytes: %s", len(b), b)
}
