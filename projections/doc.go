// Package projections owns the read models folded from the ledger stream
// and the machinery that feeds them:
//
//   - view.go: the valid-token view (View): families with client, subject,
//     generation, version and lifetimes, indexed by subject and client, and
//     the access tokens revoked before their expiry.
//   - runner.go: the Runner, which feeds a projection from the ledger stream
//     with an ordered consumer, reports its lag and lets callers wait for a
//     sequence (read-your-writes).
//   - checkpoint.go, checkpointrun.go, viewcodec.go: checkpoints of the
//     view and the rollout model in a JetStream object store, saved by the
//     runner every N events or T and loaded at start, so a restart replays
//     only the tail.
//   - feed.go: the revocation feed (Feed), which announces every revocation
//     on <prefix>.revocations.<kind> into its own stream so resource servers
//     (package verifier) can follow and resume it. The wire format is in
//     docs/revocation-feed.md.
//
// Invariants it keeps:
//   - A projection is a pure fold of the stream: applying the same events in
//     stream order gives the same view, whether live or rebuilt from
//     sequence 1 (compare View.Digest). Each event is applied once, keyed by
//     its stream sequence; a sequence at or below the last applied one is
//     ignored, so redelivery changes nothing.
//   - Expiry is by time, never by event: a family or access token past its
//     expiry is inactive at once; Prune only frees memory for what can no
//     longer matter and never changes an answer.
//   - The view never writes to the ledger. The runner resumes after the
//     projection's last applied sequence; an in-memory view that starts
//     empty is rebuilt from sequence 1.
//   - A checkpoint is loaded only once verified (object SHA-256, format,
//     decoding that encodes back to the same bytes, the view's recorded
//     digest, a sequence within this stream): a bad one falls back to the
//     previous one or to a rebuild, never to a wrong view.
//   - The feed announces a revocation only after the view has applied it,
//     de-duplicates by the ledger event id, and records how far it got in
//     the KV bucket tokenledger_checkpoints, so a restarted feed resumes
//     without gaps (and at worst repeats, which subscribers ignore).
package projections
