package token

import (
	"bytes"
	"crypto"
	jsonv1 "encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/tokenledger/tokenledger/ledger"

	"github.com/go-json-experiment/json"
	"github.com/go-json-experiment/json/jsontext"
	"github.com/golang-jwt/jwt/v5"
)

// AccessTokenType is the JWT typ header of access tokens (RFC 9068).
const AccessTokenType = "at+jwt"

// reservedClaims are the claims the ledger sets itself (AccessClaims'
// members) and those RFC 9068 and RFC 8693 give a meaning (cnf, act): none
// may be set as a custom claim, in any letter case.
var reservedClaims = []string{"iss", "sub", "aud", "exp", "iat", "nbf", "jti", "client_id", "scope", "sid", "sid_event", "ver", "cnf", "act"}

// IsReservedClaim reports whether name is set by the ledger itself, or is
// one of those names in another letter case: a decoder that folds case
// (encoding/json v1 does) would read a custom "SUB" as the subject.
func IsReservedClaim(name string) bool {
	for _, r := range reservedClaims {
		if strings.EqualFold(name, r) {
			return true
		}
	}
	return false
}

// claimsOptions encode the header and claims as encoding/json v1 wrote them
// (<, >, & and U+2028/U+2029 escaped, map keys sorted) and decode claims
// strictly: names match exactly, and a name appears once.
var claimsOptions = json.JoinOptions(
	json.DefaultOptionsV2(),
	json.Deterministic(true),
	jsontext.EscapeForHTML(true),
	jsontext.EscapeForJS(true),
	json.MatchCaseInsensitiveNames(false),
	jsontext.AllowDuplicateNames(false),
)

// AccessClaims are an access token's claims (RFC 9068 plus sid and ver).
type AccessClaims struct {
	Issuer    string   `json:"iss"`
	Subject   string   `json:"sub"`
	Audience  []string `json:"aud,omitempty"`
	ExpiresAt int64    `json:"exp"`
	IssuedAt  int64    `json:"iat"`
	NotBefore int64    `json:"nbf"`
	JTI       string   `json:"jti"`
	ClientID  string   `json:"client_id"`
	Scope     string   `json:"scope,omitempty"`
	SID       string   `json:"sid"`
	// FamilyEvent is the number, within the family (sid), of the event
	// that granted the token (1 for the issue): an access cutoff denies
	// exactly the tokens granted by events before it, by stream order,
	// never by comparing clocks. 0 in tokens of builds before it.
	FamilyEvent uint64 `json:"sid_event,omitzero"`
	Version     int    `json:"ver"`
	// Custom is a JSON object of custom claims: Sign writes its members
	// after the standard claims, and UnmarshalJSON collects there the
	// members that are not standard claims (nil when there are none).
	Custom jsonv1.RawMessage `json:"-"`
}

// Equal reports whether c and o are the same claims, field by field.
func (c AccessClaims) Equal(o AccessClaims) bool {
	return c.Issuer == o.Issuer && c.Subject == o.Subject && slices.Equal(c.Audience, o.Audience) &&
		c.ExpiresAt == o.ExpiresAt && c.IssuedAt == o.IssuedAt && c.NotBefore == o.NotBefore &&
		c.JTI == o.JTI && c.ClientID == o.ClientID && c.Scope == o.Scope && c.SID == o.SID &&
		c.FamilyEvent == o.FamilyEvent && c.Version == o.Version && bytes.Equal(c.Custom, o.Custom)
}

// ClaimsFor builds the claims of the access token a grant hands out; st is
// the family's state after the granting event.
func ClaimsFor(issuer string, st ledger.State, g ledger.AccessGrant, issuedAt time.Time) AccessClaims {
	return AccessClaims{
		Issuer: issuer, Subject: st.Subject, Audience: st.Audience,
		ExpiresAt: g.ExpiresAt.Unix(), IssuedAt: issuedAt.Unix(), NotBefore: issuedAt.Unix(),
		JTI: g.JTI, ClientID: st.ClientID, Scope: g.Scope, SID: st.FamilyID,
		FamilyEvent: st.Events, Version: st.Version, Custom: st.Claims,
	}
}

// Signer signs access tokens with one key. The header is encoded once; the
// claims are encoded with go-json-experiment (claimsOptions: the bytes
// encoding/json v1 wrote) and signed by golang-jwt's method.
type Signer struct {
	key    Key
	method jwt.SigningMethod
	header string
	sigLen int // encoded signature length, to size tokens in one allocation
}

// NewSigner returns a signer for the key.
func NewSigner(key Key) (*Signer, error) {
	method := jwt.GetSigningMethod(key.Alg)
	if method == nil || !ValidAlg(key.Alg) {
		return nil, fmt.Errorf("signer: algorithm %q not allowed", key.Alg)
	}
	h, err := json.Marshal(map[string]string{"alg": key.Alg, "kid": key.KID, "typ": AccessTokenType}, claimsOptions)
	if err != nil {
		return nil, err
	}
	sig, err := method.Sign("", key.Private)
	if err != nil {
		return nil, fmt.Errorf("signer: key %s: %w", key.KID, err)
	}
	return &Signer{key: key, method: method, header: b64.EncodeToString(h), sigLen: b64.EncodedLen(len(sig))}, nil
}

// KID is the id of the signing key.
func (s *Signer) KID() string { return s.key.KID }

// Sign returns the compact JWS of the claims.
func (s *Signer) Sign(c AccessClaims) (string, error) {
	payload, err := json.Marshal(&c, claimsOptions)
	if err != nil {
		return "", fmt.Errorf("sign: %w", err)
	}
	if len(c.Custom) > 2 && !bytes.Equal(c.Custom, []byte("{}")) && !bytes.Equal(c.Custom, []byte("null")) {
		// Splice the custom object's members after the standard claims;
		// reserved names were refused when the family was issued.
		payload = append(payload[:len(payload)-1], ',')
		payload = append(payload, bytes.TrimSpace(c.Custom)[1:]...)
	}
	// One buffer for header.payload.signature.
	tok := make([]byte, 0, len(s.header)+2+b64.EncodedLen(len(payload))+s.sigLen)
	tok = append(tok, s.header...)
	tok = append(tok, '.')
	tok = b64.AppendEncode(tok, payload)
	sig, err := s.method.Sign(string(tok), s.key.Private)
	if err != nil {
		return "", fmt.Errorf("sign with %s: %w", s.key.KID, err)
	}
	tok = append(tok, '.')
	return string(b64.AppendEncode(tok, sig)), nil
}

// Verifier checks access tokens against a set of public keys. It accepts
// only the configured algorithms, the at+jwt type, the expected issuer, and
// unexpired tokens.
type Verifier struct {
	keys   map[string]verifyKey
	algs   []string
	issuer string
	now    func() time.Time
}

type verifyKey struct {
	alg string
	pub crypto.PublicKey
}

// Verification errors.
var (
	ErrTokenInvalid = errors.New("access token invalid")
	ErrUnknownKey   = errors.New("access token signed with an unknown key")
)

// NewVerifier returns a verifier over the JWKs, accepting only algs.
func NewVerifier(jwks []JWK, algs []string, issuer string, now func() time.Time) (*Verifier, error) {
	for _, a := range algs {
		if !ValidAlg(a) {
			return nil, fmt.Errorf("verifier: algorithm %q not allowed", a)
		}
	}
	v := &Verifier{keys: map[string]verifyKey{}, algs: algs, issuer: issuer, now: now}
	for _, j := range jwks {
		pub, err := j.PublicKey()
		if err != nil {
			return nil, err
		}
		v.keys[j.Kid] = verifyKey{alg: j.Alg, pub: pub}
	}
	return v, nil
}

// Verify checks the token and returns its claims.
func (v *Verifier) Verify(token string) (AccessClaims, error) {
	var c AccessClaims
	if len(token) > 16<<10 {
		return c, fmt.Errorf("%w: too long", ErrTokenInvalid)
	}
	var vc verifiedClaims
	parsed, err := jwt.ParseWithClaims(token, &vc, func(t *jwt.Token) (any, error) {
		if typ, _ := t.Header["typ"].(string); !strings.EqualFold(typ, AccessTokenType) && !strings.EqualFold(typ, "application/"+AccessTokenType) {
			return nil, fmt.Errorf("typ %q is not %s", typ, AccessTokenType)
		}
		kid, _ := t.Header["kid"].(string)
		k, ok := v.keys[kid]
		if !ok {
			return nil, ErrUnknownKey
		}
		if t.Method.Alg() != k.alg {
			return nil, fmt.Errorf("alg %s does not match key %s", t.Method.Alg(), kid)
		}
		return k.pub, nil
	},
		jwt.WithValidMethods(v.algs),
		jwt.WithIssuer(v.issuer),
		jwt.WithExpirationRequired(),
		jwt.WithIssuedAt(),
		jwt.WithTimeFunc(v.now),
	)
	if err != nil {
		if errors.Is(err, ErrUnknownKey) {
			return c, ErrUnknownKey
		}
		return c, fmt.Errorf("%w: %w", ErrTokenInvalid, err)
	}
	if !parsed.Valid {
		return c, ErrTokenInvalid
	}
	c = vc.AccessClaims
	if c.JTI == "" || c.SID == "" || c.ClientID == "" {
		return c, fmt.Errorf("%w: missing jti, sid or client_id", ErrTokenInvalid)
	}
	return c, nil
}

// verifiedClaims decodes a token's claims straight into AccessClaims and
// gives golang-jwt's validator the registered ones. The times are whole
// seconds, as the signer writes them; a zero time is an absent claim (exp
// is required, so a token without one is refused).
type verifiedClaims struct{ AccessClaims }

func numericDate(sec int64) *jwt.NumericDate {
	if sec == 0 {
		return nil
	}
	return jwt.NewNumericDate(time.Unix(sec, 0))
}

func (c *verifiedClaims) GetExpirationTime() (*jwt.NumericDate, error) {
	return numericDate(c.ExpiresAt), nil
}
func (c *verifiedClaims) GetIssuedAt() (*jwt.NumericDate, error) { return numericDate(c.IssuedAt), nil }
func (c *verifiedClaims) GetNotBefore() (*jwt.NumericDate, error) {
	return numericDate(c.NotBefore), nil
}
func (c *verifiedClaims) GetIssuer() (string, error)             { return c.Issuer, nil }
func (c *verifiedClaims) GetSubject() (string, error)            { return c.Subject, nil }
func (c *verifiedClaims) GetAudience() (jwt.ClaimStrings, error) { return c.Audience, nil }

// claimsWire is AccessClaims as a token's payload holds them: aud a string
// or an array (RFC 7519 §4.1.3), and any other member a custom claim.
type claimsWire struct {
	Issuer      string         `json:"iss"`
	Subject     string         `json:"sub"`
	Audience    jsontext.Value `json:"aud"`
	ExpiresAt   int64          `json:"exp"`
	IssuedAt    int64          `json:"iat"`
	NotBefore   int64          `json:"nbf"`
	JTI         string         `json:"jti"`
	ClientID    string         `json:"client_id"`
	Scope       string         `json:"scope"`
	SID         string         `json:"sid"`
	FamilyEvent uint64         `json:"sid_event"`
	Version     int            `json:"ver"`
	Custom      jsontext.Value `json:",embed"`
}

// UnmarshalJSON decodes a token's claims strictly: a claim named twice, or
// a member that spells a reserved claim in another letter case, is an
// error (a case-folding reader would take it for the claim), so no reader
// can see other claims than these. aud may be a string or an array (RFC
// 7519); other members are custom claims and go to Custom.
func (c *AccessClaims) UnmarshalJSON(b []byte) error {
	var w claimsWire
	if err := json.Unmarshal(b, &w, claimsOptions); err != nil {
		return err
	}
	*c = AccessClaims{
		Issuer: w.Issuer, Subject: w.Subject, ExpiresAt: w.ExpiresAt, IssuedAt: w.IssuedAt,
		NotBefore: w.NotBefore, JTI: w.JTI, ClientID: w.ClientID, Scope: w.Scope, SID: w.SID,
		FamilyEvent: w.FamilyEvent, Version: w.Version,
	}
	switch w.Audience.Kind() {
	case '"':
		var a string
		if err := json.Unmarshal(w.Audience, &a, claimsOptions); err != nil {
			return err
		}
		c.Audience = []string{a}
	case '[':
		if err := json.Unmarshal(w.Audience, &c.Audience, claimsOptions); err != nil {
			return errors.New("aud must hold strings")
		}
	case 'n', 0: // null, or absent
	default:
		return errors.New("aud must be a string or an array")
	}
	if len(w.Custom) > 0 {
		if err := checkCustomNames(w.Custom); err != nil {
			return err
		}
		c.Custom = jsonv1.RawMessage(w.Custom)
	}
	return nil
}

// checkCustomNames refuses a custom claim whose name is a reserved claim's
// in another letter case.
func checkCustomNames(obj jsontext.Value) error {
	dec := jsontext.NewDecoder(bytes.NewReader(obj))
	if _, err := dec.ReadToken(); err != nil { // '{'
		return err
	}
	for dec.PeekKind() == '"' {
		name, err := dec.ReadToken()
		if err != nil {
			return err
		}
		for _, r := range reservedClaims {
			if n := name.String(); n != r && strings.EqualFold(n, r) {
				return fmt.Errorf("claim %q is claim %q in another letter case", clipName(n), r)
			}
		}
		if err := dec.SkipValue(); err != nil {
			return err
		}
	}
	if _, err := dec.ReadToken(); err != nil && !errors.Is(err, io.EOF) { // '}'
		return err
	}
	return nil
}

// clipName bounds a claim name quoted in an error.
func clipName(s string) string {
	if len(s) > 64 {
		return s[:64] + "..."
	}
	return s
}
