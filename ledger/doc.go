// Package ledger is the token ledger's domain: the closed set of events
// (events.go) and their encoding (codec.go), a family's state and its fold
// (state.go), the pure decisions on commands (decide.go), client policy
// (client.go) and the domain errors (errors.go). It imports no NATS and no
// JWT library and does no I/O; the JetStream adapter is ledger/jsstore and
// the token cryptography ledger/token.
//
// Invariants it keeps:
//   - Decide and Apply are pure: no I/O, no clock, no randomness. Callers mint
//     ids, secrets and time and pass them in. Apply never fails: every rule
//     about what to append lives in Decide.
//   - Exactly one refresh token of a family is current at any instant: a
//     decision is made on the family's last state, and the adapter appends
//     its events only if no other event of the family came first.
//   - Each event of a family carries the hash of the previous one (Prev) and
//     the family state after it (State), so loading a family costs one read
//     however long its history.
//   - No event holds a raw refresh token, client secret or private key:
//     refresh tokens are kept as SHA-256 hashes and the successor a grace
//     retry must return is sealed with a key derived from the presented
//     token.
package ledger
