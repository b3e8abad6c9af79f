package worker

import (
	"context"
	"testing"
	"time"

	"github.com/tokenledger/tokenledger/ledger"
	"github.com/tokenledger/tokenledger/ledger/jsstore"
)

// fixedSelector selects the same families for any subject or client.
type fixedSelector struct{ fams []string }

func (s fixedSelector) FamiliesBySubject(string, time.Time) []string { return s.fams }
func (s fixedSelector) FamiliesByClient(string, time.Time) []string  { return s.fams }

// A medium event whose handling fails part-way (the second family's last
// event is unreadable) is redelivered until it is dead-lettered. Each retry
// takes the claim over with the first attempt's start instant, so the
// family the first attempt already cut is not cut again. (A failed attempt
// used to delete its claim, and every retry cut the family anew.)
func TestWorkerRetryDoesNotCutAgain(t *testing.T) {
	e := newEnv(t, t.TempDir())
	e.startService(envOptions{useWall: true})
	r := e.issue("alice")
	wantOK(t, r)
	good := r.FamilyID
	bad := "7ZZZZZZZZZZZZZZZZZZZZZZZZZ" // sorts after good
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if _, err := e.js.Publish(ctx, e.store.FamilySubject(bad), []byte("garbage")); err != nil {
		t.Fatal(err)
	}
	w, err := New(ctx, e.js, Config{
		Ledger: jsstore.New(e.store), Selector: fixedSelector{[]string{good, bad}},
		FamilyConcurrency: 1, AckWait: 5 * time.Second, MaxDeliver: 3,
	})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { defer close(done); _ = w.Run(ctx) }()
	e.publishSecurity("x", SecurityEvent{ID: "e1", Type: "x", Severity: SeverityMedium, ClientID: testClientID}, "")
	pollUntil(t, "dead letter", func() bool { return w.Stats().DeadLettered == 1 })
	cancel()
	<-done
	cuts := 0
	last := e.lastSeq()
	for seq := uint64(1); seq <= last; seq++ {
		msg, err := e.store.Stream().GetMsg(context.Background(), seq)
		if err != nil {
			t.Fatal(err)
		}
		ev, err := ledger.DecodeEvent(msg.Data)
		if err == nil && ev.Type == ledger.TypeAccessCutoff && ev.FamilyID == good {
			cuts++
		}
	}
	t.Logf("family %s cut %d times by one event (deliveries: 3)", good, cuts)
	if cuts > 1 {
		t.Errorf("one security event cut the same family %d times", cuts)
	}
}
