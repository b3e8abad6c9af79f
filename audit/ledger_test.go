package audit

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/oklog/ulid/v2"

	"github.com/tokenledger/tokenledger/internal/natstest"
	"github.com/tokenledger/tokenledger/ledger"
	"github.com/tokenledger/tokenledger/ledger/jsstore"
	"github.com/tokenledger/tokenledger/ledger/token"
)

// stored is one generated ledger message: the subject under the prefix
// and the stored event bytes.
type stored struct {
	Subject string // without the prefix: "family.<id>" or "security.<id>"
	Type    ledger.EventType
	Data    []byte
}

// generator builds ledgers the way the ledger builds them (the pure Decide,
// the Apply fold, the hash chain and state snapshot of Store.Append), but in
// memory, so tests can publish 100 000 events in seconds.
type generator struct {
	rng      *rand.Rand
	entropy  *rand.ChaCha8
	now      time.Time
	policy   ledger.Policy
	families []*genFamily
	out      []stored
}

type genFamily struct {
	st    ledger.State
	raw   string   // current refresh token
	prev  string   // the token rotated away last
	older []string // hashes of older rotated tokens
	ops   int
}

func newGenerator(seed uint64) *generator {
	var key [32]byte
	key[0] = byte(seed)
	return &generator{
		rng:     rand.New(rand.NewPCG(seed, 7)),
		entropy: rand.NewChaCha8(key),
		now:     time.Date(2026, 3, 1, 9, 0, 0, 0, time.UTC),
		policy: ledger.Policy{Rotation: ledger.RotateAlways, Grace: 10 * time.Second,
			AccessTTL: 15 * time.Minute, RefreshTTL: 336 * time.Hour, FamilyTTL: 2160 * time.Hour},
	}
}

func (g *generator) id() string {
	return ulid.MustNew(ulid.Timestamp(g.now), g.entropy).String()
}

// append chains and encodes events as Store.Append does.
func (g *generator) append(f *genFamily, events []ledger.Event) {
	for _, e := range events {
		e.Prev = f.st.Head
		next := ledger.Apply(f.st, e)
		snap := next
		e.State = &snap
		data, err := ledger.EncodeEvent(e)
		if err != nil {
			panic(err)
		}
		next.Head = ledger.EventHash(data)
		next.Seq = uint64(len(g.out) + 1)
		f.st = next
		g.out = append(g.out, stored{Subject: "family." + e.FamilyID, Type: e.Type, Data: data})
	}
}

func (g *generator) decide(f *genFamily, c ledger.Command) []ledger.Event {
	events, err := ledger.Decide(f.st, c, g.now)
	if err != nil && len(events) == 0 {
		panic(fmt.Sprintf("decide %T: %v", c, err))
	}
	for i := range events {
		events[i].Type = eventType(events[i].Data)
	}
	return events
}

var clients = []string{"billing", "mobile", "web", "cli"}

// issue starts a family.
func (g *generator) issue() *genFamily {
	fid := ulid.MustNew(ulid.Timestamp(g.now), g.entropy)
	raw, _ := token.MintRefreshToken(g.entropy, fid, 0)
	f := &genFamily{raw: raw}
	g.append(f, g.decide(f, ledger.Issue{
		EventID: g.id(), FamilyID: fid.String(), Cause: ledger.Cause{Kind: ledger.CauseRequest, ID: g.id()},
		ClientID: clients[g.rng.IntN(len(clients))], Subject: fmt.Sprintf("user-%d", g.rng.IntN(1000)),
		Scope: "read write", TokenHash: token.HashToken(raw), AccessJTI: g.id(), Policy: g.policy,
	}))
	return f
}

// rotate presents the current token and rotates it.
func (g *generator) rotate(f *genFamily) {
	fid, _ := ulid.ParseStrict(f.st.FamilyID)
	next, _ := token.MintRefreshToken(g.entropy, fid, f.st.Seq)
	sealed, _ := token.SealSuccessor(g.entropy, f.raw, next)
	g.append(f, g.decide(f, ledger.Refresh{
		EventID: g.id(), Cause: ledger.Cause{Kind: ledger.CauseRequest, ID: g.id()}, ClientID: f.st.ClientID,
		Presented: ledger.Presented{Hash: token.HashToken(f.raw)}, Policy: g.policy,
		NextHash: token.HashToken(next), SealedNext: sealed, AccessJTI: g.id(),
	}))
	if f.prev != "" {
		f.older = append(f.older, f.prev)
	}
	f.prev, f.raw = f.raw, next
}

// retry presents the token rotated away last (a grace retry inside the
// window, reuse outside it).
func (g *generator) retry(f *genFamily) {
	g.append(f, g.decide(f, ledger.Refresh{
		EventID: g.id(), Cause: ledger.Cause{Kind: ledger.CauseRequest, ID: g.id()}, ClientID: f.st.ClientID,
		Presented: ledger.Presented{Hash: token.HashToken(f.prev)}, Policy: g.policy, AccessJTI: g.id(),
	}))
}

func (g *generator) revoke(f *genFamily, kind string) {
	g.append(f, g.decide(f, ledger.Revoke{EventID: g.id(), Cause: ledger.Cause{Kind: kind, ID: g.id(), Reason: "test"}}))
}

func (g *generator) revokeAccess(f *genFamily) {
	g.append(f, g.decide(f, ledger.RevokeAccess{EventID: g.id(), Cause: ledger.Cause{Kind: ledger.CauseRevoke, ID: g.id()},
		JTI: g.id(), ExpiresAt: g.now.Add(10 * time.Minute)}))
}

func (g *generator) cutAccess(f *genFamily) {
	g.append(f, g.decide(f, ledger.CutAccess{EventID: g.id(), Cause: ledger.Cause{Kind: ledger.CauseSecurity, ID: g.id()}}))
}

func (g *generator) securityHandled(families []string) {
	id := g.id()
	data, err := ledger.EncodeEvent(ledger.Event{ID: id, OccurredAt: g.now,
		Cause: ledger.Cause{Kind: ledger.CauseSecurity, ID: id},
		Data: ledger.SecurityHandled{EventType: "credential_compromised", Severity: "high", Action: "revoke",
			Selector: &ledger.Selector{FamilyID: families[0]}, Families: families}})
	if err != nil {
		panic(err)
	}
	g.out = append(g.out, stored{Subject: "security." + id, Type: ledger.TypeSecurityHandled, Data: data})
}

// mixed generates about n events over interleaved families with the
// whole vocabulary: rotations, grace retries, reuse, revocations, access
// revocations, cut-offs and handled security events.
func (g *generator) mixed(n int) []stored {
	const live = 64
	for len(g.out) < n {
		g.now = g.now.Add(time.Duration(1+g.rng.IntN(50)) * time.Millisecond)
		if len(g.families) < live {
			g.families = append(g.families, g.issue())
			continue
		}
		i := g.rng.IntN(len(g.families))
		f := g.families[i]
		f.ops++
		switch r := g.rng.IntN(100); {
		case f.st.Revoked != nil || f.ops > 40:
			g.families[i] = g.families[len(g.families)-1]
			g.families = g.families[:len(g.families)-1]
		case r < 60:
			g.rotate(f)
		case r < 70 && f.prev != "":
			g.retry(f) // inside the grace window: a retry
		case r < 75:
			g.revokeAccess(f)
		case r < 78:
			g.cutAccess(f)
		case r < 80 && f.prev != "":
			g.now = g.now.Add(g.policy.Grace + time.Second)
			g.retry(f) // outside it: reuse, the family is revoked
		case r < 82:
			g.revoke(f, ledger.CauseAdmin)
		case r < 83:
			g.securityHandled([]string{f.st.FamilyID})
		default:
			g.rotate(f)
		}
	}
	return g.out
}

// eventType names a payload the way EncodeEvent does.
func eventType(data any) ledger.EventType {
	switch data.(type) {
	case ledger.FamilyIssued:
		return ledger.TypeFamilyIssued
	case ledger.RefreshRotated:
		return ledger.TypeRefreshRotated
	case ledger.RefreshUsed:
		return ledger.TypeRefreshUsed
	case ledger.GraceRetried:
		return ledger.TypeGraceRetried
	case ledger.ReuseDetected:
		return ledger.TypeReuseDetected
	case ledger.FamilyRevoked:
		return ledger.TypeFamilyRevoked
	case ledger.AccessRevoked:
		return ledger.TypeAccessRevoked
	case ledger.AccessCutoff:
		return ledger.TypeAccessCutoff
	case ledger.SecurityHandled:
		return ledger.TypeSecurityHandled
	}
	return ""
}

// testStream creates a stream like the ledger's on prefix.> but allowing
// deletes, so tests can cut sequences out of copies.
func testStream(t testing.TB, js jetstream.JetStream, name, prefix string) {
	t.Helper()
	_, err := js.CreateStream(context.Background(), jetstream.StreamConfig{
		Name: name, Subjects: []string{prefix + ".>"}, Storage: jetstream.FileStorage,
		AllowDirect: true, Discard: jetstream.DiscardNew,
	})
	if err != nil {
		t.Fatalf("create stream %s: %v", name, err)
	}
}

// publish appends the messages under prefix, asynchronously in windows.
func publish(t testing.TB, js jetstream.JetStream, prefix string, msgs []stored) {
	t.Helper()
	for start := 0; start < len(msgs); start += 4000 {
		end := min(start+4000, len(msgs))
		for _, m := range msgs[start:end] {
			msg := nats.NewMsg(prefix + "." + m.Subject)
			msg.Data = m.Data
			if m.Type != "" {
				msg.Header.Set(jsstore.HeaderEventType, string(m.Type))
			}
			if _, err := js.PublishMsgAsync(msg); err != nil {
				t.Fatalf("publish: %v", err)
			}
		}
		select {
		case <-js.PublishAsyncComplete():
		case <-time.After(30 * time.Second):
			t.Fatal("publish: acks did not arrive")
		}
	}
}

// newLedger starts a server and stores msgs in stream name on prefix.
func newLedger(t testing.TB, name, prefix string, msgs []stored) (jetstream.JetStream, *Source) {
	t.Helper()
	s := natstest.Start(t, "")
	_, js := natstest.Connect(t, s)
	testStream(t, js, name, prefix)
	publish(t, js, prefix, msgs)
	return js, NewSource(js, name, prefix)
}

func require[T comparable](tb testing.TB, what string, got, want T) {
	tb.Helper()
	if got != want {
		tb.Fatalf("%s: got %v, want %v", what, got, want)
	}
}

// issue0 generates one family.issued message.
func (g *generator) issue0() stored {
	g.issue()
	return g.out[len(g.out)-1]
}
