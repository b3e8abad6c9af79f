package handlers

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"unicode"
	"unicode/utf8"
)

// DefaultMaxRequestBytes is the default request size limit.
const DefaultMaxRequestBytes = 16 << 10

// decodeStrict decodes one JSON object into v: the body must be at most
// limit bytes, a single object, with no unknown fields and nothing after it.
// Its errors never quote the body, so secrets in it do not leak.
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
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return badRequest(describeJSONError(err))
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return badRequest("request has data after the JSON object")
	}
	return nil
}

func describeJSONError(err error) string {
	var typeErr *json.UnmarshalTypeError
	var syntaxErr *json.SyntaxError
	switch {
	case errors.As(err, &typeErr):
		return fmt.Sprintf("field %q has the wrong type", clip(typeErr.Field))
	case errors.As(err, &syntaxErr), errors.Is(err, io.ErrUnexpectedEOF):
		return "request is not valid JSON"
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		return "unknown field " + clip(strings.TrimPrefix(err.Error(), "json: unknown field "))
	}
	return "request is not valid JSON"
}

// clip bounds echoed field names.
func clip(s string) string {
	if len(s) > 64 {
		return s[:64] + "..."
	}
	return s
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
