package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tokenledger/tokenledger/internal/devcerts"
	"github.com/tokenledger/tokenledger/verifier"
)

// permInbox is every user of config/nats-server.conf with the inbox prefix
// it uses ("": the default _INBOX).
var permInbox = map[string]string{
	"tokenledger": "", "billing": "", "web": "",
	"admin": "_INBOX_admin", "auditor": "_INBOX_auditor",
	"security": "_INBOX_security", "resource": "_INBOX_resource",
	"breakglass": "",
}

func permPassword(role string) string { return "pw-" + role + "-for-the-permission-test" }

// permEnv reaches the NATS server running the shipped config.
type permEnv struct {
	t     *testing.T
	url   string
	certs string
}

// options are a role's connection options: TLS with its client
// certificate, its password, its inbox prefix.
func (e *permEnv) options(role string) []nats.Option {
	opts := []nats.Option{
		nats.Name("permission-test-" + role),
		nats.UserInfo(role, permPassword(role)),
		nats.RootCAs(filepath.Join(e.certs, devcerts.CAFile)),
		nats.ClientCert(filepath.Join(e.certs, devcerts.ClientCertFile(role)), filepath.Join(e.certs, devcerts.ClientKeyFile(role))),
		nats.ErrorHandler(func(*nats.Conn, *nats.Subscription, error) {}), // violations are read from LastError
	}
	if p := permInbox[role]; p != "" {
		opts = append(opts, nats.CustomInboxPrefix(p))
	}
	return opts
}

func (e *permEnv) connect(role string) *nats.Conn {
	e.t.Helper()
	nc, err := nats.Connect(e.url, e.options(role)...)
	if err != nil {
		e.t.Fatalf("connect as %s: %v", role, err)
	}
	e.t.Cleanup(nc.Close)
	return nc
}

// cliEnv runs a tokenledger subcommand as role.
func (e *permEnv) cliEnv(role string) []string {
	return []string{
		"TOKENLEDGER_NATS_URL=" + e.url,
		"TOKENLEDGER_USER=" + role,
		"TOKENLEDGER_PASSWORD=" + permPassword(role),
		"TOKENLEDGER_TLS_CA=" + filepath.Join(e.certs, devcerts.CAFile),
		"TOKENLEDGER_TLS_CERT=" + filepath.Join(e.certs, devcerts.ClientCertFile(role)),
		"TOKENLEDGER_TLS_KEY=" + filepath.Join(e.certs, devcerts.ClientKeyFile(role)),
		"TOKENLEDGER_INBOX_PREFIX=" + permInbox[role],
	}
}

// violationLog keeps the server's permission violation log lines.
type violationLog struct {
	mu    sync.Mutex
	lines []string
}

func (l *violationLog) Errorf(format string, v ...any) {
	if s := fmt.Sprintf(format, v...); strings.Contains(s, "Violation") {
		l.mu.Lock()
		l.lines = append(l.lines, s)
		l.mu.Unlock()
	}
}
func (l *violationLog) Noticef(string, ...any) {}
func (l *violationLog) Warnf(string, ...any)   {}
func (l *violationLog) Fatalf(string, ...any)  {}
func (l *violationLog) Debugf(string, ...any)  {}
func (l *violationLog) Tracef(string, ...any)  {}

// of returns the violations of the connections whose name contains name.
func (l *violationLog) of(name string) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for _, s := range l.lines {
		if strings.Contains(s, name) {
			out = append(out, s)
		}
	}
	return out
}

// matrix is the table of docs/permissions.md: action -> role -> allowed.
type matrix struct {
	roles   []string
	actions []string
	allowed map[string]map[string]bool
}

func parseMatrix(t *testing.T, path string) matrix {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	m := matrix{allowed: map[string]map[string]bool{}}
	in := false
	cells := func(line string) []string {
		parts := strings.Split(strings.Trim(strings.TrimSpace(line), "|"), "|")
		for i := range parts {
			parts[i] = strings.TrimSpace(parts[i])
		}
		return parts
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "<!-- permission-matrix"):
			in = true
			continue
		case strings.HasPrefix(line, "<!-- end permission-matrix"):
			in = false
			continue
		case !in || !strings.HasPrefix(line, "|") || strings.HasPrefix(line, "|---"):
			continue
		}
		c := cells(line)
		if m.roles == nil {
			if len(c) < 3 || c[0] != "action" {
				t.Fatalf("%s: matrix header %q", path, line)
			}
			m.roles = c[2:]
			continue
		}
		action := strings.Trim(c[0], "`")
		if len(c) != len(m.roles)+2 {
			t.Fatalf("%s: row %s has %d cells, want %d", path, action, len(c), len(m.roles)+2)
		}
		if _, dup := m.allowed[action]; dup {
			t.Fatalf("%s: action %s twice", path, action)
		}
		m.actions = append(m.actions, action)
		m.allowed[action] = map[string]bool{}
		for i, role := range m.roles {
			switch c[i+2] {
			case "yes":
				m.allowed[action][role] = true
			case "no":
			default:
				t.Fatalf("%s: %s for %s is %q, want yes or no", path, action, role, c[i+2])
			}
		}
	}
	if len(m.actions) == 0 {
		t.Fatalf("%s: no permission matrix", path)
	}
	return m
}

// prober tries one action on a connection of its own, so the connection's
// last error is this action's permissions violation, if any.
type prober struct {
	nc *nats.Conn
}

// violated reports whether the server refused kind ("publish" or
// "subscription") on subject to this connection.
func (p *prober) violated(kind, subject string) bool {
	err := p.nc.LastError()
	return errors.Is(err, nats.ErrPermissionViolation) &&
		strings.Contains(strings.ToLower(err.Error()), strings.ToLower(fmt.Sprintf("%s to %q", kind, subject)))
}

// request publishes a request and waits for its reply. It reports false
// when the server refused the publish or nobody could answer (a relying
// account that does not import the subject).
func (p *prober) request(subject string, hdr nats.Header, body []byte) (*nats.Msg, bool, error) {
	inbox := p.nc.NewInbox()
	sub, err := p.nc.SubscribeSync(inbox)
	if err != nil {
		return nil, false, err
	}
	defer sub.Unsubscribe()
	if err := p.nc.PublishMsg(&nats.Msg{Subject: subject, Reply: inbox, Header: hdr, Data: body}); err != nil {
		return nil, false, err
	}
	// The server handles the publish before it answers the flush's PING,
	// and a violation arrives before the PONG.
	if err := p.nc.Flush(); err != nil {
		return nil, false, err
	}
	if p.violated("publish", subject) {
		return nil, false, nil
	}
	msg, err := sub.NextMsg(10 * time.Second)
	if err != nil {
		return nil, true, fmt.Errorf("%s: let through but no reply: %w (last error %v)", subject, err, p.nc.LastError())
	}
	if msg.Header.Get("Status") == "503" && len(msg.Data) == 0 {
		return nil, false, nil // no responders
	}
	return msg, true, nil
}

// requestAll requests each subject; they must all be let through or all
// refused.
func (p *prober) requestAll(body string, subjects ...string) (bool, error) {
	var got []bool
	for _, s := range subjects {
		_, ok, err := p.request(s, nil, []byte(body))
		if err != nil {
			return ok, err
		}
		got = append(got, ok)
	}
	if slices.Contains(got, !got[0]) {
		return got[0], fmt.Errorf("some of %v let through and some refused: %v", subjects, got)
	}
	return got[0], nil
}

// subscribe reports whether the server accepted a subscription.
func (p *prober) subscribe(subject string) (bool, error) {
	if _, err := p.nc.SubscribeSync(subject); err != nil {
		return false, err
	}
	if err := p.nc.Flush(); err != nil {
		return false, err
	}
	return !p.violated("subscription", subject), nil
}

// publish reports whether the server let a plain publish through.
func (p *prober) publish(subject string) (bool, error) {
	if err := p.nc.Publish(subject, []byte(`{}`)); err != nil {
		return false, err
	}
	if err := p.nc.Flush(); err != nil {
		return false, err
	}
	return !p.violated("publish", subject), nil
}

// publishToStream publishes to a stream's subject with an expected stream
// name that does not match, so a publish let through is answered by the
// stream with an error and stores nothing.
func (p *prober) publishToStream(subject string) (bool, error) {
	msg, ok, err := p.request(subject, nats.Header{"Nats-Expected-Stream": {"permission-probe"}}, []byte(`{}`))
	if !ok || err != nil {
		return ok, err
	}
	if !bytes.Contains(msg.Data, []byte(`"error"`)) {
		return true, fmt.Errorf("%s: the stream stored the probe: %s", subject, msg.Data)
	}
	return true, nil
}

// readStream creates an ephemeral consumer on stream and fetches its
// first message.
func (p *prober) readStream(stream string) (bool, error) {
	name := "probe" + strconv.FormatInt(time.Now().UnixNano(), 36)
	cfg := fmt.Sprintf(`{"stream_name":%q,"config":{"name":%q,"deliver_policy":"all","ack_policy":"none","inactive_threshold":10000000000,"mem_storage":true,"num_replicas":1}}`, stream, name)
	msg, ok, err := p.request("$JS.API.CONSUMER.CREATE."+stream+"."+name, nil, []byte(cfg))
	if !ok || err != nil {
		return ok, err
	}
	if bytes.Contains(msg.Data, []byte(`"error"`)) {
		return true, fmt.Errorf("consumer on %s: %s", stream, msg.Data)
	}
	msg, ok, err = p.request("$JS.API.CONSUMER.MSG.NEXT."+stream+"."+name, nil, []byte(`{"batch":1,"expires":5000000000}`))
	switch {
	case err != nil:
		return ok, err
	case !ok:
		return true, fmt.Errorf("consumer on %s created, but its fetch refused", stream)
	case msg.Header.Get("Status") != "":
		return true, fmt.Errorf("fetch from %s: status %s %s", stream, msg.Header.Get("Status"), msg.Header.Get("Description"))
	}
	return true, nil
}

// api calls a JetStream API subject; an API error in the answer still
// counts as let through.
func (p *prober) api(subject, body string) (bool, error) {
	_, ok, err := p.request(subject, nil, []byte(body))
	return ok, err
}

// apiChange calls a destructive JetStream API subject, which must succeed
// when let through.
func (p *prober) apiChange(subject, body string) (bool, error) {
	msg, ok, err := p.request(subject, nil, []byte(body))
	if !ok || err != nil {
		return ok, err
	}
	var resp struct {
		Success bool `json:"success"`
	}
	if err := json.Unmarshal(msg.Data, &resp); err != nil || !resp.Success {
		return true, fmt.Errorf("%s let through but failed: %s", subject, msg.Data)
	}
	return true, nil
}

// permAction is how the test tries one action class of docs/permissions.md.
type permAction struct {
	// destructive actions that are let through change what other
	// actions need: they run last, after the service has stopped.
	destructive bool
	try         func(p *prober) (bool, error)
}

var permActions = map[string]permAction{
	"call-client-endpoints": {try: func(p *prober) (bool, error) {
		return p.requestAll(`{}`, "tokens.issue", "tokens.refresh", "tokens.revoke", "tokens.introspect", "tokens.sessions")
	}},
	"call-jwks": {try: func(p *prober) (bool, error) { return p.requestAll(``, "tokens.jwks") }},
	"call-admin-endpoints": {try: func(p *prober) (bool, error) {
		return p.requestAll(`{}`, "tokens.admin.revoke")
	}},
	"call-digest":          {try: func(p *prober) (bool, error) { return p.requestAll(``, "tokens.admin.digest") }},
	"discover-service":     {try: func(p *prober) (bool, error) { return p.requestAll(``, "$SRV.PING.tokenledger") }},
	"subscribe-all":        {try: func(p *prober) (bool, error) { return p.subscribe(">") }},
	"subscribe-inbox":      {try: func(p *prober) (bool, error) { return p.subscribe("_INBOX.>") }},
	"subscribe-requests":   {try: func(p *prober) (bool, error) { return p.subscribe("tokens.>") }},
	"subscribe-replies":    {try: func(p *prober) (bool, error) { return p.subscribe("_R_.>") }},
	"publish-replies":      {try: func(p *prober) (bool, error) { return p.publish("_R_.PrObE0.nOtPeNdInG") }},
	"read-ledger-consumer": {try: func(p *prober) (bool, error) { return p.readStream("TOKENLEDGER") }},
	"read-ledger-direct":   {try: func(p *prober) (bool, error) { return p.api("$JS.API.DIRECT.GET.TOKENLEDGER", `{"seq":1}`) }},
	"write-ledger":         {try: func(p *prober) (bool, error) { return p.publishToStream("ledger.family.01J0PERMISSIONPROBE000000000") }},
	"update-ledger-stream": {try: func(p *prober) (bool, error) {
		return p.api("$JS.API.STREAM.UPDATE.TOKENLEDGER", `{"name":"permission-probe"}`)
	}},
	"delete-ledger-message": {try: func(p *prober) (bool, error) { return p.api("$JS.API.STREAM.MSG.DELETE.TOKENLEDGER", `{"seq":1}`) }},
	"purge-ledger-stream":   {try: func(p *prober) (bool, error) { return p.api("$JS.API.STREAM.PURGE.TOKENLEDGER", `{}`) }},
	"read-archive-consumer": {try: func(p *prober) (bool, error) { return p.readStream("TOKENLEDGER_ARCHIVE") }},
	"read-archive-direct": {try: func(p *prober) (bool, error) {
		return p.api("$JS.API.DIRECT.GET.TOKENLEDGER_ARCHIVE", `{"seq":1}`)
	}},
	"update-archive-stream": {try: func(p *prober) (bool, error) {
		return p.api("$JS.API.STREAM.UPDATE.TOKENLEDGER_ARCHIVE", `{"name":"permission-probe"}`)
	}},
	"delete-archive-message": {try: func(p *prober) (bool, error) {
		return p.api("$JS.API.STREAM.MSG.DELETE.TOKENLEDGER_ARCHIVE", `{"seq":1}`)
	}},
	"purge-archive-stream": {try: func(p *prober) (bool, error) { return p.api("$JS.API.STREAM.PURGE.TOKENLEDGER_ARCHIVE", `{}`) }},
	"delete-archive-stream": {destructive: true, try: func(p *prober) (bool, error) {
		return p.apiChange("$JS.API.STREAM.DELETE.TOKENLEDGER_ARCHIVE", ``)
	}},
	"write-keys-bucket":      {try: func(p *prober) (bool, error) { return p.publishToStream("$KV.tokenledger_keys.probe") }},
	"write-clients-bucket":   {try: func(p *prober) (bool, error) { return p.publishToStream("$KV.tokenledger_clients.probe") }},
	"publish-security-event": {try: func(p *prober) (bool, error) { return p.publishToStream("security.events.probe") }},
	"read-feed":              {try: func(p *prober) (bool, error) { return p.readStream("TOKENLEDGER_REVOCATIONS") }},
	"write-feed":             {try: func(p *prober) (bool, error) { return p.publishToStream("tokens.revocations.probe") }},
	"purge-feed-stream": {destructive: true, try: func(p *prober) (bool, error) {
		return p.apiChange("$JS.API.STREAM.PURGE.TOKENLEDGER_REVOCATIONS", `{}`)
	}},
	"purge-checkpoint-bucket": {destructive: true, try: func(p *prober) (bool, error) {
		return p.apiChange("$JS.API.STREAM.PURGE.OBJ_tokenledger_checkpoints", `{}`)
	}},
	"delete-worker-consumer": {destructive: true, try: func(p *prober) (bool, error) {
		return p.apiChange("$JS.API.CONSUMER.DELETE.SECURITY_EVENTS.tokenledger-security", ``)
	}},
	"delete-kv-bucket": {destructive: true, try: func(p *prober) (bool, error) {
		return p.apiChange("$JS.API.STREAM.DELETE.KV_tokenledger_keys", ``)
	}},
	"delete-ledger-stream": {destructive: true, try: func(p *prober) (bool, error) {
		return p.apiChange("$JS.API.STREAM.DELETE.TOKENLEDGER", ``)
	}},
}

// The shipped NATS server config, as a deployment runs it: TLS with client
// certificates, the service and its worker as the tokenledger user, and
// every role able to do exactly what docs/permissions.md says.
func TestShippedConfigPermissions(t *testing.T) {
	mx := parseMatrix(t, "../../docs/permissions.md")
	for _, a := range mx.actions {
		if _, ok := permActions[a]; !ok {
			t.Errorf("docs/permissions.md: action %s has no probe in this test", a)
		}
	}
	for a := range permActions {
		if _, ok := mx.allowed[a]; !ok {
			t.Errorf("probe %s is not in docs/permissions.md", a)
		}
	}
	for _, r := range mx.roles {
		if _, ok := permInbox[r]; !ok {
			t.Errorf("docs/permissions.md: role %s is not a user this test knows", r)
		}
	}
	if len(mx.roles) != len(permInbox) {
		t.Errorf("docs/permissions.md has roles %v, the config %d users", mx.roles, len(permInbox))
	}
	if t.Failed() {
		t.FailNow()
	}

	// The server: the shipped file with its passwords and certificates
	// from the environment, on a random loopback port.
	certs := t.TempDir()
	roles := make([]string, 0, len(permInbox))
	for r := range permInbox {
		roles = append(roles, r)
	}
	if err := devcerts.Write(certs, devcerts.Config{Clients: roles}); err != nil {
		t.Fatal(err)
	}
	t.Setenv("NATS_TLS_CA", filepath.Join(certs, devcerts.CAFile))
	t.Setenv("NATS_TLS_CERT", filepath.Join(certs, devcerts.ServerCertFile))
	t.Setenv("NATS_TLS_KEY", filepath.Join(certs, devcerts.ServerKeyFile))
	for _, r := range roles {
		t.Setenv(strings.ToUpper(r)+"_NATS_PASSWORD", permPassword(r))
	}
	storeDir := t.TempDir()
	loadConfig := func(port int) (*server.Options, error) {
		opts, err := server.ProcessConfigFile("../../config/nats-server.conf")
		if err != nil {
			return nil, err
		}
		opts.Host, opts.Port, opts.StoreDir = "127.0.0.1", port, storeDir
		opts.NoSigs = true
		return opts, nil
	}
	opts, err := loadConfig(server.RANDOM_PORT)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := server.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	violations := &violationLog{}
	srv.SetLoggerV2(violations, false, false, false)
	srv.Start()
	t.Cleanup(func() {
		srv.Shutdown()
		srv.WaitForShutdown()
	})
	if !srv.ReadyForConnections(10 * time.Second) {
		t.Fatal("server not ready")
	}
	port := srv.Addr().(*net.TCPAddr).Port
	env := &permEnv{t: t, url: fmt.Sprintf("tls://127.0.0.1:%d", port), certs: certs}

	t.Run("transport", func(t *testing.T) { testTransport(t, env, port) })

	// The service over TLS as the tokenledger user, its worker included.
	bin := buildBinary(t)
	serveEnv := append(env.cliEnv("tokenledger"), "TOKENLEDGER_KEK=MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=")
	d := startServe(t, bin, serveEnv)

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	// An admin registers the two relying services' clients with the CLI.
	secrets := map[string]string{}
	for _, id := range []string{"billing", "web"} {
		var created struct {
			ClientSecret string `json:"client_secret"`
		}
		out := runCLI(t, bin, env.cliEnv("admin"), "client", "create", "--id", id, "--scope", "read write")
		if err := json.Unmarshal(out, &created); err != nil || created.ClientSecret == "" {
			t.Fatalf("client create %s: %v: %s", id, err, out)
		}
		secrets[id] = created.ClientSecret
	}

	// A resource server verifies with its read-only permissions.
	rv, err := verifier.New(env.connect("resource"), verifier.Config{Issuer: "tokenledger"})
	if err != nil {
		t.Fatal(err)
	}
	rctx, rcancel := context.WithCancel(ctx)
	rdone := make(chan error, 1)
	go func() { rdone <- rv.Run(rctx) }()
	defer func() {
		rcancel()
		<-rdone
	}()
	select {
	case <-rv.Ready():
	case err := <-rdone:
		t.Fatalf("resource server verifier stopped: %v", err)
	case <-ctx.Done():
		t.Fatal("resource server verifier not ready")
	}

	t.Run("eavesdrop", func(t *testing.T) { testEavesdrop(ctx, t, env, bin, secrets, rv) })

	// The service checkpoints its view soon after its first events.
	tjs, err := jetstream.New(env.connect("tokenledger"))
	if err != nil {
		t.Fatal(err)
	}
	for {
		if obj, err := tjs.ObjectStore(ctx, "tokenledger_checkpoints"); err == nil {
			if list, err := obj.List(ctx); err == nil && len(list) > 0 {
				break
			}
		}
		if ctx.Err() != nil {
			t.Fatal("the service saved no view checkpoint")
		}
		time.Sleep(100 * time.Millisecond)
	}

	// The auditor's tools: verify the whole ledger, and compare the
	// running service's view, and its checkpoint, with one rebuilt from
	// the log.
	for _, args := range [][]string{{"audit", "verify"}, {"audit", "diff", "--live"}, {"audit", "diff", "--checkpoint", "latest"}} {
		out := runCLI(t, bin, env.cliEnv("auditor"), args...)
		if !bytes.Contains(out, []byte(`"ok": true`)) && !bytes.Contains(out, []byte(`"ok":true`)) {
			t.Errorf("auditor %v: %s", args, out)
		}
	}

	// Security tooling publishes an event; the worker records its handling
	// in the ledger, which the auditor reads.
	sjs, err := jetstream.New(env.connect("security"))
	if err != nil {
		t.Fatal(err)
	}
	event := fmt.Sprintf(`{"id":"permission-test-1","type":"credential_compromised","occurred_at":%q,"severity":"low","subject":"nobody","reason":"permission test"}`,
		time.Now().UTC().Format(time.RFC3339))
	if _, err := sjs.Publish(ctx, "security.events.credential_compromised", []byte(event)); err != nil {
		t.Fatalf("security event not stored: %v", err)
	}
	ajs, err := jetstream.New(env.connect("auditor"))
	if err != nil {
		t.Fatal(err)
	}
	ledgerStream, err := ajs.Stream(ctx, "TOKENLEDGER")
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := ledgerStream.GetLastMsgForSubject(ctx, "ledger.security.>"); err == nil {
			break
		} else if ctx.Err() != nil {
			t.Fatalf("the worker recorded no handling of the security event: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}

	// Every cell of the matrix; the destructive ones the role may do run
	// after the service has stopped.
	try := func(action, role string) {
		t.Run(action+"/"+role, func(t *testing.T) {
			nc, err := nats.Connect(env.url, env.options(role)...)
			if err != nil {
				t.Fatal(err)
			}
			defer nc.Close()
			got, err := permActions[action].try(&prober{nc: nc})
			if err != nil {
				t.Error(err)
			}
			if want := mx.allowed[action][role]; got != want {
				t.Errorf("%s may %s: %v, docs/permissions.md says %v", role, action, got, want)
			}
		})
	}
	var later [][2]string
	for _, action := range mx.actions {
		for _, role := range mx.roles {
			if permActions[action].destructive && mx.allowed[action][role] {
				later = append(later, [2]string{action, role})
				continue
			}
			try(action, role)
		}
	}

	d.stop(t)
	// As `nats-server --signal reload` does (the break-glass rotation).
	reload := func() error {
		opts, err := loadConfig(port)
		if err != nil {
			return err
		}
		return srv.ReloadOptions(opts)
	}
	t.Run("reply-from-another-connection", func(t *testing.T) { testReplyFromAnotherConnection(t, env, reload) })
	if len(violations.of("permission-test-tokenledger")) == 0 {
		t.Error("the server logged no violation of the refused probes: the log capture is broken")
	}
	if v := violations.of("tokenledger-serve"); len(v) > 0 {
		t.Errorf("the service ran into %d permission violations, the first: %s", len(v), v[0])
	}
	for _, l := range later {
		try(l[0], l[1])
	}
	if _, err := ajs.Stream(ctx, "TOKENLEDGER"); !errors.Is(err, jetstream.ErrStreamNotFound) && mx.allowed["delete-ledger-stream"]["breakglass"] {
		t.Errorf("after break-glass deleted the ledger: %v", err)
	}
}

// testTransport: TLS with the generated CA and a client certificate gets
// in; plain text, TLS without a client certificate, no user and a wrong
// password do not.
func testTransport(t *testing.T, env *permEnv, port int) {
	env.connect("web").Close()

	plainURL := fmt.Sprintf("nats://127.0.0.1:%d", port)
	if nc, err := nats.Connect(plainURL, nats.UserInfo("web", permPassword("web"))); err == nil {
		nc.Close()
		t.Error("a plain-text client connected")
	}

	// A raw plain-text client that ignores the server's tls_required.
	conn, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	r := bufio.NewReader(conn)
	info, err := r.ReadString('\n')
	if err != nil || !strings.Contains(info, `"tls_required":true`) {
		t.Fatalf("server greeting %q: %v", info, err)
	}
	fmt.Fprintf(conn, "CONNECT {\"user\":\"web\",\"pass\":%q,\"verbose\":false,\"tls_required\":false}\r\nPING\r\n", permPassword("web"))
	var rest bytes.Buffer
	_, _ = rest.ReadFrom(r) // until the server closes the connection, or the deadline
	if bytes.Contains(rest.Bytes(), []byte("PONG")) {
		t.Errorf("the TLS listener answered a plain-text client: %q", rest.Bytes())
	}

	refused := []struct {
		name string
		opts []nats.Option
	}{
		{"no client certificate", []nats.Option{nats.UserInfo("web", permPassword("web")), nats.RootCAs(filepath.Join(env.certs, devcerts.CAFile))}},
		{"no user", slices.Delete(env.options("web"), 1, 2)},
		{"unknown user", append(env.options("web"), nats.UserInfo("mallory", permPassword("web")))},
		{"wrong password", append(env.options("web"), nats.UserInfo("web", "wrong"))},
		{"another role's password", append(env.options("web"), nats.UserInfo("web", permPassword("billing")))},
	}
	for _, tt := range refused {
		t.Run(tt.name, func(t *testing.T) {
			nc, err := nats.Connect(env.url, append(tt.opts, nats.MaxReconnects(0))...)
			if err == nil {
				nc.Close()
				t.Fatal("connected")
			}
		})
	}

	// TLS 1.2 or later: the same client capped at TLS 1.1 is refused, at
	// TLS 1.2 it gets in.
	cert, err := tls.LoadX509KeyPair(filepath.Join(env.certs, devcerts.ClientCertFile("web")), filepath.Join(env.certs, devcerts.ClientKeyFile("web")))
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range []uint16{tls.VersionTLS11, tls.VersionTLS12} {
		cfg := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS10, MaxVersion: v}
		nc, err := nats.Connect(env.url, nats.UserInfo("web", permPassword("web")), nats.MaxReconnects(0),
			nats.Secure(cfg), nats.RootCAs(filepath.Join(env.certs, devcerts.CAFile))) // RootCAs after Secure: it adds to cfg
		if err == nil {
			nc.Close()
		}
		if got, want := err == nil, v >= tls.VersionTLS12; got != want {
			t.Errorf("TLS version %#x: connected %v (%v), want %v", v, got, err, want)
		}
	}
}

// testEavesdrop: while billing issues, refreshes, introspects, lists
// sessions and revokes, every other role but the service and break-glass
// subscribes to everything it may and receives nothing.
func testEavesdrop(ctx context.Context, t *testing.T, env *permEnv, bin string, secrets map[string]string, rv *verifier.Verifier) {
	type listener struct {
		role string
		nc   *nats.Conn
		subs []*nats.Subscription
	}
	var listeners []listener
	for _, role := range []string{"web", "admin", "auditor", "security", "resource"} {
		l := listener{role: role, nc: env.connect(role)}
		subjects := []string{">", "_INBOX.>", "_R_.>", "tokens.>", "_INBOX_billing.>"}
		if p := permInbox[role]; p != "" {
			subjects = append(subjects, p+".>")
		}
		for _, s := range subjects {
			sub, err := l.nc.SubscribeSync(s)
			if err != nil {
				t.Fatal(err)
			}
			l.subs = append(l.subs, sub)
		}
		if err := l.nc.Flush(); err != nil {
			t.Fatal(err)
		}
		listeners = append(listeners, l)
	}

	// billing with the CLI ...
	benv := append(env.cliEnv("billing"), "TOKENLEDGER_CLIENT_SECRET="+secrets["billing"])
	var issued, refreshed tokenResponse
	if err := json.Unmarshal(runCLI(t, bin, benv, "issue", "--client-id", "billing", "--subject", "alice"), &issued); err != nil || issued.RefreshToken == "" {
		t.Fatalf("billing issue: %v %+v", err, issued)
	}
	if err := json.Unmarshal(runCLI(t, bin, append(benv, "TOKENLEDGER_REFRESH_TOKEN="+issued.RefreshToken), "refresh", "--client-id", "billing"), &refreshed); err != nil || refreshed.RefreshToken == "" {
		t.Fatalf("billing refresh: %v %+v", err, refreshed)
	}
	if _, err := rv.Verify(ctx, refreshed.AccessToken); err != nil {
		t.Fatalf("resource server verify: %v", err)
	}
	// ... and with its own connection.
	bnc := env.connect("billing")
	call := func(subject string, body map[string]any) []byte {
		body["client_id"], body["client_secret"] = "billing", secrets["billing"]
		data, _ := json.Marshal(body)
		msg, err := bnc.RequestWithContext(ctx, subject, data)
		if err != nil {
			t.Fatalf("billing %s: %v", subject, err)
		}
		return msg.Data
	}
	if out := call("tokens.introspect", map[string]any{"token": refreshed.AccessToken}); !bytes.Contains(out, []byte(`"active":true`)) {
		t.Fatalf("billing introspect: %s", out)
	}
	call("tokens.sessions", map[string]any{"subject": "alice"})
	if out := call("tokens.revoke", map[string]any{"token": refreshed.RefreshToken}); !bytes.Contains(out, []byte(`"revoked":true`)) {
		t.Fatalf("billing revoke: %s", out)
	}

	// Every reply to billing had been queued to any matching subscriber
	// before billing received it; a flush then brings it in. The one
	// thing a listener may see is the revocation feed delivered to the
	// verifier, which shares the resource servers' user and inbox prefix:
	// the feed is theirs to read. Nothing may carry billing's secret or
	// tokens.
	secret := [][]byte{[]byte(secrets["billing"]), []byte(issued.AccessToken), []byte(issued.RefreshToken),
		[]byte(refreshed.AccessToken), []byte(refreshed.RefreshToken)}
	for _, l := range listeners {
		if err := l.nc.Flush(); err != nil {
			t.Fatal(err)
		}
		for _, sub := range l.subs {
			for {
				m, err := sub.NextMsg(0)
				if err != nil {
					break
				}
				for _, s := range secret {
					if bytes.Contains(m.Data, s) {
						t.Errorf("%s subscribed to %s received billing's secret or token on %s", l.role, sub.Subject, m.Subject)
					}
				}
				if l.role == "resource" && strings.HasPrefix(m.Reply, "$JS.ACK.TOKENLEDGER_REVOCATIONS.") {
					continue
				}
				t.Errorf("%s subscribed to %s received a message of billing's on %s: %.200s", l.role, sub.Subject, m.Subject, m.Data)
			}
		}
	}

	// The subscriptions were live: web receives its own reply on _INBOX.>.
	web := listeners[0]
	wnc := web.nc
	data, _ := json.Marshal(map[string]string{"client_id": "web", "client_secret": secrets["web"], "subject": "bob"})
	if _, err := wnc.RequestWithContext(ctx, "tokens.issue", data); err != nil {
		t.Fatalf("web issue: %v", err)
	}
	if err := wnc.Flush(); err != nil {
		t.Fatal(err)
	}
	if n, _, _ := web.subs[1].Pending(); n != 1 {
		t.Errorf("web's _INBOX.> subscription received %d messages of its own request, want 1", n)
	}

	// The revocation reaches the resource server through the feed.
	for {
		if _, err := rv.Verify(ctx, refreshed.AccessToken); err != nil {
			break
		}
		if ctx.Err() != nil {
			t.Fatal("the resource server still accepts a revoked family's access token")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// testReplyFromAnotherConnection: the service may answer a relying
// service's request from a connection other than the one that received it
// (an instance that reconnected to another node of a cluster), and that is
// all its `_R_.>` permission gives: the answer reaches the requester once,
// a second answer and an answer to a reply subject that maps to no pending
// request reach nobody, and its own publish into the requester's inbox
// subject is refused. No other role of TOKENS may answer. An answer after
// a reload of the server's config (which forgets which requests each
// connection received) reaches the requester too. Runs after the service
// has stopped, so the test's connections are the only responders.
func testReplyFromAnotherConnection(t *testing.T, env *permEnv, reload func() error) {
	received := env.connect("tokenledger") // as the instance before its reconnect
	requests, err := received.SubscribeSync("tokens.jwks")
	if err != nil {
		t.Fatal(err)
	}
	if err := received.Flush(); err != nil {
		t.Fatal(err)
	}
	billing, web := env.connect("billing"), env.connect("web")
	var inboxes []*nats.Subscription
	for _, nc := range []*nats.Conn{billing, web} {
		sub, err := nc.SubscribeSync("_INBOX.>")
		if err != nil {
			t.Fatal(err)
		}
		if err := nc.Flush(); err != nil {
			t.Fatal(err)
		}
		inboxes = append(inboxes, sub)
	}
	inbox := billing.NewInbox()
	if err := billing.PublishRequest("tokens.jwks", inbox, nil); err != nil {
		t.Fatal(err)
	}
	req, err := requests.NextMsg(10 * time.Second)
	if err != nil {
		t.Fatalf("the request did not reach the tokenledger user: %v", err)
	}
	if !strings.HasPrefix(req.Reply, "_R_.") {
		t.Fatalf("the request's reply subject is %q, want a service import's _R_.…", req.Reply)
	}

	// pending is what each relying service's _INBOX.> received, once
	// every publish so far has been handled.
	pending := func(conns ...*nats.Conn) []int {
		t.Helper()
		for _, nc := range append(conns, billing, web) {
			if err := nc.Flush(); err != nil {
				t.Fatal(err)
			}
		}
		time.Sleep(50 * time.Millisecond) // a reply is delivered before the flush's PONG; this is margin
		var n []int
		for _, sub := range inboxes {
			k, _, _ := sub.Pending()
			n = append(n, k)
		}
		return n
	}
	answered := env.connect("tokenledger") // as the instance after its reconnect
	p := &prober{nc: answered}
	steps := []struct {
		name    string
		subject string
		allowed bool
		want    []int // billing's and web's inbox messages after the step
	}{
		{"the answer", req.Reply, true, []int{1, 0}},
		{"a second answer", req.Reply, true, []int{1, 0}},
		{"an answer to no pending request", req.Reply[:strings.LastIndexByte(req.Reply, '.')] + ".nOtPeNdInG", true, []int{1, 0}},
		{"a publish into the requester's inbox subject", inbox, false, []int{1, 0}},
	}
	for _, s := range steps {
		ok, err := p.publish(s.subject)
		if err != nil {
			t.Fatal(err)
		}
		if ok != s.allowed {
			t.Errorf("%s (%s): let through %v, want %v", s.name, s.subject, ok, s.allowed)
		}
		if got := pending(answered); !slices.Equal(got, s.want) {
			t.Errorf("after %s: billing's and web's inboxes hold %v messages, want %v", s.name, got, s.want)
		}
	}
	if m, err := inboxes[0].NextMsg(0); err != nil || m.Subject != inbox {
		t.Errorf("billing's answer: %v on %v, want one on %s", err, m, inbox)
	}

	// A request received, the config reloaded, then the answer.
	if err := billing.PublishRequest("tokens.jwks", inbox, nil); err != nil {
		t.Fatal(err)
	}
	if req, err = requests.NextMsg(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	if err := reload(); err != nil {
		t.Fatalf("reload: %v", err)
	}
	if ok, err := (&prober{nc: received}).publish(req.Reply); err != nil || !ok {
		t.Errorf("the answer after a reload: let through %v (%v)", ok, err)
	}
	if got := pending(received); !slices.Equal(got, []int{1, 0}) {
		t.Errorf("after the answer after a reload: billing's and web's inboxes hold %v messages, want [1 0]", got)
	}
	if _, err := inboxes[0].NextMsg(0); err != nil {
		t.Fatal(err)
	}

	// Another request; no other role of TOKENS may answer it.
	if err := billing.PublishRequest("tokens.jwks", inbox, nil); err != nil {
		t.Fatal(err)
	}
	if req, err = requests.NextMsg(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	for _, role := range []string{"admin", "auditor", "security", "resource"} {
		nc, err := nats.Connect(env.url, env.options(role)...)
		if err != nil {
			t.Fatal(err)
		}
		if ok, err := (&prober{nc: nc}).publish(req.Reply); err != nil || ok {
			t.Errorf("%s answered billing's request: let through %v (%v)", role, ok, err)
		}
		nc.Close()
	}
	if got := pending(); !slices.Equal(got, []int{0, 0}) {
		t.Errorf("after the other roles' answers: billing's and web's inboxes hold %v messages, want none", got)
	}
}
