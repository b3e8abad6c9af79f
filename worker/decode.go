package worker

import (
	"bytes"
	"errors"
	"fmt"
	"reflect"
	"strconv"
	"strings"
	"unicode"

	"github.com/go-json-experiment/json"
	"github.com/go-json-experiment/json/jsontext"
)

// decodeStrict decodes one JSON object into v: at most limit bytes, a
// single object with nothing after it, every member name exactly one of
// v's (case-sensitive), none twice, none unknown. Its errors never quote
// the body, so whatever it carries does not leak into logs or dead letters.
func decodeStrict(body []byte, limit int, v any) error {
	if len(body) > limit {
		return fmt.Errorf("larger than %d bytes", limit)
	}
	body = bytes.TrimSpace(body)
	if len(body) == 0 || body[0] != '{' {
		return errors.New("must be a JSON object")
	}
	if err := json.Unmarshal(body, v, json.RejectUnknownMembers(true)); err != nil {
		return errors.New(describeJSONError(err))
	}
	return nil
}

// decodeOpen decodes a JSON value of an extensible profile (SET claims,
// CAEP and RISC event bodies, subject identifiers): unknown members are
// allowed, but a duplicate member, or a member named like one of v's in
// another letter case, is an error. v's struct types catch unknown
// members in a field tagged `json:",embed"`, which caseVariant inspects.
func decodeOpen(data []byte, v any) error {
	if err := json.Unmarshal(data, v); err != nil {
		return errors.New(describeJSONError(err))
	}
	return nil
}

// describeJSONError says what is wrong with a JSON input without quoting
// its values: member names are quoted, clipped.
func describeJSONError(err error) string {
	var syn *jsontext.SyntacticError
	var sem *json.SemanticError
	switch {
	case errors.Is(err, jsontext.ErrDuplicateName):
		return "duplicate field " + duplicateName(err)
	case errors.As(err, &syn) && syn.JSONPointer == "" && strings.Contains(syn.Error(), "after top-level value"):
		return "data after the JSON object"
	case errors.As(err, &syn):
		return "not valid JSON"
	case errors.Is(err, json.ErrUnknownName) && errors.As(err, &sem):
		return fmt.Sprintf("unknown field %q (names are case-sensitive)", clip(sem.JSONPointer.LastToken()))
	case errors.As(err, &sem) && sem.JSONPointer != "":
		return fmt.Sprintf("field %q has the wrong type or form", clip(strings.TrimPrefix(string(sem.JSONPointer), "/")))
	}
	return "not valid JSON"
}

// duplicateName is the quoted name a duplicate-name error reports (the
// error's JSON pointer names the enclosing object at some depths and the
// member at others, so the message is the one reliable source).
func duplicateName(err error) string {
	const marker = "duplicate object member name "
	msg := err.Error()
	i := strings.Index(msg, marker)
	if i < 0 {
		return "(unnamed)"
	}
	q, err := strconv.QuotedPrefix(msg[i+len(marker):])
	if err != nil {
		return "(unnamed)"
	}
	name, err := strconv.Unquote(q)
	if err != nil {
		return "(unnamed)"
	}
	return strconv.Quote(clip(name))
}

// caseVariant reports an unknown member of an object decoded into v (a
// pointer to a struct) whose name differs from one of v's member names
// only in letter case: two parsers could disagree on which one it is.
func caseVariant(v any, unknown map[string]jsontext.Value) error {
	if len(unknown) == 0 {
		return nil
	}
	t := reflect.TypeOf(v)
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	known := map[string]string{}
	collectNames(t, known)
	for name := range unknown {
		if want, ok := known[strings.ToLower(name)]; ok {
			return fmt.Errorf("field %q differs from %q only in letter case", clip(name), want)
		}
	}
	return nil
}

// collectNames adds the JSON member names of struct type t (and of the
// structs it embeds) by their lower-case form.
func collectNames(t reflect.Type, into map[string]string) {
	for i := range t.NumField() {
		f := t.Field(i)
		tag := f.Tag.Get("json")
		name, _, _ := strings.Cut(tag, ",")
		switch {
		case tag == "-" || tag == ",embed":
		case f.Anonymous && name == "" && f.Type.Kind() == reflect.Struct:
			collectNames(f.Type, into)
		case f.IsExported():
			if name == "" {
				name = f.Name
			}
			into[strings.ToLower(name)] = name
		}
	}
}

// clip bounds echoed names and values.
func clip(s string) string {
	if len(s) > 64 {
		return strings.ToValidUTF8(s[:64], "") + "..."
	}
	return s
}

// validText checks a free-text field: non-empty, bounded, printable.
func validText(field, s string, max int) error {
	if s == "" {
		return errors.New(field + " is required")
	}
	if len(s) > max {
		return fmt.Errorf("%s is longer than %d bytes", field, max)
	}
	for _, r := range s {
		if !unicode.IsPrint(r) {
			return errors.New(field + " has non-printable characters")
		}
	}
	return nil
}
