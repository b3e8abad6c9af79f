package verifier

import (
	"testing"
	"time"

	"github.com/tokenledger/tokenledger/ledger/token"
	"github.com/tokenledger/tokenledger/revocation"
)

// The verifier decides a cutoff as the view does: by the family event that
// granted a token (its sid_event claim) against the cutoff's, never by
// comparing the issuing and the cutting instances' clocks; only a token or
// an announcement without event numbers falls back to time.
func TestCutoffByStreamOrder(t *testing.T) {
	const fid = "01JDQ7Z6M3XGJ8Y9W4V2T1S0RQ"
	issuedAt := time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)
	cutAt := issuedAt.Add(-30 * time.Second) // the cutting instance is 30 s behind
	now := issuedAt.Add(time.Minute)
	claims := func(event uint64, iat time.Time) token.AccessClaims {
		return token.AccessClaims{JTI: "01JDQ80000000000000000ACC1", SID: fid, IssuedAt: iat.Unix(), FamilyEvent: event}
	}
	for _, tc := range []struct {
		name        string
		cutoffEvent uint64 // of the announcement; 0: from a build without it
		c           token.AccessClaims
		denied      bool
	}{
		{"granted before the cutoff, iat after its stamp", 2, claims(1, issuedAt), true},
		{"granted after the cutoff, iat before its stamp", 2, claims(3, cutAt.Add(time.Second)), false},
		{"granted by the cutoff's own event number is impossible: equal is not earlier", 2, claims(2, issuedAt), false},
		{"token without sid_event, issued before the stamp", 2, claims(0, cutAt.Add(-time.Second)), true},
		{"token without sid_event, issued after the stamp", 2, claims(0, issuedAt), false},
		{"announcement without the event number: by time", 0, claims(1, cutAt), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := &Verifier{cfg: Config{Now: func() time.Time { return now }},
				families: map[string]*familyRevocation{}, jtis: map[string]time.Time{}}
			v.apply(revocation.Announcement{Kind: revocation.KindCutoff, FamilyID: fid, At: cutAt,
				FamilyEvent: tc.cutoffEvent, ExpiresAt: now.Add(time.Hour)})
			if got := v.revoked(tc.c); got != tc.denied {
				t.Fatalf("revoked = %v, want %v", got, tc.denied)
			}
		})
	}
}
