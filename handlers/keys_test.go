package handlers_test

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	josejwt "github.com/go-jose/go-jose/v4/jwt"

	"github.com/tokenledger/tokenledger/api"
	"github.com/tokenledger/tokenledger/internal/tltest"
	"github.com/tokenledger/tokenledger/ledger"
	"github.com/tokenledger/tokenledger/ledger/token"
)

var joseAlgs = []jose.SignatureAlgorithm{jose.EdDSA, jose.ES256, jose.RS256}

// jwks fetches tokens.jwks as go-jose reads it.
func jwks(t testing.TB, e *tltest.Env) jose.JSONWebKeySet {
	t.Helper()
	r := e.Call("tokens.jwks", "")
	var set jose.JSONWebKeySet
	if err := json.Unmarshal(r.Raw, &set); err != nil {
		t.Fatalf("jwks %s: %v", r.Raw, err)
	}
	return set
}

func kids(set jose.JSONWebKeySet) []string {
	var out []string
	for _, k := range set.Keys {
		out = append(out, k.KeyID)
	}
	return out
}

// headerKID is the kid of an access token's header.
func headerKID(t testing.TB, raw string) string {
	t.Helper()
	tok, err := josejwt.ParseSigned(raw, joseAlgs)
	if err != nil {
		t.Fatal(err)
	}
	return tok.Headers[0].KeyID
}

// verifiesWith checks the token's signature with go-jose against the set
// (no claim checks: the clock of the test moves).
func verifiesWith(raw string, set jose.JSONWebKeySet) bool {
	tok, err := josejwt.ParseSigned(raw, joseAlgs)
	if err != nil {
		return false
	}
	keys := set.Key(tok.Headers[0].KeyID)
	if len(keys) != 1 {
		return false
	}
	var c josejwt.Claims
	return tok.Claims(keys[0].Key, &c) == nil
}

func keysReply(t testing.TB, r tltest.Reply) api.KeysResponse {
	t.Helper()
	if r.Error != "" {
		t.Fatalf("keys endpoint: %s", r.Raw)
	}
	var k api.KeysResponse
	if err := json.Unmarshal(r.Raw, &k); err != nil {
		t.Fatalf("keys reply %s: %v", r.Raw, err)
	}
	return k
}

func stateOf(k api.KeysResponse, kid string) string {
	for _, i := range k.Keys {
		if i.KID == kid {
			return i.State
		}
	}
	return ""
}

// An access token issued with no audience in the request carries aud, the
// client's default, and verifies with go-jose requiring it (RFC 9068
// §2.2); a client registered without audiences (older builds) gets its
// id; an audience outside the client's list is refused with no event.
func TestAudienceAlwaysPresent(t *testing.T) {
	e := tltest.New(t, "")
	e.StartInstance(tltest.Options{More: []ledger.Client{{
		ID: "legacy", SecretSHA256: ledger.SecretSHA256(tltest.Secret), Scopes: []string{"read"},
	}}})
	for _, tc := range []struct {
		name, client string
		audience     []string
		want         []string
	}{
		{"default of the client", tltest.ClientID, nil, []string{"api"}},
		{"requested", tltest.ClientID, []string{"api"}, []string{"api"}},
		{"client without audiences", "legacy", nil, []string{"legacy"}},
		{"client without audiences, its id requested", "legacy", []string{"legacy"}, []string{"legacy"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			body := map[string]any{"client_id": tc.client, "client_secret": tltest.Secret, "subject": "alice"}
			if tc.audience != nil {
				body["audience"] = tc.audience
			}
			r := e.Call("tokens.issue", body)
			tltest.WantOK(t, r)
			tok, err := josejwt.ParseSigned(r.AccessToken, joseAlgs)
			if err != nil {
				t.Fatal(err)
			}
			set := jwks(t, e)
			keys := set.Key(tok.Headers[0].KeyID)
			if len(keys) != 1 {
				t.Fatal("kid not in the JWKS")
			}
			var c josejwt.Claims
			if err := tok.Claims(keys[0].Key, &c); err != nil {
				t.Fatal(err)
			}
			if len(c.Audience) == 0 || !slices.Equal([]string(c.Audience), tc.want) {
				t.Fatalf("aud %v, want %v", c.Audience, tc.want)
			}
			err = c.Validate(josejwt.Expected{Issuer: "tokenledger", AnyAudience: josejwt.Audience{tc.want[0]}, Time: e.Clock.Now()})
			if err != nil {
				t.Fatalf("go-jose requiring aud %s: %v", tc.want[0], err)
			}
			// A refreshed token carries it too.
			rr := e.Call("tokens.refresh", map[string]any{"client_id": tc.client, "client_secret": tltest.Secret, "refresh_token": r.RefreshToken})
			tltest.WantOK(t, rr)
			tok, _ = josejwt.ParseSigned(rr.AccessToken, joseAlgs)
			if err := tok.Claims(keys[0].Key, &c); err != nil || !slices.Equal([]string(c.Audience), tc.want) {
				t.Fatalf("refreshed aud %v (%v), want %v", c.Audience, err, tc.want)
			}
		})
	}
	for _, tc := range []struct{ name, client, aud string }{
		{"another audience", tltest.ClientID, "billing"},
		{"the client id of a client with audiences", tltest.ClientID, tltest.ClientID},
		{"another audience of a client without audiences", "legacy", "api"},
	} {
		t.Run("refused: "+tc.name, func(t *testing.T) {
			before := e.LastSeq()
			r := e.Call("tokens.issue", map[string]any{"client_id": tc.client, "client_secret": tltest.Secret, "subject": "alice", "audience": []string{tc.aud}})
			tltest.WantError(t, r, api.CodeInvalidRequest, "400")
			if after := e.LastSeq(); after != before {
				t.Fatalf("refused issue appended events: seq %d -> %d", before, after)
			}
		})
	}
}

// Key rotation during a two-instance load of refreshes: no request fails,
// every access token verifies against every JWKS fetched from the
// rotation on (so a verifier that cached the JWKS before the new key
// signed verifies the new tokens), the old key leaves the JWKS only after
// its last token expired, and every change is an event on ledger.keys.
func TestKeyRotationUnderLoad(t *testing.T) {
	e := tltest.New(t, "")
	opts := tltest.Options{Grace: 10 * time.Second, KeyCheckInterval: 10 * time.Millisecond}
	in1 := e.StartInstance(opts)
	e.StartInstance(opts)
	const cache, maxAge = 15 * time.Minute, 16 * time.Minute

	oldKID, ok := in1.Keys().Signing(e.Clock.Now())
	if !ok {
		t.Fatal("no signing key")
	}
	const families = 8
	refresh := make([]string, families)
	for i := range refresh {
		r := e.Issue("user-" + string(rune('a'+i)))
		tltest.WantOK(t, r)
		refresh[i] = r.RefreshToken
	}

	var (
		mu       sync.Mutex
		tokens   []string
		failures []string
		stop     atomic.Bool
		wg       sync.WaitGroup
	)
	for i := range families {
		wg.Go(func() {
			rt := refresh[i]
			for !stop.Load() {
				r, err := e.TryCall("tokens.refresh", tltest.RefreshBody(rt))
				mu.Lock()
				if err != nil || r.Error != "" {
					failures = append(failures, string(r.Raw)+errString(err))
					mu.Unlock()
					return
				}
				tokens = append(tokens, r.AccessToken)
				mu.Unlock()
				rt = r.RefreshToken
			}
		})
	}
	waitTokens := func(n int) {
		deadline := time.Now().Add(10 * time.Second)
		for {
			mu.Lock()
			got := len(tokens)
			mu.Unlock()
			if got >= n || time.Now().After(deadline) {
				return
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	waitTokens(50)

	rot := keysReply(t, e.Call("tokens.admin.keys.rotate", "{}"))
	var newKID string
	for _, k := range rot.Keys {
		if k.State == token.KeyPublished {
			newKID = k.KID
			if got, want := k.ActivatesAt, e.Clock.Now().Add(cache); !got.Equal(want) {
				t.Fatalf("next key activates at %s, want one cache period on, %s", got, want)
			}
		}
	}
	if newKID == "" {
		t.Fatalf("no published key after rotate: %+v", rot)
	}
	// Both instances publish it at once (they follow the bucket), and
	// neither signs with it yet.
	var cached []jose.JSONWebKeySet
	deadline := time.Now().Add(5 * time.Second)
	for len(cached) < 10 {
		set := jwks(t, e)
		if !slices.Contains(kids(set), newKID) {
			if time.Now().After(deadline) {
				t.Fatalf("the next key is not published: %v", kids(set))
			}
			continue
		}
		cached = append(cached, set)
	}
	mu.Lock()
	n := len(tokens)
	for _, tok := range tokens {
		if k := headerKID(t, tok); k != oldKID.KID {
			t.Fatalf("a token signed with %s before the next key's activation", k)
		}
	}
	mu.Unlock()
	// Old-key tokens issued later than the rest, so they outlive the
	// old key's signing by 5 minutes.
	e.Clock.Advance(5 * time.Minute)
	waitTokens(n + 50)

	// The cache period passes: the new key signs, on both instances.
	e.Clock.Advance(cache - 5*time.Minute)
	activated := e.Clock.Now()
	deadline = time.Now().Add(5 * time.Second)
	for {
		mu.Lock()
		last := tokens[len(tokens)-1]
		mu.Unlock()
		if headerKID(t, last) == newKID {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the new key does not sign after its activation")
		}
		time.Sleep(5 * time.Millisecond)
	}
	mu.Lock()
	n = len(tokens)
	mu.Unlock()
	waitTokens(n + 100)
	for range 5 {
		cached = append(cached, jwks(t, e))
	}
	stop.Store(true)
	wg.Wait()
	if len(failures) > 0 {
		t.Fatalf("%d refreshes failed during the rotation, first: %s", len(failures), failures[0])
	}
	var oldTokens, newTokens int
	var lastOldExp int64
	for _, tok := range tokens {
		for i, set := range cached {
			if !verifiesWith(tok, set) {
				t.Fatalf("token of key %s does not verify against JWKS %d (%v)", headerKID(t, tok), i, kids(set))
			}
		}
		if headerKID(t, tok) == newKID {
			newTokens++
			continue
		}
		oldTokens++
		parsed, _ := josejwt.ParseSigned(tok, joseAlgs)
		var c josejwt.Claims
		_ = parsed.UnsafeClaimsWithoutVerification(&c)
		lastOldExp = max(lastOldExp, c.Expiry.Time().Unix())
	}
	if oldTokens == 0 || newTokens == 0 {
		t.Fatalf("tokens: %d of the old key, %d of the new", oldTokens, newTokens)
	}

	// The old key is retired and published until its last token expired.
	list := keysReply(t, e.Call("tokens.admin.keys.list", ""))
	if stateOf(list, oldKID.KID) != token.KeyRetired || stateOf(list, newKID) != token.KeyActive {
		t.Fatalf("after activation: %+v", list)
	}
	if !time.Unix(lastOldExp, 0).After(activated) {
		t.Fatalf("the last old-key token expires at %s, not after the activation %s: the test proves nothing", time.Unix(lastOldExp, 0), activated)
	}
	e.Clock.Set(time.Unix(lastOldExp, 0).Add(-time.Second))
	if !slices.Contains(kids(jwks(t, e)), oldKID.KID) {
		t.Fatal("the old key left the JWKS before its last token expired")
	}
	e.Clock.Set(activated.Add(maxAge))
	waitUntil(t, func() bool { return !slices.Contains(kids(jwks(t, e)), oldKID.KID) }, "old key still published after its tokens expired")
	if !time.Unix(lastOldExp, 0).Before(activated.Add(maxAge)) {
		t.Fatalf("an old token expires at %s, after the old key left at %s", time.Unix(lastOldExp, 0), activated.Add(maxAge))
	}

	// Every change is an event on ledger.keys, with the kid.
	want := map[ledger.EventType]string{
		ledger.TypeKeyPublished: newKID, ledger.TypeKeyActivated: newKID, ledger.TypeKeyRetired: oldKID.KID,
	}
	got := map[ledger.EventType]int{}
	for _, ev := range e.Events() {
		if kid, ok := want[ev.Type]; ok && ledger.KeyEventKID(ev.Data) == kid {
			got[ev.Type]++
		}
	}
	for typ := range want {
		if got[typ] != 1 {
			t.Errorf("%s for its key recorded %d times, want once", typ, got[typ])
		}
	}
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

func waitUntil(t testing.TB, cond func() bool, msg string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal(msg)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func introspect(t testing.TB, e *tltest.Env, raw string) bool {
	t.Helper()
	r := e.Call("tokens.introspect", map[string]any{"client_id": tltest.ClientID, "client_secret": tltest.Secret, "token": raw})
	var body struct {
		Active bool `json:"active"`
	}
	if r.Error != "" || json.Unmarshal(r.Raw, &body) != nil {
		t.Fatalf("introspect: %s", r.Raw)
	}
	return body.Active
}

// Revoking a kid: introspection of its tokens is inactive at once on every
// instance (read-your-writes), it leaves the JWKS, a new key signs, the
// revocation is an event; malformed and unknown kids are OAuth errors that
// append nothing. Nothing secret is stored.
func TestKeyRevocation(t *testing.T) {
	dir := t.TempDir()
	e := tltest.New(t, dir)
	e.StartInstance(tltest.Options{})
	e.StartInstance(tltest.Options{})

	var tokens []string
	for _, s := range []string{"alice", "bob", "carol", "dave"} {
		r := e.Issue(s)
		tltest.WantOK(t, r)
		tokens = append(tokens, r.AccessToken)
	}
	old := headerKID(t, tokens[0])
	for _, tok := range tokens {
		if !introspect(t, e, tok) {
			t.Fatal("a fresh token is inactive")
		}
	}

	for _, tc := range []struct{ name, body, code string }{
		{"malformed kid", `{"kid":"not a kid!"}`, api.CodeInvalidRequest},
		{"empty kid", `{"kid":""}`, api.CodeInvalidRequest},
		{"no kid", `{}`, api.CodeInvalidRequest},
		{"unknown member", `{"kid":"` + old + `","x":1}`, api.CodeInvalidRequest},
		{"unknown kid", `{"kid":"AAAAAAAAAAAAAAAA"}`, api.CodeInvalidRequest},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := e.LastSeq()
			tltest.WantError(t, e.Call("tokens.admin.keys.revoke", tc.body), tc.code, "400")
			if after := e.LastSeq(); after != before {
				t.Fatalf("refused revocation appended events: seq %d -> %d", before, after)
			}
		})
	}
	if len(keysReply(t, e.Call("tokens.admin.keys.list", "{}")).Keys) != 1 {
		t.Fatal("a refused revocation changed the keys")
	}

	rep := keysReply(t, e.Call("tokens.admin.keys.revoke", map[string]any{"kid": old, "reason": "leaked"}))
	if stateOf(rep, old) != token.KeyRevoked {
		t.Fatalf("after revoke: %+v", rep)
	}
	// At once, on whichever instance answers.
	for range 3 {
		for _, tok := range tokens {
			if introspect(t, e, tok) {
				t.Fatal("a token of the revoked key is still active")
			}
		}
	}
	if slices.Contains(kids(jwks(t, e)), old) {
		t.Fatal("the revoked key is still published")
	}
	r := e.Issue("erin")
	tltest.WantOK(t, r)
	if kid := headerKID(t, r.AccessToken); kid == old || stateOf(keysReply(t, e.Call("tokens.admin.keys.list", "")), kid) != token.KeyActive {
		t.Fatalf("new token signed with %s", kid)
	}
	if !introspect(t, e, r.AccessToken) || !verifiesWith(r.AccessToken, jwks(t, e)) {
		t.Fatal("the new key's token is not active")
	}
	revoked := 0
	for _, ev := range e.Events() {
		if d, ok := ev.Data.(ledger.KeyRevoked); ok {
			revoked++
			if d.KID != old || ev.Cause.Kind != ledger.CauseAdmin || ev.Cause.Reason != "leaked" || ev.FamilyID != "" || ev.State != nil {
				t.Fatalf("key.revoked.v1: %+v", ev)
			}
		}
	}
	if revoked != 1 {
		t.Fatalf("%d key.revoked.v1 events, want 1", revoked)
	}
	// Revoking it again changes nothing.
	before := e.LastSeq()
	keysReply(t, e.Call("tokens.admin.keys.revoke", map[string]any{"kid": old}))
	if e.LastSeq() != before {
		t.Fatal("a second revocation of the key appended events")
	}

	scanNoKeyMaterial(t, e, dir)
}

// scanNoKeyMaterial: no private key of the set, nor the KEK, is in any
// stored file (the stream, the buckets) but sealed.
func scanNoKeyMaterial(t *testing.T, e *tltest.Env, dir string) {
	t.Helper()
	kek, _ := token.ParseKEK(tltest.KEK)
	ks, _, err := e.Instances[0].KeyRing().Config().Keys.Load(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	needles := map[string][]byte{"kek": kek[:], "kek (base64)": []byte(tltest.KEK)}
	for _, k := range ks.Keys {
		der, err := x509.MarshalPKCS8PrivateKey(k.Private)
		if err != nil {
			t.Fatal(err)
		}
		for name, raw := range map[string][]byte{"private key " + k.KID: der, "private seed " + k.KID: der[len(der)-32:]} {
			addEncodedNeedle(needles, name, raw)
		}
	}
	if len(ks.Keys) < 2 {
		t.Fatalf("%d keys to look for", len(ks.Keys))
	}
	files, kidFound := scanStored(t, dir, needles, []byte(ks.Keys[0].KID))
	if files < 3 || !kidFound {
		t.Fatalf("read %d stored files; a kid found: %v", files, kidFound)
	}
}
