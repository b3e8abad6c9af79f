package audit

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/tokenledger/tokenledger/ledger"
)

// The fast path must agree with encoding/json on every event the ledger
// writes, or give up.
func TestFastPathMatchesEncodingJSON(t *testing.T) {
	if !fastTypesOK {
		t.Fatal("the ledger's types changed: update fastjson.go (verify is on the slow path)")
	}
	inputs := [][]byte{}
	for _, m := range newGenerator(21).mixed(20_000) {
		inputs = append(inputs, m.Data)
	}
	golden, _ := filepath.Glob("../ledger/testdata/*.json")
	if len(golden) == 0 {
		t.Fatal("no golden events")
	}
	for _, p := range golden {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		inputs = append(inputs, b) // indented: whitespace everywhere
	}
	fast := 0
	for i, b := range inputs {
		slowE, slowS, err := decodeStored(b)
		if err != nil {
			t.Fatalf("input %d: %v", i, err)
		}
		if e, err := decodeEvent(b); err != nil || !reflect.DeepEqual(e, withoutState(slowE)) {
			t.Fatalf("input %d: decodeEvent differs: %v\n%+v\n%+v", i, err, e, slowE)
		}
		fastE, fastS, ok, _ := decodeFast(b)
		if !ok {
			continue
		}
		fast++
		if !reflect.DeepEqual(fastE, slowE) || !bytes.Equal(fastS, slowS) {
			t.Fatalf("input %d: fast decode differs:\nfast %+v\nslow %+v", i, fastE, slowE)
		}
		if slowS == nil {
			continue
		}
		var st ledger.State
		if err := json.Unmarshal(slowS, &st); err != nil {
			t.Fatal(err)
		}
		want, _ := json.Marshal(st)
		if got, ok := appendState(nil, st); ok && !bytes.Equal(got, want) {
			t.Fatalf("input %d: fast encoding differs:\nfast %s\njson %s", i, got, want)
		}
	}
	if fast < len(inputs)-len(golden) {
		t.Fatalf("the fast path took only %d of %d generated events", fast, len(inputs))
	}

	// What the fast path does not handle exactly, it refuses.
	for _, b := range []string{
		`{"id":"a\u0041","type":"family.revoked.v1","schema":1,"family_id":"f","occurred_at":"2026-01-01T00:00:00Z","cause":{"kind":"admin"},"prev":"","data":{"generation":0}}`,
		`{"ID":"a","type":"family.revoked.v1","schema":1,"family_id":"f","occurred_at":"2026-01-01T00:00:00Z","cause":{"kind":"admin"},"prev":"","data":{"generation":0}}`,
		`{"id":"a","type":"family.revoked.v1","schema":1,"family_id":"f","occurred_at":"2026-01-01T00:00:00Z","cause":{"kind":"admin"},"prev":null,"data":{"generation":0}}`,
		`{"id":"a","type":"family.revoked.v1","schema":1,"family_id":"f","occurred_at":"2026-01-01T00:00:00Z","cause":{"kind":"admin"},"prev":"","data":{"generation":1.0}}`,
		`{"id":"a","type":"family.revoked.v1","schema":1,"family_id":"f","occurred_at":"2026-01-01T00:00:00Z","cause":{"kind":"admin"},"prev":"","data":{"generation":0}} x`,
	} {
		if _, _, ok, _ := decodeFast([]byte(b)); ok {
			t.Errorf("fast path accepted %s", b)
		}
	}
	// A key after the state snapshot: the state bytes are not a value, so
	// they can never equal an encoding and certify the fast decode.
	b := []byte(`{"id":"a","type":"family.revoked.v1","schema":1,"family_id":"f","occurred_at":"2026-01-01T00:00:00Z","cause":{"kind":"admin"},"prev":"","data":{"generation":0},"state":{"events":1},"data":{"generation":7}}`)
	if _, st, ok, unchecked := decodeFast(b); ok && (!unchecked || json.Valid(st)) {
		t.Errorf("fast path certified a state followed by another key: %s", st)
	}
	if _, ok := appendState(nil, ledger.State{Subject: "<script>"}); ok {
		t.Error("fast encoding accepted a string encoding/json escapes")
	}
}

func withoutState(e ledger.Event) ledger.Event {
	e.State = nil
	return e
}
