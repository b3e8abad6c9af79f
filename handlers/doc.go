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
//   - Every request is served to the end inside its micro handler, which
//     replies with micro's Respond or Error: micro's own stats
//     (num_requests, num_errors, processing_time: `nats micro stats`) are
//     the service's true counts. A NATS subscription runs its handler one
//     message at a time, so Run registers Config.Workers instances of the
//     micro service on the connection (lanes, each with every endpoint in
//     the same queue group), and the server spreads requests over them: a
//     process serves Workers requests at once, and its stats are the sum
//     over the lanes whose "process" metadata it carries.
//   - Stopping answers every request taken: the lanes' subscriptions are
//     drained, requests delivered after that are answered 503
//     (temporarily_unavailable) and Run returns once those in hand are
//     answered.
package handlers
