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
//   - The service speaks the NATS micro protocol itself (microsrv.go: the
//     $SRV PING, INFO and STATS subjects with micro's types and error
//     headers) rather than through micro.AddService, which counts a request
//     when its handler returns, before the pool has answered it. A request
//     is counted when it is answered, by its Respond or Error, with the
//     time from its arrival to its reply: `nats micro stats tokenledger`
//     shows every endpoint's true requests, errors and processing time,
//     one instance id per process.
//   - Every request taken is answered exactly once: a result, an OAuth
//     error, or, once Run is stopping, 503 temporarily_unavailable.
package handlers
