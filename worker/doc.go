// Package worker is the security-event worker of docs/contract.md §5: it reads the
// events security tooling publishes on security.events.<type> (the JSON
// form, or a Security Event Token from a configured transmitter), selects
// the active families each one names, applies the policy's action (revoke
// the families, cut their access tokens, or record only) through
// jsstore.Ledger, and records the handling in the ledger with the event's
// id as the cause.
//
// It owns the intake and dead-letter streams, the durable consumer every
// worker shares, the claims bucket, the decoding of both event forms
// (set.go) and the policy (policy.go). It changes state only through the
// Ledger, never through the store.
//
// Invariants it keeps:
//   - Each event is handled once: a claim in a KV bucket makes
//     check-act-record exclusive across workers, and the ledger's record of
//     the handling (one subject per event id) makes every redelivery, copy
//     or restart a duplicate that appends nothing. A takeover after a crash
//     keeps the first attempt's start, so no family is cut twice.
//   - Decoding is strict: a member twice, a member name in another letter
//     case, or an unknown member of the JSON form makes the event invalid.
//   - An invalid event is set aside on the dead-letter stream with the
//     reason and terminated, never retried; an event that keeps failing is
//     set aside after MaxDeliver deliveries. Nothing is dropped silently:
//     if the dead letter cannot be stored the delivery is retried.
//   - A reason never quotes the body: at most a clipped member name or a
//     short value such as a severity, issuer or event type.
package worker
