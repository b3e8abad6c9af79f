// Package jsstore is everything of the ledger that talks to NATS JetStream:
// the event store (store.go: the ledger stream, conditional appends, direct
// gets of a family's last event), the signing-key store (keystore.go), the
// client registry (registry.go), the state cache over them (cache.go), and
// Ledger (ledger.go), which loads a family, asks ledger.Decide and appends
// what it decided.
//
// Invariants it keeps:
//   - Every family append is conditional on the family subject's last
//     stream sequence; a lost race is ledger.ErrConflict and Ledger decides
//     again on the reloaded state, so two writers never both rotate one
//     generation.
//   - A command loads its family once (or decides on the state this
//     instance appended last, while nothing later is known) and never
//     replays a family's history.
//   - JetStream errors leave this package as domain errors
//     (ledger.ErrConflict, ledger.ErrUnavailable), wrapped with %w.
//   - Private keys reach the key bucket only sealed with the KEK.
package jsstore
