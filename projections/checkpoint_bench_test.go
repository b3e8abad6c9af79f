package projections

import (
	"fmt"
	"testing"
	"time"

	"github.com/oklog/ulid/v2"

	"github.com/tokenledger/tokenledger/ledger"
)

// BenchmarkCheckpoint measures each step of a checkpoint of a view of n
// families (each with its own subject and a rotation): the copy taken on
// the runner's goroutine (the only pause the view sees), the digest and
// encoding done off it, and a load's decoding with every check. Run it
// with -benchtime=1x.
func BenchmarkCheckpoint(b *testing.B) {
	for _, n := range []int{1_000_000} {
		b.Run(fmt.Sprintf("families=%d", n), func(b *testing.B) {
			now := time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)
			v := NewView()
			seq := uint64(0)
			for i := range n {
				fid := ulid.MustNew(ulid.Timestamp(now), ulid.DefaultEntropy()).String()
				seq++
				v.Apply(seq, ledger.Event{FamilyID: fid, OccurredAt: now, Data: ledger.FamilyIssued{
					ClientID: fmt.Sprintf("client-%d", i%10), Subject: fmt.Sprintf("user-%08d", i),
					Version: 1, ExpiresAt: now.Add(90 * 24 * time.Hour),
					Access: ledger.AccessGrant{JTI: ulid.Make().String(), ExpiresAt: now.Add(15 * time.Minute)},
				}})
				seq++
				v.Apply(seq, ledger.Event{FamilyID: fid, OccurredAt: now.Add(time.Minute), Data: ledger.RefreshRotated{
					ToGeneration: 1, Version: 1,
					Access: ledger.AccessGrant{JTI: ulid.Make().String(), ExpiresAt: now.Add(16 * time.Minute)},
				}})
			}
			ro := NewRollouts()
			ro.last.Store(seq)
			b.ResetTimer()
			for b.Loop() {
				start := time.Now()
				fv, fro := v.freeze(), ro.freeze()
				frozen := time.Since(start)
				start = time.Now()
				body, _, err := encodeCheckpoint([]checkpointPart{fv, fro}, now, "TOKENLEDGER", now)
				if err != nil {
					b.Fatal(err)
				}
				encoded := time.Since(start)
				start = time.Now()
				digest := fv.Digest(now)
				digested := time.Since(start)
				start = time.Now()
				c, err := decodeCheckpoint(body)
				if err != nil || c.Digest != digest {
					b.Fatal(err)
				}
				decoded := time.Since(start)
				b.ReportMetric(float64(frozen.Milliseconds()), "freeze-ms")
				b.ReportMetric(float64(encoded.Milliseconds()), "encode+digest-ms")
				b.ReportMetric(float64(digested.Milliseconds()), "digest-ms")
				b.ReportMetric(float64(decoded.Milliseconds()), "load-verify-ms")
				b.ReportMetric(float64(len(body))/float64(n), "bytes/family")
				b.ReportMetric(float64(len(body))/(1<<20), "MB")
			}
		})
	}
}
