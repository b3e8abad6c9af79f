// Package token is the token cryptography: the opaque refresh-token format
// and its hash (refresh.go), the sealing of a grace retry's successor, RFC
// 9068 access tokens signed and verified as JWTs (access.go), and signing
// keys, their JWKS and the key-encryption key that seals them at rest
// (keys.go).
//
// Invariants it keeps:
//   - Refresh tokens carry 256 bits from the caller's random source and are
//     compared by hash in constant time; a raw token is never returned in an
//     error.
//   - Verification accepts only the configured asymmetric algorithms (never
//     none or HMAC), the at+jwt type, the expected issuer and unexpired
//     tokens.
//   - It does no I/O: keys are stored by ledger/jsstore, sealed with the KEK.
package token
