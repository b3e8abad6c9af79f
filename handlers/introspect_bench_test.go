package handlers

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tokenledger/tokenledger/projections"
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
			e.startService(envOptions{grace: 10 * time.Second, view: projections.NewView()})
			n := 100
			if bc.distinct {
				n = b.N
			}
			bodies := make([][]byte, n)
			var next atomic.Int64
			var wg sync.WaitGroup
			for range 16 {
				wg.Go(func() {
					for i := int(next.Add(1)) - 1; i < n; i = int(next.Add(1)) - 1 {
						r := e.issue(fmt.Sprint("user-", i))
						tok := r.AccessToken
						if bc.refresh {
							tok = r.RefreshToken
						}
						bodies[i], _ = json.Marshal(map[string]any{"client_id": testClientID, "client_secret": testSecret, "token": tok})
					}
				})
			}
			wg.Wait()
			var seq atomic.Int64
			b.ReportAllocs()
			b.SetParallelism(16)
			b.ResetTimer()
			start := time.Now()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					body := bodies[int(seq.Add(1)-1)%len(bodies)]
					msg, err := e.nc.RequestWithContext(context.Background(), "tokens.introspect", body)
					if err != nil || string(msg.Data[:14]) != `{"active":true` {
						b.Fatalf("introspect: %v %s", err, msg.Data)
					}
				}
			})
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "introspections/s")
		})
	}
}
