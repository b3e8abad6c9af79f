package handlers_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/tokenledger/tokenledger/internal/tltest"
)

// A service stopped while requests are still arriving and queued stops
// cleanly: every request is answered (a result, or an error saying the
// instance is stopping) or, once the endpoints are gone, refused by NATS
// as having no responders; none is lost, nothing crashes (a request
// drained after the stop used to panic on the closed pool), and Run
// returns.
func TestServiceStopsUnderLoad(t *testing.T) {
	for round := range 3 {
		e := newEnv(t, "")
		e.StartInstance(tltest.Options{Grace: 10 * time.Second})
		g := e.Issue("alice")
		tltest.WantOK(t, g)
		e.introspect(g.AccessToken) // cached: served without the pool
		bodies := map[string][]byte{}
		bodies["tokens.introspect"], _ = json.Marshal(map[string]any{"client_id": tltest.ClientID, "client_secret": tltest.Secret, "token": g.AccessToken})
		bodies["tokens.issue"], _ = json.Marshal(map[string]any{"client_id": tltest.ClientID, "client_secret": tltest.Secret, "subject": "bob"})

		inbox := nats.NewInbox()
		replies, err := e.NC.SubscribeSync(inbox)
		if err != nil {
			t.Fatal(err)
		}
		const n = 1500
		for i := range n {
			subject := "tokens.introspect"
			if i%3 == 0 {
				subject = "tokens.issue"
			}
			if err := e.NC.PublishRequest(subject, inbox, bodies[subject]); err != nil {
				t.Fatal(err)
			}
		}
		// Stop once the service is answering, with most requests queued.
		if _, err := replies.NextMsg(10 * time.Second); err != nil {
			t.Fatalf("round %d: first reply: %v", round, err)
		}
		if err := e.StopInstance(0); err != nil {
			t.Fatalf("round %d: Run returned %v", round, err)
		}
		answered, refused := 1, 0
		for {
			msg, err := replies.NextMsg(time.Second)
			if errors.Is(err, nats.ErrNoResponders) {
				refused++ // sent after the endpoints were gone
				continue
			}
			if err != nil {
				break
			}
			if len(msg.Data) == 0 {
				t.Fatalf("round %d: empty reply", round)
			}
			answered++
		}
		t.Logf("round %d: %d answered (results or errors), %d without responders, of %d", round, answered, refused, n)
		if answered+refused != n {
			t.Fatalf("round %d: %d requests got no reply at all", round, n-answered-refused)
		}
	}
}

// A rolling restart of one of two instances under a refresh load: the
// instance that stops answers every request it accepted, the other keeps
// serving, a new one takes the stopped one's place, and no request goes
// unanswered; every family's last answered refresh token still works.
func TestRollingRestartUnderLoad(t *testing.T) {
	e := newEnv(t, "")
	opts := tltest.Options{Grace: 10 * time.Second, Wall: true}
	e.StartInstance(opts)
	e.StartInstance(opts)
	const callers = 8
	tokens := make([]string, callers)
	for i := range tokens {
		g := e.Issue(fmt.Sprint("user-", i))
		tltest.WantOK(t, g)
		tokens[i] = g.RefreshToken
	}
	stop := make(chan struct{})
	var (
		wg                    sync.WaitGroup
		mu                    sync.Mutex
		ok, unavailable, lost int
		failures              []string
	)
	for i := range callers {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				r, err := e.TryCall("tokens.refresh", tltest.RefreshBody(tokens[i]))
				mu.Lock()
				switch {
				case err != nil:
					lost++ // no reply: the request was never answered
					failures = append(failures, err.Error())
				case r.Error == "":
					ok++
					tokens[i] = r.RefreshToken
				case r.Status == "503":
					unavailable++ // an instance stopping refused it, saying so: retry
				default:
					failures = append(failures, string(r.Raw))
				}
				mu.Unlock()
			}
		})
	}
	waitOK := func(n int) {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for {
			mu.Lock()
			done := ok >= n
			mu.Unlock()
			if done {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("only %d refreshes answered, want %d", ok, n)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	waitOK(200)
	if err := e.StopInstance(0); err != nil { // the rolling restart: stop one...
		t.Fatalf("the stopped instance's Run returned %v", err)
	}
	mu.Lock()
	before := ok
	mu.Unlock()
	waitOK(before + 200)  // ...the other keeps serving...
	e.StartInstance(opts) // ...and a new one joins
	waitOK(before + 400)
	close(stop)
	wg.Wait()
	t.Logf("%d refreshes answered, %d refused as unavailable while stopping", ok, unavailable)
	if lost != 0 || len(failures) != 0 {
		t.Fatalf("%d requests unanswered, %d failed: %v", lost, len(failures), failures[:min(len(failures), 5)])
	}
	for _, tok := range tokens {
		tltest.WantOK(t, e.Refresh(tok)) // the last answered rotation of each family was kept
	}
}
