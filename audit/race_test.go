//go:build race

package audit

// raceEnabled: the race detector slows JSON and hashing about tenfold, so
// the largest test ledgers shrink under it (the full sizes run without).
const raceEnabled = true
