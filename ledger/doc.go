// Package ledger owns the token ledger's domain: the closed set of events
// (events.go), a family's state and its fold (state.go), the pure decisions
// on commands (decide.go), the token formats (refresh.go, access.go, keys.go)
// and the JetStream-backed stores (store.go for the event log, registry.go for
// clients, keystore.go for signing keys).
//
// Invariants it keeps:
//   - Decide and Apply are pure: no I/O, no clock, no randomness. Callers mint
//     ids, secrets and time and pass them in.
//   - Exactly one refresh token of a family is current at any instant; every
//     append is conditional on the family subject's last stream sequence, so
//     two writers can never both rotate one generation (ErrConflict).
//   - Each event of a family carries the hash of the previous one (Prev) and
//     the family state after it (State), so loading a family costs one direct
//     get however long its history.
//   - No raw refresh token, client secret or private key is ever written to
//     an event: refresh tokens are kept as SHA-256 hashes, the successor a
//     grace retry must return is sealed with a key derived from the presented
//     token, and signing keys are sealed with the key-encryption key.
package ledger
