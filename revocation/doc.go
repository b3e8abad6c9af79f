// Package revocation holds the wire types of the revocation feed, the
// stream on which the service announces every revocation to resource
// servers (docs/revocation-feed.md): the stream's default name, the
// subjects, the kinds and the Announcement message.
//
// It is small on purpose: the server side (projections.Feed) and the
// resource servers' side (verifier) both import it, so a resource server
// compiles neither the server nor its dependencies.
//
// Invariants it keeps:
//   - It imports nothing of tokenledger and no NATS library: only the
//     standard library.
//   - The wire format only grows: a field is added as optional, a kind is
//     added and never changes its meaning; a subscriber ignores kinds it
//     does not know.
package revocation
