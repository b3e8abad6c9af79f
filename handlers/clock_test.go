package handlers_test

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/tokenledger/tokenledger/internal/tltest"
)

// An instance whose clock is pushed out of bound from the NATS server's
// stops deciding (503 temporarily_unavailable, an error log saying why) and
// decides again once its clock is back in bound.
func TestClockOutOfBoundStopsDecisions(t *testing.T) {
	e := newEnv(t, "")
	e.Clock.Set(time.Now()) // the guard measures against the server's real clock
	logs := &syncWriter{w: &bytes.Buffer{}}
	guard := e.StartInstance(tltest.Options{Grace: 10 * time.Second, ClockGuard: 500 * time.Millisecond, Log: logs}).ClockGuard()
	ctx := context.Background()

	good := e.Issue("alice")
	if good.Error != "" {
		t.Fatalf("in bound: issue refused: %s %s", good.Error, good.Description)
	}
	for _, skew := range []time.Duration{time.Hour, -2 * time.Hour} { // ahead, then behind
		t.Run(skew.String(), func(t *testing.T) {
			e.Clock.Advance(skew)
			if err := guard.Probe(ctx); err == nil {
				t.Fatalf("probe with the clock %s off: in bound", skew)
			}
			for name, r := range map[string]tltest.Reply{"issue": e.Issue("bob"), "refresh": e.Refresh(good.RefreshToken)} {
				if r.Error != "temporarily_unavailable" || r.Status != "503" {
					t.Errorf("%s out of bound: %s %q (status %s), want temporarily_unavailable 503", name, r.Error, r.Description, r.Status)
				}
			}
			e.Clock.Advance(-skew)
			if err := guard.Probe(ctx); err != nil {
				t.Fatalf("probe back in bound: %v", err)
			}
			if r := e.Refresh(good.RefreshToken); r.Error != "" {
				t.Fatalf("back in bound: refresh refused: %s %s", r.Error, r.Description)
			} else {
				good = r
			}
		})
	}
	if !strings.Contains(string(logs.bytes()), "clock offset from the NATS server out of bound") {
		t.Errorf("no error log about the clock; logs:\n%s", string(logs.bytes()))
	}
	if off, unc := guard.Offset(); off > time.Second || off < -time.Second || unc > time.Second {
		t.Errorf("offset %s ± %s after recovery, want near zero", off, unc)
	}
}
