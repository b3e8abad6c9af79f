package projections

import (
	"context"
	"crypto/rand"
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/oklog/ulid/v2"

	"github.com/tokenledger/tokenledger/ledger"
)

// benchEvents returns families*(1+rotations) realistic stored events: an
// issue and its rotations per family, each carrying its state snapshot as
// the store writes it.
func benchEvents(tb testing.TB, families, rotations int) [][]byte {
	tb.Helper()
	now := time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)
	hash := strings.Repeat("ab", 32)
	sealed := strings.Repeat("x", 110)
	out := make([][]byte, 0, families*(1+rotations))
	for i := range families {
		fid := ulid.MustNew(ulid.Timestamp(now), rand.Reader).String()
		st := ledger.State{}
		events := []ledger.Event{{
			ID: ulid.Make().String(), FamilyID: fid, OccurredAt: now, Cause: ledger.Cause{Kind: ledger.CauseRequest, ID: ulid.Make().String()},
			Data: ledger.FamilyIssued{
				ClientID: fmt.Sprintf("client-%d", i%10), Subject: fmt.Sprintf("user-%d", i), Scope: "read write",
				Audience: []string{"api"}, Version: 1, TokenHash: hash, RefreshExpiresAt: now.Add(14 * 24 * time.Hour),
				ExpiresAt: now.Add(90 * 24 * time.Hour),
				Access:    ledger.AccessGrant{JTI: ulid.Make().String(), Scope: "read write", ExpiresAt: now.Add(15 * time.Minute)},
			},
		}}
		for g := range rotations {
			events = append(events, ledger.Event{
				ID: ulid.Make().String(), FamilyID: fid, OccurredAt: now, Cause: ledger.Cause{Kind: ledger.CauseRequest, ID: ulid.Make().String()},
				Data: ledger.RefreshRotated{
					FromGeneration: uint64(g), ToGeneration: uint64(g + 1), PresentedHash: hash, TokenHash: hash,
					SealedSuccessor: sealed, RefreshExpiresAt: now.Add(14 * 24 * time.Hour), Version: 1,
					Access: ledger.AccessGrant{JTI: ulid.Make().String(), Scope: "read write", ExpiresAt: now.Add(15 * time.Minute)},
				},
			})
		}
		for _, e := range events {
			e.Prev = hash
			st = ledger.Apply(st, e)
			snap := st
			e.State = &snap
			b, err := ledger.EncodeEvent(e)
			if err != nil {
				tb.Fatal(err)
			}
			out = append(out, b)
		}
	}
	return out
}

// BenchmarkRebuild measures a rebuild of the view from sequence 1 through
// JetStream: read, decode and apply. Run it with -benchtime=3x.
func BenchmarkRebuild(b *testing.B) {
	for _, n := range []int{200_000} {
		b.Run(fmt.Sprintf("events=%d", n), func(b *testing.B) {
			f := newFixture(b)
			events := benchEvents(b, n/4, 3)
			ctx := context.Background()
			for i, data := range events {
				msg := nats.NewMsg("ledger.family." + fmt.Sprint(i))
				msg.Data = data
				if _, err := f.js.PublishMsgAsync(msg); err != nil {
					b.Fatal(err)
				}
				if i%2000 == 1999 {
					<-f.js.PublishAsyncComplete()
				}
			}
			<-f.js.PublishAsyncComplete()
			var size int
			for _, e := range events {
				size += len(e)
			}
			b.ReportAllocs()
			b.ResetTimer()
			start := time.Now()
			for b.Loop() {
				v := NewView()
				r, err := NewRunner(f.js, v, RunnerConfig{})
				if err != nil {
					b.Fatal(err)
				}
				if err := r.RunToEnd(ctx); err != nil {
					b.Fatal(err)
				}
				if v.LastSeq() != uint64(n) || v.Len() != n/4 {
					b.Fatalf("rebuilt %d events, %d families", v.LastSeq(), v.Len())
				}
			}
			elapsed := time.Since(start)
			b.ReportMetric(float64(n*b.N)/elapsed.Seconds(), "events/s")
			b.ReportMetric(float64(size)/float64(n), "bytes/event")
		})
	}
}

// BenchmarkDecode compares the view's decoder with the complete one.
func BenchmarkDecode(b *testing.B) {
	events := benchEvents(b, 1, 1)
	rotated := events[1]
	for _, d := range []struct {
		name string
		fn   func([]byte) (ledger.Event, error)
	}{{"decoder=view", DecodeForView}, {"decoder=ledger", ledger.DecodeEvent}} {
		b.Run(d.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(rotated)))
			for b.Loop() {
				if _, err := d.fn(rotated); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkViewMemory applies a million families, each with its own
// subject (the worst case for interning), and reports the heap they take.
// Run it with -benchtime=1x.
func BenchmarkViewMemory(b *testing.B) {
	for _, n := range []int{1_000_000} {
		b.Run(fmt.Sprintf("families=%d", n), func(b *testing.B) {
			now := time.Now()
			events := make([]ledger.Event, n)
			for i := range events {
				events[i] = ledger.Event{
					FamilyID: ulid.Make().String(), OccurredAt: now,
					Data: ledger.FamilyIssued{
						ClientID: fmt.Sprintf("client-%d", i%10), Subject: fmt.Sprintf("user-%08d", i),
						Version: 1, ExpiresAt: now.Add(90 * 24 * time.Hour),
						Access: ledger.AccessGrant{JTI: ulid.Make().String(), ExpiresAt: now.Add(15 * time.Minute)},
					},
				}
			}
			b.ResetTimer()
			for b.Loop() {
				var before, after runtime.MemStats
				runtime.GC()
				runtime.ReadMemStats(&before)
				v := NewView()
				start := time.Now()
				for i, e := range events {
					v.Apply(uint64(i+1), e)
				}
				elapsed := time.Since(start)
				runtime.GC()
				runtime.ReadMemStats(&after)
				if got := len(v.FamiliesBySubject("user-00000007", now)); got != 1 {
					b.Fatalf("index: %d", got)
				}
				b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/float64(n), "bytes/family")
				b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/(1<<20), "MB")
				b.ReportMetric(float64(n)/elapsed.Seconds(), "applies/s")
				runtime.KeepAlive(v)
			}
		})
	}
}

// BenchmarkAccessRevoked is the view's share of an introspection.
func BenchmarkAccessRevoked(b *testing.B) {
	v := NewView()
	now := time.Now()
	ids := make([]string, 100_000)
	jtis := make([]string, len(ids))
	for i := range ids {
		ids[i], jtis[i] = ulid.Make().String(), ulid.Make().String()
		v.Apply(uint64(i+1), ledger.Event{FamilyID: ids[i], OccurredAt: now, Data: ledger.FamilyIssued{
			ClientID: "web", Subject: fmt.Sprint(i), ExpiresAt: now.Add(time.Hour),
			Access: ledger.AccessGrant{JTI: jtis[i], ExpiresAt: now.Add(15 * time.Minute)},
		}})
	}
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			if v.AccessRevoked(jtis[i%len(ids)], ids[i%len(ids)], now, 0, now) {
				b.Fatal("revoked")
			}
			i++
		}
	})
}
