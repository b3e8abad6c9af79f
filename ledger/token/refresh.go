package token

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"io"
	"strings"

	"github.com/tokenledger/tokenledger/ledger"

	"github.com/oklog/ulid/v2"
)

// RefreshPrefix starts every refresh token so secret scanners can spot leaks.
const RefreshPrefix = "tlr_"

const (
	secretLen = 32 // 256 bits from crypto/rand
	// maxRefreshLen bounds what ParseRefreshToken reads.
	maxRefreshLen = 128
)

var b64 = base64.RawURLEncoding

// RefreshToken is a parsed refresh token: the family it belongs to, the
// family's last stream sequence when it was minted (so the event that minted
// it is the family's first event after that sequence), and the secret.
type RefreshToken struct {
	FamilyID ulid.ULID
	AfterSeq uint64
	Secret   [secretLen]byte
}

// MintRefreshToken returns a new raw refresh token for the family; the raw
// value goes to the client once and only its hash is kept.
func MintRefreshToken(r io.Reader, familyID ulid.ULID, afterSeq uint64) (string, error) {
	t := RefreshToken{FamilyID: familyID, AfterSeq: afterSeq}
	if _, err := io.ReadFull(r, t.Secret[:]); err != nil {
		return "", fmt.Errorf("mint refresh token: %w", err)
	}
	return t.String(), nil
}

// String encodes the token: prefix, then base64url of the family id, the
// sequence as a uvarint and the secret.
func (t RefreshToken) String() string {
	buf := make([]byte, 0, 16+binary.MaxVarintLen64+secretLen)
	buf = append(buf, t.FamilyID[:]...)
	buf = binary.AppendUvarint(buf, t.AfterSeq)
	buf = append(buf, t.Secret[:]...)
	return RefreshPrefix + b64.EncodeToString(buf)
}

// ParseRefreshToken decodes a raw refresh token. It reads nothing but the
// string and never echoes it in its errors.
func ParseRefreshToken(raw string) (RefreshToken, error) {
	var t RefreshToken
	if len(raw) > maxRefreshLen || !strings.HasPrefix(raw, RefreshPrefix) {
		return t, ledger.ErrInvalidToken
	}
	buf, err := b64.DecodeString(raw[len(RefreshPrefix):])
	if err != nil || len(buf) < 16+1+secretLen {
		return t, ledger.ErrInvalidToken
	}
	copy(t.FamilyID[:], buf[:16])
	seq, n := binary.Uvarint(buf[16:])
	if n <= 0 || len(buf) != 16+n+secretLen {
		return t, ledger.ErrInvalidToken
	}
	t.AfterSeq = seq
	copy(t.Secret[:], buf[16+n:])
	// Re-encoding must give the same string: one token, one spelling.
	if t.String() != raw {
		return t, ledger.ErrInvalidToken
	}
	return t, nil
}

// HashToken is the form in which the ledger keeps a refresh token (or a
// client secret): base64url SHA-256. The inputs carry 256 bits of entropy, so
// a fast hash is enough.
func HashToken(raw string) string {
	sum := sha256.Sum256([]byte(raw))
	return b64.EncodeToString(sum[:])
}

// HashEqual compares two hashes in constant time.
func HashEqual(a, b string) bool {
	if len(a) != len(b) {
		return false // as subtle.ConstantTimeCompare: lengths are not secret
	}
	var diff byte
	for i := 0; i < len(a); i++ {
		diff |= a[i] ^ b[i]
	}
	return subtle.ConstantTimeByteEq(diff, 0) == 1
}

// sealKey derives the key that seals a successor from its predecessor's raw
// value; it is domain-separated from HashToken, so the stored hash of the
// predecessor does not open the seal.
func sealKey(predecessor string) []byte {
	sum := sha256.Sum256([]byte("tokenledger/successor-seal/v1\x00" + predecessor))
	return sum[:]
}

// SealSuccessor encrypts the successor's raw value so that only the holder of
// the predecessor can read it back (for a grace retry).
func SealSuccessor(r io.Reader, predecessor, successor string) (string, error) {
	aead, err := newGCM(sealKey(predecessor))
	if err != nil {
		return "", err
	}
	nonce := make([]byte, aead.NonceSize(), aead.NonceSize()+len(successor)+aead.Overhead())
	if _, err := io.ReadFull(r, nonce); err != nil {
		return "", fmt.Errorf("seal successor: %w", err)
	}
	return b64.EncodeToString(aead.Seal(nonce, nonce, []byte(successor), nil)), nil
}

// OpenSuccessor decrypts a sealed successor with the predecessor's raw value.
func OpenSuccessor(predecessor, sealed string) (string, error) {
	aead, err := newGCM(sealKey(predecessor))
	if err != nil {
		return "", err
	}
	buf, err := b64.DecodeString(sealed)
	if err != nil || len(buf) < aead.NonceSize() {
		return "", fmt.Errorf("open successor: malformed seal")
	}
	out, err := aead.Open(nil, buf[:aead.NonceSize()], buf[aead.NonceSize():], nil)
	if err != nil {
		return "", fmt.Errorf("open successor: %w", err)
	}
	return string(out), nil
}

func newGCM(key []byte) (cipher.AEAD, error) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("aes: %w", err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("gcm: %w", err)
	}
	return aead, nil
}
