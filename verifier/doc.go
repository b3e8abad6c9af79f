// Package verifier is what a resource server imports to accept tokenledger
// access tokens: it verifies them offline against the service's JWKS and
// rejects revoked ones by following the revocation feed.
//
// It owns a JWKS cache (fetched over NATS from <prefix>.jwks, refetched on
// an unknown kid at most once per RefetchInterval), the set of revocations
// still relevant (revoked families, revoked access-token ids, access
// cutoffs, each forgotten after its expiry), and an HTTP middleware.
//
// Invariants it keeps:
//   - No revocation is missed: the feed is read with an ordered JetStream
//     consumer from the start of the feed stream (which keeps every
//     announcement longer than any access token lives); after a disconnect
//     the consumer resumes from the last sequence it delivered, and after a
//     restart it reads the stream again.
//   - It fails closed: until the initial catch-up is done Verify returns
//     ErrNotReady, and when the connection has been down (or not caught up
//     since) for longer than MaxStale it returns ErrStale.
//   - Only the configured algorithms (EdDSA by default; never none or HMAC),
//     the at+jwt type and the configured issuer are accepted.
//   - A cutoff is compared at second precision (the iat claim's): an access
//     token issued in the same second as a cutoff is denied here even if it
//     was issued just after it; the client refreshes again.
package verifier
