// Package audit owns the auditor's tools over the ledger stream: replay
// (replay.go: filters, JSON Lines and table output), verify (verify.go:
// sequence gaps, per-family hash chains, legal transitions, state
// snapshots, a running digest with checkpoints), at (at.go: the valid-token
// view as of a past instant, with the event that made each answer so) and
// diff (diff.go: the projections' view rebuilt from the log against an
// independent fold and a live view's digest). source.go reads the stream;
// progress.go draws a progress bar on a terminal.
//
// Invariants it keeps:
//   - Read-only: it reads with ordered consumers (ephemeral, recreated by
//     the client) and direct gets, never creates a durable consumer and
//     never publishes, so it runs with an auditor's read-only permissions.
//   - Any stream name and subject prefix: verification of a copy of the
//     ledger (or a tampered one, in tests) works like that of the ledger.
//   - Every violation carries the stream sequence where it is (for a
//     removed event: where it was), and one tampered event is reported
//     once: after a break the family's fold resynchronises on the stored
//     snapshot instead of cascading.
//   - The fold is ledger.Apply, the rules are the ledger's (Decide's
//     legal transitions), and events are read with the ledger's one codec
//     (ledger.DecodeEvent, and ledger.Folder, which reads the same
//     events); at cross-checks its answers with the projections'
//     valid-token view folded from the same events.
//   - What an event stores of its family's state (schema 2: its base,
//     schema 1: the state after it) differs from the fold only if their
//     JSON encodings differ: ledger.Folder settles the usual case by
//     comparing the stored bytes with the encoding of what the writer
//     stores after the fold (ledger.Base for schema 2); otherwise the event
//     is decoded whole and Folder.Matches compares the encodings of both
//     (ledger.AppendState: the ledger's structs are the one schema), so a
//     base that spells out a field its event sets is caught too.
//   - Output for programs is JSON on the writer it is given; progress goes
//     to stderr only when it is a terminal.
//
// What a per-family hash chain cannot prove, and how verify covers it: the
// order of events of different families is not chained (a swap across
// families is invisible, and harmless to every family's history); the last
// event of a family and a truncated tail have no successor to vouch for
// them, so the stream's own last sequence is checked, and the digest
// verify reports can be given back as a checkpoint (--checkpoint
// SEQ:DIGEST) to prove that nothing up to it changed or went missing.
package audit
