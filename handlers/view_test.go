package handlers_test

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/tokenledger/tokenledger/internal/tltest"
)

// The endpoints that read the valid-token view are registered only by an
// instance that has one, so requests for them never reach an instance that
// could not answer: without a view nobody responds.
func TestViewEndpointsNeedAView(t *testing.T) {
	base := []string{"tokens.issue", "tokens.refresh", "tokens.jwks", "tokens.admin.keys.list", "tokens.admin.keys.rotate", "tokens.admin.keys.revoke"}
	viewed := []string{"tokens.revoke", "tokens.introspect", "tokens.sessions", "tokens.admin.sessions", "tokens.admin.revoke", "tokens.admin.digest", "tokens.admin.rollout"}
	tests := []struct {
		name   string
		noView bool
		want   []string
	}{
		{"without a view", true, base},
		{"with a view", false, append(slices.Clone(base), viewed...)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, "")
			e.StartInstance(tltest.Options{NoView: tt.noView})
			// The service answers jwks before it has registered the
			// view's endpoints: poll until the list is complete.
			want := slices.Sorted(slices.Values(tt.want))
			var got []string
			for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
				if got = slices.Sorted(slices.Values(e.Endpoints())); slices.Equal(got, want) {
					break
				}
			}
			if !slices.Equal(got, want) {
				t.Fatalf("registered %v, want %v", got, want)
			}
			if !tt.noView {
				return
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			for _, subject := range viewed {
				if _, err := e.NC.RequestWithContext(ctx, subject, []byte(`{}`)); !errors.Is(err, nats.ErrNoResponders) {
					t.Errorf("%s without a view: err = %v, want no responders", subject, err)
				}
			}
		})
	}
}
