package handlers_test

import (
	"encoding/json"
	"errors"
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
