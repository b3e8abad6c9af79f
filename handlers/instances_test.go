package handlers_test

import (
	"bytes"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/tokenledger/tokenledger/api"
	"github.com/tokenledger/tokenledger/internal/tltest"
	"github.com/tokenledger/tokenledger/ledger"
	"github.com/tokenledger/tokenledger/ledger/token"
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
		e.StartInstance(tltest.Options{Grace: 10 * time.Second, NoView: !cached})
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
	shared := e.Issue("shared")
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
	events := e.Events()
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
	stats := e.statsByInstance(2)
	for id, eps := range stats {
		n := 0
		for _, ep := range eps {
			n += ep.NumRequests
		}
		if n == 0 {
			t.Fatalf("instance %s served nothing", id)
		}
	}
	if len(stats) != 2 {
		t.Fatalf("%d instances answered, want 2", len(stats))
	}
}

// A restart keeps every family and the signing key working.
func TestRestartKeepsFamiliesAndKey(t *testing.T) {
	dir := t.TempDir()
	e1 := newEnv(t, dir)
	e1.StartInstance(tltest.Options{Grace: 10 * time.Second, Wall: true})
	a := e1.Issue("alice")
	b := e1.Refresh(a.RefreshToken)
	tltest.WantOK(t, b)
	jwks1 := e1.Call("tokens.jwks", "").Raw
	e1.Srv.Shutdown()
	e1.Srv.WaitForShutdown()

	e2 := newEnv(t, dir)
	e2.StartInstance(tltest.Options{Grace: 10 * time.Second, Wall: true})
	if jwks2 := e2.Call("tokens.jwks", "").Raw; !bytes.Equal(jwks1, jwks2) {
		t.Fatalf("signing key changed across restart:\n%s\n%s", jwks1, jwks2)
	}
	c := e2.Refresh(b.RefreshToken)
	tltest.WantOK(t, c)
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
	tltest.WantError(t, e2.Refresh(a.RefreshToken), api.CodeInvalidGrant, "400")
}

// After a run, every stored byte of the ledger (all JetStream files: the
// stream and the KV buckets) and the service log hold no raw refresh token,
// client secret or private key.
func TestNoSecretAtRest(t *testing.T) {
	dir := t.TempDir()
	logs := &syncWriter{w: &bytes.Buffer{}}
	e := newEnv(t, dir)
	e.StartInstance(tltest.Options{Grace: 10 * time.Second, Log: logs})

	var secrets []string
	add := func(r tltest.Reply) tltest.Reply {
		if r.RefreshToken != "" {
			secrets = append(secrets, r.RefreshToken)
		}
		return r
	}
	a := add(e.Issue("alice"))
	b := add(e.Refresh(a.RefreshToken))
	add(e.Refresh(a.RefreshToken)) // grace retry
	c := add(e.Refresh(b.RefreshToken))
	e.Clock.Advance(time.Minute)
	add(e.Refresh(a.RefreshToken)) // reuse
	add(e.Refresh(c.RefreshToken))
	add(e.Call("tokens.issue", `{"client_id":"web","client_secret":"`+tltest.Secret+`","subject":"x","bogus":1}`))
	add(e.Call("tokens.refresh", `{"client_id":"web","client_secret":"wrong-`+tltest.Secret+`","refresh_token":"`+c.RefreshToken+`"}`))

	kek, _ := token.ParseKEK(tltest.KEK)
	key, _ := e.Instances[0].Keys().Current()
	der, err := x509.MarshalPKCS8PrivateKey(key.Private)
	if err != nil {
		t.Fatal(err)
	}
	seed := der[len(der)-32:] // the Ed25519 seed ends the PKCS#8 encoding

	needles := map[string][]byte{"client secret": []byte(tltest.Secret), "kek": kek[:]}
	for i, s := range secrets {
		needles["refresh token "+string(rune('0'+i))] = []byte(s)
		tok, _ := token.ParseRefreshToken(s)
		needles["refresh secret bytes"] = tok.Secret[:]
	}
	for name, raw := range map[string][]byte{"private key": der, "private seed": seed} {
		addEncodedNeedle(needles, name, raw)
	}

	control := []byte(token.HashToken(a.RefreshToken)) // stored, so must be found
	files, foundControl := scanStored(t, dir, needles, control)
	if files < 3 || !foundControl {
		t.Fatalf("read %d stored files; stored token hash found: %v", files, foundControl)
	}
	for name, needle := range needles {
		if bytes.Contains(logs.bytes(), needle) {
			t.Errorf("%s found in the service log", name)
		}
	}
	// The stored events are really there (the scan read something real).
	if n := len(e.Events()); n < 5 {
		t.Fatalf("only %d events stored", n)
	}
}
