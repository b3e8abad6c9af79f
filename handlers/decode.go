package handlers

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"reflect"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/go-json-experiment/json"
	"github.com/go-json-experiment/json/jsontext"
)

// DefaultMaxRequestBytes is the default request size limit.
const DefaultMaxRequestBytes = 16 << 10

// requestOptions are the rules every request is decoded by (docs/contract.md §3), the
// encoding/json/v2 semantics made explicit: member names match exactly (no
// case folding), a name may appear once per object, an unknown member is an
// error, and strings must be valid UTF-8. encoding/json v1 folded case and
// kept the last of duplicates, so `{"client_id":"a","CLIENT_ID":"b"}` was
// read as client "b".
var requestOptions = json.JoinOptions(
	json.DefaultOptionsV2(),
	json.RejectUnknownMembers(true),
	json.MatchCaseInsensitiveNames(false),
	jsontext.AllowDuplicateNames(false),
	jsontext.AllowInvalidUTF8(false),
)

// replyOptions encode replies byte for byte as encoding/json v1 did (<, >,
// & and U+2028/U+2029 escaped, map keys sorted), so no client sees the
// change of library.
var replyOptions = json.JoinOptions(
	json.DefaultOptionsV2(),
	json.Deterministic(true),
	jsontext.EscapeForHTML(true),
	jsontext.EscapeForJS(true),
)

// marshalReply encodes a reply with replyOptions.
func marshalReply(v any) ([]byte, error) { return json.Marshal(v, replyOptions) }

// decodeStrict decodes one JSON object into v, a pointer to a request
// struct: the body must be at most limit bytes, a single object, with no
// unknown, duplicated or differently cased member names and nothing after
// it. Its errors never quote a value from the body (at most a member name,
// clipped), so secrets in it do not leak.
func decodeStrict(body []byte, limit int, v any) error {
	if len(body) > limit {
		return badRequest(fmt.Sprintf("request is larger than %d bytes", limit))
	}
	body = bytes.TrimSpace(body)
	if len(body) == 0 || body[0] != '{' {
		return badRequest("request must be a JSON object")
	}
	if !utf8.Valid(body) {
		return badRequest("request is not valid UTF-8")
	}
	if err := json.Unmarshal(body, v, requestOptions); err != nil {
		return badRequest(describeJSONError(err, body, v))
	}
	return nil
}

// describeJSONError says what is wrong with a request without quoting any
// value from it: JSON pointers name members, never values, and the
// library's own messages (which can quote a value) are not used.
func describeJSONError(err error, body []byte, v any) string {
	var synErr *jsontext.SyntacticError
	var semErr *json.SemanticError
	switch {
	case errors.As(err, &synErr) && synErr.Err == jsontext.ErrDuplicateName:
		return fmt.Sprintf("field %s appears more than once", quoteName(synErr.JSONPointer.LastToken()))
	case errors.As(err, &semErr) && semErr.Err == json.ErrUnknownName:
		name := semErr.JSONPointer.LastToken()
		if known, ok := foldMatch(v, semErr.JSONPointer, name); ok {
			return fmt.Sprintf("field %s must be spelled %s (names are case-sensitive)", quoteName(name), quoteName(known))
		}
		return "unknown field " + quoteName(name)
	case errors.As(err, &synErr):
		if trailingData(body) {
			return "request has data after the JSON object"
		}
	case errors.As(err, &semErr) && semErr.JSONPointer != "":
		for first := range semErr.JSONPointer.Tokens() {
			if semErr.Err == nil { // a JSON kind the field cannot hold
				return fmt.Sprintf("field %s has the wrong type", quoteName(first))
			}
			return fmt.Sprintf("request is not valid JSON: field %s has an invalid value", quoteName(first))
		}
	}
	return "request is not valid JSON"
}

// trailingData reports whether body starts with a complete JSON value
// and has more after it.
func trailingData(body []byte) bool {
	dec := jsontext.NewDecoder(bytes.NewReader(body), jsontext.AllowDuplicateNames(true))
	if dec.SkipValue() != nil {
		return false
	}
	_, err := dec.ReadToken()
	return !errors.Is(err, io.EOF)
}

// foldMatch returns the member name of the request struct v that name
// spells in another letter case, for an unknown member at the top level.
func foldMatch(v any, ptr jsontext.Pointer, name string) (string, bool) {
	if ptr.Parent() != "" {
		return "", false
	}
	t := reflect.TypeOf(v)
	for t != nil && t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t == nil || t.Kind() != reflect.Struct {
		return "", false
	}
	for i := range t.NumField() {
		f := t.Field(i)
		known, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if known == "" {
			known = f.Name
		}
		if f.IsExported() && known != "-" && known != name && strings.EqualFold(known, name) {
			return known, true
		}
	}
	return "", false
}

// quoteName quotes a member name for an error description, clipped so a
// long name (or a secret pasted as one) is never echoed whole.
func quoteName(s string) string { return fmt.Sprintf("%q", clip(s)) }

// clip bounds echoed member names at 64 bytes, on a rune boundary.
func clip(s string) string {
	if len(s) <= 64 {
		return s
	}
	n := 64
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "..."
}

// validText checks a free-text field: non-empty, bounded, printable.
func validText(field, s string, max int) error {
	if s == "" {
		return badRequest(field + " is required")
	}
	if len(s) > max {
		return badRequest(fmt.Sprintf("%s is longer than %d bytes", field, max))
	}
	for _, r := range s {
		if !unicode.IsPrint(r) {
			return badRequest(field + " has non-printable characters")
		}
	}
	return nil
}
