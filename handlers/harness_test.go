package handlers_test

// The handlers' side of internal/tltest: requests to the endpoints that
// read the view, whose replies are not token responses, and what several
// tests look for in the ledger. Everything else (the server, the wiring,
// the clock, issue and refresh, the events) is tltest's.

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/tokenledger/tokenledger/api"
	"github.com/tokenledger/tokenledger/internal/tltest"
	"github.com/tokenledger/tokenledger/ledger"
	"github.com/tokenledger/tokenledger/ledger/jsstore"
	"github.com/tokenledger/tokenledger/projections"
)

// env is one test's running system (tltest.Env) with the handlers'
// request helpers.
type env struct{ *tltest.Env }

func newEnv(t testing.TB, dir string) *env { return &env{tltest.New(t, dir)} }

// viewEnv is an env with one instance, which serves the view.
func viewEnv(t *testing.T, opts tltest.Options) (*env, *jsstore.Ledger, *projections.View) {
	t.Helper()
	e := newEnv(t, "")
	in := e.StartInstance(opts)
	return e, in.Ledger(), in.View()
}

func (e *env) tokenCall(subject, token, hint string) tltest.Reply {
	e.T.Helper()
	body := map[string]any{"client_id": tltest.ClientID, "client_secret": tltest.Secret, "token": token}
	if hint != "" {
		body["token_type_hint"] = hint
	}
	return e.Call(subject, body)
}

func (e *env) revoke(token string) {
	e.T.Helper()
	r := e.tokenCall("tokens.revoke", token, "")
	if r.Error != "" || string(r.Raw) != `{"revoked":true}` {
		e.T.Fatalf("revoke: got %s", r.Raw)
	}
}

func (e *env) introspect(token string) api.IntrospectResponse {
	e.T.Helper()
	r := e.tokenCall("tokens.introspect", token, "")
	if r.Error != "" {
		e.T.Fatalf("introspect: %s", r.Raw)
	}
	var out api.IntrospectResponse
	if err := json.Unmarshal(r.Raw, &out); err != nil {
		e.T.Fatal(err)
	}
	if !out.Active && string(r.Raw) != `{"active":false}` {
		e.T.Fatalf("inactive answer carries more than active:false: %s", r.Raw)
	}
	return out
}

func (e *env) sessions(subject string) api.SessionsResponse {
	e.T.Helper()
	return e.sessionsAt("tokens.sessions", map[string]any{"client_id": tltest.ClientID, "client_secret": tltest.Secret, "subject": subject})
}

func (e *env) sessionsAt(endpoint string, body map[string]any) api.SessionsResponse {
	e.T.Helper()
	r := e.Call(endpoint, body)
	if r.Error != "" {
		e.T.Fatalf("sessions: %s", r.Raw)
	}
	var out api.SessionsResponse
	if err := json.Unmarshal(r.Raw, &out); err != nil {
		e.T.Fatal(err)
	}
	if out.Families == nil {
		e.T.Fatalf("sessions: families must be an array: %s", r.Raw)
	}
	return out
}

func (e *env) adminRevoke(body map[string]any) int {
	e.T.Helper()
	r := e.Call("tokens.admin.revoke", body)
	if r.Error != "" {
		e.T.Fatalf("admin revoke %v: %s", body, r.Raw)
	}
	var out api.AdminRevokeResponse
	if err := json.Unmarshal(r.Raw, &out); err != nil {
		e.T.Fatal(err)
	}
	return out.RevokedFamilies
}

// tryIssue is Issue for goroutines other than the test's (see TryCall).
func (e *env) tryIssue(subject string) (tltest.Reply, error) {
	return e.TryCall("tokens.issue", tltest.IssueBody(subject))
}

// tryRefresh is Refresh for goroutines other than the test's (see TryCall).
func (e *env) tryRefresh(token string) (tltest.Reply, error) {
	return e.TryCall("tokens.refresh", tltest.RefreshBody(token))
}

func countType(events []ledger.Event, typ ledger.EventType) int {
	n := 0
	for _, ev := range events {
		if ev.Type == typ {
			n++
		}
	}
	return n
}

func lastOfType(t *testing.T, events []ledger.Event, familyID string, typ ledger.EventType) ledger.Event {
	t.Helper()
	for i := len(events) - 1; i >= 0; i-- {
		if events[i].FamilyID == familyID && events[i].Type == typ {
			return events[i]
		}
	}
	t.Fatalf("no %s event for family %s", typ, familyID)
	return ledger.Event{}
}

// syncWriter is a log destination a test reads while the service writes.
type syncWriter struct {
	mu sync.Mutex
	w  *bytes.Buffer
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}

func (s *syncWriter) bytes() []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return bytes.Clone(s.w.Bytes())
}

// addEncodedNeedle adds raw to needles under name, and its base64,
// base64url and hex forms: the ways a secret could be written out.
func addEncodedNeedle(needles map[string][]byte, name string, raw []byte) {
	needles[name] = raw
	needles[name+" (base64)"] = []byte(base64.StdEncoding.EncodeToString(raw))
	needles[name+" (base64url)"] = []byte(base64.RawURLEncoding.EncodeToString(raw))
	needles[name+" (hex)"] = []byte(hex.EncodeToString(raw))
}

// scanStored reads every file under dir (the server's storage) and fails
// the test for each needle a file holds. It returns how many files it read
// and whether any held control (something the store must hold, so the
// scan is known to read the right bytes; nil for none).
func scanStored(t *testing.T, dir string, needles map[string][]byte, control []byte) (files int, controlFound bool) {
	t.Helper()
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		files++
		controlFound = controlFound || (control != nil && bytes.Contains(b, control))
		for name, needle := range needles {
			if bytes.Contains(b, needle) {
				t.Errorf("%s found in %s", name, path)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("walk %s: %v", dir, err)
	}
	return files, controlFound
}
