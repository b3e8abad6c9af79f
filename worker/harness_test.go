package worker_test

// The worker's side of internal/tltest: workers started as `tokenledger
// worker` runs them (instance, WorkerOnly), security events published to
// the intake, and what the tests look for in the ledger and the
// dead-letter stream. Everything else (the server, the wiring, the clock,
// issue and refresh, the events) is tltest's.

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tokenledger/tokenledger/internal/tltest"
	"github.com/tokenledger/tokenledger/ledger"
	"github.com/tokenledger/tokenledger/ledger/jsstore"
	"github.com/tokenledger/tokenledger/worker"
)

// env is one test's running system (tltest.Env) with the worker's helpers.
type env struct{ *tltest.Env }

func newEnv(t testing.TB, dir string) *env { return &env{tltest.New(t, dir)} }

// workerOptions tunes a worker under test.
type workerOptions struct {
	transmitters []worker.Transmitter
	concurrency  int
	wall         bool // real clock instead of the test clock
}

// startWorker runs a worker, fed by a real projections view, on its own
// connection until the test ends.
func (e *env) startWorker(o workerOptions) *worker.Worker {
	e.T.Helper()
	w, _ := e.runWorker(o)
	return w
}

// runWorker runs a worker alone (an instance with WorkerOnly, as
// `tokenledger worker` runs it) until the returned function is called or
// the test ends.
func (e *env) runWorker(o workerOptions) (*worker.Worker, func()) {
	e.T.Helper()
	i := len(e.Instances)
	in := e.StartInstance(tltest.Options{WorkerOnly: true, Wall: o.wall, Security: worker.Config{
		Transmitters: o.transmitters, Concurrency: o.concurrency, AckWait: 5 * time.Second,
	}})
	// What Run returned is reported when the test ends.
	return in.Worker(), func() { _ = e.StopInstance(i) }
}

// publishSecurity sends a security event (a SecurityEvent, raw bytes or a
// string) to the intake, with a Nats-Msg-Id when msgID is set.
func (e *env) publishSecurity(subject string, body any, msgID string) {
	e.T.Helper()
	msg := nats.NewMsg(worker.DefaultSecurityPrefix + "." + subject)
	data, err := tltest.Bytes(body)
	if err != nil {
		e.T.Fatal(err)
	}
	msg.Data = data
	var opts []jetstream.PublishOpt
	if msgID != "" {
		opts = append(opts, jetstream.WithMsgID(msgID))
	}
	if _, err := e.JS.PublishMsg(context.Background(), msg, opts...); err != nil {
		e.T.Fatalf("publish security event: %v", err)
	}
}

// createSecurityStreams is what serve does at startup, worker or not.
func (e *env) createSecurityStreams() {
	e.T.Helper()
	if err := worker.CreateSecurityStreams(context.Background(), e.JS, worker.Config{}); err != nil {
		e.T.Fatal(err)
	}
}

// pollUntil polls cond until it holds or the deadline passes.
func pollUntil(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// securitySettled waits until the workers' consumer has nothing pending,
// in hand or waiting for redelivery.
func (e *env) securitySettled() {
	e.T.Helper()
	pollUntil(e.T, "the security consumer to settle", func() bool {
		c, err := e.JS.Consumer(context.Background(), worker.DefaultSecurityStream, worker.DefaultSecurityDurable)
		if err != nil {
			return false
		}
		info, err := c.Info(context.Background())
		return err == nil && info.NumPending == 0 && info.NumAckPending == 0 && info.NumRedelivered == 0
	})
}

// handledRecords returns the security.handled.v1 records by event id.
func (e *env) handledRecords() map[string][]ledger.Event {
	out := map[string][]ledger.Event{}
	for _, ev := range e.Events() {
		if ev.Type == ledger.TypeSecurityHandled {
			out[ev.Cause.ID] = append(out[ev.Cause.ID], ev)
		}
	}
	return out
}

// waitHandled waits for the record of event id and returns it.
func (e *env) waitHandled(id string) ledger.SecurityHandled {
	e.T.Helper()
	var rec ledger.SecurityHandled
	pollUntil(e.T, "security event "+id+" to be handled", func() bool {
		msg, err := e.Store.Stream().GetLastMsgForSubject(context.Background(), e.Store.SecuritySubject(jsstore.SecurityKey(id)))
		if err != nil {
			return false
		}
		ev, err := ledger.DecodeEvent(msg.Data)
		if err != nil {
			e.T.Fatal(err)
		}
		rec = ev.Data.(ledger.SecurityHandled)
		return true
	})
	return rec
}

func (e *env) familyState(fid string) ledger.State {
	e.T.Helper()
	st, err := e.Store.Load(context.Background(), fid)
	if err != nil {
		e.T.Fatal(err)
	}
	return st
}

// issueDirect starts a family for any client straight through the ledger
// (the service knows one client only).
func issueDirect(t testing.TB, l *jsstore.Ledger, clientID, subject string) string {
	t.Helper()
	g, err := l.Issue(context.Background(), jsstore.IssueRequest{
		Client: ledger.Client{ID: clientID}, Subject: subject, RequestID: "test",
		Policy: ledger.Policy{Rotation: ledger.RotateAlways, AccessTTL: 15 * time.Minute,
			RefreshTTL: 14 * 24 * time.Hour, FamilyTTL: 90 * 24 * time.Hour},
	})
	if err != nil {
		t.Fatal(err)
	}
	return g.State.FamilyID
}

// deadLetters reads the dead-letter stream.
func (e *env) deadLetters() []*jetstream.RawStreamMsg {
	e.T.Helper()
	ctx := context.Background()
	s, err := e.JS.Stream(ctx, worker.DefaultDeadLetterStream)
	if err != nil {
		e.T.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		e.T.Fatal(err)
	}
	var out []*jetstream.RawStreamMsg
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if err != nil {
			e.T.Fatal(err)
		}
		out = append(out, m)
	}
	return out
}

func wantRevokedBy(t testing.TB, st ledger.State, eventID string) {
	t.Helper()
	if st.Revoked == nil || st.Revoked.Cause.Kind != ledger.CauseSecurity || st.Revoked.Cause.ID != eventID {
		t.Fatalf("family %s: want revoked by security event %s, got %+v", st.FamilyID, eventID, st.Revoked)
	}
}

func wantUntouched(t testing.TB, st ledger.State) {
	t.Helper()
	if st.Revoked != nil || !st.AccessCutoff.IsZero() {
		t.Fatalf("family %s: want untouched, got revoked=%+v cutoff=%v", st.FamilyID, st.Revoked, st.AccessCutoff)
	}
}
