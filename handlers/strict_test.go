package handlers_test

import (
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/go-json-experiment/json"

	"github.com/tokenledger/tokenledger/api"
	"github.com/tokenledger/tokenledger/internal/tltest"
)

// member is one name and string value of a request object, in order.
type member struct{ name, value string }

// object writes members as a JSON object, in their order, duplicates and
// all (which no map can hold).
func object(ms ...member) string {
	var b strings.Builder
	b.WriteByte('{')
	for i, m := range ms {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(strconv.Quote(m.name) + ":" + strconv.Quote(m.value))
	}
	b.WriteByte('}')
	return b.String()
}

// Every endpoint the service registers refuses a request with a member
// named twice, a member name in another letter case, or an unknown member:
// invalid_request, status 400, a description that quotes no value of the
// request, and no event appended. The same request without the fault is
// accepted, so the fault alone is what is refused.
func TestEveryEndpointRefusesAmbiguousMembers(t *testing.T) {
	e := newEnv(t, "")
	e.StartInstance(tltest.Options{Grace: 10 * time.Second})
	g := e.Issue("alice")
	tltest.WantOK(t, g)
	cred := []member{{"client_id", tltest.ClientID}, {"client_secret", tltest.Secret}}
	// A next key to revoke in the valid keys.revoke request.
	var rotated struct {
		Keys []struct {
			KID   string `json:"kid"`
			State string `json:"state"`
		} `json:"keys"`
	}
	r := e.Call("tokens.admin.keys.rotate", "{}")
	if r.Error != "" || json.Unmarshal(r.Raw, &rotated) != nil {
		t.Fatalf("keys.rotate: %s", r.Raw)
	}
	next := ""
	for _, k := range rotated.Keys {
		if k.State == "published" {
			next = k.KID
		}
	}
	if next == "" {
		t.Fatalf("no published key after a rotation: %+v", rotated.Keys)
	}

	// The valid request of each endpoint; the faults are made from it.
	endpoints := []struct {
		subject string
		base    []member
	}{
		{"tokens.issue", append(slices.Clone(cred), member{"subject", "bob"}, member{"scope", "read"})},
		{"tokens.refresh", append(slices.Clone(cred), member{"refresh_token", g.RefreshToken})},
		{"tokens.revoke", append(slices.Clone(cred), member{"token", g.AccessToken}, member{"token_type_hint", "access_token"})},
		{"tokens.introspect", append(slices.Clone(cred), member{"token", g.AccessToken})},
		{"tokens.jwks", nil},
		{"tokens.sessions", append(slices.Clone(cred), member{"subject", "alice"})},
		{"tokens.admin.sessions", []member{{"subject", "alice"}}},
		{"tokens.admin.revoke", []member{{"subject", "nobody-at-all"}, {"reason", "strict test"}}},
		{"tokens.admin.digest", nil},
		{"tokens.admin.rollout", []member{{"client_id", tltest.ClientID}}},
		{"tokens.admin.keys.list", nil},
		{"tokens.admin.keys.rotate", nil},
		{"tokens.admin.keys.revoke", []member{{"kid", next}, {"reason", "strict test"}}},
	}
	covered := map[string]bool{}
	for _, ep := range endpoints {
		covered[ep.subject] = true
	}
	registered := e.Endpoints()
	if len(registered) == 0 {
		t.Fatal("the service lists no endpoints")
	}
	for _, subject := range registered {
		if !covered[subject] {
			t.Errorf("endpoint %s is registered but not in this table", subject)
		}
	}

	// A value that no error description may quote.
	const tainted = "V4lue!<never-echoed>"
	for _, ep := range endpoints {
		first := member{"client_id", tltest.ClientID}
		if len(ep.base) > 0 {
			first = ep.base[0]
		}
		upper := strings.ToUpper(first.name)
		faults := []struct {
			name string
			body string
		}{
			{"duplicate member", object(append(slices.Clone(ep.base), member{first.name, tainted})...)},
			{"duplicate member, same value", object(append(slices.Clone(ep.base), first)...)},
			{"wrong-case member beside the right one", object(append(slices.Clone(ep.base), member{upper, tainted})...)},
			{"wrong-case member instead of the right one", object(append([]member{{upper, first.value}}, ep.base[min(1, len(ep.base)):]...)...)},
			{"unknown member", object(append(slices.Clone(ep.base), member{"extra", tainted})...)},
		}
		for _, f := range faults {
			t.Run(ep.subject+"/"+f.name, func(t *testing.T) {
				before := e.LastSeq()
				r := e.Call(ep.subject, f.body)
				tltest.WantError(t, r, api.CodeInvalidRequest, "400")
				if r.Description == "" {
					t.Fatal("no error_description")
				}
				for _, v := range []string{tainted, tltest.Secret, g.RefreshToken, g.AccessToken, "nobody-at-all"} {
					if strings.Contains(string(r.Raw), v) {
						t.Fatalf("error reply quotes a value of the request: %s", r.Raw)
					}
				}
				if after := e.LastSeq(); after != before {
					t.Fatalf("refused request appended %d events", after-before)
				}
			})
		}
	}
	// Without the fault each request is served (revoke last: it ends the
	// access token the others use).
	for _, ep := range endpoints {
		if r := e.Call(ep.subject, object(ep.base...)); r.Error != "" {
			t.Errorf("%s: the valid request is refused: %s", ep.subject, r.Raw)
		}
	}
}
