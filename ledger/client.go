package ledger

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"regexp"
	"slices"
	"strings"
	"time"
)

// ClientSecretPrefix starts every generated client secret.
const ClientSecretPrefix = "tlcs_"

var clientIDPattern = regexp.MustCompile(`^[A-Za-z0-9_-][A-Za-z0-9_.-]{0,127}$`)

// Client is a registered OAuth client. Only the SHA-256 of its secret is
// kept. Zero lifetimes and an empty rotation fall back to the service's
// defaults.
type Client struct {
	ID string `json:"client_id"`
	// SecretSHA256 is the hex SHA-256 of the client secret.
	SecretSHA256  string    `json:"secret_sha256"`
	Scopes        []string  `json:"scopes,omitempty"`
	Audiences     []string  `json:"audiences,omitempty"`
	AllowedClaims []string  `json:"allowed_claims,omitempty"`
	Rotation      Rotation  `json:"rotation,omitempty"`
	RotateAfter   Duration  `json:"rotate_after,omitempty"`
	Grace         *Duration `json:"grace,omitempty"`
	AccessTTL     Duration  `json:"access_ttl,omitempty"`
	RefreshTTL    Duration  `json:"refresh_ttl,omitempty"`
	FamilyTTL     Duration  `json:"family_ttl,omitempty"`
	CreatedAt     time.Time `json:"created_at,omitzero"`
	// Disabled clients fail authentication (tokenledger client disable).
	Disabled bool `json:"disabled,omitempty"`
}

// Duration is a time.Duration written as a Go duration string ("15m").
type Duration time.Duration

// MarshalJSON writes the duration as a string.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

// UnmarshalJSON reads a duration string.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("duration must be a string such as \"15m\": %w", err)
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return err
	}
	*d = Duration(v)
	return nil
}

// SecretSHA256 returns the hex SHA-256 of a client secret.
func SecretSHA256(secret string) string {
	sum := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(sum[:])
}

// Validate checks a client's settings.
func (c Client) Validate() error {
	switch {
	case !clientIDPattern.MatchString(c.ID):
		return fmt.Errorf("client id %q: use 1-128 of A-Z a-z 0-9 _ . -: %w", c.ID, ErrInvalidRequest)
	case len(c.SecretSHA256) != 64:
		return fmt.Errorf("client %s: secret_sha256 must be 64 hex digits: %w", c.ID, ErrInvalidRequest)
	case c.Rotation != "" && c.Rotation != RotateAlways && c.Rotation != RotatePeriodic:
		return fmt.Errorf("client %s: rotation %q: want always or periodic: %w", c.ID, c.Rotation, ErrInvalidRequest)
	case c.Rotation == RotatePeriodic && c.RotateAfter <= 0:
		return fmt.Errorf("client %s: periodic rotation needs rotate_after: %w", c.ID, ErrInvalidRequest)
	case c.Grace != nil && (*c.Grace < 0 || time.Duration(*c.Grace) > MaxGrace):
		return fmt.Errorf("client %s: grace must be 0 to %s: %w", c.ID, MaxGrace, ErrInvalidRequest)
	case c.AccessTTL < 0 || c.RefreshTTL < 0 || c.FamilyTTL < 0:
		return fmt.Errorf("client %s: lifetimes must not be negative: %w", c.ID, ErrInvalidRequest)
	}
	if _, err := hex.DecodeString(c.SecretSHA256); err != nil {
		return fmt.Errorf("client %s: secret_sha256 must be hex: %w", c.ID, ErrInvalidRequest)
	}
	return nil
}

// Authenticate reports whether secret is the client's, in constant time
// and without allocating (it runs on every request).
func (c Client) Authenticate(secret string) bool {
	if c.Disabled {
		return false
	}
	var in [64]byte // secrets up to 64 bytes are hashed from the stack
	sum := sha256.Sum256(append(in[:0], secret...))
	var got, want [64]byte
	hex.Encode(got[:], sum[:])
	if len(c.SecretSHA256) != len(want) { // 64 hex digits (Validate), either case
		return false
	}
	for i := range want {
		want[i] = c.SecretSHA256[i] | 0x20 // lowers A-F, keeps 0-9
	}
	return subtle.ConstantTimeCompare(got[:], want[:]) == 1
}

// Policy is the client's rotation policy over the service defaults.
func (c Client) Policy(defaults Policy) Policy {
	p := defaults
	if c.Rotation != "" {
		p.Rotation = c.Rotation
	}
	if c.RotateAfter > 0 {
		p.RotateAfter = time.Duration(c.RotateAfter)
	}
	if c.Grace != nil {
		p.Grace = time.Duration(*c.Grace)
	}
	if c.AccessTTL > 0 {
		p.AccessTTL = time.Duration(c.AccessTTL)
	}
	if c.RefreshTTL > 0 {
		p.RefreshTTL = time.Duration(c.RefreshTTL)
	}
	if c.FamilyTTL > 0 {
		p.FamilyTTL = time.Duration(c.FamilyTTL)
	}
	return p
}

// AllowScope reports whether the client may be granted every scope in s.
// A client with no scopes configured may be granted none.
func (c Client) AllowScope(s string) bool {
	for w := range strings.FieldsSeq(s) {
		if !slices.Contains(c.Scopes, w) {
			return false
		}
	}
	return true
}

// AllowedAudiences are the audiences the client's access tokens may name:
// its Audiences, or, for a client registered without any (allowed until
// every access token had to carry aud, RFC 9068 §2.2), its own id.
func (c Client) AllowedAudiences() []string {
	if len(c.Audiences) == 0 {
		return []string{c.ID}
	}
	return c.Audiences
}

// DefaultAudience is the audience of an access token whose request names
// none (RFC 9068 §3, the default resource): the first allowed audience.
func (c Client) DefaultAudience() []string { return c.AllowedAudiences()[:1] }

// AllowAudience reports whether every audience is allowed for the client.
func (c Client) AllowAudience(aud []string) bool {
	allowed := c.AllowedAudiences()
	for _, a := range aud {
		if !slices.Contains(allowed, a) {
			return false
		}
	}
	return true
}

// ValidClientID reports whether id has the form of a client id.
func ValidClientID(id string) bool { return clientIDPattern.MatchString(id) }

// NewClientSecret mints a client secret from 32 bytes of r (crypto/rand's
// Reader in production): the prefix and base64url, shown to the operator
// once; only its SecretSHA256 is kept.
func NewClientSecret(r io.Reader) (string, error) {
	var buf [32]byte
	if _, err := io.ReadFull(r, buf[:]); err != nil {
		return "", fmt.Errorf("client secret: %w", err)
	}
	return ClientSecretPrefix + base64.RawURLEncoding.EncodeToString(buf[:]), nil
}
