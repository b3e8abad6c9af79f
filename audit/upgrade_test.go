package audit

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tokenledger/tokenledger/internal/natstest"
	"github.com/tokenledger/tokenledger/internal/tltest"
	"github.com/tokenledger/tokenledger/ledger"
	"github.com/tokenledger/tokenledger/ledger/jsstore"
	"github.com/tokenledger/tokenledger/ledger/token"
)

// upgradeFixture is testdata/upgrade/fixture.json: what a test needs
// besides the ledger stream to serve from a ledger written by an earlier
// build (see testdata/upgrade/README.md).
type upgradeFixture struct {
	ClientID          string          `json:"client_id"`
	ClientSecret      string          `json:"client_secret"`
	Client            json.RawMessage `json:"client"`
	KEK               string          `json:"kek"`
	SigningKeysSealed []byte          `json:"signing_keys_sealed"`
	LiveRefreshToken  string          `json:"live_refresh_token"`
	LastEventStoredAt time.Time       `json:"last_event_stored_at"`
}

// exportedMsg is one line of testdata/upgrade/ledger.jsonl: a stream
// message as the earlier build stored it.
type exportedMsg struct {
	Seq     uint64              `json:"seq"`
	Subject string              `json:"subject"`
	Headers map[string][]string `json:"headers"`
	Data    string              `json:"data"`
}

func readUpgradeFixture(t *testing.T) (upgradeFixture, []exportedMsg) {
	t.Helper()
	dir := filepath.Join("testdata", "upgrade")
	b, err := os.ReadFile(filepath.Join(dir, "fixture.json"))
	if err != nil {
		t.Fatal(err)
	}
	var fix upgradeFixture
	if err := json.Unmarshal(b, &fix); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(filepath.Join(dir, "ledger.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var msgs []exportedMsg
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var m exportedMsg
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatal(err)
		}
		msgs = append(msgs, m)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return fix, msgs
}

// TestUpgradeFromStoredLedger republishes a ledger written by the build
// before the encoding/json/v2 codec (commit ca8d05a, schema 1: an issue,
// rotations, a grace retry, a reuse, a revoke and an admin revoke) into a
// fresh stream, and checks that this build reads every event (and writes
// it as schema 2 that reads back the same), verifies the ledger clean and
// continues a family from it: two refreshes appended as schema 2 after
// the family's schema-1 events, the family loaded from its last event,
// the mixed ledger verified clean.
func TestUpgradeFromStoredLedger(t *testing.T) {
	fix, msgs := readUpgradeFixture(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	e := tltest.New(t, "") // the ledger stream exists, empty
	js := e.JS
	types := map[ledger.EventType]int{}
	for _, m := range msgs {
		msg := nats.NewMsg(m.Subject)
		msg.Data = []byte(m.Data)
		for k, vs := range m.Headers {
			switch k {
			case "Nats-Sequence", "Nats-Stream", "Nats-Subject", "Nats-Time-Stamp":
				continue // added by the read, not stored
			}
			for _, v := range vs {
				msg.Header.Add(k, v)
			}
		}
		// The stored expected-last-subject-sequence header is checked
		// again: the fresh stream must take the events where they were.
		ack, err := js.PublishMsg(ctx, msg)
		if err != nil {
			t.Fatalf("republish seq %d: %v", m.Seq, err)
		}
		require(t, "republished seq", ack.Sequence, m.Seq)

		e, err := ledger.DecodeEvent(msg.Data)
		if err != nil {
			t.Fatalf("seq %d: %v", m.Seq, err)
		}
		types[e.Type]++
		if !bytes.Contains(msg.Data, []byte(`"schema":1,`)) {
			t.Fatalf("seq %d: not a schema-1 event: %s", m.Seq, msg.Data)
		}
		again, err := ledger.EncodeEvent(e)
		if err != nil {
			t.Fatal(err)
		}
		if back, err := ledger.DecodeEvent(again); err != nil || !reflect.DeepEqual(back, e) {
			t.Fatalf("seq %d: this build writes\n%s (%v)\nwhich reads as\n%+v\nfor the stored\n%+v", m.Seq, again, err, back, e)
		}
		if _, err := ledger.DecodeEventSkipState(msg.Data); err != nil {
			t.Fatalf("seq %d: %v", m.Seq, err)
		}
		if st, err := ledger.DecodeState(msg.Data); err != nil || !sameState(st, e.State) {
			t.Fatalf("seq %d: DecodeState %+v (%v), want %+v", m.Seq, st, err, e.State)
		}
	}
	for _, typ := range []ledger.EventType{ledger.TypeFamilyIssued, ledger.TypeRefreshRotated,
		ledger.TypeGraceRetried, ledger.TypeReuseDetected, ledger.TypeFamilyRevoked} {
		if types[typ] == 0 {
			t.Errorf("the fixture holds no %s", typ)
		}
	}

	verify := func(events uint64) {
		t.Helper()
		rep, err := Verify(ctx, NewSource(js, "", ""), VerifyOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if !rep.OK || len(rep.Violations) != 0 {
			t.Fatalf("verify: %+v", rep.Violations)
		}
		require(t, "verified events", rep.Events, events)
	}
	verify(uint64(len(msgs)))

	// Serve a refresh of the fixture's live token: the keys bucket entry
	// (restored as it was stored) opens with the KEK, and the client
	// authenticates with its secret.
	kek, err := token.ParseKEK(fix.KEK)
	if err != nil {
		t.Fatal(err)
	}
	kv, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: jsstore.KeysBucket})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(ctx, "signing", fix.SigningKeysSealed); err != nil {
		t.Fatal(err)
	}
	var client ledger.Client
	if err := json.Unmarshal(fix.Client, &client); err != nil {
		t.Fatal(err)
	}
	e.Clock.Set(fix.LastEventStoredAt.Add(time.Minute)) // the fixture's tokens live 14 days from then
	in := e.StartInstance(tltest.Options{Grace: 2 * time.Second, KEK: kek, Client: func(c *ledger.Client) { *c = client }})
	if n := len(in.Keys().Keys); n != 1 {
		t.Fatalf("the stored key set was not used: %d keys", n)
	}
	refresh := func(raw string) string {
		t.Helper()
		reply := e.Call("tokens.refresh", map[string]string{"client_id": fix.ClientID, "client_secret": fix.ClientSecret,
			"refresh_token": raw})
		if reply.Error != "" || reply.AccessToken == "" || !strings.HasPrefix(reply.RefreshToken, "tlr_") {
			t.Fatalf("refresh from the stored ledger: %s", reply.Raw)
		}
		return reply.RefreshToken
	}
	// The first refresh loads the family from a schema-1 event; the
	// second from the schema-2 event the first appended.
	refresh(refresh(fix.LiveRefreshToken))
	// This build appended the rotation, and its key ring may have recorded
	// the stored key's lifecycle (key events, off the families).
	appended := e.LastSeq()
	verify(appended)
	rotations, family := 0, ""
	for seq := uint64(len(msgs)) + 1; seq <= appended; seq++ {
		m, err := e.Store.Stream().GetMsg(ctx, seq)
		if err != nil {
			t.Fatal(err)
		}
		ev, err := ledger.DecodeEvent(m.Data)
		if err != nil {
			t.Fatalf("seq %d: %v", seq, err)
		}
		switch {
		case ev.Type == ledger.TypeRefreshRotated:
			rotations++
			family = ev.FamilyID
		case !ledger.IsKeyEvent(ev.Type):
			t.Fatalf("seq %d: this build appended %s", seq, ev.Type)
		}
	}
	if rotations != 2 {
		t.Fatalf("this build appended %d rotations, want the two refreshes", rotations)
	}

	// The family, loaded from its last (schema-2) event, is the fold of
	// its schema-1 and schema-2 events.
	var fold ledger.State
	for seq := uint64(1); seq <= appended; seq++ {
		m, err := e.Store.Stream().GetMsg(ctx, seq)
		if err != nil {
			t.Fatal(err)
		}
		ev, err := ledger.DecodeEvent(m.Data)
		if err != nil {
			t.Fatal(err)
		}
		if ev.FamilyID != family {
			continue
		}
		fold = ledger.Apply(fold, ev)
		if seq > uint64(len(msgs)) && (!bytes.Contains(m.Data, []byte(`"schema":2,`)) ||
			!bytes.Contains(m.Data, []byte(`"base":{`)) || bytes.Contains(m.Data, []byte(`"state"`))) {
			t.Fatalf("seq %d: not a schema-2 event with a base: %s", seq, m.Data)
		}
	}
	loaded, err := e.Store.Load(ctx, family)
	if err != nil {
		t.Fatal(err)
	}
	if !sameState(fold, &loaded) || loaded.Generation < 2 {
		t.Fatalf("loaded %+v, folded %+v", loaded, fold)
	}
}

// TestUpgradeUncompressedStream: the ledger stream as builds before S2
// compression created it starts this build's store, which updates it to
// S2 (nats-server applies it to blocks written after its next restart).
func TestUpgradeUncompressedStream(t *testing.T) {
	s := natstest.Start(t, "")
	_, js := natstest.Connect(t, s)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: jsstore.DefaultStream,
		Subjects: []string{jsstore.DefaultSubjectPrefix + ".>"}, Storage: jetstream.FileStorage,
		Retention: jetstream.LimitsPolicy, Replicas: 1, Duplicates: 2 * time.Minute, DenyDelete: true,
		DenyPurge: true, AllowDirect: true, Discard: jetstream.DiscardNew}); err != nil {
		t.Fatal(err)
	}
	st, err := jsstore.NewStore(ctx, js, jsstore.StoreConfig{})
	if err != nil {
		t.Fatalf("store over the uncompressed stream: %v", err)
	}
	info, err := st.Stream().Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	require(t, "compression", info.Config.Compression, jetstream.S2Compression)
}
