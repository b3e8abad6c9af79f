// Package handlers owns the NATS edge of tokenledger: the "tokenledger"
// micro service and its endpoints, the decoding of requests, and the one
// mapping from domain errors to OAuth error codes (oauth.go).
//
// Invariants it keeps:
//   - A request is decoded strictly (size limit, unknown fields and trailing
//     data rejected) and authenticated before anything is appended; a
//     malformed request changes nothing.
//   - Replies never echo a value from the request: error descriptions are
//     fixed text, naming at most an unknown field or a refused claim.
//   - Handlers run on a bounded pool of goroutines, not on the
//     subscription's goroutine, so one slow request does not hold up others.
package handlers
