// Package api holds the wire types of the tokenledger service's NATS
// endpoints (docs/contract.md §2 and §3): the JSON body of every request
// and reply, the error body, the OAuth error codes, the token type hints
// and the token types introspection reports.
//
// It is small on purpose: the service (handlers), its Go client (client)
// and the token package (ledger/token, for JWK and KeyInfo) import it, so
// a relying service that uses the client compiles neither the server nor
// its dependencies, and every schema is spelled once.
//
// Invariants it keeps:
//   - It imports nothing of tokenledger and no NATS library: only the
//     standard library.
//   - The types are the contract's bytes: member names (json tags) never
//     change; the wire only grows, by optional members. The service
//     encodes them with encoding/json v1's output (handlers' replyOptions)
//     and decodes requests strictly (handlers' requestOptions); golden
//     tests in handlers pin the bytes.
//   - No behaviour: decoding rules, validation and fast paths live in
//     handlers, retries and error values in client.
package api
