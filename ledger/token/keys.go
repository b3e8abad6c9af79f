package token

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/big"
	"strings"
	"time"

	"github.com/tokenledger/tokenledger/api"
)

// Signing algorithms. HMAC and "none" are never accepted anywhere.
const (
	AlgEdDSA = "EdDSA"
	AlgES256 = "ES256"
	AlgRS256 = "RS256"
)

// ValidAlg reports whether alg is one the ledger signs with.
func ValidAlg(alg string) bool {
	return alg == AlgEdDSA || alg == AlgES256 || alg == AlgRS256
}

// Key is a signing key pair and its lifecycle (see KeySet): published
// from CreatedAt, signing from ActivatesAt, retired when a later key
// activates, published until its last token expired; or revoked.
type Key struct {
	KID       string
	Alg       string
	Private   crypto.Signer
	CreatedAt time.Time
	// ActivatesAt is when the key starts signing; zero means from the
	// start (a first key, and keys of builds before the lifecycle).
	ActivatesAt time.Time
	// ActivatedAt is when its activation was recorded (key.activated.v1);
	// zero until then.
	ActivatedAt time.Time
	// RetiredAt is when the key stopped signing; zero while it signs or
	// has not signed yet.
	RetiredAt time.Time
	// PublishedUntil is when a retired key leaves the JWKS: the last
	// token it signed has expired. Zero: RetiredAt plus the maximum token
	// age the caller gives.
	PublishedUntil time.Time
	// RevokedAt is when the key was revoked: it left the JWKS at once and
	// every token it signed is inactive.
	RevokedAt time.Time
}

// GenerateKey makes a new key for alg, with a kid derived from the public key.
func GenerateKey(alg string, now time.Time) (Key, error) {
	var priv crypto.Signer
	var err error
	switch alg {
	case AlgEdDSA:
		_, priv, err = ed25519.GenerateKey(rand.Reader)
	case AlgES256:
		priv, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case AlgRS256:
		priv, err = rsa.GenerateKey(rand.Reader, 2048)
	default:
		return Key{}, fmt.Errorf("generate key: algorithm %q: want EdDSA, ES256 or RS256", alg)
	}
	if err != nil {
		return Key{}, fmt.Errorf("generate %s key: %w", alg, err)
	}
	pub, err := x509.MarshalPKIXPublicKey(priv.Public())
	if err != nil {
		return Key{}, fmt.Errorf("kid: %w", err)
	}
	sum := sha256.Sum256(pub)
	return Key{KID: b64.EncodeToString(sum[:12]), Alg: alg, Private: priv, CreatedAt: now}, nil
}

// JWK is a public key as RFC 7517 publishes it: the wire type of the
// tokens.jwks reply (api.JWK), with the conversion to a crypto key.
type JWK api.JWK

// PublicJWK returns the key's public half as a JWK.
func (k Key) PublicJWK() JWK {
	j := JWK{Kid: k.KID, Alg: k.Alg, Use: "sig"}
	switch pub := k.Private.Public().(type) {
	case ed25519.PublicKey:
		j.Kty, j.Crv, j.X = "OKP", "Ed25519", b64.EncodeToString(pub)
	case *ecdsa.PublicKey:
		ecdh, _ := pub.ECDH()
		raw := ecdh.Bytes() // 0x04 || X || Y, 32 bytes each for P-256
		j.Kty, j.Crv = "EC", "P-256"
		j.X, j.Y = b64.EncodeToString(raw[1:33]), b64.EncodeToString(raw[33:65])
	case *rsa.PublicKey:
		j.Kty = "RSA"
		j.N = b64.EncodeToString(pub.N.Bytes())
		j.E = b64.EncodeToString(big.NewInt(int64(pub.E)).Bytes())
	}
	return j
}

// PublicKey turns a JWK back into a public key, for verifiers.
func (j JWK) PublicKey() (crypto.PublicKey, error) {
	dec := func(s string) []byte { b, _ := b64.DecodeString(s); return b }
	switch {
	case j.Kty == "OKP" && j.Crv == "Ed25519" && j.Alg == AlgEdDSA:
		x := dec(j.X)
		if len(x) != ed25519.PublicKeySize {
			return nil, fmt.Errorf("jwk %s: bad Ed25519 key", j.Kid)
		}
		return ed25519.PublicKey(x), nil
	case j.Kty == "EC" && j.Crv == "P-256" && j.Alg == AlgES256:
		x, y := dec(j.X), dec(j.Y)
		if len(x) != 32 || len(y) != 32 {
			return nil, fmt.Errorf("jwk %s: bad P-256 key", j.Kid)
		}
		raw := append(append([]byte{4}, x...), y...)
		return ecdsa.ParseUncompressedPublicKey(elliptic.P256(), raw)
	case j.Kty == "RSA" && j.Alg == AlgRS256:
		n, e := dec(j.N), dec(j.E)
		if len(n) < 256 || len(e) == 0 || len(e) > 4 {
			return nil, fmt.Errorf("jwk %s: bad RSA key", j.Kid)
		}
		return &rsa.PublicKey{N: new(big.Int).SetBytes(n), E: int(new(big.Int).SetBytes(e).Int64())}, nil
	}
	return nil, fmt.Errorf("jwk %s: unsupported kty %q alg %q", j.Kid, j.Kty, j.Alg)
}

// KEK is the key-encryption key that seals signing keys at rest.
type KEK [32]byte

// ParseKEK reads a base64 (standard or URL, padded or not) 32-byte key.
func ParseKEK(s string) (KEK, error) {
	var k KEK
	s = strings.TrimSpace(s)
	var raw []byte
	var err error
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		if raw, err = enc.DecodeString(s); err == nil {
			break
		}
	}
	if err != nil || len(raw) != len(k) {
		return k, errors.New("key-encryption key must be 32 bytes, base64-encoded")
	}
	copy(k[:], raw)
	return k, nil
}

// NewKEK returns a fresh key-encryption key read from r (crypto/rand.Reader
// in production).
func NewKEK(r io.Reader) (KEK, error) {
	var k KEK
	if _, err := io.ReadFull(r, k[:]); err != nil {
		return k, fmt.Errorf("generate kek: %w", err)
	}
	return k, nil
}

// String is the KEK as ParseKEK reads it: standard base64.
func (k KEK) String() string { return base64.StdEncoding.EncodeToString(k[:]) }

// sealedKey is a key as stored: the private key sealed with the KEK.
type sealedKey struct {
	KID       string    `json:"kid"`
	Alg       string    `json:"alg"`
	Sealed    string    `json:"sealed_pkcs8"`
	CreatedAt time.Time `json:"created_at"`
	RetiredAt time.Time `json:"retired_at,omitzero"`

	ActivatesAt    time.Time `json:"activates_at,omitzero"`
	ActivatedAt    time.Time `json:"activated_at,omitzero"`
	PublishedUntil time.Time `json:"published_until,omitzero"`
	RevokedAt      time.Time `json:"revoked_at,omitzero"`
}

func (k KEK) seal(key Key) (sealedKey, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key.Private)
	if err != nil {
		return sealedKey{}, fmt.Errorf("seal key %s: %w", key.KID, err)
	}
	aead, err := newGCM(k[:])
	if err != nil {
		return sealedKey{}, err
	}
	nonce := make([]byte, aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return sealedKey{}, err
	}
	ct := aead.Seal(nonce, nonce, der, []byte(key.KID+"/"+key.Alg))
	return sealedKey{KID: key.KID, Alg: key.Alg, Sealed: b64.EncodeToString(ct),
		CreatedAt: key.CreatedAt, RetiredAt: key.RetiredAt, ActivatesAt: key.ActivatesAt,
		ActivatedAt: key.ActivatedAt, PublishedUntil: key.PublishedUntil, RevokedAt: key.RevokedAt}, nil
}

func (k KEK) open(s sealedKey) (Key, error) {
	aead, err := newGCM(k[:])
	if err != nil {
		return Key{}, err
	}
	ct, err := b64.DecodeString(s.Sealed)
	if err != nil || len(ct) < aead.NonceSize() {
		return Key{}, fmt.Errorf("open key %s: malformed", s.KID)
	}
	der, err := aead.Open(nil, ct[:aead.NonceSize()], ct[aead.NonceSize():], []byte(s.KID+"/"+s.Alg))
	if err != nil {
		return Key{}, fmt.Errorf("open key %s: wrong key-encryption key or tampered key: %w", s.KID, err)
	}
	priv, err := x509.ParsePKCS8PrivateKey(der)
	if err != nil {
		return Key{}, fmt.Errorf("open key %s: %w", s.KID, err)
	}
	signer, ok := priv.(crypto.Signer)
	if !ok {
		return Key{}, fmt.Errorf("open key %s: not a signing key", s.KID)
	}
	return Key{KID: s.KID, Alg: s.Alg, Private: signer, CreatedAt: s.CreatedAt, RetiredAt: s.RetiredAt,
		ActivatesAt: s.ActivatesAt, ActivatedAt: s.ActivatedAt, PublishedUntil: s.PublishedUntil, RevokedAt: s.RevokedAt}, nil
}

// SealKeySet encodes the key set for the keys bucket, every private key
// sealed with the KEK (AES-256-GCM, the kid and alg as associated data).
func SealKeySet(kek KEK, ks KeySet) ([]byte, error) {
	doc := struct {
		Keys []sealedKey `json:"keys"`
	}{}
	for _, k := range ks.Keys {
		s, err := kek.seal(k)
		if err != nil {
			return nil, err
		}
		doc.Keys = append(doc.Keys, s)
	}
	return json.Marshal(doc)
}

// OpenKeySet decodes a sealed key set, refusing it if any key does not
// open with the KEK.
func OpenKeySet(kek KEK, b []byte) (KeySet, error) {
	var doc struct {
		Keys []sealedKey `json:"keys"`
	}
	if err := json.Unmarshal(b, &doc); err != nil {
		return KeySet{}, fmt.Errorf("key set: %w", err)
	}
	var ks KeySet
	for _, s := range doc.Keys {
		k, err := kek.open(s)
		if err != nil {
			return KeySet{}, err
		}
		ks.Keys = append(ks.Keys, k)
	}
	return ks, nil
}
