package handlers_test

import (
	"encoding/json"
	"fmt"
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
// and M more errors, summed over the lanes of the instance.
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
		if w.errors > 0 && !strings.Contains(a.LastError, ":invalid_") {
			t.Errorf("%s: last error %q, want a status and an OAuth code", endpoint, a.LastError)
		}
	}
}

// laneStats is one process's micro stats: its lanes' endpoint stats
// summed by endpoint name.
type laneStats map[string]micro.EndpointStats

// processStats asks every lane of the one running instance for its stats
// and sums them by endpoint.
func (e *env) processStats() laneStats {
	e.T.Helper()
	all := e.statsByProcess(1)
	for _, s := range all {
		return s
	}
	return nil
}

// statsByProcess asks every tokenledger lane for its stats ($SRV.STATS)
// and sums them per process (the lanes' MetadataProcess), waiting until
// every lane of want processes answered.
func (e *env) statsByProcess(want int) map[string]laneStats {
	e.T.Helper()
	subject, err := micro.ControlSubject(micro.StatsVerb, handlers.ServiceName, "")
	if err != nil {
		e.T.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		inbox := e.NC.NewRespInbox()
		sub, err := e.NC.SubscribeSync(inbox)
		if err != nil {
			e.T.Fatal(err)
		}
		if err := e.NC.PublishRequest(subject, inbox, nil); err != nil {
			e.T.Fatal(err)
		}
		out := map[string]laneStats{}
		lanes := map[string]int{} // process -> lanes answered
		total := map[string]int{} // process -> lanes it has
		for {
			msg, err := sub.NextMsg(500 * time.Millisecond)
			if err != nil {
				break
			}
			var s micro.Stats
			if err := json.Unmarshal(msg.Data, &s); err != nil {
				e.T.Fatal(err)
			}
			p := s.Metadata[handlers.MetadataProcess]
			var i, n int
			if _, err := fmt.Sscanf(s.Metadata[handlers.MetadataLane], "%d/%d", &i, &n); err != nil || p == "" {
				e.T.Fatalf("lane %s: metadata %v", s.ID, s.Metadata)
			}
			lanes[p]++
			total[p] = n
			if out[p] == nil {
				out[p] = laneStats{}
			}
			for _, ep := range s.Endpoints {
				sum := out[p][ep.Name]
				sum.Name = ep.Name
				sum.NumRequests += ep.NumRequests
				sum.NumErrors += ep.NumErrors
				sum.ProcessingTime += ep.ProcessingTime
				if ep.LastError != "" {
					sum.LastError = ep.LastError
				}
				out[p][ep.Name] = sum
			}
		}
		_ = sub.Unsubscribe()
		complete := 0
		for p, n := range lanes {
			if n == total[p] {
				complete++
			}
		}
		if complete >= want && complete == len(lanes) {
			return out
		}
		if time.Now().After(deadline) {
			e.T.Fatalf("lanes answered per process %v of %v, want %d complete processes", lanes, total, want)
		}
	}
}
