package cluster_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tokenledger/tokenledger/internal/cluster"
	"github.com/tokenledger/tokenledger/internal/devcerts"
)

// env is a running process cluster and the binaries that talk to it.
type env struct {
	t   *testing.T
	c   *cluster.Cluster
	bin cluster.Binaries
}

func startCluster(t *testing.T, ctx context.Context) *env {
	t.Helper()
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	start := time.Now()
	bin, err := cluster.Build(ctx, root, dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("built nats-server, tokenledger and resourceserver in %v", time.Since(start).Round(time.Millisecond))
	top, err := cluster.Default().WithFreePorts()
	if err != nil {
		t.Fatal(err)
	}
	start = time.Now()
	c, err := cluster.Start(ctx, cluster.Config{Root: root, Dir: dir, Bin: bin, Topology: top})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("cluster ready in %v", time.Since(start).Round(time.Millisecond))
	e := &env{t: t, c: c, bin: bin}
	t.Cleanup(func() {
		c.Close()
		if t.Failed() {
			for _, n := range append(names(top.Nodes, func(n cluster.Node) string { return n.Name }),
				names(top.Processes, func(p cluster.Process) string { return p.Name })...) {
				b, _ := os.ReadFile(c.LogFile(n))
				if len(b) > 3000 {
					b = b[len(b)-3000:]
				}
				t.Logf("%s log, last lines:\n%s", n, b)
			}
		}
	})
	return e
}

func names[T any](xs []T, f func(T) string) []string {
	var out []string
	for _, x := range xs {
		out = append(out, f(x))
	}
	return out
}

// cli runs a tokenledger subcommand as role and returns its stdout.
func (e *env) cli(role string, extraEnv []string, args ...string) ([]byte, error) {
	cmd := exec.Command(e.bin.Tokenledger, args...)
	cmd.Env = append(append(os.Environ(), e.c.Env(role)...), extraEnv...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.Bytes(), fmt.Errorf("%s: %w\n%s%s", strings.Join(args, " "), err, stdout.Bytes(), stderr.Bytes())
	}
	return append(stdout.Bytes(), stderr.Bytes()...), nil
}

// decodeFirst decodes the first JSON value of a command's output.
func decodeFirst(b []byte, v any) error { return json.NewDecoder(bytes.NewReader(b)).Decode(v) }

// connect connects as role, with its certificate and inbox prefix.
func (e *env) connect(role string) *nats.Conn {
	e.t.Helper()
	certs := e.c.CertsDir()
	opts := []nats.Option{
		nats.Name("cluster-test-" + role),
		nats.UserInfo(role, e.c.Password(role)),
		nats.RootCAs(filepath.Join(certs, devcerts.CAFile)),
		nats.ClientCert(filepath.Join(certs, devcerts.ClientCertFile(role)), filepath.Join(certs, devcerts.ClientKeyFile(role))),
		nats.MaxReconnects(-1), nats.ReconnectWait(100 * time.Millisecond),
	}
	if p := cluster.InboxPrefixes[role]; p != "" {
		opts = append(opts, nats.CustomInboxPrefix(p))
	}
	nc, err := nats.Connect(e.c.URLs(), opts...)
	if err != nil {
		e.t.Fatalf("connect as %s: %v", role, err)
	}
	e.t.Cleanup(nc.Close)
	return nc
}

type tokenReply struct {
	AccessToken  string `json:"access_token"`
	RefreshToken string `json:"refresh_token"`
	FamilyID     string `json:"family_id"`
	Active       *bool  `json:"active"`
	Revoked      bool   `json:"revoked"`
	Error        string `json:"error"`
}

// request sends a JSON request and decodes the reply.
func request(ctx context.Context, nc *nats.Conn, subject string, body map[string]any) (tokenReply, error) {
	b, err := json.Marshal(body)
	if err != nil {
		return tokenReply{}, err
	}
	msg, err := nc.RequestWithContext(ctx, subject, b)
	if err != nil {
		return tokenReply{}, err
	}
	var r tokenReply
	if err := json.Unmarshal(msg.Data, &r); err != nil {
		return r, fmt.Errorf("%s reply %q: %w", subject, msg.Data, err)
	}
	return r, nil
}

// streamLeader is the server name of the ledger stream's leader.
func streamLeader(ctx context.Context, nc *nats.Conn) (string, error) {
	js, err := jetstream.New(nc)
	if err != nil {
		return "", err
	}
	s, err := js.Stream(ctx, "TOKENLEDGER")
	if err != nil {
		return "", err
	}
	info := s.CachedInfo()
	if info.Cluster == nil || info.Cluster.Leader == "" {
		return "", errors.New("the ledger stream has no leader")
	}
	return info.Cluster.Leader, nil
}

// The process cluster (three NATS servers, two instances, the worker, the
// resource server) serves the whole flow through the shipped config:
// issue, refresh, introspect, revoke, a security event, the resource
// server, and audit verify; then, under a refresh load, the stream leader
// is killed, then stopped, then a node with an instance on it is stopped
// (and the requests go through every node after it is back), then an
// instance is killed: every acknowledged rotation survives, no family has
// two current tokens, no answer to the relying service is refused, and
// the gaps are logged.
func TestProcessCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and starts a cluster of processes")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	e := startCluster(t, ctx)
	top := e.c.Topology()

	out, err := e.cli("admin", nil, "client", "create", "--id", "billing", "--scope", "read write")
	if err != nil {
		t.Fatal(err)
	}
	var created struct {
		ClientSecret string `json:"client_secret"`
	}
	if err := decodeFirst(out, &created); err != nil || created.ClientSecret == "" {
		t.Fatalf("client create: %v: %s", err, out)
	}
	secret := created.ClientSecret
	billingEnv := []string{"TOKENLEDGER_CLIENT_SECRET=" + secret}

	// Issue and refresh with the CLI, as the relying service.
	var issued tokenReply
	for {
		out, err = e.cli("billing", billingEnv, "issue", "--client-id", "billing", "--subject", "alice")
		if err == nil {
			break
		}
		if ctx.Err() != nil { // the instances may not have seen the client yet
			t.Fatal(err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err := decodeFirst(out, &issued); err != nil || issued.RefreshToken == "" {
		t.Fatalf("issue: %v: %s", err, out)
	}
	out, err = e.cli("billing", append(billingEnv, "TOKENLEDGER_REFRESH_TOKEN="+issued.RefreshToken), "refresh", "--client-id", "billing")
	if err != nil {
		t.Fatal(err)
	}
	var refreshed tokenReply
	if err := decodeFirst(out, &refreshed); err != nil || refreshed.RefreshToken == "" || refreshed.FamilyID != issued.FamilyID {
		t.Fatalf("refresh: %v: %s", err, out)
	}

	billing := e.connect("billing")
	creds := func(m map[string]any) map[string]any {
		m["client_id"], m["client_secret"] = "billing", secret
		return m
	}
	r, err := request(ctx, billing, "tokens.introspect", creds(map[string]any{"token": refreshed.AccessToken}))
	if err != nil || r.Active == nil || !*r.Active {
		t.Fatalf("introspect a fresh access token: %+v, %v", r, err)
	}
	rs, _ := top.Process("resourceserver")
	if code := getMe(ctx, rs.HTTPPort, refreshed.AccessToken); code != http.StatusOK {
		t.Fatalf("resource server GET /me: %d", code)
	}
	r, err = request(ctx, billing, "tokens.revoke", creds(map[string]any{"token": refreshed.RefreshToken}))
	if err != nil || !r.Revoked {
		t.Fatalf("revoke: %+v, %v", r, err)
	}
	r, err = request(ctx, billing, "tokens.introspect", creds(map[string]any{"token": refreshed.AccessToken}))
	if err != nil || r.Active == nil || *r.Active {
		t.Fatalf("introspect after revoking the family: %+v, %v", r, err)
	}
	waitFor(ctx, t, "the resource server to refuse a revoked family's access token", func() bool {
		return getMe(ctx, rs.HTTPPort, refreshed.AccessToken) == http.StatusUnauthorized
	})

	// A security event (high severity) revokes mallory's family through
	// the worker.
	r, err = request(ctx, billing, "tokens.issue", creds(map[string]any{"subject": "mallory"}))
	if err != nil || r.RefreshToken == "" {
		t.Fatalf("issue for mallory: %+v, %v", r, err)
	}
	mallory := r.RefreshToken
	sec := e.connect("security")
	ack, err := sec.RequestWithContext(ctx, "security.events.credential_compromised",
		[]byte(`{"id":"evt-cluster-1","type":"credential_compromised","severity":"high","subject":"mallory","reason":"cluster test"}`))
	if err != nil || !bytes.Contains(ack.Data, []byte(`"seq"`)) {
		t.Fatalf("publish security event: %v %s", err, ackData(ack))
	}
	waitFor(ctx, t, "the worker to revoke mallory's family", func() bool {
		r, err := request(ctx, billing, "tokens.refresh", creds(map[string]any{"refresh_token": mallory}))
		if err == nil && r.RefreshToken != "" {
			mallory = r.RefreshToken
		}
		return err == nil && r.Error == "invalid_grant"
	})

	admin := e.connect("admin")
	t.Run("stream leader killed", func(t *testing.T) {
		leader, err := streamLeader(ctx, admin)
		if err != nil {
			t.Fatal(err)
		}
		var killed time.Time
		res := refreshLoad(ctx, t, []*nats.Conn{billing}, creds, 8, 3*time.Second, 10*time.Second, func() {
			killed = time.Now()
			if err := e.c.Kill(leader); err != nil {
				t.Error(err)
			}
		})
		election := electionAfter(t, e.c, top, leader, killed)
		t.Logf("killed stream leader %s: %d refreshes acknowledged, %d temporarily_unavailable, %d timeouts; longest gap %v (starting %v after the kill); servers logged the new stream leader %v after the kill",
			leader, res.ok, res.unavailable, res.timeouts, res.gap.Round(time.Millisecond), res.gapStart.Sub(killed).Round(time.Millisecond), election)
		res.checkSurvived(ctx, t, e, billing, creds)
		if err := e.c.StartProcess(leader); err != nil {
			t.Fatal(err)
		}
		if err := e.c.WaitReady(ctx, leader); err != nil {
			t.Fatal(err)
		}
	})

	// A rolling restart stops a node with SIGTERM: it hands its leaders
	// over before it exits, so there is no election timeout to wait.
	t.Run("stream leader stopped", func(t *testing.T) {
		leader, err := streamLeader(ctx, admin)
		if err != nil {
			t.Fatal(err)
		}
		var stopped time.Time
		res := refreshLoad(ctx, t, []*nats.Conn{billing}, creds, 8, 2*time.Second, 4*time.Second, func() {
			stopped = time.Now()
			if err := e.c.Stop(leader); err != nil {
				t.Error(err)
			}
		})
		t.Logf("SIGTERM to stream leader %s: %d refreshes acknowledged, %d temporarily_unavailable, %d timeouts; longest gap %v (starting %v after the signal); new stream leader logged %v after it",
			leader, res.ok, res.unavailable, res.timeouts, res.gap.Round(time.Millisecond), res.gapStart.Sub(stopped).Round(time.Millisecond),
			electionAfter(t, e.c, top, leader, stopped))
		res.checkSurvived(ctx, t, e, billing, creds)
		if err := e.c.StartProcess(leader); err != nil {
			t.Fatal(err)
		}
		if err := e.c.WaitReady(ctx, leader); err != nil {
			t.Fatal(err)
		}
	})

	// A node with an instance on it stops (SIGTERM) under a refresh load
	// that enters through the other nodes. The instance reconnects to
	// another node and answers the requests it received before: those
	// answers must reach the relying service (once refused, with the
	// server logging a publish violation on _R_.…). Then the node comes
	// back, and requests through every node are answered.
	t.Run("instance's node stopped", func(t *testing.T) {
		where, on := placement(ctx, t, top)
		var node cluster.Node
		for _, n := range top.Nodes {
			if on[n.Name] > on[node.Name] {
				node = n
			}
		}
		var conns []*nats.Conn
		for _, n := range top.Nodes {
			if n.Name != node.Name {
				conns = append(conns, e.connectTo("billing", n))
			}
		}
		var stopped time.Time
		res := refreshLoad(ctx, t, conns, creds, 16, 2*time.Second, 8*time.Second, func() {
			stopped = time.Now()
			if err := e.c.Stop(node.Name); err != nil {
				t.Error(err)
			}
		})
		t.Logf("SIGTERM to %s (instances: %s), requests through the other nodes: %d refreshes acknowledged, %d temporarily_unavailable, %d unanswered; longest gap %v (starting %v after the signal)",
			node.Name, where, res.ok, res.unavailable, res.timeouts, res.gap.Round(time.Millisecond), res.gapStart.Sub(stopped).Round(time.Millisecond))
		res.checkSurvived(ctx, t, e, conns[0], creds)
		if err := e.c.StartProcess(node.Name); err != nil {
			t.Fatal(err)
		}
		for _, name := range []string{node.Name, "tokenledger-1", "tokenledger-2"} {
			if err := e.c.WaitReady(ctx, name); err != nil {
				t.Fatal(err)
			}
		}
		where, _ = placement(ctx, t, top)
		t.Logf("%s restarted; instances: %s", node.Name, where)
		throughEveryNode(ctx, t, e, creds, 20)
	})

	// After the node restarts: the long-lived connection has moved
	// between nodes, the instances too.
	t.Run("instance killed", func(t *testing.T) {
		var killed time.Time
		res := refreshLoad(ctx, t, []*nats.Conn{billing}, creds, 8, 2*time.Second, 6*time.Second, func() {
			killed = time.Now()
			if err := e.c.Kill("tokenledger-1"); err != nil {
				t.Error(err)
			}
		})
		t.Logf("kill -9 of tokenledger-1: %d refreshes acknowledged, %d temporarily_unavailable, %d timeouts; longest gap %v (starting %v after the kill)",
			res.ok, res.unavailable, res.timeouts, res.gap.Round(time.Millisecond), res.gapStart.Sub(killed).Round(time.Millisecond))
		if res.okAfter(killed.Add(res.gap/2)) == 0 {
			t.Error("no refresh succeeded after the kill: the other instance did not keep serving")
		}
		res.checkSurvived(ctx, t, e, billing, creds)
		if err := e.c.StartProcess("tokenledger-1"); err != nil {
			t.Fatal(err)
		}
		if err := e.c.WaitReady(ctx, "tokenledger-1"); err != nil {
			t.Fatal(err)
		}
	})

	// No answer to a relying service was refused anywhere in the run.
	nodes := names(top.Nodes, func(n cluster.Node) string { return n.Name })
	if v := replyViolations(t, e.c, append(nodes, "tokenledger-1", "tokenledger-2")...); len(v) > 0 {
		t.Errorf("%d answers to the relying service refused (publish to _R_.…), the first: %s", len(v), v[0])
	}

	// Every family's chain, every transition: no family has two current
	// tokens, no acknowledged event is missing.
	out, err = e.cli("auditor", nil, "audit", "verify")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(out, []byte(": 0 violations")) {
		t.Fatalf("audit verify: %s", out)
	}
	t.Logf("%s", bytes.TrimSpace(out))
}

func ackData(m *nats.Msg) []byte {
	if m == nil {
		return nil
	}
	return m.Data
}

func getMe(ctx context.Context, port int, access string) int {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("http://%s:%d/me", cluster.Host, port), nil)
	if err != nil {
		return 0
	}
	req.Header.Set("Authorization", "Bearer "+access)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

func waitFor(ctx context.Context, t *testing.T, what string, cond func() bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	for !cond() {
		select {
		case <-ctx.Done():
			t.Fatalf("waiting for %s: %v", what, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// loadResult is what refreshLoad saw.
type loadResult struct {
	ok, unavailable, timeouts int
	successes                 []time.Time // sorted
	gap                       time.Duration
	gapStart                  time.Time
	last                      []string // each family's last acknowledged refresh token
	families                  []string
}

func (r loadResult) okAfter(t time.Time) int {
	i, _ := slices.BinarySearchFunc(r.successes, t, func(a, b time.Time) int { return a.Compare(b) })
	return len(r.successes) - i
}

// refreshLoad issues one family per caller, then each caller refreshes
// its family back to back, caller i on conns[i%len(conns)]: before, then
// event, then during. A failed
// request (temporarily_unavailable, a timeout) is retried with the same
// token, which a grace retry answers with the same successor if the
// rotation had been appended; any other error fails the test. The gap is
// the longest time in the run with no successful refresh.
func refreshLoad(ctx context.Context, t *testing.T, conns []*nats.Conn, creds func(map[string]any) map[string]any,
	callers int, before, during time.Duration, event func()) loadResult {
	t.Helper()
	res := loadResult{last: make([]string, callers), families: make([]string, callers)}
	for i := range callers {
		r, err := request(ctx, conns[i%len(conns)], "tokens.issue", creds(map[string]any{"subject": fmt.Sprintf("load-%d", i)}))
		if err != nil || r.RefreshToken == "" {
			t.Fatalf("issue: %+v, %v", r, err)
		}
		res.last[i], res.families[i] = r.RefreshToken, r.FamilyID
	}
	var mu sync.Mutex
	lctx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	start := time.Now()
	for i := range callers {
		wg.Go(func() {
			for lctx.Err() == nil {
				rctx, cancel := context.WithTimeout(lctx, 6*time.Second)
				r, err := request(rctx, conns[i%len(conns)], "tokens.refresh", creds(map[string]any{"refresh_token": res.last[i]}))
				cancel()
				mu.Lock()
				switch {
				case lctx.Err() != nil:
				case err != nil:
					res.timeouts++
				case r.Error == "temporarily_unavailable":
					res.unavailable++
				case r.Error != "" || r.RefreshToken == "":
					t.Errorf("caller %d: refresh refused: %+v", i, r)
				default:
					res.ok++
					res.last[i] = r.RefreshToken
					res.successes = append(res.successes, time.Now())
				}
				failed := err != nil || r.Error != ""
				mu.Unlock()
				if failed {
					time.Sleep(20 * time.Millisecond)
				}
			}
		})
	}
	time.Sleep(before)
	event()
	time.Sleep(during)
	stop()
	wg.Wait()
	end := time.Now()
	slices.SortFunc(res.successes, func(a, b time.Time) int { return a.Compare(b) })
	prev := start
	for _, s := range append(slices.Clone(res.successes), end) {
		if d := s.Sub(prev); d > res.gap {
			res.gap, res.gapStart = d, prev
		}
		prev = s
	}
	return res
}

// checkSurvived refreshes every family with its last acknowledged token:
// had an acknowledged rotation been lost, the token would be unknown or
// already rotated.
func (r loadResult) checkSurvived(ctx context.Context, t *testing.T, e *env, nc *nats.Conn, creds func(map[string]any) map[string]any) {
	t.Helper()
	for i, tok := range r.last {
		deadline := time.Now().Add(20 * time.Second)
		for {
			rctx, cancel := context.WithTimeout(ctx, 6*time.Second)
			rep, err := request(rctx, nc, "tokens.refresh", creds(map[string]any{"refresh_token": tok}))
			cancel()
			if (err == nil && rep.Error == "temporarily_unavailable" || (errors.Is(err, nats.ErrTimeout) || errors.Is(err, context.DeadlineExceeded))) && time.Now().Before(deadline) {
				time.Sleep(100 * time.Millisecond)
				continue
			}
			if err != nil || rep.Error != "" || rep.RefreshToken == "" {
				out, aerr := e.cli("auditor", nil, "audit", "replay", "--family", r.families[i], "--format", "table")
				t.Errorf("family %d: its last acknowledged refresh token: %+v, %v; the family's history (%v):\n%s", i, rep, err, aerr, tailLines(out, 12))
			}
			break
		}
	}
}

// electionAfter is how long after killed a surviving node logged a new
// leader of the ledger stream (0 if none did).
func electionAfter(t *testing.T, c *cluster.Cluster, top cluster.Topology, killedNode string, killed time.Time) time.Duration {
	t.Helper()
	var first time.Time
	for _, n := range top.Nodes {
		if n.Name == killedNode {
			continue
		}
		f, err := os.Open(c.LogFile(n.Name))
		if err != nil {
			t.Error(err)
			continue
		}
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			line := sc.Text()
			if !strings.Contains(line, "new stream leader for 'TOKENS > TOKENLEDGER'") &&
				!strings.Contains(line, "Self is new stream leader for 'TOKENS > TOKENLEDGER'") {
				continue
			}
			// [pid] 2006/01/02 15:04:05.000000 [INF] ...
			fields := strings.Fields(line)
			if len(fields) < 3 {
				continue
			}
			at, err := time.ParseInLocation("2006/01/02 15:04:05.000000", fields[1]+" "+fields[2], time.Local)
			if err == nil && at.After(killed) && (first.IsZero() || at.Before(first)) {
				first = at
			}
		}
		f.Close()
	}
	if first.IsZero() {
		return 0
	}
	return first.Sub(killed).Round(time.Millisecond)
}

func tailLines(b []byte, n int) []byte {
	lines := bytes.Split(bytes.TrimSpace(b), []byte("\n"))
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return bytes.Join(lines, []byte("\n"))
}
