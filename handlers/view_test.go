package handlers

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"

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

// The endpoints that read the valid-token view are registered only by an
// instance that has one, so requests for them never reach an instance that
// could not answer: without a view nobody responds.
func TestViewEndpointsNeedAView(t *testing.T) {
	base := []string{"tokens.issue", "tokens.refresh", "tokens.jwks"}
	viewed := []string{"tokens.revoke", "tokens.introspect", "tokens.sessions", "tokens.admin.sessions", "tokens.admin.revoke", "tokens.admin.digest"}
	tests := []struct {
		name string
		view *projections.View
		want []string
	}{
		{"without a view", nil, base},
		{"with a view", projections.NewView(), append(slices.Clone(base), viewed...)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, "")
			e.startService(envOptions{view: tt.view})
			// The service answers jwks before it has registered the
			// view's endpoints: poll until the list is complete.
			want := slices.Sorted(slices.Values(tt.want))
			var got []string
			for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
				if got = slices.Sorted(slices.Values(e.endpointSubjects())); slices.Equal(got, want) {
					break
				}
			}
			if !slices.Equal(got, want) {
				t.Fatalf("registered %v, want %v", got, want)
			}
			if tt.view != nil {
				return
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			for _, subject := range viewed {
				if _, err := e.nc.RequestWithContext(ctx, subject, []byte(`{}`)); !errors.Is(err, nats.ErrNoResponders) {
					t.Errorf("%s without a view: err = %v, want no responders", subject, err)
				}
			}
		})
	}
}

// endpointSubjects is the subjects of the endpoints the (one) running
// instance registered, from its micro INFO.
func (e *env) endpointSubjects() []string {
	e.t.Helper()
	subject, err := micro.ControlSubject(micro.InfoVerb, ServiceName, "")
	if err != nil {
		e.t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	msg, err := e.nc.RequestWithContext(ctx, subject, nil)
	if err != nil {
		e.t.Fatalf("%s: %v", subject, err)
	}
	var info micro.Info
	if err := json.Unmarshal(msg.Data, &info); err != nil {
		e.t.Fatalf("%s reply: %v", subject, err)
	}
	var out []string
	for _, ep := range info.Endpoints {
		out = append(out, ep.Subject)
	}
	return out
}
