package worker_test

import (
	"crypto/ed25519"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/oklog/ulid/v2"

	"github.com/tokenledger/tokenledger/internal/tltest"
	"github.com/tokenledger/tokenledger/worker"
)

// A security event two JSON parsers could read differently is invalid: a
// member twice (encoding/json v1 keeps the last), a member name in another
// letter case (v1 matches it anyway), or an unknown member.
func TestDecodeSecurityEventStrict(t *testing.T) {
	fid, other := ulid.Make().String(), ulid.Make().String()
	cases := []struct {
		name, body, reason string
	}{
		{"duplicate family_id",
			`{"id":"s1","type":"t","severity":"critical","family_id":"` + other + `","family_id":"` + fid + `"}`,
			`duplicate field "family_id"`},
		{"duplicate id",
			`{"id":"s2","type":"t","severity":"critical","subject":"u","id":"s3"}`,
			`duplicate field "id"`},
		{"wrong-case Subject",
			`{"id":"s4","type":"t","severity":"critical","Subject":"victim"}`,
			`unknown field "Subject"`},
		{"wrong-case SEVERITY beside severity",
			`{"id":"s5","type":"t","severity":"low","SEVERITY":"critical","subject":"u"}`,
			`unknown field "SEVERITY"`},
		{"unknown member",
			`{"id":"s6","type":"t","severity":"critical","subject":"victim","scope":"all"}`,
			`unknown field "scope"`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := worker.DecodeSecurityEvent([]byte(c.body), worker.DefaultMaxEventBytes)
			if !errors.Is(err, worker.ErrInvalidEvent) || !strings.Contains(err.Error(), c.reason) {
				t.Fatalf("error %v, want ErrInvalidEvent with %q", err, c.reason)
			}
		})
	}
}

// The same events sent to a running worker are set aside as invalid with
// the reason, and the ledger gets nothing: neither a revocation of the
// family a lax parser would have picked nor a handled record.
func TestWorkerSetsAsideAmbiguousEvents(t *testing.T) {
	e := newEnv(t, "")
	l := e.StartInstance(tltest.Options{}).Ledger()
	victim := issueDirect(t, l, "web", "victim")
	decoy := issueDirect(t, l, "web", "decoy")
	w := e.startWorker(workerOptions{})
	cases := []struct {
		name, body, reason string
	}{
		{"duplicate family_id",
			`{"id":"amb-1","type":"t","severity":"critical","family_id":"` + decoy + `","family_id":"` + victim + `"}`,
			`duplicate field "family_id"`},
		{"wrong-case Subject",
			`{"id":"amb-2","type":"t","severity":"critical","Subject":"victim"}`,
			`unknown field "Subject"`},
		{"unknown member",
			`{"id":"amb-3","type":"t","severity":"critical","subject":"victim","scope":"all"}`,
			`unknown field "scope"`},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			before := e.LastSeq()
			e.publishSecurity("t", c.body, "")
			pollUntil(t, "the dead letter", func() bool { return w.Stats().DeadLettered == uint64(i+1) })
			e.securitySettled()
			var found bool
			for _, dl := range e.deadLetters() {
				if string(dl.Data) != c.body {
					continue
				}
				found = true
				if dl.Subject != worker.DefaultDeadLetterPrefix+".invalid" {
					t.Errorf("dead letter on %s, want %s.invalid", dl.Subject, worker.DefaultDeadLetterPrefix)
				}
				if r := dl.Header.Get(worker.HeaderDeadLetterReason); !strings.Contains(r, c.reason) {
					t.Errorf("reason %q, want it to contain %q", r, c.reason)
				}
			}
			if !found {
				t.Fatal("not dead-lettered")
			}
			if got := e.LastSeq(); got != before {
				t.Fatalf("the ledger moved from %d to %d", before, got)
			}
		})
	}
	wantUntouched(t, e.familyState(victim))
	wantUntouched(t, e.familyState(decoy))
	if s := w.Stats(); s.Handled != 0 || s.Retried != 0 {
		t.Fatalf("stats %+v", s)
	}
}

// signRawSET signs a SET whose header and claims are given as JSON text,
// so a test can write what no encoder would (a member twice).
func signRawSET(t testing.TB, key ed25519.PrivateKey, header, claims string) string {
	t.Helper()
	enc := base64.RawURLEncoding
	signing := enc.EncodeToString([]byte(header)) + "." + enc.EncodeToString([]byte(claims))
	sig, err := jwt.SigningMethodEdDSA.Sign(signing, key)
	if err != nil {
		t.Fatal(err)
	}
	return signing + "." + enc.EncodeToString(sig)
}

// A signed SET is held to the same rule: a member twice at any depth, or a
// known member in another letter case, makes it invalid even with a good
// signature. Unknown members stay allowed (the profiles are extensible).
func TestSETStrict(t *testing.T) {
	priv, pub := transmitterKey(t, "k1")
	now := time.Now()
	v, err := worker.NewSETVerifier([]worker.Transmitter{{Issuer: testSETIssuer, Audience: testSETAudience, Keys: []worker.TransmitterKey{pub}}}, func() time.Time { return now })
	if err != nil {
		t.Fatal(err)
	}
	const header = `{"alg":"EdDSA","typ":"secevent+jwt","kid":"k1"}`
	claims := func(extra, event string) string {
		return fmt.Sprintf(`{"iss":%q,"aud":%q,"jti":"j1","iat":%d%s,"events":{%q:%s}}`,
			testSETIssuer, testSETAudience, now.Unix(), extra, worker.RISCPrefix+"sessions-revoked", event)
	}
	const good = `{"subject":{"format":"opaque","id":"u"}}`
	cases := []struct {
		name, header, claims, wantErr string
	}{
		{"valid", header, claims("", good), ""},
		{"unknown members allowed", header, claims(`,"txn":"t1","x-vendor":1`, `{"subject":{"format":"opaque","id":"u"},"initiating_entity":"admin"}`), ""},
		{"duplicate alg in header", `{"alg":"EdDSA","alg":"none","typ":"secevent+jwt","kid":"k1"}`, claims("", good), `header: duplicate field "alg"`},
		{"wrong-case Kid in header", `{"alg":"EdDSA","typ":"secevent+jwt","Kid":"k2"}`, claims("", good), `header: field "Kid" differs from "kid"`},
		{"duplicate jti", header, claims(`,"jti":"j2"`, good), `claims: duplicate field "jti"`},
		{"wrong-case ISS", header, claims(`,"ISS":"https://evil.example"`, good), `claims: field "ISS" differs from "iss"`},
		{"duplicate subject in the event", header, claims("", `{"subject":{"format":"opaque","id":"u"},"subject":{"format":"opaque","id":"v"}}`), `duplicate field "subject"`},
		{"duplicate id in the subject", header, claims("", `{"subject":{"format":"opaque","id":"u","id":"v"}}`), `duplicate field "id"`},
		{"wrong-case Subject in the event", header, claims("", `{"subject":{"format":"opaque","id":"u"},"Subject":{"format":"opaque","id":"v"}}`), `field "Subject" differs from "subject"`},
		{"wrong-case ID in the subject", header, claims("", `{"subject":{"format":"opaque","ID":"v"}}`), `field "ID" differs from "id"`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ev, err := v.Decode(signRawSET(t, priv, c.header, c.claims))
			if c.wantErr == "" {
				if err != nil || ev.Subject != "u" {
					t.Fatalf("got %+v, %v; want subject u", ev, err)
				}
				return
			}
			if !errors.Is(err, worker.ErrInvalidEvent) || !strings.Contains(err.Error(), c.wantErr) {
				t.Fatalf("error %v, want ErrInvalidEvent with %q", err, c.wantErr)
			}
		})
	}
}
