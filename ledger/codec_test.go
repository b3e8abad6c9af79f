package ledger

import (
	"bytes"
	"encoding/json"
	"reflect"
	"testing"
	"time"
)

// slowEncode is EncodeEvent without the fast path.
func slowEncode(t testing.TB, e Event) []byte {
	t.Helper()
	b, err := json.Marshal(outEvent{
		ID: e.ID, Type: TypeOf(e.Data), Schema: SchemaVersion, FamilyID: e.FamilyID,
		OccurredAt: e.OccurredAt.UTC(), Cause: e.Cause, Prev: e.Prev, Data: e.Data, State: e.State,
	})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// checkCodec asserts the fast and slow paths agree on e: the fast encoder
// writes encoding/json's bytes or gives up, and the fast decoder reads
// what encoding/json reads or gives up.
func checkCodec(t testing.TB, e Event) (fastEncoded, fastDecoded bool) {
	t.Helper()
	want := slowEncode(t, e)
	got, ok := appendEvent(nil, e, TypeOf(e.Data))
	if ok && !bytes.Equal(got, want) {
		t.Fatalf("fast encoding differs:\n got %s\nwant %s", got, want)
	}
	slow, err := decodeSlow(want)
	if err != nil {
		t.Fatalf("slow decode: %v", err)
	}
	fast, dok := decodeFast(want)
	if dok && !reflect.DeepEqual(fast, slow) {
		t.Fatalf("fast decoding differs:\n got %+v\nwant %+v", fast, slow)
	}
	st, schema, sok := decodeStateFast(want)
	if sok && (schema != SchemaVersion || !reflect.DeepEqual(st, slow.State)) {
		t.Fatalf("fast state decoding differs:\n got %+v\nwant %+v", st, slow.State)
	}
	return ok, dok && sok
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
	for _, odd := range []string{"", "quote\"d", "back\\slash", "<html>&", "ünïcode", "tab\there", "\u2028"} {
		e := sampleEvents()[1]
		e.Cause.Reason = odd
		st := full
		st.Subject = odd
		e.State = &st
		events = append(events, e)
	}
	zero := sampleEvents()[5]
	zero.State = &State{}
	events = append(events, zero)
	return events
}

func TestCodecFastPathAgrees(t *testing.T) {
	var enc, dec int
	for _, e := range codecCorpus() {
		fe, fd := checkCodec(t, e)
		if fe {
			enc++
		}
		if fd {
			dec++
		}
	}
	// The fast paths must actually be taken for the plain events.
	if enc < 10 || dec < 10 {
		t.Fatalf("fast encode taken %d times, fast decode %d times", enc, dec)
	}
	if !fastTypesOK {
		t.Fatal("fastTypesOK is false: the codec no longer matches the event types")
	}
}

func FuzzCodecAgrees(f *testing.F) {
	f.Add("alice", "read write", "req-1", "reason", int64(0), uint64(1))
	f.Add("ü\"\\<", "", "", "\x00", int64(-1), uint64(1<<63))
	f.Fuzz(func(t *testing.T, subject, scope, id, reason string, ns int64, gen uint64) {
		at := time.Unix(0, ns).UTC()
		e := Event{ID: id, FamilyID: famID, OccurredAt: at, Cause: Cause{Kind: CauseRequest, ID: id, Reason: reason},
			Prev: reason, Data: RefreshRotated{FromGeneration: gen, ToGeneration: gen + 1, PresentedHash: id,
				TokenHash: subject, SealedSuccessor: scope, RefreshExpiresAt: at, Version: 1,
				Access: AccessGrant{JTI: id, Scope: scope, ExpiresAt: at}}}
		st := State{FamilyID: famID, Subject: subject, Scope: scope, Generation: gen, CreatedAt: at,
			Revoked: &Revocation{At: at, Cause: e.Cause}}
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
