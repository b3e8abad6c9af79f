package handlers

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/tokenledger/tokenledger/projections"
)

// BenchmarkIntrospect measures introspection over NATS against one
// service instance: verify the JWT, one direct get of the family's last
// sequence, the view's wait and lookup, and the reply.
func BenchmarkIntrospect(b *testing.B) {
	for _, kind := range []string{"access", "refresh"} {
		b.Run("token="+kind, func(b *testing.B) {
			e := newEnv(b, "")
			e.startService(envOptions{grace: 10 * time.Second, view: projections.NewView()})
			var toks []string
			for i := range 100 {
				r := e.issue(fmt.Sprint("user-", i))
				if kind == "access" {
					toks = append(toks, r.AccessToken)
				} else {
					toks = append(toks, r.RefreshToken)
				}
			}
			bodies := make([][]byte, len(toks))
			for i, tok := range toks {
				bodies[i], _ = json.Marshal(map[string]any{"client_id": testClientID, "client_secret": testSecret, "token": tok})
			}
			b.ReportAllocs()
			b.SetParallelism(16)
			b.ResetTimer()
			start := time.Now()
			b.RunParallel(func(pb *testing.PB) {
				i := 0
				for pb.Next() {
					msg, err := e.nc.RequestWithContext(context.Background(), "tokens.introspect", bodies[i%len(bodies)])
					if err != nil || string(msg.Data[:14]) != `{"active":true` {
						b.Fatalf("introspect: %v %s", err, msg.Data)
					}
					i++
				}
			})
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "introspections/s")
		})
	}
}
