package handlers_test

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tokenledger/tokenledger/internal/tltest"
)

// BenchmarkIntrospect measures introspection over NATS against one
// service instance.
//
//   - token=access: 100 access tokens introspected over and over: after
//     the first pass each signature check is a cache hit, so this is the
//     sync round (shared by concurrent requests), the view's lookup and the
//     reply.
//   - token=access,uncached: every request a token never introspected
//     before (b.N tokens issued up front): an Ed25519 verification each.
//   - token=refresh: the family's state in one direct get.
func BenchmarkIntrospect(b *testing.B) {
	for _, bc := range []struct {
		name     string
		refresh  bool
		distinct bool
	}{
		{name: "token=access"},
		{name: "token=access,uncached", distinct: true},
		{name: "token=refresh", refresh: true},
	} {
		b.Run(bc.name, func(b *testing.B) {
			e := newEnv(b, "")
			e.StartInstance(tltest.Options{Grace: 10 * time.Second})
			n := 100
			if bc.distinct {
				n = b.N
			}
			bodies := make([][]byte, n)
			var next atomic.Int64
			var wg sync.WaitGroup
			errs := make(chan error, 16) // the goroutines must not stop the benchmark
			for range 16 {
				wg.Go(func() {
					for i := int(next.Add(1)) - 1; i < n; i = int(next.Add(1)) - 1 {
						r, err := e.tryIssue(fmt.Sprint("user-", i))
						if err != nil {
							errs <- err
							return
						}
						tok := r.AccessToken
						if bc.refresh {
							tok = r.RefreshToken
						}
						bodies[i], _ = json.Marshal(map[string]any{"client_id": tltest.ClientID, "client_secret": tltest.Secret, "token": tok})
					}
				})
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				b.Fatal(err)
			}
			var seq atomic.Int64
			b.ReportAllocs()
			b.SetParallelism(16)
			b.ResetTimer()
			start := time.Now()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					body := bodies[int(seq.Add(1)-1)%len(bodies)]
					msg, err := e.NC.RequestWithContext(context.Background(), "tokens.introspect", body)
					if err != nil || string(msg.Data[:14]) != `{"active":true` {
						b.Fatalf("introspect: %v %s", err, msg.Data)
					}
				}
			})
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "introspections/s")
		})
	}
}
