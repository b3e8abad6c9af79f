package token

import (
	"bytes"
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"
)

// Equal compares every field of AccessClaims.
func TestAccessClaimsEqualCoversEveryField(t *testing.T) {
	base := AccessClaims{Issuer: "i", Subject: "s", Audience: []string{"a"}, ExpiresAt: 1, IssuedAt: 2,
		NotBefore: 3, JTI: "j", ClientID: "c", Scope: "sc", SID: "sid", Version: 1, Custom: []byte(`{"t":1}`)}
	if !base.Equal(base) {
		t.Fatal("claims differ from themselves")
	}
	typ := reflect.TypeOf(base)
	for i := range typ.NumField() {
		c := base
		c.Audience = []string{"a"}
		c.Custom = []byte(`{"t":1}`)
		f := reflect.ValueOf(&c).Elem().Field(i)
		switch f.Kind() {
		case reflect.String:
			f.SetString(f.String() + "x")
		case reflect.Int, reflect.Int64:
			f.SetInt(f.Int() + 1)
		case reflect.Uint64:
			f.SetUint(f.Uint() + 1)
		case reflect.Slice:
			if f.Type().Elem().Kind() == reflect.String {
				f.Set(reflect.ValueOf([]string{"a", "b"}))
			} else {
				f.SetBytes([]byte(`{"t":2}`))
			}
		default:
			t.Fatalf("field %s of kind %s: teach this test to change it", typ.Field(i).Name, f.Kind())
		}
		if base.Equal(c) {
			t.Errorf("Equal ignores %s", typ.Field(i).Name)
		}
	}
}

// v1Payload is the payload Sign wrote with encoding/json v1: the standard
// claims, then the custom object's members spliced in.
func v1Payload(t *testing.T, c AccessClaims) []byte {
	t.Helper()
	type plain AccessClaims // no UnmarshalJSON, same fields and tags
	p, err := json.Marshal(plain(c))
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Custom) > 2 && !bytes.Equal(c.Custom, []byte("{}")) && !bytes.Equal(c.Custom, []byte("null")) {
		p = append(p[:len(p)-1], ',')
		p = append(p, bytes.TrimSpace(c.Custom)[1:]...)
	}
	return p
}

// Sign writes the claims in the order and form encoding/json wrote them,
// and Verify reads back exactly what was signed, custom claims included.
func TestSignPayloadAsEncodingJSON(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	key, _ := GenerateKey(AlgEdDSA, now)
	signer, _ := NewSigner(key)
	v, _ := NewVerifier(KeySet{Keys: []Key{key}}.JWKS(now, time.Hour), []string{AlgEdDSA}, "iss", func() time.Time { return now })
	base := AccessClaims{Issuer: "iss", Subject: "alice", ExpiresAt: now.Add(time.Minute).Unix(),
		IssuedAt: now.Unix(), NotBefore: now.Unix(), JTI: "j", ClientID: "web", SID: famID}
	for name, mod := range map[string]func(*AccessClaims){
		"plain":         func(*AccessClaims) {},
		"audiences":     func(c *AccessClaims) { c.Audience = []string{"api", "b<&>"}; c.Scope = "read write" },
		"escapes":       func(c *AccessClaims) { c.Subject = "a\"\\<>&\u2028\u2029\x01\t\n é 😀"; c.Version = 7 },
		"custom claims": func(c *AccessClaims) { c.Custom = []byte(`{"role":["a","b"],"tenant":"t<1>"}`) },
		"empty custom":  func(c *AccessClaims) { c.Custom = []byte(`{}`) },
		"empty aud":     func(c *AccessClaims) { c.Audience = []string{} },
	} {
		t.Run(name, func(t *testing.T) {
			c := base
			mod(&c)
			tok, err := signer.Sign(c)
			if err != nil {
				t.Fatal(err)
			}
			parts := strings.Split(tok, ".")
			got, _ := b64.DecodeString(parts[1])
			if want := v1Payload(t, c); !bytes.Equal(got, want) {
				t.Fatalf("payload\n got %s\nwant %s", got, want)
			}
			back, err := v.Verify(tok)
			if err != nil {
				t.Fatal(err)
			}
			want := c
			if len(want.Audience) == 0 {
				want.Audience = nil
			}
			if bytes.Equal(want.Custom, []byte(`{}`)) {
				want.Custom = nil
			}
			if !back.Equal(want) {
				t.Fatalf("verified %+v\n  signed %+v", back, want)
			}
		})
	}
	h, _ := b64.DecodeString(signer.header)
	if want := `{"alg":"EdDSA","kid":"` + key.KID + `","typ":"at+jwt"}`; string(h) != want {
		t.Fatalf("header %s, want %s", h, want)
	}
}

// signPayload signs an arbitrary payload with the signer's key, as an
// attacker who could choose the payload's bytes (but not forge a
// signature) would need the issuer to.
func signPayload(t *testing.T, s *Signer, payload string) string {
	t.Helper()
	tok := s.header + "." + b64.EncodeToString([]byte(payload))
	sig, err := s.method.Sign(tok, s.key.Private)
	if err != nil {
		t.Fatal(err)
	}
	return tok + "." + b64.EncodeToString(sig)
}

// A correctly signed token whose payload names a claim twice, or spells a
// standard claim in another letter case, is refused: a reader that keeps
// the first or last duplicate, or folds case, would see another subject.
func TestVerifyRefusesAmbiguousClaims(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	key, _ := GenerateKey(AlgEdDSA, now)
	signer, _ := NewSigner(key)
	v, _ := NewVerifier(KeySet{Keys: []Key{key}}.JWKS(now, time.Hour), []string{AlgEdDSA}, "iss", func() time.Time { return now })
	std := `"iss":"iss","aud":"api","exp":1800000060,"iat":1800000000,"nbf":1800000000,"jti":"j","client_id":"web","sid":"` + famID + `","ver":1`
	for _, tc := range []struct {
		name, payload string
		ok            bool
	}{
		{"well formed", `{` + std + `,"sub":"alice","tenant":"t"}`, true},
		{"duplicate and wrong-case sub", `{` + std + `,"sub":"alice","sub":"admin","SUB":"root"}`, false},
		{"duplicate sub", `{` + std + `,"sub":"alice","sub":"admin"}`, false},
		{"wrong-case sub", `{` + std + `,"sub":"alice","SUB":"root"}`, false},
		{"wrong-case sub only", `{` + std + `,"Sub":"root"}`, false},
		{"wrong-case client_id", `{` + std + `,"sub":"alice","Client_ID":"admin"}`, false},
		{"duplicate exp", `{` + std + `,"sub":"alice","exp":9999999999}`, false},
		{"duplicate custom claim", `{` + std + `,"sub":"alice","tenant":"a","tenant":"b"}`, false},
		{"duplicate inside a custom claim", `{` + std + `,"sub":"alice","x":{"a":1,"a":2}}`, false},
		{"aud of numbers", `{"iss":"iss","aud":[1],"exp":1800000060,"iat":1800000000,"jti":"j","client_id":"web","sid":"s","sub":"a"}`, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := v.Verify(signPayload(t, signer, tc.payload))
			if tc.ok {
				if err != nil || c.Subject != "alice" || string(c.Custom) != `{"tenant":"t"}` || c.Audience[0] != "api" {
					t.Fatalf("refused or misread a well-formed token: %+v, %v", c, err)
				}
				return
			}
			if !errors.Is(err, ErrTokenInvalid) {
				t.Fatalf("accepted (%+v), or refused with %v", c, err)
			}
		})
	}
}

// Reserved claims may not be set as custom claims in any letter case.
func TestIsReservedClaim(t *testing.T) {
	for name, want := range map[string]bool{
		"sub": true, "SUB": true, "Sub": true, "client_ID": true, "cnf": true, "ACT": true,
		"tenant": false, "subject": false, "": false, "sub ": false,
	} {
		if got := IsReservedClaim(name); got != want {
			t.Errorf("IsReservedClaim(%q) = %t, want %t", name, got, want)
		}
	}
}
