package verifier_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/tokenledger/tokenledger/internal/natstest"
	"github.com/tokenledger/tokenledger/internal/tltest"
	"github.com/tokenledger/tokenledger/verifier"
)

// startClockVerifier is startVerifier for a tltest service: its issuer,
// and the test's clock.
func startClockVerifier(t *testing.T, e *tltest.Env, nc *nats.Conn) *verifier.Verifier {
	t.Helper()
	return startVerifierWith(t, nc, verifier.Config{Issuer: "tokenledger", Audience: "api", MaxStale: -1, Now: e.Clock.Now})
}

// revokeKeyOf revokes the key that signed the access token.
func revokeKeyOf(t *testing.T, e *tltest.Env, access string) {
	t.Helper()
	var header struct {
		KID string `json:"kid"`
	}
	parts := splitJWS(access)
	if err := json.Unmarshal(parts, &header); err != nil || header.KID == "" {
		t.Fatalf("token header: %v", err)
	}
	if r := e.Call("tokens.admin.keys.revoke", map[string]any{"kid": header.KID}); r.Error != "" {
		t.Fatalf("revoke key: %s", r.Raw)
	}
}

// A revoked signing key: the verifier denies every token it signed within
// a second, also when the revocation happened while it was cut off from
// NATS, and drops the key (a new key's tokens verify); a verifier started
// afterwards denies them before it answers.
func TestVerifierDeniesTokensOfARevokedKey(t *testing.T) {
	e := tltest.New(t, "")
	e.StartInstance(tltest.Options{})
	proxy := natstest.NewProxy(t, e.Srv.Addr().String())
	nc, err := nats.Connect(proxy.URL(), nats.MaxReconnects(-1), nats.ReconnectWait(20*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)

	a, b := e.Issue("alice"), e.Issue("bob")
	v := startClockVerifier(t, e, nc)
	for _, r := range []tltest.Reply{a, b} {
		if _, err := v.Verify(context.Background(), r.AccessToken); err != nil {
			t.Fatalf("fresh token: %v", err)
		}
	}
	revokeKeyOf(t, e, a.AccessToken)
	if took := waitFor(t, v, a.AccessToken, verifier.ErrRevoked, time.Second); took > time.Second {
		t.Fatalf("denied after %s", took)
	}
	waitFor(t, v, b.AccessToken, verifier.ErrRevoked, time.Second)

	c := e.Issue("carol") // signed by the key that took over
	waitFor(t, v, c.AccessToken, nil, 2*time.Second)

	proxy.Stop()
	deadline := time.Now().Add(5 * time.Second)
	for nc.IsConnected() {
		if time.Now().After(deadline) {
			t.Fatal("verifier connection did not notice the disconnect")
		}
		time.Sleep(5 * time.Millisecond)
	}
	revokeKeyOf(t, e, c.AccessToken) // while the verifier cannot hear it
	proxy.Start()
	waitFor(t, v, c.AccessToken, verifier.ErrRevoked, 10*time.Second)

	d := e.Issue("dave")
	waitFor(t, v, d.AccessToken, nil, 2*time.Second)

	fresh, _ := natstest.Connect(t, e.Srv)
	v2 := startClockVerifier(t, e, fresh)
	for _, tok := range []string{a.AccessToken, b.AccessToken, c.AccessToken} {
		if _, err := v2.Verify(context.Background(), tok); !errors.Is(err, verifier.ErrRevoked) {
			t.Fatalf("a verifier started afterwards accepts a token of a revoked key: %v", err)
		}
	}
	if _, err := v2.Verify(context.Background(), d.AccessToken); err != nil {
		t.Fatalf("a verifier started afterwards refuses a good token: %v", err)
	}
}

// splitJWS decodes the header of a compact JWS.
func splitJWS(raw string) []byte {
	for i := range len(raw) {
		if raw[i] == '.' {
			b, _ := base64.RawURLEncoding.DecodeString(raw[:i])
			return b
		}
	}
	return nil
}
