package handlers

import (
	"context"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/tokenledger/tokenledger/projections"
)

// startRunner feeds the view from the ledger stream until ctx ends.
func startRunner(ctx context.Context, t testing.TB, js jetstream.JetStream, v *projections.View) *projections.Runner {
	t.Helper()
	r, err := projections.NewRunner(js, v, projections.RunnerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	t.Cleanup(func() {
		if err := <-done; err != nil {
			t.Errorf("runner stopped with %v", err)
		}
	})
	return r
}
