package ledger

import (
	"context"
	"testing"
	"time"
)

// Run fails when the clients' watch ends while it should still run (the
// bucket was deleted), instead of returning as if it had been stopped and
// leaving a copy that silently goes stale.
func TestRegistryRunFailsWhenTheWatchEnds(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, js := newTestStore(t)
	r, err := NewRegistry(ctx, js, nil, 1, nil)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	if err := js.DeleteKeyValue(ctx, ClientsBucket); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("Run returned nil although nothing stopped it")
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Run still running 20 s after its bucket was deleted")
	}
}
