package handlers_test

import (
	"testing"

	"github.com/tokenledger/tokenledger/internal/tltest"
)

func TestIssueRefreshRoundTrip(t *testing.T) {
	e := newEnv(t, "")
	e.StartInstance(tltest.Options{Grace: 10e9})
	first := e.Issue("alice")
	tltest.WantOK(t, first)
	second := e.Refresh(first.RefreshToken)
	tltest.WantOK(t, second)
	if second.RefreshToken == first.RefreshToken || second.FamilyID != first.FamilyID {
		t.Fatalf("rotation: got %+v after %+v", second.TokenResponse, first.TokenResponse)
	}
}
