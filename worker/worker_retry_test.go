package worker_test

import (
	"context"
	"testing"
	"time"

	"github.com/tokenledger/tokenledger/internal/tltest"
	"github.com/tokenledger/tokenledger/ledger"
	"github.com/tokenledger/tokenledger/ledger/jsstore"
	"github.com/tokenledger/tokenledger/worker"
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
	// No view: the garbage below would stop its runner, as it would
	// stop a worker instance's; this test's worker (wired by hand for its
	// fixed selector) reads no view.
	e.StartInstance(tltest.Options{Wall: true, NoView: true})
	r := e.Issue("alice")
	tltest.WantOK(t, r)
	good := r.FamilyID
	bad := "7ZZZZZZZZZZZZZZZZZZZZZZZZZ" // sorts after good
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if _, err := e.JS.Publish(ctx, e.Store.FamilySubject(bad), []byte("garbage")); err != nil {
		t.Fatal(err)
	}
	w, err := worker.New(ctx, e.JS, worker.Config{
		Ledger: jsstore.New(e.Store), Selector: fixedSelector{[]string{good, bad}},
		FamilyConcurrency: 1, AckWait: 5 * time.Second, MaxDeliver: 3,
	})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { defer close(done); _ = w.Run(ctx) }()
	e.publishSecurity("x", worker.SecurityEvent{ID: "e1", Type: "x", Severity: worker.SeverityMedium, ClientID: tltest.ClientID}, "")
	pollUntil(t, "dead letter", func() bool { return w.Stats().DeadLettered == 1 })
	cancel()
	<-done
	cuts := 0
	last := e.LastSeq()
	for seq := uint64(1); seq <= last; seq++ {
		msg, err := e.Store.Stream().GetMsg(context.Background(), seq)
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
