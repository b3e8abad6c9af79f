package handlers

import (
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/tokenledger/tokenledger/api"
	"github.com/tokenledger/tokenledger/ledger"
	"github.com/tokenledger/tokenledger/ledger/token"
)

func TestOAuthErrorMapping(t *testing.T) {
	tests := []struct {
		err          error
		status, code string
	}{
		{badRequest("x"), "400", api.CodeInvalidRequest},
		{ledger.ErrInvalidRequest, "400", api.CodeInvalidRequest},
		{ledger.ErrInvalidClient, "401", api.CodeInvalidClient},
		{ledger.ErrUnauthorizedClient, "403", api.CodeUnauthorizedClient},
		{ledger.ErrInvalidScope, "400", api.CodeInvalidScope},
		{ledger.ErrRefreshReused, "400", api.CodeInvalidGrant},
		{ledger.ErrFamilyRevoked, "400", api.CodeInvalidGrant},
		{ledger.ErrExpired, "400", api.CodeInvalidGrant},
		{ledger.ErrFamilyExpired, "400", api.CodeInvalidGrant},
		{ledger.ErrVersionRequired, "400", api.CodeInvalidGrant},
		{ledger.ErrInvalidToken, "400", api.CodeInvalidGrant},
		{ledger.ErrUnknownFamily, "400", api.CodeInvalidGrant},
		{ledger.ErrWrongClient, "400", api.CodeInvalidGrant},
		{errOverloaded, "429", api.CodeTemporarilyUnavailable},
		{errStopping, "503", api.CodeTemporarilyUnavailable},
		{ledger.ErrUnavailable, "503", api.CodeTemporarilyUnavailable},
		{ledger.ErrConflict, "503", api.CodeTemporarilyUnavailable},
		{errors.New("disk on fire"), "500", api.CodeServerError},
	}
	for _, tc := range tests {
		status, code, desc, _ := oauthError(errorsJoin(tc.err))
		if status != tc.status || code != tc.code || desc == "" {
			t.Errorf("%v -> %s %s %q, want %s %s", tc.err, status, code, desc, tc.status, tc.code)
		}
		if strings.Contains(desc, "disk on fire") {
			t.Error("unknown error leaked into the description")
		}
	}
}

// errorsJoin wraps err as callers do, so the mapping is tested through %w.
func errorsJoin(err error) error { return errors.Join(errors.New("context"), err) }

func FuzzDecodeIssueRequest(f *testing.F) {
	f.Add([]byte(`{"client_id":"web","client_secret":"s","subject":"alice","audience":["api"],"scope":"read","claims":{"tenant":"a"}}`))
	f.Add([]byte(`{"client_id":"web","client_secret":"s","subject":"alice","claims":{"sub":"x"}}`))
	f.Add([]byte(`{"client_id":1}`))
	f.Add([]byte(`{"client_id":"web","client_secret":"s#cr3t!","subject":42}`))
	f.Add([]byte(`{}`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, body []byte) {
		r, err := DecodeIssueRequest(body, DefaultMaxRequestBytes)
		if err != nil {
			var re *requestError
			if !errors.As(err, &re) {
				t.Fatalf("decode error %v is not a request error", err)
			}
			if echoes(err, body, r.ClientSecret) {
				t.Fatal("error echoes the client secret")
			}
			return
		}
		if r.ClientID == "" || r.ClientSecret == "" || r.Subject == "" {
			t.Fatalf("accepted a request without credentials or subject: %q", body)
		}
		for name := range r.Claims {
			if token.IsReservedClaim(name) {
				t.Fatalf("accepted reserved claim %q", name)
			}
		}
	})
}

func FuzzDecodeRefreshRequest(f *testing.F) {
	f.Add([]byte(`{"client_id":"web","client_secret":"s","refresh_token":"tlr_x","scope":"read"}`))
	f.Add([]byte(`{"client_id":"web","client_secret":"s","refresh_token":""}`))
	f.Add([]byte(`{"refresh_token":"tlr_x","x":1}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		r, err := DecodeRefreshRequest(body, DefaultMaxRequestBytes)
		if err != nil {
			if echoes(err, body, r.RefreshToken) {
				t.Fatal("error echoes the refresh token")
			}
			return
		}
		if r.ClientID == "" || r.ClientSecret == "" || r.RefreshToken == "" {
			t.Fatalf("accepted an incomplete request: %q", body)
		}
	})
}

// Replies are the bytes encoding/json v1 wrote, so no client sees the
// change of library.
func TestTokenResponseEncodingAgrees(t *testing.T) {
	body := &pooledBody{b: []byte(`{"stale":"bytes from an earlier reply"}`)}
	for _, r := range []api.TokenResponse{
		{AccessToken: "a.b.c", TokenType: "Bearer", ExpiresIn: 900, RefreshToken: "tlr_x", RefreshTokenExpiresIn: 5, FamilyID: "F", Scope: "read write"},
		{AccessToken: "a", TokenType: "Bearer", Scope: `we"ird<&>\`},
		{TokenType: "Bearer", ExpiresIn: -1, Scope: "\u2028 \u2029 \x00\x1f\t\b\f é"},
	} {
		want, _ := json.Marshal(r)
		// Written over a reused buffer, as the service's pooled bodies are.
		if err := marshalTokenResponse(body, &r); err != nil || string(body.b) != string(want) {
			t.Fatalf("encode:\n got %s\nwant %s (%v)", body.b, want, err)
		}
	}
}

// Every other reply is encoded as encoding/json v1 encoded it too.
func TestRepliesEncodeAsBefore(t *testing.T) {
	at := time.Date(2026, 11, 27, 10, 0, 0, 123, time.UTC)
	for _, v := range []any{
		api.IntrospectResponse{Active: true, TokenType: api.TokenTypeRefresh, Subject: "<a&b>", Audience: []string{"api"}, ExpiresAt: 9, SID: "F"},
		api.IntrospectResponse{Active: true, TokenType: api.TokenTypeBearer, IssuedAt: 1, NotBefore: 2, JTI: "j", Scope: "\u2028"},
		api.IntrospectResponse{},
		api.RevokeResponse{Revoked: true},
		api.AdminRevokeResponse{RevokedFamilies: 3},
		api.DigestResponse{Seq: 7, Time: at.Truncate(time.Second), Digest: "abc"},
		api.SessionsResponse{Families: []api.Session{}},
		api.SessionsResponse{Families: []api.Session{{FamilyID: "F", ClientID: "web", CreatedAt: at, ExpiresAt: at.Add(time.Hour), Generation: 2, Version: 1},
			{FamilyID: "G", RotatedAt: &at, CreatedAt: at.In(time.FixedZone("x", 3600))}}},
		api.ErrorResponse{Error: api.CodeInvalidRequest, Description: `field "<x>" appears more than once`},
		map[string]any{"keys": []token.JWK{{Kty: "OKP", Kid: "k", Alg: "EdDSA", Use: "sig", Crv: "Ed25519", X: "abc"}}},
	} {
		want, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		got, err := marshalReply(v)
		if err != nil || string(got) != string(want) {
			t.Errorf("%T:\n got %s\nwant %s (%v)", v, got, want, err)
		}
	}
}

// The digest reply's time is the RFC 3339 string of a whole UTC second,
// as when the field was a string formatted with time.RFC3339.
func TestDigestReplyTime(t *testing.T) {
	now := time.Date(2026, 11, 27, 10, 0, 0, 999, time.FixedZone("x", 3600)).Truncate(time.Second)
	got, err := marshalReply(api.DigestResponse{Seq: 7, Time: now.UTC(), Digest: "abc"})
	want := `{"seq":7,"time":"` + now.UTC().Format(time.RFC3339) + `","digest":"abc"}`
	if err != nil || string(got) != want {
		t.Fatalf("digest reply:\n got %s\nwant %s (%v)", got, want, err)
	}
}

// echoes reports whether err quotes the secret value. Only a secret that
// cannot be mistaken for the errors' own words (it has a character they
// never use) and that appears once in the body (so not also as a field or
// claim name, which errors may name) is looked for.
func echoes(err error, body []byte, secret string) bool {
	if secret == "" || strings.Count(string(body), secret) != 1 {
		return false
	}
	if strings.Trim(secret, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 _.\"-:") == "" {
		return false
	}
	return strings.Contains(err.Error(), secret)
}

// The fast paths of the issue and refresh decoders accept a subset of
// what decodeStrict accepts, with the same result.
func checkFlatAgreesWithStrict(t *testing.T, body []byte) {
	t.Helper()
	var fi, si api.IssueRequest
	if decodeIssueFast(&fi, body, DefaultMaxRequestBytes) {
		if err := decodeStrict(body, DefaultMaxRequestBytes, &si); err != nil || !reflect.DeepEqual(fi, si) {
			t.Fatalf("%q: issue fast path decodes %+v, decodeStrict %+v (%v)", body, fi, si, err)
		}
	}
	var fr, sr api.RefreshRequest
	if decodeRefreshFast(&fr, body, DefaultMaxRequestBytes) {
		if err := decodeStrict(body, DefaultMaxRequestBytes, &sr); err != nil || fr != sr {
			t.Fatalf("%q: refresh fast path decodes %+v, decodeStrict %+v (%v)", body, fr, sr, err)
		}
	}
}

func TestDecodeFlat(t *testing.T) {
	for _, tc := range []struct {
		body           string
		issue, refresh bool // whether each fast path takes it
	}{
		{`{"client_id":"web","client_secret":"s","refresh_token":"tlr_x"}`, false, true},
		{` {"refresh_token" : "tlr_x", "scope":"read write","client_id":"web","client_secret":"s"} `, false, true},
		{`{"client_id":"web","client_secret":"s","subject":"alice","scope":"read"}`, true, false},
		{`{"client_id":"web","client_secret":"s","subject":"alice","audience":["api"]}`, false, false},
		{`{"client_id":"web","client_secret":"s","subject":"al\u0069ce"}`, false, false},
		{`{"client_id":"web","client_secret":"s","subject":"alïce"}`, false, false},
		{`{"client_id":"web","client_id":"other","client_secret":"s","refresh_token":"t"}`, false, false},
		{`{"Client_ID":"web","client_secret":"s","refresh_token":"t"}`, false, false},
		{`{"client_id":"web","client_secret":"s","refresh_token":"t"} x`, false, false},
		{`{"client_id":"web","client_secret":"s","refresh_token":7}`, false, false},
		{`{}`, false, false}, // no members: left to decodeStrict
		{`{`, false, false},
		{"\f{\"client_id\":\"web\"}", false, false},
	} {
		var ir api.IssueRequest
		var rr api.RefreshRequest
		if got := decodeIssueFast(&ir, []byte(tc.body), DefaultMaxRequestBytes); got != tc.issue {
			t.Errorf("%q: issue fast path %t, want %t", tc.body, got, tc.issue)
		}
		if got := decodeRefreshFast(&rr, []byte(tc.body), DefaultMaxRequestBytes); got != tc.refresh {
			t.Errorf("%q: refresh fast path %t, want %t", tc.body, got, tc.refresh)
		}
		checkFlatAgreesWithStrict(t, []byte(tc.body))
	}
	body := []byte(`{"client_id":"web","client_secret":"s","refresh_token":"t"}`)
	var rr api.RefreshRequest
	if decodeRefreshFast(&rr, body, len(body)-1) {
		t.Error("fast path ignores the size limit")
	}
	if _, err := DecodeRefreshRequest(body, len(body)-1); err == nil {
		t.Error("DecodeRefreshRequest ignores the size limit")
	}
}

func FuzzDecodeFlat(f *testing.F) {
	for _, s := range []string{
		`{"client_id":"web","client_secret":"s","refresh_token":"tlr_x","scope":"read"}`,
		`{"client_id":"web","client_secret":"s","subject":"alice","scope":"read"}`,
		` { "subject" : "a" , "client_id":"c","client_secret":"s" } `,
		`{"client_id":"web","client_secret":"s","refresh_token":"t","Refresh_Token":"u"}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		checkFlatAgreesWithStrict(t, body)
	})
}

// A presigned access token is used only for exactly the claims it was
// signed for; otherwise the token is signed anew.
func TestPresignedTokenOnlyForItsClaims(t *testing.T) {
	claims := token.AccessClaims{Issuer: "i", Subject: "alice", JTI: "j1", SID: "f", ExpiresAt: 10}
	var signed int
	sign := func(c token.AccessClaims) (string, error) { signed++; return "fresh-" + c.JTI, nil }
	other := claims
	other.JTI = "j2"
	for _, tc := range []struct {
		name string
		p    *presigned
		want string
	}{
		{"same claims", &presigned{claims: claims, token: "pre"}, "pre"},
		{"another attempt's claims", &presigned{claims: other, token: "pre"}, "fresh-j1"},
		{"presigning failed", &presigned{claims: claims, err: errors.New("boom")}, "fresh-j1"},
		{"nothing presigned", &presigned{}, "fresh-j1"},
		{"no presigner", nil, "fresh-j1"},
	} {
		signed = 0
		got, err := tc.p.tokenFor(claims, sign)
		if err != nil || got != tc.want {
			t.Errorf("%s: %q, %v; want %q", tc.name, got, err, tc.want)
		}
		if wantSigned := map[bool]int{true: 0, false: 1}[tc.want == "pre"]; signed != wantSigned {
			t.Errorf("%s: signed %d times, want %d", tc.name, signed, wantSigned)
		}
	}
}
