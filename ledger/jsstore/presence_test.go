package jsstore

import (
	"context"
	"errors"
	"testing"

	"github.com/tokenledger/tokenledger/internal/natstest"
	"github.com/tokenledger/tokenledger/ledger/token"
)

// A start may create the ledger only on a deployment never initialised, or
// when told to; a deleted ledger stream or key bucket is refused.
func TestCheckInitialised(t *testing.T) {
	ctx := context.Background()
	_, js := natstest.Connect(t, natstest.Start(t, ""))
	if err := CheckInitialised(ctx, js, "", false); err != nil {
		t.Fatalf("never initialised: %v", err)
	}
	if _, err := NewStore(ctx, js, StoreConfig{}); err != nil {
		t.Fatal(err)
	}
	if _, err := NewKeyStore(ctx, js, token.KEK{}, 1); err != nil {
		t.Fatal(err)
	}
	if _, err := NewRegistry(ctx, js, nil, 1, nil); err != nil {
		t.Fatal(err)
	}
	if err := CheckInitialised(ctx, js, "", false); err != nil {
		t.Fatalf("initialised and whole: %v", err)
	}
	for _, tc := range []struct {
		name, stream string
	}{
		{"ledger stream deleted", DefaultStream},
		{"key bucket deleted", "KV_" + KeysBucket},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := js.DeleteStream(ctx, tc.stream); err != nil {
				t.Fatal(err)
			}
			if err := CheckInitialised(ctx, js, "", false); !errors.Is(err, ErrLedgerMissing) {
				t.Fatalf("CheckInitialised = %v, want ErrLedgerMissing", err)
			}
			if err := CheckInitialised(ctx, js, "", true); err != nil {
				t.Fatalf("with init: %v", err)
			}
			// Recreate it as an operator's --init would, for the next row.
			if _, err := NewStore(ctx, js, StoreConfig{}); err != nil {
				t.Fatal(err)
			}
			if _, err := NewKeyStore(ctx, js, token.KEK{}, 1); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// The watchdog refuses decisions while a store is gone and lets them
// through again once it is back; it recreates nothing itself.
func TestWatchdog(t *testing.T) {
	ctx := context.Background()
	store, js := newTestStore(t)
	if _, err := NewKeyStore(ctx, js, token.KEK{}, 1); err != nil {
		t.Fatal(err)
	}
	dog := NewWatchdog(js, WatchdogConfig{})
	l := New(store, WithWatchdog(dog))
	if err := dog.Check(ctx); err != nil || l.Ready() != nil {
		t.Fatalf("whole: Check = %v, Ready = %v", err, l.Ready())
	}
	if err := js.DeleteStream(ctx, DefaultStream); err != nil {
		t.Fatal(err)
	}
	if err := dog.Check(ctx); !errors.Is(err, ErrLedgerMissing) {
		t.Fatalf("Check = %v, want ErrLedgerMissing", err)
	}
	if _, err := l.Revoke(ctx, famID, testCause); !errors.Is(err, ErrLedgerMissing) {
		t.Fatalf("Revoke with the ledger gone = %v, want ErrLedgerMissing", err)
	}
	if _, err := js.Stream(ctx, DefaultStream); err == nil {
		t.Fatal("the ledger stream was recreated")
	}
	if _, err := NewStore(ctx, js, StoreConfig{}); err != nil { // restored
		t.Fatal(err)
	}
	if err := dog.Check(ctx); err != nil || l.Ready() != nil {
		t.Fatalf("restored: Check = %v, Ready = %v", err, l.Ready())
	}
}
