package handlers_test

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/micro"

	"github.com/tokenledger/tokenledger/api"
	"github.com/tokenledger/tokenledger/handlers"
	"github.com/tokenledger/tokenledger/internal/tltest"
)

// micro's own stats ($SRV.STATS, what `nats micro stats` shows) count every
// request, every error reply and the time spent on each, per endpoint:
// after N good and M bad requests an endpoint reports N+M more requests
// and M more errors, whichever goroutine answered (the worker pool, a
// read-your-writes round of introspectNow).
func TestMicroStatsCountRequestsAndErrors(t *testing.T) {
	e, _, v := viewEnv(t, tltest.Options{Grace: 10 * time.Second})
	g := e.Issue("alice")
	tltest.WantOK(t, g)
	e.introspect(g.AccessToken) // verified and cached: the next ones take introspectNow
	direct := introspectorOf(t, e, v).direct
	directBefore := direct.Load()
	before := e.processStats()

	auth := func(more map[string]any) map[string]any {
		body := map[string]any{"client_id": tltest.ClientID, "client_secret": tltest.Secret}
		for k, v := range more {
			body[k] = v
		}
		return body
	}
	wrongSecret := map[string]any{"client_id": tltest.ClientID, "client_secret": "not-the-secret", "subject": "bob"}
	type call struct {
		subject  string
		body     any
		wantCode string // "" for a good request
	}
	next := g.RefreshToken
	calls := []call{
		{"tokens.issue", tltest.IssueBody("bob"), ""},
		{"tokens.issue", tltest.IssueBody("carol"), ""},
		{"tokens.issue", wrongSecret, api.CodeInvalidClient},
		{"tokens.issue", `{"client_id":`, api.CodeInvalidRequest},
		{"tokens.refresh", nil, ""}, // body: the current refresh token, filled in below
		{"tokens.refresh", nil, ""},
		{"tokens.refresh", tltest.RefreshBody("not-a-refresh-token"), api.CodeInvalidGrant},
		{"tokens.refresh", auth(nil), api.CodeInvalidRequest},
		{"tokens.refresh", auth(map[string]any{"refresh_token": g.RefreshToken, "extra": 1}), api.CodeInvalidRequest},
		{"tokens.introspect", auth(map[string]any{"token": g.AccessToken}), ""},
		{"tokens.introspect", auth(map[string]any{"token": g.AccessToken}), ""},
		{"tokens.introspect", auth(map[string]any{"token": "not.a.token"}), ""}, // inactive, not an error
		{"tokens.introspect", auth(nil), api.CodeInvalidRequest},
		{"tokens.introspect", map[string]any{"client_id": tltest.ClientID, "client_secret": "wrong", "token": g.AccessToken}, api.CodeInvalidClient},
		{"tokens.jwks", "", ""},
		{"tokens.revoke", auth(map[string]any{"token": "not-a-token"}), ""},
		{"tokens.revoke", auth(nil), api.CodeInvalidRequest},
	}
	endpointOf := func(subject string) string { return strings.TrimPrefix(subject, "tokens.") }
	type counts struct{ requests, errors int }
	want := map[string]counts{}
	for _, c := range calls {
		body := c.body
		if body == nil {
			body = tltest.RefreshBody(next)
		}
		r := e.Call(c.subject, body)
		if r.Error != c.wantCode {
			t.Fatalf("%s %v: got %s, want error %q", c.subject, body, r.Raw, c.wantCode)
		}
		if c.subject == "tokens.refresh" && r.Error == "" {
			next = r.RefreshToken
		}
		w := want[endpointOf(c.subject)]
		w.requests++
		if c.wantCode != "" {
			w.errors++
		}
		want[endpointOf(c.subject)] = w
	}

	if direct.Load() == directBefore {
		t.Fatal("no introspection took introspectNow: the test misses its path")
	}
	after := e.processStats()
	for endpoint, w := range want {
		b, a := before[endpoint], after[endpoint]
		got := counts{a.NumRequests - b.NumRequests, a.NumErrors - b.NumErrors}
		if got != w {
			t.Errorf("%s: %d requests, %d errors counted; want %d, %d", endpoint, got.requests, got.errors, w.requests, w.errors)
		}
		if a.ProcessingTime <= b.ProcessingTime {
			t.Errorf("%s: processing time %v after %v", endpoint, a.ProcessingTime, b.ProcessingTime)
		}
		if a.AverageProcessingTime != a.ProcessingTime/time.Duration(a.NumRequests) {
			t.Errorf("%s: average %v of %v over %d", endpoint, a.AverageProcessingTime, a.ProcessingTime, a.NumRequests)
		}
		if w.errors > 0 && !strings.Contains(a.LastError, ":invalid_") {
			t.Errorf("%s: last error %q, want a status and an OAuth code", endpoint, a.LastError)
		}
	}
}

// endpointStats is one instance's micro stats by endpoint name.
type endpointStats map[string]micro.EndpointStats

// processStats is the micro stats of the one running instance.
func (e *env) processStats() endpointStats {
	e.T.Helper()
	for _, s := range e.statsByInstance(1) {
		return s
	}
	return nil
}

// statsByInstance asks every tokenledger instance for its stats
// ($SRV.STATS.tokenledger) and returns them by instance id, waiting until
// want instances answered.
func (e *env) statsByInstance(want int) map[string]endpointStats {
	e.T.Helper()
	subject, err := micro.ControlSubject(micro.StatsVerb, handlers.ServiceName, "")
	if err != nil {
		e.T.Fatal(err)
	}
	out := map[string]endpointStats{}
	deadline := time.Now().Add(10 * time.Second)
	for len(out) < want && time.Now().Before(deadline) {
		inbox := e.NC.NewRespInbox()
		sub, err := e.NC.SubscribeSync(inbox)
		if err != nil {
			e.T.Fatal(err)
		}
		if err := e.NC.PublishRequest(subject, inbox, nil); err != nil {
			e.T.Fatal(err)
		}
		for len(out) < want {
			msg, err := sub.NextMsg(500 * time.Millisecond)
			if err != nil {
				break
			}
			var s micro.Stats
			if err := json.Unmarshal(msg.Data, &s); err != nil {
				e.T.Fatal(err)
			}
			if s.Type != micro.StatsResponseType || s.Name != handlers.ServiceName {
				e.T.Fatalf("stats reply %s", msg.Data)
			}
			eps := endpointStats{}
			for _, ep := range s.Endpoints {
				eps[ep.Name] = *ep
			}
			out[s.ID] = eps
		}
		_ = sub.Unsubscribe()
	}
	if len(out) < want {
		e.T.Fatalf("%d instances answered, want %d", len(out), want)
	}
	return out
}
