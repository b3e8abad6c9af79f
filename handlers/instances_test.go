package handlers

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/micro"

	"github.com/tokenledger/tokenledger/ledger"
	"github.com/tokenledger/tokenledger/ledger/jsstore"
	"github.com/tokenledger/tokenledger/ledger/token"
	"github.com/tokenledger/tokenledger/projections"
)

// Two instances on one NATS split the load and stay correct, also when
// each decides on the states it cached (with a view, as serve runs): the
// other instance's writes make those stale all the time.
func TestTwoInstancesShareTheLoad(t *testing.T) {
	for _, cached := range []bool{false, true} {
		t.Run(fmt.Sprintf("state cache %t", cached), func(t *testing.T) {
			twoInstancesShareTheLoad(t, cached)
		})
	}
}

func twoInstancesShareTheLoad(t *testing.T, cached bool) {
	e := newEnv(t, "")
	for range 2 {
		opts := envOptions{grace: 10 * time.Second}
		if cached {
			opts.view = projections.NewView()
		}
		e.startService(opts)
	}

	const callers, chain = 16, 20
	var wg sync.WaitGroup
	// The goroutines report through errs: only the test's goroutine may
	// stop the test.
	errs := make(chan string, callers+32)
	for i := range callers {
		wg.Go(func() {
			r, err := e.tryIssue("user-" + string(rune('a'+i)))
			for range chain {
				if err == nil && r.Error != "" {
					err = errors.New(string(r.Raw))
				}
				if err != nil {
					errs <- "chain: " + err.Error()
					return
				}
				r, err = e.tryRefresh(r.RefreshToken)
			}
			if err == nil && r.Error != "" {
				err = errors.New(string(r.Raw))
			}
			if err != nil {
				errs <- "chain: " + err.Error()
			}
		})
	}
	// And one token raced across both instances.
	shared := e.issue("shared")
	var raced sync.WaitGroup
	successors := make(chan string, 32)
	for range 32 {
		raced.Go(func() {
			r, err := e.tryRefresh(shared.RefreshToken)
			switch {
			case err != nil:
				errs <- "raced refresh: " + err.Error()
			case r.Error == "":
				successors <- r.RefreshToken
			}
		})
	}
	wg.Wait()
	raced.Wait()
	close(errs)
	close(successors)
	for msg := range errs {
		t.Fatal(msg)
	}
	distinct := map[string]bool{}
	for s := range successors {
		distinct[s] = true
	}
	if len(distinct) != 1 {
		t.Fatalf("%d distinct successors across instances, want 1", len(distinct))
	}
	events := e.events()
	rotations := 0
	for _, ev := range events {
		if ev.FamilyID == shared.FamilyID && ev.Type == ledger.TypeRefreshRotated {
			rotations++
		}
	}
	if rotations != 1 {
		t.Fatalf("%d rotations of the shared token, want 1", rotations)
	}

	// Both instances served requests (micro stats per instance).
	stats := e.instanceStats(2)
	for id, n := range stats {
		if n == 0 {
			t.Fatalf("instance %s served nothing: %v", id, stats)
		}
	}
}

// instanceStats asks every tokenledger instance for its stats and returns
// requests served per instance id, waiting until want instances answered.
func (e *env) instanceStats(want int) map[string]int {
	e.t.Helper()
	out := map[string]int{}
	deadline := time.Now().Add(10 * time.Second)
	for len(out) < want && time.Now().Before(deadline) {
		inbox := e.nc.NewRespInbox()
		sub, err := e.nc.SubscribeSync(inbox)
		if err != nil {
			e.t.Fatal(err)
		}
		subject, _ := micro.ControlSubject(micro.StatsVerb, ServiceName, "")
		if err := e.nc.PublishRequest(subject, inbox, nil); err != nil {
			e.t.Fatal(err)
		}
		for len(out) < want {
			msg, err := sub.NextMsg(500 * time.Millisecond)
			if err != nil {
				break
			}
			var s micro.Stats
			if err := json.Unmarshal(msg.Data, &s); err != nil {
				e.t.Fatal(err)
			}
			n := 0
			for _, ep := range s.Endpoints {
				n += ep.NumRequests
			}
			out[s.ID] = n
		}
		_ = sub.Unsubscribe()
	}
	if len(out) < want {
		e.t.Fatalf("%d instances answered, want %d", len(out), want)
	}
	return out
}

// A restart keeps every family and the signing key working.
func TestRestartKeepsFamiliesAndKey(t *testing.T) {
	dir := t.TempDir()
	e1 := newEnv(t, dir)
	e1.startService(envOptions{grace: 10 * time.Second, useWall: true})
	a := e1.issue("alice")
	b := e1.refresh(a.RefreshToken)
	wantOK(t, b)
	jwks1 := e1.call("tokens.jwks", "").Raw
	e1.srv.Shutdown()
	e1.srv.WaitForShutdown()

	e2 := newEnv(t, dir)
	e2.startService(envOptions{grace: 10 * time.Second, useWall: true})
	if jwks2 := e2.call("tokens.jwks", "").Raw; !bytes.Equal(jwks1, jwks2) {
		t.Fatalf("signing key changed across restart:\n%s\n%s", jwks1, jwks2)
	}
	c := e2.refresh(b.RefreshToken)
	wantOK(t, c)
	if c.FamilyID != a.FamilyID {
		t.Fatal("family changed")
	}
	// The old access token still verifies with the published keys.
	var set struct{ Keys []token.JWK }
	if err := json.Unmarshal(jwks1, &set); err != nil {
		t.Fatal(err)
	}
	v, err := token.NewVerifier(set.Keys, []string{token.AlgEdDSA}, "tokenledger", time.Now)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := v.Verify(b.AccessToken); err != nil {
		t.Fatalf("pre-restart access token: %v", err)
	}
	if _, err := v.Verify(c.AccessToken); err != nil {
		t.Fatalf("post-restart access token: %v", err)
	}
	// The retired token is still recognised as reuse after the restart.
	wantError(t, e2.refresh(a.RefreshToken), CodeInvalidGrant, "400")
}

// After a run, every stored byte of the ledger (all JetStream files: the
// stream and the KV buckets) and the service log hold no raw refresh token,
// client secret or private key.
func TestNoSecretAtRest(t *testing.T) {
	dir := t.TempDir()
	logs := &syncWriter{w: &bytes.Buffer{}}
	e := newEnv(t, dir)
	e.startService(envOptions{grace: 10 * time.Second, logTo: logs})

	var secrets []string
	add := func(r reply) reply {
		if r.RefreshToken != "" {
			secrets = append(secrets, r.RefreshToken)
		}
		return r
	}
	a := add(e.issue("alice"))
	b := add(e.refresh(a.RefreshToken))
	add(e.refresh(a.RefreshToken)) // grace retry
	c := add(e.refresh(b.RefreshToken))
	e.clock.Advance(time.Minute)
	add(e.refresh(a.RefreshToken)) // reuse
	add(e.refresh(c.RefreshToken))
	add(e.call("tokens.issue", `{"client_id":"web","client_secret":"`+testSecret+`","subject":"x","bogus":1}`))
	add(e.call("tokens.refresh", `{"client_id":"web","client_secret":"wrong-`+testSecret+`","refresh_token":"`+c.RefreshToken+`"}`))

	kek, _ := token.ParseKEK(testKEK)
	keys, err := jsstore.NewKeyStore(context.Background(), e.js, kek, 1)
	if err != nil {
		t.Fatal(err)
	}
	ks, err := keys.LoadOrCreate(context.Background(), token.AlgEdDSA, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	key, _ := ks.Current()
	der, err := x509.MarshalPKCS8PrivateKey(key.Private)
	if err != nil {
		t.Fatal(err)
	}
	seed := der[len(der)-32:] // the Ed25519 seed ends the PKCS#8 encoding

	needles := map[string][]byte{"client secret": []byte(testSecret), "kek": kek[:]}
	for i, s := range secrets {
		needles["refresh token "+string(rune('0'+i))] = []byte(s)
		tok, _ := token.ParseRefreshToken(s)
		needles["refresh secret bytes"] = tok.Secret[:]
	}
	for name, raw := range map[string][]byte{"private key": der, "private seed": seed} {
		needles[name] = raw
		needles[name+" (base64)"] = []byte(base64.StdEncoding.EncodeToString(raw))
		needles[name+" (base64url)"] = []byte(base64.RawURLEncoding.EncodeToString(raw))
		needles[name+" (hex)"] = []byte(hex.EncodeToString(raw))
	}

	files := 0
	control := []byte(token.HashToken(a.RefreshToken)) // stored, so must be found
	foundControl := false
	err = filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		files++
		foundControl = foundControl || bytes.Contains(b, control)
		for name, needle := range needles {
			if bytes.Contains(b, needle) {
				t.Errorf("%s found in %s", name, path)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if files < 3 || !foundControl {
		t.Fatalf("read %d stored files; stored token hash found: %v", files, foundControl)
	}
	for name, needle := range needles {
		if bytes.Contains(logs.bytes(), needle) {
			t.Errorf("%s found in the service log", name)
		}
	}
	// The stored events are really there (the scan read something real).
	if n := len(e.events()); n < 5 {
		t.Fatalf("only %d events stored", n)
	}
}

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

// tryCall is call for goroutines other than the test's own, which must not
// call t.Fatal: it returns what went wrong instead of stopping the test.
func (e *env) tryCall(subject string, body map[string]any) (reply, error) {
	data, err := json.Marshal(body)
	if err != nil {
		return reply{}, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	msg, err := e.nc.RequestWithContext(ctx, subject, data)
	if err != nil {
		return reply{}, fmt.Errorf("request %s: %w", subject, err)
	}
	var r reply
	if err := json.Unmarshal(msg.Data, &r); err != nil {
		return reply{}, fmt.Errorf("reply of %s is not JSON: %w: %q", subject, err, msg.Data)
	}
	r.Status = msg.Header.Get(micro.ErrorCodeHeader)
	r.Raw = msg.Data
	if (r.Error != "") != (r.Status != "") {
		return r, fmt.Errorf("error body %q and header %q disagree", r.Error, r.Status)
	}
	return r, nil
}

// tryIssue is issue for goroutines other than the test's (see tryCall).
func (e *env) tryIssue(subject string) (reply, error) {
	return e.tryCall("tokens.issue", map[string]any{
		"client_id": testClientID, "client_secret": testSecret, "subject": subject,
	})
}

// tryRefresh is refresh for goroutines other than the test's (see tryCall).
func (e *env) tryRefresh(token string) (reply, error) {
	return e.tryCall("tokens.refresh", map[string]any{
		"client_id": testClientID, "client_secret": testSecret, "refresh_token": token,
	})
}
