package worker_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/oklog/ulid/v2"

	"github.com/tokenledger/tokenledger/api"
	"github.com/tokenledger/tokenledger/internal/tltest"
	"github.com/tokenledger/tokenledger/ledger"
	"github.com/tokenledger/tokenledger/ledger/jsstore"
	"github.com/tokenledger/tokenledger/ledger/token"
	"github.com/tokenledger/tokenledger/worker"
)

func TestWorkerActsOnEventPublishedWhileNoWorkerRuns(t *testing.T) {
	e := newEnv(t, "")
	e.StartInstance(tltest.Options{})
	alice := e.Issue("alice")
	tltest.WantOK(t, alice)
	e.createSecurityStreams()
	before := e.LastSeq()
	e.publishSecurity("credential_compromised", worker.SecurityEvent{
		ID: "evt-offline", Type: "credential_compromised", Severity: worker.SeverityCritical, Subject: "alice",
	}, "")
	if got := e.LastSeq(); got != before {
		t.Fatalf("ledger moved from %d to %d with no worker", before, got)
	}

	e.startWorker(workerOptions{})
	rec := e.waitHandled("evt-offline")
	if rec.Action != string(worker.ActionRevokeFamilies) || !slices.Equal(rec.Families, []string{alice.FamilyID}) {
		t.Fatalf("record %+v", rec)
	}
	wantRevokedBy(t, e.familyState(alice.FamilyID), "evt-offline")
	tltest.WantError(t, e.Refresh(alice.RefreshToken), api.CodeInvalidGrant, "400")
}

func TestWorkerCriticalSubjectRevokesExactlyItsFamilies(t *testing.T) {
	e := newEnv(t, "")
	l := e.StartInstance(tltest.Options{}).Ledger()
	a1, a2, bob := e.Issue("alice"), e.Issue("alice"), e.Issue("bob")
	for _, r := range []tltest.Reply{a1, a2, bob} {
		tltest.WantOK(t, r)
	}
	aliceOther := issueDirect(t, l, "billing", "alice")
	e.startWorker(workerOptions{})

	e.publishSecurity("credential_compromised", worker.SecurityEvent{
		ID: "evt-crit-alice", Type: "credential_compromised", Severity: worker.SeverityCritical,
		Subject: "alice", Reason: "password found in a paste",
	}, "")
	rec := e.waitHandled("evt-crit-alice")
	want := []string{a1.FamilyID, a2.FamilyID, aliceOther}
	slices.Sort(want)
	if !slices.Equal(rec.Families, want) || rec.Action != "revoke_families" || rec.Severity != "critical" || rec.EventType != "credential_compromised" {
		t.Fatalf("record %+v, want families %v", rec, want)
	}
	for _, fid := range want {
		st := e.familyState(fid)
		wantRevokedBy(t, st, "evt-crit-alice")
		if st.Revoked.Cause.Reason != "password found in a paste" {
			t.Fatalf("cause reason %q", st.Revoked.Cause.Reason)
		}
	}
	wantUntouched(t, e.familyState(bob.FamilyID))
	for _, r := range []tltest.Reply{a1, a2} {
		tltest.WantError(t, e.Refresh(r.RefreshToken), api.CodeInvalidGrant, "400")
	}
	tltest.WantOK(t, e.Refresh(bob.RefreshToken))

	// The cause is in the ledger: one revocation per family, each naming
	// the event, and the record of the handling naming the selector.
	revoked := 0
	for _, ev := range e.Events() {
		if ev.Type == ledger.TypeFamilyRevoked {
			if ev.Cause.ID != "evt-crit-alice" || !slices.Contains(want, ev.FamilyID) {
				t.Fatalf("unexpected revocation %+v", ev)
			}
			revoked++
		}
	}
	if revoked != len(want) {
		t.Fatalf("%d revocations, want %d", revoked, len(want))
	}
	recs := e.handledRecords()["evt-crit-alice"]
	if len(recs) != 1 {
		t.Fatalf("records %+v", recs)
	}
	if d := recs[0].Data.(ledger.SecurityHandled); d.Selector == nil || d.Selector.Subject != "alice" || len(d.Families) != len(want) {
		t.Fatalf("record %+v", d)
	}
}

func TestWorkerSelectors(t *testing.T) {
	e := newEnv(t, "")
	l := e.StartInstance(tltest.Options{}).Ledger()
	e.startWorker(workerOptions{})

	t.Run("client_id", func(t *testing.T) {
		b1, b2 := issueDirect(t, l, "billing", "u1"), issueDirect(t, l, "billing", "u2")
		other := issueDirect(t, l, "reports", "u1")
		e.publishSecurity("client_compromised", worker.SecurityEvent{ID: "evt-client", Type: "client_compromised", Severity: worker.SeverityHigh, ClientID: "billing"}, "")
		rec := e.waitHandled("evt-client")
		want := []string{b1, b2}
		slices.Sort(want)
		if !slices.Equal(rec.Families, want) {
			t.Fatalf("selected %v, want %v", rec.Families, want)
		}
		wantRevokedBy(t, e.familyState(b1), "evt-client")
		wantRevokedBy(t, e.familyState(b2), "evt-client")
		wantUntouched(t, e.familyState(other))
	})
	t.Run("family_id", func(t *testing.T) {
		f1, f2 := issueDirect(t, l, "mobile", "u3"), issueDirect(t, l, "mobile", "u3")
		e.publishSecurity("device_lost", worker.SecurityEvent{ID: "evt-family", Type: "device_lost", Severity: worker.SeverityCritical, FamilyID: f1}, "")
		rec := e.waitHandled("evt-family")
		if !slices.Equal(rec.Families, []string{f1}) {
			t.Fatalf("selected %v", rec.Families)
		}
		wantRevokedBy(t, e.familyState(f1), "evt-family")
		wantUntouched(t, e.familyState(f2))
	})
	t.Run("subject_and_client", func(t *testing.T) {
		hit, otherClient := issueDirect(t, l, "mobile", "u4"), issueDirect(t, l, "desktop", "u4")
		e.publishSecurity("session_revoked", worker.SecurityEvent{ID: "evt-and", Type: "session_revoked", Severity: worker.SeverityHigh, Subject: "u4", ClientID: "mobile"}, "")
		rec := e.waitHandled("evt-and")
		if !slices.Equal(rec.Families, []string{hit}) {
			t.Fatalf("selected %v", rec.Families)
		}
		wantRevokedBy(t, e.familyState(hit), "evt-and")
		wantUntouched(t, e.familyState(otherClient))
	})
	t.Run("family_of_another_subject", func(t *testing.T) {
		f := issueDirect(t, l, "mobile", "u7")
		e.publishSecurity("device_lost", worker.SecurityEvent{ID: "evt-mismatch", Type: "device_lost", Severity: worker.SeverityCritical, FamilyID: f, Subject: "someone-else"}, "")
		if rec := e.waitHandled("evt-mismatch"); len(rec.Families) != 0 {
			t.Fatalf("selected %v", rec.Families)
		}
		wantUntouched(t, e.familyState(f))
	})
	t.Run("medium_cuts_access_only", func(t *testing.T) {
		u := e.Issue("u5")
		tltest.WantOK(t, u)
		e.Clock.Advance(time.Second)
		e.publishSecurity("token_claims_change", worker.SecurityEvent{ID: "evt-medium", Type: "token_claims_change", Severity: worker.SeverityMedium, Subject: "u5"}, "")
		rec := e.waitHandled("evt-medium")
		if rec.Action != "revoke_access" || !slices.Equal(rec.Families, []string{u.FamilyID}) {
			t.Fatalf("record %+v", rec)
		}
		st := e.familyState(u.FamilyID)
		if st.Revoked != nil || st.AccessCutoff.IsZero() {
			t.Fatalf("want access cut and family kept, got %+v", st)
		}
		e.Clock.Advance(time.Second)
		tltest.WantOK(t, e.Refresh(u.RefreshToken)) // the forced refresh works
	})
	t.Run("low_records_only", func(t *testing.T) {
		u := e.Issue("u6")
		tltest.WantOK(t, u)
		before := e.LastSeq()
		e.publishSecurity("login_anomaly", worker.SecurityEvent{ID: "evt-low", Type: "login_anomaly", Severity: worker.SeverityLow, Subject: "u6"}, "")
		rec := e.waitHandled("evt-low")
		if rec.Action != "record_only" || !slices.Equal(rec.Families, []string{u.FamilyID}) {
			t.Fatalf("record %+v", rec)
		}
		wantUntouched(t, e.familyState(u.FamilyID))
		if got := e.LastSeq(); got != before+1 {
			t.Fatalf("low event appended %d events, want only its record", got-before)
		}
	})
}

func TestWorkerDuplicateIDsActOnce(t *testing.T) {
	e := newEnv(t, "")
	l := e.StartInstance(tltest.Options{}).Ledger()
	fams := []string{issueDirect(t, l, "web", "dup"), issueDirect(t, l, "web", "dup")}
	w := e.startWorker(workerOptions{concurrency: 8})
	ev := worker.SecurityEvent{ID: "evt-dup", Type: "token_claims_change", Severity: worker.SeverityMedium, Subject: "dup"}

	// Twice with the same Nats-Msg-Id: the intake keeps one.
	e.publishSecurity("token_claims_change", ev, "evt-dup")
	e.publishSecurity("token_claims_change", ev, "evt-dup")
	e.waitHandled("evt-dup")
	e.securitySettled()

	// A family issued after the handling must not be touched by copies.
	late := issueDirect(t, l, "web", "dup")
	seq := e.LastSeq()
	e.Clock.Advance(time.Minute)
	// Three copies without a header, published at once so they race.
	for range 3 {
		e.publishSecurity("token_claims_change", ev, "")
	}
	pollUntil(t, "the copies to be seen", func() bool { return w.Stats().Duplicates == 3 })
	e.securitySettled()
	if got := e.LastSeq(); got != seq {
		t.Fatalf("duplicates appended %d events", got-seq)
	}
	if s := w.Stats(); s.Handled != 1 || s.DeadLettered != 0 {
		t.Fatalf("stats %+v", s)
	}
	cuts := 0
	for _, x := range e.Events() {
		if x.Type == ledger.TypeAccessCutoff && x.Cause.ID == "evt-dup" {
			cuts++
		}
	}
	if recs := e.handledRecords()["evt-dup"]; cuts != len(fams) || len(recs) != 1 {
		t.Fatalf("%d cuts and %d records", cuts, len(recs))
	}
	wantUntouched(t, e.familyState(late))
}

func TestWorkerRestartWithLostConsumerDoesNotActAgain(t *testing.T) {
	e := newEnv(t, "")
	l := e.StartInstance(tltest.Options{}).Ledger()
	fid := issueDirect(t, l, "web", "restart")
	w, stop := e.runWorker(workerOptions{})
	e.publishSecurity("x", worker.SecurityEvent{ID: "evt-restart", Type: "token_claims_change", Severity: worker.SeverityMedium, FamilyID: fid}, "")
	e.waitHandled("evt-restart")
	pollUntil(t, "the ack", func() bool { return w.Stats().Handled == 1 })
	e.securitySettled()
	stop()
	seq := e.LastSeq()

	// Lose the consumer's state: the event is delivered again to a new
	// worker, which must find it handled in the ledger.
	if err := e.JS.DeleteConsumer(context.Background(), worker.DefaultSecurityStream, worker.DefaultSecurityDurable); err != nil {
		t.Fatal(err)
	}
	e.Clock.Advance(time.Hour)
	w2 := e.startWorker(workerOptions{})
	pollUntil(t, "the redelivery", func() bool { return w2.Stats().Duplicates == 1 })
	if got := e.LastSeq(); got != seq || w2.Stats().Handled != 0 {
		t.Fatalf("acted again: %d new events, stats %+v", got-seq, w2.Stats())
	}
}

func TestWorkerDeadLettersInvalidEvents(t *testing.T) {
	e := newEnv(t, "")
	l := e.StartInstance(tltest.Options{}).Ledger()
	fid := issueDirect(t, l, "web", "dl")
	w := e.startWorker(workerOptions{})
	cases := []struct {
		body, reason string
	}{
		{`{"id":"x","type":"t","severity":"high","subject":`, "not valid JSON"},
		{`not json at all`, "neither a JSON event nor a Security Event Token"},
		{`{"id":"x1","type":"t","severity":"high","subject":"dl","extra":1}`, `unknown field "extra"`},
		{`{"id":"x2","type":"t","severity":"high"}`, "no selector"},
		{`{"id":"x3","type":"t","severity":"urgent","subject":"dl"}`, `unknown severity "urgent"`},
		{`{"id":"x4","type":"t","severity":"high","family_id":"not-a-ulid"}`, "family_id is not a token family id"},
		{`{"type":"t","severity":"high","subject":"dl"}`, "id is required"},
		{`{"id":"x5","type":"T T","severity":"high","subject":"dl"}`, "type must be"},
		{`{"id":"x6","type":"t","severity":"high","subject":"dl","occurred_at":"yesterday"}`, `field "occurred_at" has the wrong type or form`},
		{`{"id":"x7","type":"t","severity":"high","subject":"dl"}{}`, "data after the JSON object"},
		{`{"id":"x8","type":"t","severity":"high","subject":"` + strings.Repeat("a", worker.DefaultMaxEventBytes) + `"}`, "larger than"},
		{`eyJhbGciOiJub25lIn0.eyJpc3MiOiJ4In0.`, "SET: no transmitters are configured"},
	}
	for _, c := range cases {
		e.publishSecurity("bad", c.body, "")
	}
	e.publishSecurity("ok", worker.SecurityEvent{ID: "evt-after-bad", Type: "t", Severity: worker.SeverityCritical, FamilyID: fid}, "")
	e.waitHandled("evt-after-bad")
	wantRevokedBy(t, e.familyState(fid), "evt-after-bad")
	pollUntil(t, "dead letters", func() bool { return w.Stats().DeadLettered == uint64(len(cases)) })
	e.securitySettled() // terminated, not retried

	dls := e.deadLetters()
	if len(dls) != len(cases) {
		t.Fatalf("%d dead letters, want %d", len(dls), len(cases))
	}
	byBody := map[string]*jetstream.RawStreamMsg{}
	for _, dl := range dls {
		byBody[string(dl.Data)] = dl
	}
	for i, c := range cases {
		dl, ok := byBody[c.body]
		if !ok {
			t.Errorf("case %d not dead-lettered", i)
			continue
		}
		if reason := dl.Header.Get(worker.HeaderDeadLetterReason); !strings.Contains(reason, c.reason) {
			t.Errorf("dead letter %d: reason %q, want it to contain %q", i, reason, c.reason)
		}
		if dl.Header.Get(worker.HeaderDeadLetterSubject) != worker.DefaultSecurityPrefix+".bad" || dl.Header.Get(worker.HeaderDeadLetterSequence) == "" {
			t.Errorf("dead letter %d headers %v", i, dl.Header)
		}
	}
	if n := len(e.handledRecords()); n != 1 {
		t.Fatalf("%d handled records, want 1", n)
	}
}

func TestTwoWorkersHandleEachEventOnce(t *testing.T) {
	const events, copies = 1000, 200
	e := newEnv(t, "")
	l := e.StartInstance(tltest.Options{Wall: true}).Ledger()
	fams := make([]string, 100)
	for i := range fams {
		fams[i] = issueDirect(t, l, "web", fmt.Sprintf("s%d", i))
	}
	e.createSecurityStreams()
	// Published before the workers start so both pull from a full queue;
	// every fifth event is published again without a Nats-Msg-Id.
	for i := range events {
		ev := worker.SecurityEvent{ID: fmt.Sprintf("evt-%04d", i), Type: "token_claims_change", Severity: worker.SeverityMedium, Subject: fmt.Sprintf("s%d", i%len(fams))}
		e.publishSecurity("token_claims_change", ev, ev.ID)
		if i%(events/copies) == 0 {
			e.publishSecurity("token_claims_change", ev, "")
		}
	}
	w1 := e.startWorker(workerOptions{wall: true, concurrency: 8})
	w2 := e.startWorker(workerOptions{wall: true, concurrency: 8})
	total := func() worker.Stats {
		a, b := w1.Stats(), w2.Stats()
		return worker.Stats{Handled: a.Handled + b.Handled, Duplicates: a.Duplicates + b.Duplicates,
			DeadLettered: a.DeadLettered + b.DeadLettered, Retried: a.Retried + b.Retried}
	}
	pollUntil(t, "all events", func() bool { s := total(); return s.Handled+s.Duplicates >= events+copies })
	e.securitySettled()
	if s := total(); s.Handled != events || s.Duplicates != copies || s.DeadLettered != 0 {
		t.Fatalf("stats %+v, want %d handled and %d duplicates", s, events, copies)
	}
	t.Logf("worker 1 %+v, worker 2 %+v", w1.Stats(), w2.Stats())
	records := e.handledRecords()
	cuts := map[string]int{}
	for _, ev := range e.Events() {
		if ev.Type == ledger.TypeAccessCutoff {
			cuts[ev.Cause.ID]++
		}
	}
	if len(records) != events {
		t.Fatalf("%d events recorded, want %d", len(records), events)
	}
	for id, recs := range records {
		if len(recs) != 1 {
			t.Fatalf("event %s recorded %d times", id, len(recs))
		}
		if c := cuts[id]; c > 1 {
			t.Fatalf("event %s cut access %d times", id, c)
		}
	}
}

// transmitterKey makes an Ed25519 transmitter key.
func transmitterKey(t testing.TB, kid string) (ed25519.PrivateKey, worker.TransmitterKey) {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return priv, worker.TransmitterKey{KID: kid, Public: pub}
}

const (
	testSETIssuer   = "https://idp.example.com"
	testSETAudience = "https://tokenledger.example.com"
)

// signSET signs a SET carrying one event.
func signSET(t testing.TB, key ed25519.PrivateKey, kid, iss, aud, jti, eventType string, body map[string]any) string {
	t.Helper()
	tok := jwt.NewWithClaims(jwt.SigningMethodEdDSA, jwt.MapClaims{
		"iss": iss, "aud": aud, "jti": jti, "iat": time.Now().Unix(),
		"events": map[string]any{eventType: body},
	})
	tok.Header["typ"] = worker.SETType
	if kid != "" {
		tok.Header["kid"] = kid
	}
	s, err := tok.SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestWorkerSecurityEventTokens(t *testing.T) {
	e := newEnv(t, "")
	l := e.StartInstance(tltest.Options{Wall: true}).Ledger()
	priv, pub := transmitterKey(t, "k1")
	otherPriv, _ := transmitterKey(t, "k1")
	w := e.startWorker(workerOptions{wall: true, transmitters: []worker.Transmitter{{Issuer: testSETIssuer, Audience: testSETAudience, Keys: []worker.TransmitterKey{pub}}}})
	viaSET := []string{issueDirect(t, l, "web", "set-user"), issueDirect(t, l, "web", "set-user")}
	viaJSON := []string{issueDirect(t, l, "web", "json-user"), issueDirect(t, l, "web", "json-user")}
	untouched := issueDirect(t, l, "web", "carol")

	credChange := worker.CAEPPrefix + "credential-change"
	set := signSET(t, priv, "k1", testSETIssuer, testSETAudience, "jti-1", credChange, map[string]any{
		"subject":         map[string]any{"format": "iss_sub", "iss": "https://tokenledger", "sub": "set-user"},
		"change_type":     "update",
		"credential_type": "password",
		"event_timestamp": time.Now().Unix(),
		"reason_admin":    map[string]string{"en": "password reset by admin"},
	})
	e.publishSecurity("set", set, "")
	e.publishSecurity("credential_change", worker.SecurityEvent{ID: "evt-json-twin", Type: "credential_change", Severity: worker.SeverityHigh, Subject: "json-user"}, "")
	setID := testSETIssuer + "#jti-1"
	fromSET, fromJSON := e.waitHandled(setID), e.waitHandled("evt-json-twin")
	if fromSET.EventType != fromJSON.EventType || fromSET.Severity != fromJSON.Severity || fromSET.Action != fromJSON.Action || len(fromSET.Families) != len(fromJSON.Families) {
		t.Fatalf("SET handled as %+v, its JSON twin as %+v", fromSET, fromJSON)
	}
	for _, fid := range viaSET {
		st := e.familyState(fid)
		wantRevokedBy(t, st, setID)
		if st.Revoked.Cause.Reason != "password reset by admin" {
			t.Fatalf("cause %+v", st.Revoked.Cause)
		}
	}
	for _, fid := range viaJSON {
		wantRevokedBy(t, e.familyState(fid), "evt-json-twin")
	}

	carol := map[string]any{"subject": map[string]any{"format": "opaque", "id": "carol"}}
	bad := []struct{ name, token, reason string }{
		{"bad signature", signSET(t, otherPriv, "k1", testSETIssuer, testSETAudience, "jti-2", credChange, carol), "signature is invalid"},
		{"wrong issuer", signSET(t, priv, "k1", "https://evil.example", testSETAudience, "jti-3", credChange, carol), "unknown issuer"},
		{"wrong audience", signSET(t, priv, "k1", testSETIssuer, "https://other.example", "jti-4", credChange, carol), "audience"},
		{"unknown kid", signSET(t, priv, "k2", testSETIssuer, testSETAudience, "jti-5", credChange, carol), "unknown kid"},
		{"unknown event", signSET(t, priv, "k1", testSETIssuer, testSETAudience, "jti-6", "https://example.com/event", carol), "unsupported event type"},
		{"tampered", tamper(signSET(t, priv, "k1", testSETIssuer, testSETAudience, "jti-7", credChange, map[string]any{"subject": map[string]any{"format": "opaque", "id": "x"}})), "signature is invalid"},
	}
	for _, b := range bad {
		e.publishSecurity("set", b.token, "")
	}
	pollUntil(t, "bad SETs dead-lettered", func() bool { return w.Stats().DeadLettered == uint64(len(bad)) })
	reasons := map[string]string{}
	for _, dl := range e.deadLetters() {
		reasons[string(dl.Data)] = dl.Header.Get(worker.HeaderDeadLetterReason)
	}
	for _, b := range bad {
		if r := reasons[b.token]; !strings.Contains(r, b.reason) {
			t.Errorf("%s: reason %q, want %q", b.name, r, b.reason)
		}
	}
	wantUntouched(t, e.familyState(untouched))
}

// tamper swaps the payload of a signed token for one naming carol.
func tamper(token string) string {
	parts := strings.Split(token, ".")
	var claims map[string]any
	raw, _ := jwt.NewParser().DecodeSegment(parts[1])
	_ = json.Unmarshal(raw, &claims)
	for _, ev := range claims["events"].(map[string]any) {
		ev.(map[string]any)["subject"] = map[string]any{"format": "opaque", "id": "carol"}
	}
	b, _ := json.Marshal(claims)
	parts[1] = base64.RawURLEncoding.EncodeToString(b)
	return strings.Join(parts, ".")
}

func TestSETMapping(t *testing.T) {
	priv, pub := transmitterKey(t, "")
	now := time.Now()
	v, err := worker.NewSETVerifier([]worker.Transmitter{{Issuer: testSETIssuer, Audience: testSETAudience, Keys: []worker.TransmitterKey{pub}}}, func() time.Time { return now })
	if err != nil {
		t.Fatal(err)
	}
	fid := ulid.Make().String()
	opaque := func(id string) map[string]any { return map[string]any{"format": "opaque", "id": id} }
	cases := []struct {
		uri     string
		body    map[string]any
		want    worker.SecurityEvent
		wantErr string
	}{
		{worker.CAEPPrefix + "session-revoked", map[string]any{"subject": map[string]any{"format": "complex",
			"user": map[string]any{"format": "email", "email": "a@example.com"}, "session": opaque(fid)}},
			worker.SecurityEvent{Type: "session_revoked", Severity: worker.SeverityHigh, Subject: "a@example.com", FamilyID: fid}, ""},
		{worker.CAEPPrefix + "token-claims-change", map[string]any{"subject": map[string]any{"format": "complex", "application": opaque("billing")}},
			worker.SecurityEvent{Type: "token_claims_change", Severity: worker.SeverityMedium, ClientID: "billing"}, ""},
		{worker.CAEPPrefix + "credential-change", map[string]any{"subject": opaque("u"), "change_type": "create"},
			worker.SecurityEvent{Type: "credential_change", Severity: worker.SeverityLow, Subject: "u"}, ""},
		{worker.RISCPrefix + "credential-compromise", map[string]any{"subject": map[string]any{"format": "iss_sub", "iss": "x", "sub": "u"}},
			worker.SecurityEvent{Type: "credential_compromised", Severity: worker.SeverityCritical, Subject: "u"}, ""},
		{worker.RISCPrefix + "account-disabled", map[string]any{"subject": map[string]any{"format": "aliases", "identifiers": []any{
			map[string]any{"format": "did", "url": "did:x"}, map[string]any{"format": "phone_number", "phone_number": "+1555"}}}, "reason": "hijacking"},
			worker.SecurityEvent{Type: "account_disabled", Severity: worker.SeverityHigh, Subject: "+1555", Reason: "hijacking"}, ""},
		{worker.RISCPrefix + "account-purged", map[string]any{"subject": opaque("u")},
			worker.SecurityEvent{Type: "account_purged", Severity: worker.SeverityCritical, Subject: "u"}, ""},
		{worker.RISCPrefix + "sessions-revoked", map[string]any{"subject": opaque("u")},
			worker.SecurityEvent{Type: "sessions_revoked", Severity: worker.SeverityHigh, Subject: "u"}, ""},
		{worker.RISCPrefix + "sessions-revoked", map[string]any{"subject": map[string]any{"format": "complex", "session": opaque("not-a-family")}},
			worker.SecurityEvent{}, "family_id is not a token family id"},
		{worker.RISCPrefix + "sessions-revoked", map[string]any{}, worker.SecurityEvent{}, "no selector"},
		{worker.RISCPrefix + "sessions-revoked", map[string]any{"subject": map[string]any{"format": "did", "url": "did:x"}}, worker.SecurityEvent{}, "unsupported format"},
	}
	for i, c := range cases {
		jti := fmt.Sprint("j", i)
		got, err := v.Decode(signSET(t, priv, "", testSETIssuer, testSETAudience, jti, c.uri, c.body))
		if c.wantErr != "" {
			if !errors.Is(err, worker.ErrInvalidEvent) || !strings.Contains(err.Error(), c.wantErr) {
				t.Errorf("%d: error %v, want %q", i, err, c.wantErr)
			}
			continue
		}
		if err != nil {
			t.Errorf("%d: %v", i, err)
			continue
		}
		c.want.ID = testSETIssuer + "#" + jti
		got.OccurredAt = time.Time{}
		if c.want.Reason == "" {
			got.Reason = ""
		}
		if got != c.want {
			t.Errorf("%d: got %+v, want %+v", i, got, c.want)
		}
	}
	// Typ and alg are pinned: a plain JWT and an HMAC token are refused.
	plain := jwt.NewWithClaims(jwt.SigningMethodEdDSA, jwt.MapClaims{"iss": testSETIssuer, "aud": testSETAudience, "jti": "p", "iat": now.Unix(),
		"events": map[string]any{worker.RISCPrefix + "sessions-revoked": map[string]any{"subject": opaque("u")}}})
	s, _ := plain.SignedString(priv)
	if _, err := v.Decode(s); err == nil || !strings.Contains(err.Error(), "typ") {
		t.Errorf("plain JWT: %v", err)
	}
	hmac := jwt.NewWithClaims(jwt.SigningMethodHS256, plain.Claims)
	hmac.Header["typ"] = worker.SETType
	s, _ = hmac.SignedString([]byte("secret"))
	if _, err := v.Decode(s); err == nil || !strings.Contains(err.Error(), "signing method") {
		t.Errorf("HMAC SET: %v", err)
	}
}

func TestParseTransmitterKeys(t *testing.T) {
	k, err := token.GenerateKey(token.AlgES256, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	jwks, _ := json.Marshal(map[string]any{"keys": []token.JWK{k.PublicJWK()}})
	keys, err := worker.ParseTransmitterKeys(jwks)
	if err != nil || len(keys) != 1 || keys[0].KID != k.KID {
		t.Fatalf("JWKS: %v %+v", err, keys)
	}
	for _, bad := range []string{`{"keys":[]}`, `not a key`, "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"} {
		if _, err := worker.ParseTransmitterKeys([]byte(bad)); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestPolicy(t *testing.T) {
	p, err := worker.ParsePolicy([]byte(`{"default":{"low":"record_only","medium":"revoke_families"},
		"types":{"token_claims_change":{"critical":"revoke_access"}}}`))
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		typ  string
		sev  worker.Severity
		want worker.Action
	}{
		{"x", worker.SeverityMedium, worker.ActionRevokeFamilies},                   // the file's default
		{"x", worker.SeverityHigh, worker.ActionRevokeFamilies},                     // built in
		{"x", worker.SeverityLow, worker.ActionRecordOnly},                          // the file's default
		{"token_claims_change", worker.SeverityCritical, worker.ActionRevokeAccess}, // per type
		{"token_claims_change", worker.SeverityMedium, worker.ActionRevokeFamilies}, // falls back
	}
	for _, c := range cases {
		if got, err := p.Action(c.typ, c.sev); err != nil || got != c.want {
			t.Errorf("%s/%s: %s %v, want %s", c.typ, c.sev, got, err, c.want)
		}
	}
	d := worker.DefaultPolicy()
	for sev, want := range map[worker.Severity]worker.Action{worker.SeverityCritical: worker.ActionRevokeFamilies, worker.SeverityHigh: worker.ActionRevokeFamilies, worker.SeverityMedium: worker.ActionRevokeAccess, worker.SeverityLow: worker.ActionRecordOnly} {
		if got, _ := d.Action("anything", sev); got != want {
			t.Errorf("default %s: %s, want %s", sev, got, want)
		}
	}
	if _, err := d.Action("x", "urgent"); !errors.Is(err, worker.ErrUnknownSeverity) {
		t.Errorf("unknown severity: %v", err)
	}
	for _, bad := range []string{
		`{"default":{"urgent":"record_only"}}`,
		`{"default":{"low":"delete_everything"}}`,
		`{"types":{"Bad Type":{"low":"record_only"}}}`,
		`{"types":{"t":{}}}`,
		`{"defaults":{}}`,
		`[]`,
	} {
		if _, err := worker.ParsePolicy([]byte(bad)); err == nil {
			t.Errorf("policy %s accepted", bad)
		}
	}
}

func FuzzDecodeSecurityEvent(f *testing.F) {
	for _, seed := range []string{
		`{"id":"e1","type":"credential_compromised","occurred_at":"2026-11-27T10:00:00Z","severity":"high","subject":"user-123","client_id":"billing","reason":"free text"}`,
		`{"id":"e2","type":"t","severity":"low","family_id":"01JDZ8Q4V3N7X2K9M5P6R8T0WB"}`,
		`{"id":"e3","type":"t","severity":"urgent","subject":"u"}`,
		`{"id":"e4","type":"t","severity":"high"}`,
		`{"id":"e5","type":"t","severity":"high","subject":"u","x":1}`,
		`{"id":"","type":"t","severity":"high","subject":"u"}`,
		`{"id":"e6","type":"t","severity":"high","subject":"u"} trailing`,
		`{"id":"e7","type":"t","severity":"high","subject":"\u0000"}`,
		`[]`, `{`, ``, `null`, "\xff",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		ev, err := worker.DecodeSecurityEvent(b, worker.DefaultMaxEventBytes)
		if err != nil {
			if !errors.Is(err, worker.ErrInvalidEvent) {
				t.Fatalf("error %v does not wrap ErrInvalidEvent", err)
			}
			return
		}
		if ev.ID == "" || !ev.Severity.Valid() || (ev.Subject == "" && ev.ClientID == "" && ev.FamilyID == "") {
			t.Fatalf("accepted an invalid event %+v", ev)
		}
		again, err := json.Marshal(ev)
		if err != nil {
			t.Fatal(err)
		}
		back, err := worker.DecodeSecurityEvent(again, 4*worker.DefaultMaxEventBytes)
		if err != nil || back.ID != ev.ID || back.Subject != ev.Subject || back.FamilyID != ev.FamilyID || back.ClientID != ev.ClientID || !back.OccurredAt.Equal(ev.OccurredAt) {
			t.Fatalf("round trip: %+v -> %+v (%v)", ev, back, err)
		}
	})
}

// issueMany starts n families, one per subject s<i>, through the ledger.
func issueMany(tb testing.TB, l *jsstore.Ledger, n int) {
	tb.Helper()
	var wg sync.WaitGroup
	next := make(chan int)
	for range 16 {
		wg.Go(func() {
			for i := range next {
				issueDirect(tb, l, "web", fmt.Sprintf("s%d", i))
			}
		})
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
}

// BenchmarkWorker measures security events handled per second with 10 000
// active families, each event selecting one family by subject. The
// events are published asynchronously while the worker runs.
func BenchmarkWorker(b *testing.B) {
	for _, bc := range []struct {
		action   worker.Action
		severity worker.Severity
	}{
		{worker.ActionRevokeFamilies, worker.SeverityCritical},
		{worker.ActionRevokeAccess, worker.SeverityMedium},
		{worker.ActionRecordOnly, worker.SeverityLow},
	} {
		b.Run(fmt.Sprintf("families=10000,action=%s", bc.action), func(b *testing.B) {
			e := newEnv(b, "")
			l := jsstore.New(e.Store)
			n := 10000
			if bc.action == worker.ActionRevokeFamilies {
				n = max(n, b.N) // every event revokes a family still active
			}
			issueMany(b, l, n)
			w := e.startWorker(workerOptions{wall: true, concurrency: 16})
			b.ReportAllocs()
			b.ResetTimer()
			start := time.Now()
			futures := make([]jetstream.PubAckFuture, 0, b.N)
			for i := range b.N {
				ev := worker.SecurityEvent{ID: fmt.Sprintf("bench-%d-%d", b.N, i), Type: "bench", Severity: bc.severity, Subject: fmt.Sprintf("s%d", i%n)}
				data, _ := json.Marshal(ev)
				f, err := e.JS.PublishAsync(worker.DefaultSecurityPrefix+".bench", data)
				if err != nil {
					b.Fatal(err)
				}
				futures = append(futures, f)
			}
			for _, f := range futures {
				select {
				case <-f.Ok():
				case err := <-f.Err():
					b.Fatal(err)
				}
			}
			for w.Stats().Handled < uint64(b.N) {
				if s := w.Stats(); s.DeadLettered > 0 || time.Since(start) > 10*time.Minute {
					b.Fatalf("stats %+v", s)
				}
				time.Sleep(time.Millisecond)
			}
			b.StopTimer()
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "events/s")
		})
	}
}

func TestExampleFilesParse(t *testing.T) {
	b, err := os.ReadFile("../examples/policy.json")
	if err != nil {
		t.Fatal(err)
	}
	p, err := worker.ParsePolicy(b)
	if err != nil {
		t.Fatal(err)
	}
	if a, _ := p.Action("token_claims_change", worker.SeverityHigh); a != worker.ActionRevokeAccess {
		t.Fatalf("example policy: token_claims_change/high is %s", a)
	}
	if b, err = os.ReadFile("../examples/idp-jwks.json"); err != nil {
		t.Fatal(err)
	}
	if keys, err := worker.ParseTransmitterKeys(b); err != nil || len(keys) != 1 || keys[0].KID != "idp-2026-11" {
		t.Fatalf("example JWKS: %v %+v", err, keys)
	}
}
