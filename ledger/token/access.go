package token

import (
	"bytes"
	"crypto"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/tokenledger/tokenledger/ledger"

	"github.com/golang-jwt/jwt/v5"
)

// AccessTokenType is the JWT typ header of access tokens (RFC 9068).
const AccessTokenType = "at+jwt"

// ReservedClaims may not be set as custom claims.
var reservedClaims = []string{"iss", "sub", "aud", "exp", "iat", "nbf", "jti", "client_id", "scope", "sid", "ver", "cnf", "act"}

// IsReservedClaim reports whether name is set by the ledger itself.
func IsReservedClaim(name string) bool { return slices.Contains(reservedClaims, name) }

// AccessClaims are an access token's claims (RFC 9068 plus sid and ver).
type AccessClaims struct {
	Issuer    string          `json:"iss"`
	Subject   string          `json:"sub"`
	Audience  []string        `json:"aud,omitempty"`
	ExpiresAt int64           `json:"exp"`
	IssuedAt  int64           `json:"iat"`
	NotBefore int64           `json:"nbf"`
	JTI       string          `json:"jti"`
	ClientID  string          `json:"client_id"`
	Scope     string          `json:"scope,omitempty"`
	SID       string          `json:"sid"`
	Version   int             `json:"ver"`
	Custom    json.RawMessage `json:"-"`
}

// Equal reports whether c and o are the same claims, field by field.
func (c AccessClaims) Equal(o AccessClaims) bool {
	return c.Issuer == o.Issuer && c.Subject == o.Subject && slices.Equal(c.Audience, o.Audience) &&
		c.ExpiresAt == o.ExpiresAt && c.IssuedAt == o.IssuedAt && c.NotBefore == o.NotBefore &&
		c.JTI == o.JTI && c.ClientID == o.ClientID && c.Scope == o.Scope && c.SID == o.SID &&
		c.Version == o.Version && bytes.Equal(c.Custom, o.Custom)
}

// ClaimsFor builds the claims of the access token a grant hands out.
func ClaimsFor(issuer string, st ledger.State, g ledger.AccessGrant, issuedAt time.Time) AccessClaims {
	return AccessClaims{
		Issuer: issuer, Subject: st.Subject, Audience: st.Audience,
		ExpiresAt: g.ExpiresAt.Unix(), IssuedAt: issuedAt.Unix(), NotBefore: issuedAt.Unix(),
		JTI: g.JTI, ClientID: st.ClientID, Scope: g.Scope, SID: st.FamilyID,
		Version: st.Version, Custom: st.Claims,
	}
}

// Signer signs access tokens with one key. The header is encoded once; the
// claims are encoded with encoding/json and signed by golang-jwt's method.
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
	h, err := json.Marshal(map[string]string{"alg": key.Alg, "kid": key.KID, "typ": AccessTokenType})
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
	payload, err := json.Marshal(c)
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

// UnmarshalJSON accepts aud as a string or an array (RFC 7519).
func (c *AccessClaims) UnmarshalJSON(b []byte) error {
	type plain AccessClaims
	var w struct {
		plain
		Audience any `json:"aud"`
	}
	if err := json.Unmarshal(b, &w); err != nil {
		return err
	}
	*c = AccessClaims(w.plain)
	switch a := w.Audience.(type) {
	case string:
		c.Audience = []string{a}
	case []any:
		for _, x := range a {
			s, ok := x.(string)
			if !ok {
				return errors.New("aud must hold strings")
			}
			c.Audience = append(c.Audience, s)
		}
	case nil:
	default:
		return errors.New("aud must be a string or an array")
	}
	return nil
}
