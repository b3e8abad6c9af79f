package handlers

import (
	"fmt"
	"testing"
	"time"

	"github.com/oklog/ulid/v2"

	"github.com/tokenledger/tokenledger/api"
	"github.com/tokenledger/tokenledger/ledger/token"
)

// decodeTokenRequestFast accepts only what DecodeTokenRequest accepts, with
// the same result.
func TestDecodeTokenRequestFast(t *testing.T) {
	for _, tc := range []struct {
		body string
		fast bool
	}{
		{`{"client_id":"web","client_secret":"s","token":"a.b.c"}`, true},
		{" \n{ \"client_id\" : \"web\" ,\t\"client_secret\":\"s\",\"token\":\"t\",\"token_type_hint\":\"access_token\"}\r\n", true},
		{`{"token":"t","token_type_hint":"refresh_token","client_secret":"s","client_id":"web"}`, true},
		{`{"client_id":"web","client_secret":"s","token":"t","token_type_hint":"other"}`, false},
		{`{"client_id":"web","client_secret":"s"}`, false},
		{`{"client_id":"","client_secret":"s","token":"t"}`, false},
		{`{"client_id":"web","client_secret":"s","token":"t","extra":"x"}`, false},
		{`{"CLIENT_ID":"web","client_secret":"s","token":"t"}`, false}, // encoding/json matches it: slow path
		{`{"client_id":"web","client_id":"web2","client_secret":"s","token":"t"}`, false},
		{`{"client_id":"w\u0065b","client_secret":"s","token":"t"}`, false},
		{`{"client_id":"web","client_secret":"s","token":"t"} x`, false},
		{`{"client_id":"web","client_secret":"s","token":"t"}{}`, false},
		{`{"client_id":"web","client_secret":"s","token":"t",}`, false},
		{`{"client_id":"web","client_secret":"s","token":null}`, false},
		{`{"client_id":"web","client_secret":"s","token":1}`, false},
		{`{"client_id":"wéb","client_secret":"s","token":"t"}`, false},
		{"\v{\"client_id\":\"web\",\"client_secret\":\"s\",\"token\":\"t\"}", false},
		{`[]`, false},
		{``, false},
		{`{`, false},
		{`{"client_id":"web","client_secret":"s","token":"t"`, false},
	} {
		got, ok := decodeTokenRequestFast([]byte(tc.body), DefaultMaxRequestBytes)
		if ok != tc.fast {
			t.Errorf("%q: fast path %t, want %t", tc.body, ok, tc.fast)
		}
		checkFastAgreesWithStrict(t, []byte(tc.body), got, ok)
	}
	body := []byte(`{"client_id":"web","client_secret":"s","token":"t"}`)
	if _, ok := decodeTokenRequestFast(body, len(body)-1); ok {
		t.Error("fast path ignores the size limit")
	}
}

func checkFastAgreesWithStrict(t *testing.T, body []byte, got api.TokenRequest, ok bool) {
	t.Helper()
	if !ok {
		return
	}
	want, err := DecodeTokenRequest(body, DefaultMaxRequestBytes)
	if err != nil {
		t.Fatalf("%q: fast path accepts what DecodeTokenRequest refuses (%v)", body, err)
	}
	if got != want {
		t.Fatalf("%q: fast path decodes %+v, DecodeTokenRequest %+v", body, got, want)
	}
}

func FuzzDecodeTokenRequestFast(f *testing.F) {
	for _, s := range []string{
		`{"client_id":"web","client_secret":"s","token":"a.b.c"}`,
		`{"client_id":"web","client_secret":"s","token":"t","token_type_hint":"access_token"}`,
		` { "token" : "t" , "client_id":"c","client_secret":"s" } `,
		`{"client_id":"web","client_secret":"s","token":"t","Token":"u"}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		got, ok := decodeTokenRequestFast(body, DefaultMaxRequestBytes)
		checkFastAgreesWithStrict(t, body, got, ok)
	})
}

// A token verified with a key that later leaves the published set (its
// retirement is older than the longest token lifetime) is verified again,
// and refused, as an uncached verifier would refuse it.
func TestIntrospectCacheFollowsTheKeySet(t *testing.T) {
	start := time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)
	now := start // the introspector's clock, which the test moves
	clock := func() time.Time { return now }
	old, err := token.GenerateKey(token.AlgEdDSA, start.Add(-time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	cur, err := token.GenerateKey(token.AlgEdDSA, start)
	if err != nil {
		t.Fatal(err)
	}
	old.RetiredAt = start
	keys := token.KeySet{Keys: []token.Key{old, cur}}
	const maxAge = 16 * time.Minute
	in := &introspector{keys: keys, algs: []string{token.AlgEdDSA}, issuer: "tokenledger",
		maxAge: maxAge, now: clock, cache: newTokenCache()}
	signer, err := token.NewSigner(old)
	if err != nil {
		t.Fatal(err)
	}
	// Longer-lived than any token the service signs, so that only the key
	// set can make it invalid.
	raw, err := signer.Sign(token.AccessClaims{
		Issuer: "tokenledger", Subject: "alice", ExpiresAt: start.Add(time.Hour).Unix(),
		IssuedAt: start.Unix(), NotBefore: start.Unix(), JTI: ulid.Make().String(),
		ClientID: "web", SID: ulid.Make().String(),
	})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		if _, ok := in.verify(raw, now); !ok {
			t.Fatalf("verification %d refused a token of a published key", i)
		}
	}
	if in.hits.Load() != 1 || in.misses.Load() != 1 {
		t.Fatalf("hits %d, misses %d; want one each", in.hits.Load(), in.misses.Load())
	}
	now = now.Add(maxAge + time.Second) // the retired key is no longer published
	if _, ok := in.verify(raw, now); ok {
		t.Fatal("token of a key no longer published accepted from the cache")
	}
	v, err := token.NewVerifier(keys.JWKS(now, maxAge), []string{token.AlgEdDSA}, "tokenledger", clock)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := v.Verify(raw); err == nil {
		t.Fatal("the uncached verifier accepts it: the test proves nothing")
	}
}

// The cache stays within its size, and a full shard drops expired tokens
// before live ones.
func TestTokenCacheBounded(t *testing.T) {
	c := newTokenCache()
	now := time.Unix(1_800_000_000, 0)
	size := func() int {
		n := 0
		for i := range c.shards {
			n += len(c.shards[i].m)
		}
		return n
	}
	for i := range 2 * tokenCacheSize {
		c.put(fmt.Sprint("expired-", i), &verifiedToken{exp: now.Unix() - 1}, now)
		if i%1000 == 0 && size() > tokenCacheSize {
			t.Fatalf("%d entries, bound %d", size(), tokenCacheSize)
		}
	}
	if got := size(); got > tokenCacheSize || got == 0 {
		t.Fatalf("%d entries after overfilling, want at most %d and some", got, tokenCacheSize)
	}
	live := tokenCacheSize / 4
	for i := range live {
		c.put(fmt.Sprint("live-", i), &verifiedToken{exp: now.Unix() + 60}, now)
	}
	for i := range live {
		if c.get(fmt.Sprint("live-", i)) == nil {
			t.Fatalf("live token %d evicted while expired ones were there to drop", i)
		}
	}
}
