package handlers

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"slices"
	"strings"
	"testing"

	"github.com/go-json-experiment/json/jsontext"

	"github.com/tokenledger/tokenledger/api"
)

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
		var r api.TokenRequest
		err := decodeStrict([]byte(tc.body), DefaultMaxRequestBytes, &r)
		var re *requestError
		if !errors.As(err, &re) || !strings.Contains(re.desc, tc.want) {
			t.Errorf("%s: got %v, want a request error containing %q", tc.body, err, tc.want)
		}
	}
	var r api.TokenRequest
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
		var r api.TokenRequest
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
		var v1 api.TokenRequest
		dec := json.NewDecoder(bytes.NewReader(body))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&v1); err != nil || v1 != r {
			t.Fatalf("%q: decoded %+v, encoding/json %+v (%v)", body, r, v1, err)
		}
	})
}
