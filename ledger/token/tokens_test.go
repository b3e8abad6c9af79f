package token

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/tokenledger/tokenledger/ledger"

	"github.com/oklog/ulid/v2"
)

func TestRefreshTokenFormat(t *testing.T) {
	fid := ulid.MustParse(famID)
	for _, seq := range []uint64{0, 1, 127, 128, 1 << 40} {
		raw, err := MintRefreshToken(rand.Reader, fid, seq)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(raw, RefreshPrefix) || strings.ContainsAny(raw, "+/=") {
			t.Fatalf("token %q is not prefixed URL-safe", raw)
		}
		tok, err := ParseRefreshToken(raw)
		if err != nil {
			t.Fatal(err)
		}
		if tok.FamilyID != fid || tok.AfterSeq != seq {
			t.Fatalf("parsed %v/%d, want %v/%d", tok.FamilyID, tok.AfterSeq, fid, seq)
		}
		var zero [secretLen]byte
		if tok.Secret == zero {
			t.Fatal("secret is zero")
		}
	}
	a, _ := MintRefreshToken(rand.Reader, fid, 1)
	b, _ := MintRefreshToken(rand.Reader, fid, 1)
	if a == b || HashToken(a) == HashToken(b) {
		t.Fatal("two mints collide")
	}
}

func TestParseRefreshTokenRejects(t *testing.T) {
	good, _ := MintRefreshToken(rand.Reader, ulid.MustParse(famID), 5)
	for name, raw := range map[string]string{
		"empty":          "",
		"no prefix":      strings.TrimPrefix(good, RefreshPrefix),
		"other prefix":   "tlx_" + strings.TrimPrefix(good, RefreshPrefix),
		"truncated":      good[:len(good)-4],
		"extra":          good + "AA",
		"bad base64":     good[:10] + "!" + good[11:],
		"huge":           RefreshPrefix + strings.Repeat("A", 4096),
		"padded":         good + "==",
		"prefix only":    RefreshPrefix,
		"non-canonical":  good[:len(good)-1] + string(good[len(good)-1]^1), // last char's spare bits
		"access-shaped":  "eyJhbGciOiJFZERTQSJ9.e30.sig",
		"whitespace pad": " " + good,
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := ParseRefreshToken(raw); !errors.Is(err, ledger.ErrInvalidToken) {
				if name == "non-canonical" && err == nil {
					return // flipping the low bit may still be a canonical different token
				}
				t.Fatalf("err = %v", err)
			}
		})
	}
}

func FuzzParseRefreshToken(f *testing.F) {
	good, _ := MintRefreshToken(rand.Reader, ulid.MustParse(famID), 300)
	f.Add(good)
	f.Add(RefreshPrefix)
	f.Add("tlr_AAAA")
	f.Add(strings.Repeat("x", 200))
	f.Fuzz(func(t *testing.T, raw string) {
		tok, err := ParseRefreshToken(raw)
		if err != nil {
			// The error is the bare sentinel: nothing of the input in it.
			if err != ledger.ErrInvalidToken {
				t.Fatalf("error %v must be exactly ErrInvalidToken", err)
			}
			return
		}
		if tok.String() != raw {
			t.Fatalf("accepted a non-canonical spelling %q of %q", raw, tok.String())
		}
	})
}

func TestSealSuccessor(t *testing.T) {
	pred, succ := "tlr_predecessor", "tlr_successor"
	sealed, err := SealSuccessor(rand.Reader, pred, succ)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(sealed, succ) || strings.Contains(sealed, HashToken(succ)) {
		t.Fatal("seal shows the successor")
	}
	got, err := OpenSuccessor(pred, sealed)
	if err != nil || got != succ {
		t.Fatalf("open = %q, %v", got, err)
	}
	if _, err := OpenSuccessor(HashToken(pred), sealed); err == nil {
		t.Fatal("the stored hash of the predecessor opened the seal")
	}
	if _, err := OpenSuccessor("tlr_other", sealed); err == nil {
		t.Fatal("another token opened the seal")
	}
	if _, err := OpenSuccessor(pred, sealed[:10]); err == nil {
		t.Fatal("truncated seal opened")
	}
}

func TestKeysAndJWKS(t *testing.T) {
	now := time.Now()
	for _, alg := range []string{AlgEdDSA, AlgES256, AlgRS256} {
		t.Run(alg, func(t *testing.T) {
			key, err := GenerateKey(alg, now)
			if err != nil {
				t.Fatal(err)
			}
			var kek KEK
			rand.Read(kek[:])
			b, err := SealKeySet(kek, KeySet{Keys: []Key{key}})
			if err != nil {
				t.Fatal(err)
			}
			der, _ := key.PublicJWK().PublicKey()
			if der == nil {
				t.Fatal("JWK does not parse back")
			}
			if strings.Contains(string(b), "PRIVATE") {
				t.Fatal("key stored in the clear")
			}
			var wrong KEK
			if _, err := OpenKeySet(wrong, b); err == nil {
				t.Fatal("wrong KEK opened the key set")
			}
			ks, err := OpenKeySet(kek, b)
			if err != nil {
				t.Fatal(err)
			}
			signer, err := NewSigner(ks.Keys[0])
			if err != nil {
				t.Fatal(err)
			}
			claims := AccessClaims{Issuer: "iss", Subject: "alice", Audience: []string{"api"},
				ExpiresAt: now.Add(time.Minute).Unix(), IssuedAt: now.Unix(), NotBefore: now.Unix(),
				JTI: "jti", ClientID: "web", SID: famID, Version: 1}
			tok, err := signer.Sign(claims)
			if err != nil {
				t.Fatal(err)
			}
			v, err := NewVerifier(ks.JWKS(now, time.Hour), []string{alg}, "iss", func() time.Time { return now })
			if err != nil {
				t.Fatal(err)
			}
			got, err := v.Verify(tok)
			if err != nil {
				t.Fatal(err)
			}
			if got.JTI != "jti" || got.SID != famID || got.Audience[0] != "api" {
				t.Fatalf("claims %+v", got)
			}
			other := AlgEdDSA
			if alg == AlgEdDSA {
				other = AlgES256
			}
			strict, _ := NewVerifier(ks.JWKS(now, time.Hour), []string{other}, "iss", func() time.Time { return now })
			if _, err := strict.Verify(tok); err == nil {
				t.Fatal("verifier accepted an algorithm it was not configured for")
			}
		})
	}
}

func TestVerifierRejects(t *testing.T) {
	now := time.Now()
	key, _ := GenerateKey(AlgEdDSA, now)
	signer, _ := NewSigner(key)
	jwks := KeySet{Keys: []Key{key}}.JWKS(now, time.Hour)
	v, _ := NewVerifier(jwks, []string{AlgEdDSA}, "iss", func() time.Time { return now })
	good := AccessClaims{Issuer: "iss", Subject: "alice", ExpiresAt: now.Add(time.Minute).Unix(),
		IssuedAt: now.Unix(), NotBefore: now.Unix(), JTI: "j", ClientID: "web", SID: famID, Version: 1}
	sign := func(c AccessClaims) string { s, _ := signer.Sign(c); return s }
	expired := good
	expired.ExpiresAt = now.Add(-time.Second).Unix()
	wrongIss := good
	wrongIss.Issuer = "evil"
	valid := sign(good)
	parts := strings.Split(valid, ".")
	enc := base64.RawURLEncoding
	hmacTok := func() string {
		h := enc.EncodeToString([]byte(`{"alg":"HS256","kid":"` + key.KID + `","typ":"at+jwt"}`))
		mac := hmac.New(sha256.New, []byte(jwks[0].X))
		mac.Write([]byte(h + "." + parts[1]))
		return h + "." + parts[1] + "." + enc.EncodeToString(mac.Sum(nil))
	}()
	for name, tok := range map[string]string{
		"expired":     sign(expired),
		"wrong iss":   sign(wrongIss),
		"alg none":    enc.EncodeToString([]byte(`{"alg":"none","typ":"at+jwt"}`)) + "." + parts[1] + ".",
		"hmac forged": hmacTok,
		"wrong typ":   enc.EncodeToString([]byte(`{"alg":"EdDSA","kid":"`+key.KID+`","typ":"JWT"}`)) + "." + parts[1] + "." + parts[2],
		"tampered":    parts[0] + "." + enc.EncodeToString([]byte(`{"iss":"iss","sub":"mallory"}`)) + "." + parts[2],
		"unknown kid": enc.EncodeToString([]byte(`{"alg":"EdDSA","kid":"nope","typ":"at+jwt"}`)) + "." + parts[1] + "." + parts[2],
		"garbage":     "not a jwt",
		"huge":        strings.Repeat("a", 20000),
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := v.Verify(tok); err == nil {
				t.Fatal("accepted")
			}
		})
	}
	if _, err := v.Verify(valid); err != nil {
		t.Fatalf("valid token refused: %v", err)
	}
}

func FuzzVerifyAccessToken(f *testing.F) {
	now := time.Now()
	key, _ := GenerateKey(AlgEdDSA, now)
	signer, _ := NewSigner(key)
	v, _ := NewVerifier(KeySet{Keys: []Key{key}}.JWKS(now, time.Hour), []string{AlgEdDSA}, "iss", func() time.Time { return now })
	good, _ := signer.Sign(AccessClaims{Issuer: "iss", Subject: "a", ExpiresAt: now.Add(time.Hour).Unix(), IssuedAt: now.Unix(), JTI: "j", ClientID: "c", SID: "s"})
	f.Add(good)
	f.Add("a.b.c")
	f.Add("")
	f.Fuzz(func(t *testing.T, tok string) {
		// Only the one token we signed can verify, whatever its spelling.
		c, err := v.Verify(tok)
		if err == nil && (c.JTI != "j" || c.SID != "s" || c.Subject != "a") {
			t.Fatalf("accepted a token we never signed: %q", tok)
		}
	})
}

// Verify returns exactly the claims that were signed.
func TestVerifyReturnsTheSignedClaims(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	key, _ := GenerateKey(AlgEdDSA, now)
	signer, _ := NewSigner(key)
	v, _ := NewVerifier(KeySet{Keys: []Key{key}}.JWKS(now, time.Hour), []string{AlgEdDSA}, "iss", func() time.Time { return now })
	for _, c := range []AccessClaims{
		{Issuer: "iss", Subject: "alice", Audience: []string{"api"}, ExpiresAt: now.Add(time.Minute).Unix(),
			IssuedAt: now.Unix(), NotBefore: now.Unix(), JTI: "j1", ClientID: "web", Scope: "read write", SID: famID, Version: 3},
		{Issuer: "iss", Subject: "bob", Audience: []string{"a", "b"}, ExpiresAt: now.Add(time.Minute).Unix(),
			IssuedAt: now.Unix(), JTI: "j2", ClientID: "web", SID: famID},
	} {
		tok, err := signer.Sign(c)
		if err != nil {
			t.Fatal(err)
		}
		got, err := v.Verify(tok)
		if err != nil || !got.Equal(c) {
			t.Fatalf("verified %+v (%v), signed %+v", got, err, c)
		}
	}
}

func BenchmarkVerify(b *testing.B) {
	now := time.Now()
	key, _ := GenerateKey(AlgEdDSA, now)
	signer, _ := NewSigner(key)
	v, _ := NewVerifier(KeySet{Keys: []Key{key}}.JWKS(now, time.Hour), []string{AlgEdDSA}, "iss", func() time.Time { return now })
	tok, _ := signer.Sign(AccessClaims{Issuer: "iss", Subject: "alice", Audience: []string{"api"}, ExpiresAt: now.Add(time.Hour).Unix(),
		IssuedAt: now.Unix(), NotBefore: now.Unix(), JTI: "01JDQ80000000000000000ACC1", ClientID: "web", Scope: "read write", SID: famID, Version: 1})
	b.ReportAllocs()
	for b.Loop() {
		if _, err := v.Verify(tok); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkSign(b *testing.B) {
	now := time.Now()
	for _, alg := range []string{AlgEdDSA, AlgES256} {
		b.Run(alg, func(b *testing.B) {
			key, _ := GenerateKey(alg, now)
			signer, _ := NewSigner(key)
			c := AccessClaims{Issuer: "iss", Subject: "alice", Audience: []string{"api"}, ExpiresAt: now.Add(time.Hour).Unix(),
				IssuedAt: now.Unix(), NotBefore: now.Unix(), JTI: "01JDQ80000000000000000ACC1", ClientID: "web", Scope: "read write", SID: famID, Version: 1}
			b.ReportAllocs()
			for b.Loop() {
				if _, err := signer.Sign(c); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// famID is the family id the token tests mint and sign for.
const famID = "01JDQ7Z6M3XGJ8Y9W4V2T1S0RQ"
