// Package instance wires one tokenledger process, once, for every caller:
// `tokenledger serve`, `tokenledger worker`, the load tool and the tests.
// New assembles the event store, the signing keys, the client registry,
// the clock guard and the watchdog, the valid-token view with its runner,
// the revocation feed, the micro service and the security-event worker, as
// Config asks; Run runs them as one group.
//
// Invariants it keeps:
//   - A ledger stream or key bucket missing on a deployment that was
//     initialised stops the start (jsstore.CheckInitialised); one that
//     disappears while running stops decisions (jsstore.Watchdog).
//   - Every ledger it builds refuses decisions while the clock guard finds
//     the clock out of bound.
//   - Shutdown order: the endpoints and the worker stop first and answer
//     what they accepted, then the projections they read stop.
package instance
