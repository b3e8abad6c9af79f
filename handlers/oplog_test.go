package handlers_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tokenledger/tokenledger/internal/tltest"
)

// lockedBuffer is a log sink safe for the service's goroutines.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) Bytes() []byte {
	l.mu.Lock()
	defer l.mu.Unlock()
	return bytes.Clone(l.b.Bytes())
}

// lines decodes the JSON log lines with message msg.
func (l *lockedBuffer) lines(t *testing.T, msg string) []map[string]any {
	t.Helper()
	var out []map[string]any
	sc := bufio.NewScanner(bytes.NewReader(l.Bytes()))
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("log line is not JSON: %s", sc.Bytes())
		}
		if m["msg"] == msg {
			out = append(out, m)
		}
	}
	return out
}

// The operator's log: a line per refused authentication (with the client
// id), per reuse detection, per admin action, each with the request id;
// every request's outcome at debug level; and no secret in the log or in
// any stored byte.
func TestOperatorLog(t *testing.T) {
	dir := t.TempDir()
	logs := &lockedBuffer{}
	env := tltest.New(t, dir)
	env.StartInstance(tltest.Options{Grace: 10 * time.Second, Log: logs})

	var secrets []string
	keep := func(r tltest.Reply) tltest.Reply {
		if r.RefreshToken != "" {
			secrets = append(secrets, r.RefreshToken, r.AccessToken)
		}
		return r
	}
	a := keep(env.Issue("alice"))
	tltest.WantOK(t, a)
	b := keep(env.Refresh(a.RefreshToken))
	tltest.WantOK(t, b)

	wrong := "tlcs_wrong-secret-for-the-log-test"
	tltest.WantError(t, env.Call("tokens.issue", map[string]any{"client_id": tltest.ClientID, "client_secret": wrong, "subject": "alice"}), "invalid_client", "401")
	tltest.WantError(t, env.Call("tokens.introspect", map[string]any{"client_id": "nobody", "client_secret": wrong, "token": b.AccessToken}), "invalid_client", "401")
	tltest.WantError(t, env.Call("tokens.revoke", map[string]any{"client_id": tltest.ClientID, "client_secret": wrong, "token": b.RefreshToken}), "invalid_client", "401")

	env.Clock.Advance(time.Minute)
	tltest.WantError(t, env.Refresh(a.RefreshToken), "invalid_grant", "400") // reuse: the family is revoked

	c := keep(env.Issue("bob"))
	if r := env.Call("tokens.admin.revoke", map[string]any{"subject": "bob", "reason": "offboarding"}); r.Error != "" {
		t.Fatalf("admin revoke: %s", r.Raw)
	}
	env.Call("tokens.introspect", map[string]any{"client_id": tltest.ClientID, "client_secret": tltest.Secret, "token": c.AccessToken})
	env.Call("tokens.revoke", map[string]any{"client_id": tltest.ClientID, "client_secret": tltest.Secret, "token": c.RefreshToken})
	env.Call("tokens.sessions", map[string]any{"client_id": tltest.ClientID, "client_secret": tltest.Secret, "subject": "alice"})

	refused := logs.lines(t, "client authentication refused")
	if len(refused) != 3 {
		t.Fatalf("%d refused-authentication lines, want 3: %s", len(refused), logs.Bytes())
	}
	for i, want := range []struct{ endpoint, client string }{{"issue", "web"}, {"introspect", "nobody"}, {"revoke", "web"}} {
		l := refused[i]
		if l["endpoint"] != want.endpoint || l["client_id"] != want.client || l["request_id"] == "" || l["level"] != "WARN" {
			t.Errorf("refused line %d: %v", i, l)
		}
	}
	reuse := logs.lines(t, "refresh token reuse detected: family revoked")
	if len(reuse) != 1 || reuse[0]["client_id"] != "web" || reuse[0]["request_id"] == "" {
		t.Errorf("reuse lines: %v", reuse)
	}
	// The reuse's request id is the cause of the events it appended.
	if len(reuse) == 1 {
		found := false
		for _, ev := range env.Events() {
			found = found || ev.Cause.ID == reuse[0]["request_id"]
		}
		if !found {
			t.Errorf("no event has the logged request id %v", reuse[0]["request_id"])
		}
	}
	admin := logs.lines(t, "admin action")
	if len(admin) != 1 || admin[0]["endpoint"] != "admin_revoke" || !strings.Contains(admin[0]["reply"].(string), `"revoked_families":1`) || admin[0]["request_id"] == "" {
		t.Errorf("admin lines: %v", admin)
	}
	outcomes := map[string]int{}
	for _, l := range logs.lines(t, "request") {
		outcomes[l["endpoint"].(string)+" "+l["outcome"].(string)]++
	}
	for _, want := range []string{"issue ok", "refresh ok", "refresh invalid_grant", "revoke ok", "sessions ok"} {
		if outcomes[want] == 0 {
			t.Errorf("no debug line for %q: %v", want, outcomes)
		}
	}

	// No secret in the log or anywhere in the server's storage.
	needles := map[string][]byte{"client secret": []byte(tltest.Secret), "wrong secret": []byte(wrong), "kek": []byte(tltest.KEK)}
	for i, s := range secrets {
		needles["token "+string(rune('a'+i))] = []byte(s)
	}
	for name, needle := range needles {
		if bytes.Contains(logs.Bytes(), needle) {
			t.Errorf("%s found in the service log", name)
		}
	}
	if files, _ := scanStored(t, dir, needles, nil); files == 0 {
		t.Fatal("walk: no stored files")
	}
}
