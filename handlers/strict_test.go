package handlers

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/go-json-experiment/json/jsontext"
	"github.com/nats-io/nats.go/micro"

	"github.com/tokenledger/tokenledger/projections"
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
	e.startService(envOptions{grace: 10 * time.Second, view: projections.NewView()})
	g := e.issue("alice")
	wantOK(t, g)
	cred := []member{{"client_id", testClientID}, {"client_secret", testSecret}}
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
	}
	covered := map[string]bool{}
	for _, ep := range endpoints {
		covered[ep.subject] = true
	}
	for _, subject := range e.registeredSubjects() {
		if !covered[subject] {
			t.Errorf("endpoint %s is registered but not in this table", subject)
		}
	}

	// A value that no error description may quote.
	const tainted = "V4lue!<never-echoed>"
	for _, ep := range endpoints {
		first := member{"client_id", testClientID}
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
				before := e.lastSeq()
				r := e.call(ep.subject, f.body)
				wantError(t, r, CodeInvalidRequest, "400")
				if r.Description == "" {
					t.Fatal("no error_description")
				}
				for _, v := range []string{tainted, testSecret, g.RefreshToken, g.AccessToken, "nobody-at-all"} {
					if strings.Contains(string(r.Raw), v) {
						t.Fatalf("error reply quotes a value of the request: %s", r.Raw)
					}
				}
				if after := e.lastSeq(); after != before {
					t.Fatalf("refused request appended %d events", after-before)
				}
			})
		}
	}
	// Without the fault each request is served (revoke last: it ends the
	// access token the others use).
	for _, ep := range endpoints {
		if r := e.call(ep.subject, object(ep.base...)); r.Error != "" {
			t.Errorf("%s: the valid request is refused: %s", ep.subject, r.Raw)
		}
	}
}

// registeredSubjects asks the running service (micro's INFO) which
// subjects its endpoints listen on.
func (e *env) registeredSubjects() []string {
	e.t.Helper()
	subject, err := micro.ControlSubject(micro.InfoVerb, ServiceName, "")
	if err != nil {
		e.t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	msg, err := e.nc.RequestWithContext(ctx, subject, nil)
	if err != nil {
		e.t.Fatal(err)
	}
	var info micro.Info
	if err := json.Unmarshal(msg.Data, &info); err != nil {
		e.t.Fatal(err)
	}
	var out []string
	for _, ep := range info.Endpoints {
		out = append(out, ep.Subject)
	}
	if len(out) == 0 {
		e.t.Fatal("the service lists no endpoints")
	}
	return out
}

// What decodeStrict says about a refused request, case by case: the
// member is named (clipped), the value never.
func TestDecodeStrictDescriptions(t *testing.T) {
	long := strings.Repeat("n", 100)
	for _, tc := range []struct {
		body, want string
	}{
		{`{"client_id":"a","CLIENT_ID":"b"}`, `field "CLIENT_ID" must be spelled "client_id"`},
		{`{"Client_Id":"a"}`, `field "Client_Id" must be spelled "client_id"`},
		{`{"client_id":"a","client_id":"b"}`, `field "client_id" appears more than once`},
		{`{"client_id":"a","admin":true}`, `unknown field "admin"`},
		{`{"` + long + `":"x"}`, `unknown field "` + long[:64] + `..."`},
		{`{"token":42}`, `field "token" has the wrong type`},
		{`{"token":"a"} {}`, `request has data after the JSON object`},
		{`{"token":"a"`, `request is not valid JSON`},
		{`{"token":"\ud800"}`, `request is not valid JSON`},
		{"{\"token\":\"\xff\"}", `request is not valid UTF-8`},
		{`["a"]`, `request must be a JSON object`},
	} {
		var r TokenRequest
		err := decodeStrict([]byte(tc.body), DefaultMaxRequestBytes, &r)
		var re *requestError
		if !errors.As(err, &re) || !strings.Contains(re.desc, tc.want) {
			t.Errorf("%s: got %v, want a request error containing %q", tc.body, err, tc.want)
		}
	}
	var r TokenRequest
	body := []byte(`{"token":"` + strings.Repeat("t", 40) + `"}`)
	if err := decodeStrict(body, len(body)-1, &r); err == nil || !strings.Contains(err.Error(), "larger than") {
		t.Errorf("size limit: %v", err)
	}
	if err := decodeStrict(body, len(body), &r); err != nil {
		t.Errorf("a request of exactly the limit is refused: %v", err)
	}
}

// stringValues returns the string values (not the member names) in body,
// read leniently.
func stringValues(body []byte) []string {
	dec := jsontext.NewDecoder(bytes.NewReader(body), jsontext.AllowDuplicateNames(true), jsontext.AllowInvalidUTF8(true))
	var out []string
	for {
		tok, err := dec.ReadToken()
		if err != nil {
			return out
		}
		if tok.Kind() == '"' && !isName(dec) {
			out = append(out, tok.String())
		}
	}
}

// isName reports whether the token just read was an object member's name.
func isName(dec *jsontext.Decoder) bool {
	k, n := dec.StackIndex(dec.StackDepth())
	return k == '{' && n%2 == 1
}

// memberNames returns the top-level member names of an object, in order.
func memberNames(t *testing.T, body []byte) []string {
	dec := jsontext.NewDecoder(bytes.NewReader(body), jsontext.AllowDuplicateNames(true))
	if _, err := dec.ReadToken(); err != nil {
		t.Fatalf("accepted %q, which does not start an object: %v", body, err)
	}
	var names []string
	for dec.PeekKind() == '"' {
		tok, err := dec.ReadToken()
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, tok.String())
		if err := dec.SkipValue(); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := dec.ReadToken(); err != nil && !errors.Is(err, io.EOF) {
		t.Fatal(err)
	}
	return names
}

// FuzzDecodeStrict holds the request decoder to the contract: what it
// accepts has only the request's member names, each exactly and once, and
// encoding/json (v1, unknown fields disallowed) reads it the same; what it
// refuses it refuses as a request error that quotes no value.
func FuzzDecodeStrict(f *testing.F) {
	for _, s := range []string{
		`{"client_id":"web","client_secret":"s","token":"a.b.c"}`,
		`{"client_id":"web","client_secret":"s","token":"t","token_type_hint":"access_token"}`,
		`{"client_id":"a","CLIENT_ID":"b"}`,
		`{"client_id":"a","client_id":"b"}`,
		`{"token":"s3cr#t!","extra":1}`,
		`{"token":"\u00e9\ud83d\ude00","client_id":null}`,
		`{"token":"a"} {}`,
	} {
		f.Add([]byte(s))
	}
	known := []string{"client_id", "client_secret", "token", "token_type_hint"}
	f.Fuzz(func(t *testing.T, body []byte) {
		var r TokenRequest
		err := decodeStrict(body, DefaultMaxRequestBytes, &r)
		if err != nil {
			var re *requestError
			if !errors.As(err, &re) {
				t.Fatalf("decode error %v is not a request error", err)
			}
			for _, v := range stringValues(body) {
				if len(v) >= 6 && echoes(err, body, v) {
					t.Fatalf("error %q quotes the value %q of %q", err, v, body)
				}
			}
			return
		}
		names := memberNames(t, body)
		seen := map[string]bool{}
		for _, n := range names {
			if !slices.Contains(known, n) || seen[n] {
				t.Fatalf("accepted %q with member %q", body, n)
			}
			seen[n] = true
		}
		var v1 TokenRequest
		dec := json.NewDecoder(bytes.NewReader(body))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&v1); err != nil || v1 != r {
			t.Fatalf("%q: decoded %+v, encoding/json %+v (%v)", body, r, v1, err)
		}
	})
}
