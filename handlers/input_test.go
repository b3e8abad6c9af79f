package handlers_test

import (
	"strings"
	"testing"
	"time"

	"github.com/tokenledger/tokenledger/api"
	"github.com/tokenledger/tokenledger/internal/tltest"
)

// Malformed input gets the right OAuth error and appends nothing.
func TestMalformedInputChangesNothing(t *testing.T) {
	e := newEnv(t, "")
	e.StartInstance(tltest.Options{Grace: 10 * time.Second})
	good := e.Issue("alice")
	tltest.WantOK(t, good)
	cred := `"client_id":"web","client_secret":"` + tltest.Secret + `"`
	tests := []struct {
		name, subject, body, code, status string
	}{
		{"bad json", "tokens.issue", `{"client_id":`, api.CodeInvalidRequest, "400"},
		{"not an object", "tokens.issue", `["web"]`, api.CodeInvalidRequest, "400"},
		{"empty", "tokens.issue", ``, api.CodeInvalidRequest, "400"},
		{"trailing data", "tokens.issue", `{` + cred + `,"subject":"a"} {}`, api.CodeInvalidRequest, "400"},
		{"unknown field", "tokens.issue", `{` + cred + `,"subject":"a","admin":true}`, api.CodeInvalidRequest, "400"},
		{"wrong type", "tokens.issue", `{` + cred + `,"subject":42}`, api.CodeInvalidRequest, "400"},
		{"audience not array", "tokens.issue", `{` + cred + `,"subject":"a","audience":"api"}`, api.CodeInvalidRequest, "400"},
		{"missing subject", "tokens.issue", `{` + cred + `}`, api.CodeInvalidRequest, "400"},
		{"control characters", "tokens.issue", `{` + cred + `,"subject":"a\u0000b"}`, api.CodeInvalidRequest, "400"},
		{"invalid utf-8", "tokens.issue", "{" + cred + ",\"subject\":\"\xff\"}", api.CodeInvalidRequest, "400"},
		{"oversized", "tokens.issue", `{` + cred + `,"subject":"` + strings.Repeat("a", 20000) + `"}`, api.CodeInvalidRequest, "400"},
		{"reserved claim", "tokens.issue", `{` + cred + `,"subject":"a","claims":{"sub":"root"}}`, api.CodeInvalidRequest, "400"},
		{"reserved claim in another case", "tokens.issue", `{` + cred + `,"subject":"a","claims":{"SUB":"root"}}`, api.CodeInvalidRequest, "400"},
		{"duplicate claim", "tokens.issue", `{` + cred + `,"subject":"a","claims":{"tenant":"a","tenant":"b"}}`, api.CodeInvalidRequest, "400"},
		{"duplicate inside a claim", "tokens.issue", `{` + cred + `,"subject":"a","claims":{"tenant":{"x":1,"x":2}}}`, api.CodeInvalidRequest, "400"},
		{"wrong-case member", "tokens.issue", `{` + cred + `,"subject":"a","SUBJECT":"b"}`, api.CodeInvalidRequest, "400"},
		{"claim not allowed", "tokens.issue", `{` + cred + `,"subject":"a","claims":{"role":"admin"}}`, api.CodeInvalidRequest, "400"},
		{"scope not allowed", "tokens.issue", `{` + cred + `,"subject":"a","scope":"admin"}`, api.CodeInvalidScope, "400"},
		{"audience not allowed", "tokens.issue", `{` + cred + `,"subject":"a","audience":["other"]}`, api.CodeInvalidRequest, "400"},
		{"wrong secret", "tokens.issue", `{"client_id":"web","client_secret":"tlcs_wrong","subject":"a"}`, api.CodeInvalidClient, "401"},
		{"unknown client", "tokens.issue", `{"client_id":"nobody","client_secret":"x","subject":"a"}`, api.CodeInvalidClient, "401"},
		{"client id with wildcard", "tokens.issue", `{"client_id":"*","client_secret":"x","subject":"a"}`, api.CodeInvalidClient, "401"},
		{"missing secret", "tokens.issue", `{"client_id":"web","subject":"a"}`, api.CodeInvalidRequest, "400"},
		{"refresh: bad json", "tokens.refresh", `{{`, api.CodeInvalidRequest, "400"},
		{"refresh: unknown field", "tokens.refresh", `{` + cred + `,"refresh_token":"x","grant_type":"refresh_token"}`, api.CodeInvalidRequest, "400"},
		{"refresh: wrong type", "tokens.refresh", `{` + cred + `,"refresh_token":["x"]}`, api.CodeInvalidRequest, "400"},
		{"refresh: missing token", "tokens.refresh", `{` + cred + `}`, api.CodeInvalidRequest, "400"},
		{"refresh: wrong secret", "tokens.refresh", `{"client_id":"web","client_secret":"nope","refresh_token":"` + good.RefreshToken + `"}`, api.CodeInvalidClient, "401"},
		{"refresh: widen scope", "tokens.refresh", `{` + cred + `,"refresh_token":"` + good.RefreshToken + `","scope":"admin"}`, api.CodeInvalidScope, "400"},
		{"refresh: oversized", "tokens.refresh", `{` + cred + `,"refresh_token":"` + strings.Repeat("t", 17000) + `"}`, api.CodeInvalidRequest, "400"},
		{"jwks: unknown field", "tokens.jwks", `{"kid":"x"}`, api.CodeInvalidRequest, "400"},
	}
	before := e.LastSeq()
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := e.Call(tc.subject, tc.body)
			tltest.WantError(t, r, tc.code, tc.status)
			if r.Description == "" {
				t.Fatal("no error_description")
			}
			if strings.Contains(string(r.Raw), tltest.Secret) || strings.Contains(string(r.Raw), good.RefreshToken) {
				t.Fatalf("error reply echoes a secret: %s", r.Raw)
			}
		})
	}
	if after := e.LastSeq(); after != before {
		t.Fatalf("malformed requests appended %d events", after-before)
	}
	// The service is still healthy and the token still works.
	tltest.WantOK(t, e.Refresh(good.RefreshToken))
}
