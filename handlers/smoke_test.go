package handlers

import "testing"

func TestIssueRefreshRoundTrip(t *testing.T) {
	e := newEnv(t, "")
	e.startService(envOptions{grace: 10e9})
	first := e.issue("alice")
	wantOK(t, first)
	second := e.refresh(first.RefreshToken)
	wantOK(t, second)
	if second.RefreshToken == first.RefreshToken || second.FamilyID != first.FamilyID {
		t.Fatalf("rotation: got %+v after %+v", second.TokenResponse, first.TokenResponse)
	}
}
