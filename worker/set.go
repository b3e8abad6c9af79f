package worker

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/go-json-experiment/json"
	"github.com/go-json-experiment/json/jsontext"
	"github.com/golang-jwt/jwt/v5"

	"github.com/tokenledger/tokenledger/ledger/token"
)

// SETType is the JWT typ of a Security Event Token (RFC 8417 §2.3).
const SETType = "secevent+jwt"

// The CAEP and RISC event types the worker understands, and the docs/contract.md §5
// type each maps to. docs/security-events.md explains the choices.
const (
	caepPrefix = "https://schemas.openid.net/secevent/caep/event-type/"
	riscPrefix = "https://schemas.openid.net/secevent/risc/event-type/"
)

// setMapping is what a CAEP or RISC event type becomes.
type setMapping struct {
	Type     string
	Severity Severity
}

var setEventTypes = map[string]setMapping{
	caepPrefix + "session-revoked":                    {"session_revoked", SeverityHigh},
	caepPrefix + "credential-change":                  {"credential_change", SeverityHigh},
	caepPrefix + "token-claims-change":                {"token_claims_change", SeverityMedium},
	riscPrefix + "credential-compromise":              {"credential_compromised", SeverityCritical},
	riscPrefix + "account-disabled":                   {"account_disabled", SeverityHigh},
	riscPrefix + "account-purged":                     {"account_purged", SeverityCritical},
	riscPrefix + "sessions-revoked":                   {"sessions_revoked", SeverityHigh},
	riscPrefix + "account-credential-change-required": {"credential_change_required", SeverityMedium},
}

// setAlgs are the signature algorithms accepted on SETs: never "none" nor
// HMAC, whose shared secret would let the receiver forge events.
var setAlgs = []string{"EdDSA", "ES256", "ES384", "RS256", "PS256"}

// Transmitter is a configured sender of SETs: the issuer it signs as, the
// audience it must address, and its public keys.
type Transmitter struct {
	Issuer   string
	Audience string
	Keys     []TransmitterKey
}

// TransmitterKey is one public key of a transmitter. An empty KID matches
// any token's kid.
type TransmitterKey struct {
	KID    string
	Public crypto.PublicKey
}

// ParseTransmitterKeys reads a JWKS document ({"keys": [...]}) or one or
// more PEM public keys (PKIX "PUBLIC KEY" blocks or certificates).
func ParseTransmitterKeys(b []byte) ([]TransmitterKey, error) {
	b = bytes.TrimSpace(b)
	if len(b) > 0 && b[0] == '{' {
		var set struct {
			Keys []token.JWK `json:"keys"`
		}
		if err := json.Unmarshal(b, &set); err != nil {
			return nil, fmt.Errorf("transmitter JWKS: %w", err)
		}
		var keys []TransmitterKey
		for _, j := range set.Keys {
			if j.Use != "" && j.Use != "sig" {
				continue
			}
			pub, err := j.PublicKey()
			if err != nil {
				return nil, fmt.Errorf("transmitter JWKS: %w", err)
			}
			keys = append(keys, TransmitterKey{KID: j.Kid, Public: pub})
		}
		if len(keys) == 0 {
			return nil, errors.New("transmitter JWKS: no signing keys")
		}
		return keys, nil
	}
	var keys []TransmitterKey
	for rest := b; ; {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		var pub any
		var err error
		switch block.Type {
		case "PUBLIC KEY":
			pub, err = x509.ParsePKIXPublicKey(block.Bytes)
		case "CERTIFICATE":
			var cert *x509.Certificate
			if cert, err = x509.ParseCertificate(block.Bytes); err == nil {
				pub = cert.PublicKey
			}
		default:
			return nil, fmt.Errorf("transmitter PEM: unexpected block %q (want PUBLIC KEY or CERTIFICATE)", block.Type)
		}
		if err != nil {
			return nil, fmt.Errorf("transmitter PEM: %w", err)
		}
		switch pub.(type) {
		case ed25519.PublicKey, *ecdsa.PublicKey, *rsa.PublicKey:
		default:
			return nil, fmt.Errorf("transmitter PEM: unsupported key type %T", pub)
		}
		keys = append(keys, TransmitterKey{KID: block.Headers["kid"], Public: pub})
	}
	if len(keys) == 0 {
		return nil, errors.New("transmitter keys: neither a JWKS nor PEM public keys")
	}
	return keys, nil
}

// setVerifier verifies SETs against the configured transmitters.
type setVerifier struct {
	byIssuer map[string]Transmitter
	now      func() time.Time
	leeway   time.Duration
}

func newSETVerifier(ts []Transmitter, now func() time.Time) (*setVerifier, error) {
	v := &setVerifier{byIssuer: map[string]Transmitter{}, now: now, leeway: time.Minute}
	for _, t := range ts {
		switch {
		case t.Issuer == "":
			return nil, errors.New("transmitter: issuer is required")
		case t.Audience == "":
			return nil, fmt.Errorf("transmitter %s: audience is required", t.Issuer)
		case len(t.Keys) == 0:
			return nil, fmt.Errorf("transmitter %s: keys are required", t.Issuer)
		}
		if _, dup := v.byIssuer[t.Issuer]; dup {
			return nil, fmt.Errorf("transmitter %s configured twice", t.Issuer)
		}
		v.byIssuer[t.Issuer] = t
	}
	return v, nil
}

// setClaims are the claims of a SET (RFC 8417 §2.2, with the subject
// identifier of the Shared Signals Framework). The JWT library decodes
// them (with encoding/json); checkSETJSON has already refused the
// duplicate and wrong-case members that decoder would accept.
type setClaims struct {
	jwt.RegisteredClaims
	Events map[string]jsontext.Value `json:"events"`
	SubID  jsontext.Value            `json:"sub_id,omitempty"`
	TOE    int64                     `json:"toe,omitempty"`
}

// setClaimNames are the member names of a SET's claims, for the check of
// their letter case; other members are allowed.
type setClaimNames struct {
	Iss    jsontext.Value            `json:"iss"`
	Sub    jsontext.Value            `json:"sub"`
	Aud    jsontext.Value            `json:"aud"`
	Exp    jsontext.Value            `json:"exp"`
	Nbf    jsontext.Value            `json:"nbf"`
	Iat    jsontext.Value            `json:"iat"`
	Jti    jsontext.Value            `json:"jti"`
	Events jsontext.Value            `json:"events"`
	SubID  jsontext.Value            `json:"sub_id"`
	TOE    jsontext.Value            `json:"toe"`
	Txn    jsontext.Value            `json:"txn"`
	Extra  map[string]jsontext.Value `json:",embed"`
}

// setHeaderNames are the JOSE header members the verification reads.
type setHeaderNames struct {
	Alg   jsontext.Value            `json:"alg"`
	Typ   jsontext.Value            `json:"typ"`
	Kid   jsontext.Value            `json:"kid"`
	Extra map[string]jsontext.Value `json:",embed"`
}

// checkSETJSON decodes the token's header and claims with the strict
// decoder before the JWT library reads them: a member twice, at any depth,
// or a known member in another letter case makes the token invalid, so no
// two readers of it can disagree on what it says.
func checkSETJSON(token string) error {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return errors.New("malformed token")
	}
	for i, v := range []any{&setHeaderNames{}, &setClaimNames{}} {
		what := [...]string{"header", "claims"}[i]
		raw, err := base64.RawURLEncoding.DecodeString(parts[i])
		if err != nil {
			return fmt.Errorf("%s: not base64url", what)
		}
		if err := decodeOpen(raw, v); err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
		var extra map[string]jsontext.Value
		switch v := v.(type) {
		case *setHeaderNames:
			extra = v.Extra
		case *setClaimNames:
			extra = v.Extra
		}
		if err := caseVariant(v, extra); err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
	}
	return nil
}

// setEvent is the body of one CAEP or RISC event; unknown members are
// allowed, as both profiles are extensible, but not a known one in another
// letter case.
type setEvent struct {
	Subject        jsontext.Value            `json:"subject,omitempty"`
	EventTimestamp int64                     `json:"event_timestamp,omitempty"`
	ReasonAdmin    jsontext.Value            `json:"reason_admin,omitempty"`
	ReasonUser     jsontext.Value            `json:"reason_user,omitempty"`
	Reason         jsontext.Value            `json:"reason,omitempty"`
	ChangeType     string                    `json:"change_type,omitempty"`
	CredentialType string                    `json:"credential_type,omitempty"`
	Extra          map[string]jsontext.Value `json:",embed"`
}

// subjectID is a subject identifier (RFC 9493), including the complex
// subject of the Shared Signals Framework.
type subjectID struct {
	Format      string      `json:"format"`
	ID          string      `json:"id,omitempty"`
	Email       string      `json:"email,omitempty"`
	PhoneNumber string      `json:"phone_number,omitempty"`
	Iss         string      `json:"iss,omitempty"`
	Sub         string      `json:"sub,omitempty"`
	Identifiers []subjectID `json:"identifiers,omitempty"`
	User        *subjectID  `json:"user,omitempty"`
	Session     *subjectID  `json:"session,omitempty"`
	Application *subjectID  `json:"application,omitempty"`
	// Extra holds the members of other formats (did, uri, ...).
	Extra map[string]jsontext.Value `json:",embed"`
}

// decode verifies a SET and maps it onto a SecurityEvent. Every error wraps
// ErrInvalidEvent.
func (v *setVerifier) decode(token string) (SecurityEvent, error) {
	invalid := func(format string, args ...any) (SecurityEvent, error) {
		return SecurityEvent{}, fmt.Errorf("%w: SET: %s", ErrInvalidEvent, fmt.Sprintf(format, args...))
	}
	if len(v.byIssuer) == 0 {
		return invalid("no transmitters are configured")
	}
	// The issuer picks the transmitter; the signature is checked with its
	// keys alone, so one transmitter cannot speak for another.
	if err := checkSETJSON(token); err != nil {
		return invalid("%v", err)
	}
	var peek setClaims
	if _, _, err := jwt.NewParser().ParseUnverified(token, &peek); err != nil {
		return invalid("malformed token")
	}
	tr, ok := v.byIssuer[peek.Issuer]
	if !ok {
		return invalid("unknown issuer %q", clip(peek.Issuer))
	}
	var c setClaims
	_, err := jwt.ParseWithClaims(token, &c, func(t *jwt.Token) (any, error) {
		if typ, _ := t.Header["typ"].(string); !strings.EqualFold(typ, SETType) && !strings.EqualFold(typ, "application/"+SETType) {
			return nil, fmt.Errorf("typ %q is not %s", clip(typ), SETType)
		}
		kid, _ := t.Header["kid"].(string)
		var set jwt.VerificationKeySet
		for _, k := range tr.Keys {
			if k.KID == "" || kid == "" || k.KID == kid {
				set.Keys = append(set.Keys, k.Public)
			}
		}
		if len(set.Keys) == 0 {
			return nil, fmt.Errorf("unknown kid %q", clip(kid))
		}
		return set, nil
	},
		jwt.WithValidMethods(setAlgs),
		jwt.WithIssuer(tr.Issuer),
		jwt.WithAudience(tr.Audience),
		jwt.WithIssuedAt(),
		jwt.WithLeeway(v.leeway),
		jwt.WithTimeFunc(v.now),
	)
	if err != nil {
		return invalid("%v", err)
	}
	if c.ID == "" || c.IssuedAt == nil {
		return invalid("jti and iat are required")
	}
	if len(c.Events) != 1 {
		return invalid("want exactly one event, got %d", len(c.Events))
	}
	var uri string
	var raw jsontext.Value
	for k, v := range c.Events {
		uri, raw = k, v
	}
	m, ok := setEventTypes[uri]
	if !ok {
		return invalid("unsupported event type %q", clip(uri))
	}
	var body setEvent
	if err := decodeOpen(raw, &body); err != nil {
		return invalid("event body: %v", err)
	}
	if err := caseVariant(&body, body.Extra); err != nil {
		return invalid("event body: %v", err)
	}
	ev := SecurityEvent{
		// jti is unique per issuer only (RFC 8417 §2.2).
		ID:       tr.Issuer + "#" + c.ID,
		Type:     m.Type,
		Severity: m.Severity,
	}
	if m.Type == "credential_change" && body.ChangeType == "create" {
		ev.Severity = SeverityLow // a new credential endangers no session
	}
	switch {
	case body.EventTimestamp > 0:
		ev.OccurredAt = time.Unix(body.EventTimestamp, 0).UTC()
	case c.TOE > 0:
		ev.OccurredAt = time.Unix(c.TOE, 0).UTC()
	default:
		ev.OccurredAt = c.IssuedAt.UTC()
	}
	subject := body.Subject
	if len(subject) == 0 {
		subject = c.SubID
	}
	switch {
	case len(subject) > 0:
		var sid subjectID
		if err := decodeOpen(subject, &sid); err != nil {
			return invalid("subject identifier: %v", err)
		}
		if err := sid.selectors(&ev, 0); err != nil {
			return invalid("subject identifier: %v", err)
		}
	case c.Subject != "":
		ev.Subject = c.Subject
	}
	ev.Reason = firstText(body.ReasonAdmin, body.ReasonUser, body.Reason)
	if ev.Reason == "" {
		ev.Reason = strings.TrimPrefix(strings.TrimPrefix(uri, caepPrefix), riscPrefix)
		if body.ChangeType != "" {
			ev.Reason += " (" + body.ChangeType + " " + body.CredentialType + ")"
		}
	}
	if len(ev.Reason) > maxReasonBytes {
		ev.Reason = strings.ToValidUTF8(ev.Reason[:maxReasonBytes], "")
	}
	if err := ev.validate(); err != nil {
		return SecurityEvent{}, err
	}
	return ev, nil
}

// selectors fills the event's selectors from a subject identifier: a user
// becomes the subject, a session the family (its id is the access tokens'
// sid claim), an application the client.
func (s subjectID) selectors(ev *SecurityEvent, depth int) error {
	if depth > 2 {
		return errors.New("nested too deeply")
	}
	if err := caseVariant(&s, s.Extra); err != nil {
		return err
	}
	switch s.Format {
	case "opaque":
		ev.Subject = s.ID
	case "iss_sub":
		ev.Subject = s.Sub
	case "email":
		ev.Subject = s.Email
	case "phone_number":
		ev.Subject = s.PhoneNumber
	case "aliases":
		for _, id := range s.Identifiers {
			if err := id.selectors(ev, depth+1); err == nil && ev.Subject != "" {
				return nil
			}
		}
		return errors.New("no supported identifier among the aliases")
	case "complex":
		if s.User != nil {
			if err := s.User.selectors(ev, depth+1); err != nil {
				return fmt.Errorf("user: %w", err)
			}
		}
		if s.Session != nil {
			if s.Session.Format != "opaque" {
				return errors.New("session: want format opaque")
			}
			ev.FamilyID = s.Session.ID
		}
		if s.Application != nil {
			if s.Application.Format != "opaque" {
				return errors.New("application: want format opaque")
			}
			ev.ClientID = s.Application.ID
		}
	default:
		return fmt.Errorf("unsupported format %q", clip(s.Format))
	}
	return nil
}

// firstText returns the first non-empty reason: a string, or a map of
// language tags to strings (CAEP reason_admin), preferring English.
func firstText(raws ...jsontext.Value) string {
	for _, raw := range raws {
		if len(raw) == 0 {
			continue
		}
		var s string
		if json.Unmarshal(raw, &s) == nil && s != "" {
			return s
		}
		var m map[string]string
		if json.Unmarshal(raw, &m) == nil {
			if s := m["en"]; s != "" {
				return s
			}
			for _, lang := range slices.Sorted(maps.Keys(m)) {
				if s := m[lang]; s != "" {
					return s
				}
			}
		}
	}
	return ""
}
