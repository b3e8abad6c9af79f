package worker

// What the external tests (package worker_test) need of the package's
// insides, and nothing more.

import "time"

// The event-type URI prefixes of the CAEP and RISC profiles.
const (
	CAEPPrefix = caepPrefix
	RISCPrefix = riscPrefix
)

// ErrUnknownSeverity is the policy's error for a severity it does not know.
var ErrUnknownSeverity = errUnknownSeverity

// SETVerifier checks and maps Security Event Tokens as the worker does.
type SETVerifier struct{ v *setVerifier }

// NewSETVerifier is a verifier for the transmitters on the clock now.
func NewSETVerifier(ts []Transmitter, now func() time.Time) (SETVerifier, error) {
	v, err := newSETVerifier(ts, now)
	return SETVerifier{v}, err
}

// Decode verifies a SET and maps it to the security event it carries.
func (s SETVerifier) Decode(token string) (SecurityEvent, error) { return s.v.decode(token) }
