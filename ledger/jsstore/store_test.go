package jsstore

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"testing"
	"time"

	"github.com/tokenledger/tokenledger/ledger"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/tokenledger/tokenledger/internal/natstest"
)

// TestStoreLastSeq checks both ways LastSeq reads the stream's last
// sequence (a direct get with one replica, the leader's message get otherwise)
// against the stream's own state: empty, after appends to many family
// subjects, and when the last append is on a security subject.
func TestStoreLastSeq(t *testing.T) {
	ctx := context.Background()
	s, byLeader, js := directAndLeaderStores(t)
	for _, tc := range []struct {
		name    string
		publish []string // subjects appended before the check
	}{
		{name: "empty stream"},
		{name: "families", publish: []string{"ledger.family.A", "ledger.family.B", "ledger.family.A", "ledger.family.C"}},
		{name: "security event last", publish: []string{"ledger.family.D", s.SecuritySubject("evt-1")}},
		{name: "many families", publish: func() []string {
			var subs []string
			for i := range 500 {
				subs = append(subs, fmt.Sprintf("ledger.family.F%03d", i))
			}
			return subs
		}()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, sub := range tc.publish {
				if _, err := js.Publish(ctx, sub, []byte(`{}`)); err != nil {
					t.Fatal(err)
				}
			}
			info, err := s.Stream().Info(ctx)
			if err != nil {
				t.Fatal(err)
			}
			want := info.State.LastSeq
			for name, st := range map[string]*Store{"direct get": s, "leader get": byLeader} {
				got, err := st.LastSeq(ctx)
				if err != nil || got != want {
					t.Errorf("%s: LastSeq = %d, %v; the stream's last sequence is %d", name, got, err, want)
				}
			}
		})
	}
}

// directAndLeaderStores returns a one-replica store, which reads by direct
// gets, and a store on the same stream that reads from the stream leader
// as a store with more replicas does.
func directAndLeaderStores(t *testing.T) (direct, leader *Store, js jetstream.JetStream) {
	t.Helper()
	direct, js = newTestStore(t)
	if direct.directSubject == "" {
		t.Fatal("a one-replica store does not use direct gets")
	}
	leader = &Store{js: direct.js, stream: direct.stream, prefix: direct.prefix, getSubject: direct.getSubject}
	return direct, leader, js
}

// newTestStore is a store on a fresh embedded JetStream server.
func newTestStore(t *testing.T) (*Store, jetstream.JetStream) {
	t.Helper()
	_, js := natstest.Connect(t, natstest.Start(t, ""))
	s, err := NewStore(context.Background(), js, StoreConfig{})
	if err != nil {
		t.Fatal(err)
	}
	return s, js
}

// The leader's message get (used with more than one replica) reads what
// the direct gets of a one-replica stream read: a family's state, the
// event after a sequence, and nothing for what was never stored.
func TestStoreLeaderReadsAgreeWithDirectGets(t *testing.T) {
	ctx := context.Background()
	direct, leader, _ := directAndLeaderStores(t)
	l := New(direct)
	client := ledger.Client{ID: "web", Scopes: []string{"read"}}
	policy := testPolicy
	g, err := l.Issue(ctx, IssueRequest{Client: client, Policy: policy, Subject: "alice", Scope: "read"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.Refresh(ctx, RefreshRequest{Client: client, Policy: policy, RefreshToken: g.RefreshToken}); err != nil {
		t.Fatal(err)
	}
	fid := g.State.FamilyID
	for name, st := range map[string]*Store{"direct": direct, "leader": leader} {
		got, err := st.Load(ctx, fid)
		want, _ := direct.Load(ctx, fid)
		if err != nil || !reflect.DeepEqual(got, want) || got.Generation != 1 {
			t.Errorf("%s: Load = %+v, %v; want %+v", name, got, err, want)
		}
		if none, err := st.Load(ctx, "01JDQ7Z6M3XGJ8Y9W4V2T1S0RQ"); err != nil || none.Exists() {
			t.Errorf("%s: Load of an unknown family = %+v, %v", name, none, err)
		}
		e, seq, err := st.EventAfter(ctx, fid, g.State.Seq)
		if err != nil || e.Type != ledger.TypeRefreshRotated || seq != g.State.Seq+1 {
			t.Errorf("%s: EventAfter = %s at %d, %v", name, e.Type, seq, err)
		}
		if _, _, err := st.EventAfter(ctx, fid, seq); !errors.Is(err, ledger.ErrUnknownFamily) {
			t.Errorf("%s: EventAfter past the last event: %v", name, err)
		}
		if _, err := st.LastMsg(ctx, st.SecuritySubject("never")); !errors.Is(err, jetstream.ErrMsgNotFound) {
			t.Errorf("%s: LastMsg of an empty subject: %v", name, err)
		}
	}
}

// An append repeated from the same state (a retry after a lost
// acknowledgement, with the very same event) is refused by the expected
// subject sequence and stores nothing: family appends carry no message id
// and need none.
func TestStoreRepeatedAppendLandsOnce(t *testing.T) {
	ctx := context.Background()
	s, _ := newTestStore(t)
	now := time.Now().UTC().Truncate(time.Second)
	issued, err := ledger.Decide(ledger.State{}, ledger.Issue{
		EventID: "E-issue", FamilyID: famID, Cause: ledger.Cause{Kind: ledger.CauseRequest, ID: "R0"},
		ClientID: "web", Subject: "alice", Scope: "read", Audience: []string{"api"},
		TokenHash: "H0", AccessJTI: "J0", Policy: testPolicy,
	}, now)
	if err != nil {
		t.Fatal(err)
	}
	st, err := s.Append(ctx, ledger.State{}, issued...)
	if err != nil {
		t.Fatal(err)
	}
	rotated, err := ledger.Decide(st, ledger.Refresh{
		EventID: "E-rot", Cause: ledger.Cause{Kind: ledger.CauseRequest, ID: "R1"}, ClientID: "web",
		Presented: ledger.Presented{Hash: "H0"}, Policy: testPolicy,
		NextHash: "H1", SealedNext: "sealed-H1", AccessJTI: "J1",
	}, now.Add(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	after, err := s.Append(ctx, st, rotated...)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		from   ledger.State
		events []ledger.Event
	}{
		{"the issue", ledger.State{}, issued},
		{"the rotation", st, rotated},
	} {
		if _, err := s.Append(ctx, tc.from, tc.events...); !errors.Is(err, ledger.ErrConflict) {
			t.Errorf("%s appended again: %v, want ErrConflict", tc.name, err)
		}
	}
	got, err := s.Load(ctx, famID)
	if err != nil || got.Seq != after.Seq || got.Generation != 1 {
		t.Fatalf("Load = seq %d generation %d, %v; want seq %d generation 1", got.Seq, got.Generation, err, after.Seq)
	}
	last, err := s.LastSeq(ctx)
	if err != nil || last != after.Seq {
		t.Errorf("stream last sequence = %d, %v; want %d (nothing stored by the repeats)", last, err, after.Seq)
	}
}

// famID is the family the store tests append to.
const famID = "01JDQ7Z6M3XGJ8Y9W4V2T1S0RQ"

// testPolicy is the rotation policy of the tests' client.
var testPolicy = ledger.Policy{
	Rotation: ledger.RotateAlways, Grace: 10 * time.Second, AccessTTL: 15 * time.Minute,
	RefreshTTL: 14 * 24 * time.Hour, FamilyTTL: 90 * 24 * time.Hour,
}

// testCause is the cause of the tests' revocations.
var testCause = ledger.Cause{Kind: ledger.CauseRevoke, ID: "test"}
