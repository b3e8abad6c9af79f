package cluster_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/tokenledger/tokenledger/internal/cluster"
	"github.com/tokenledger/tokenledger/internal/devcerts"
)

// connectTo connects as role to node n only, without reconnecting
// elsewhere: requests on it enter the cluster through n.
func (e *env) connectTo(role string, n cluster.Node) *nats.Conn {
	e.t.Helper()
	certs := e.c.CertsDir()
	nc, err := nats.Connect(fmt.Sprintf("tls://%s:%d", cluster.Host, n.ClientPort),
		nats.Name("cluster-test-"+role+"-"+n.Name),
		nats.UserInfo(role, e.c.Password(role)),
		nats.RootCAs(filepath.Join(certs, devcerts.CAFile)),
		nats.ClientCert(filepath.Join(certs, devcerts.ClientCertFile(role)), filepath.Join(certs, devcerts.ClientKeyFile(role))),
		nats.NoReconnect())
	if err != nil {
		e.t.Fatalf("connect as %s to %s: %v", role, n.Name, err)
	}
	e.t.Cleanup(nc.Close)
	return nc
}

// instancesOn is how many service instances (connections named
// tokenledger-serve) node n has, from its monitoring endpoint.
func instancesOn(ctx context.Context, n cluster.Node) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("http://%s:%d/connz?limit=1024", cluster.Host, n.MonitorPort), nil)
	if err != nil {
		return 0, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	var connz struct {
		Connections []struct {
			Name string `json:"name"`
		} `json:"connections"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&connz); err != nil {
		return 0, fmt.Errorf("%s connz: %w", n.Name, err)
	}
	k := 0
	for _, c := range connz.Connections {
		if c.Name == "tokenledger-serve" {
			k++
		}
	}
	return k, nil
}

// placement says how many instances each node has, e.g. "nats-1:2 nats-2:0 nats-3:0".
func placement(ctx context.Context, t *testing.T, top cluster.Topology) (string, map[string]int) {
	t.Helper()
	var b strings.Builder
	on := map[string]int{}
	for i, n := range top.Nodes {
		k, err := instancesOn(ctx, n)
		if err != nil {
			t.Fatal(err)
		}
		on[n.Name] = k
		if i > 0 {
			b.WriteByte(' ')
		}
		fmt.Fprintf(&b, "%s:%d", n.Name, k)
	}
	return b.String(), on
}

// replyViolations are the lines of the logs of names (nodes and
// processes) where a publish to a service import's reply subject (_R_.…)
// was refused.
func replyViolations(t *testing.T, c *cluster.Cluster, names ...string) []string {
	t.Helper()
	var out []string
	for _, name := range names {
		f, err := os.Open(c.LogFile(name))
		if err != nil {
			t.Error(err)
			continue
		}
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			line := sc.Text()
			if strings.Contains(line, `Publish Violation - Subject "_R_.`) || strings.Contains(line, `Publish to "_R_.`) {
				out = append(out, name+": "+line)
			}
		}
		f.Close()
	}
	return out
}

// throughEveryNode makes requests as the relying service through each
// node in turn (a connection to that node only): it issues a family,
// refreshes it and fetches the JWKS, n times, and fails the test for
// every request that got no answer. temporarily_unavailable is retried,
// as a client does; an unanswered request is not.
func throughEveryNode(ctx context.Context, t *testing.T, e *env, creds func(map[string]any) map[string]any, n int) {
	t.Helper()
	for _, node := range e.c.Topology().Nodes {
		nc := e.connectTo("billing", node)
		ask := func(subject string, body map[string]any) (tokenReply, error) {
			deadline := time.Now().Add(10 * time.Second)
			for {
				rctx, cancel := context.WithTimeout(ctx, 3*time.Second)
				r, err := request(rctx, nc, subject, body)
				cancel()
				if err == nil && r.Error == "temporarily_unavailable" && time.Now().Before(deadline) {
					time.Sleep(100 * time.Millisecond)
					continue
				}
				return r, err
			}
		}
		unanswered := 0
		r, err := ask("tokens.issue", creds(map[string]any{"subject": "through-" + node.Name}))
		if err != nil || r.RefreshToken == "" {
			t.Fatalf("issue through %s: %+v, %v", node.Name, r, err)
		}
		refresh := r.RefreshToken
		for range n {
			r, err := ask("tokens.refresh", creds(map[string]any{"refresh_token": refresh}))
			switch {
			case err != nil:
				unanswered++
			case r.Error != "" || r.RefreshToken == "":
				t.Errorf("refresh through %s refused: %+v", node.Name, r)
			default:
				refresh = r.RefreshToken
			}
			if _, err := ask("tokens.jwks", map[string]any{}); err != nil {
				unanswered++
			}
		}
		nc.Close()
		if unanswered > 0 {
			t.Errorf("through %s: %d of %d requests unanswered", node.Name, unanswered, 2*n)
		}
	}
}
