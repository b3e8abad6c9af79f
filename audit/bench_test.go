package audit

import (
	"context"
	"crypto/sha256"
	"fmt"
	"os"
	"runtime"
	"runtime/metrics"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// benchEvents is the ledger size of BenchmarkAudit: 1 000 000 unless
// TOKENLEDGER_BENCH_EVENTS says otherwise.
func benchEvents() int {
	if n, err := strconv.Atoi(os.Getenv("TOKENLEDGER_BENCH_EVENTS")); err == nil && n > 0 {
		return n
	}
	return 1_000_000
}

// BenchmarkAudit measures verify and replay over one generated ledger:
// events per second and the peak Go heap during the operation (sampled;
// the embedded server shares the process, so its heap is included).
//
//	go test -run '^$' -bench BenchmarkAudit -benchtime 1x -count 3 ./audit/
//
// On the shared 2-core machine, 1 000 000 events, -benchtime 3x, four runs
// alternating with the code before (ec61cd0; issue 5): read 82 000 to
// 158 000 events/s (before 75 000 to 148 000), verify 53 000 to 91 000
// (before 30 000 to 77 000), peak heap 330 to 353 MB (before 333 to 338);
// allocations an event: read 19 (before 23), verify 31 (before 46). The
// spread is the machine's other load: the server, the client and verify
// all share the two cores, and verify costs about twice the CPU of the
// bare read an event (13.4 and 5.7 µs at best, the process's CPU time by
// getrusage over 200 000 events): two idle cores verify at most about
// 150 000 events/s, short of issue 5's 200 000.
func BenchmarkAudit(b *testing.B) {
	n := benchEvents()
	msgs := newGenerator(42).mixed(n)
	_, src := newLedger(b, "BENCH", "ledger", msgs)
	msgs = nil
	ctx := context.Background()

	// The bare read is the baseline: how fast Scan delivers the events
	// when nothing is done with them. Report verify's events/s as a ratio
	// to it, measured in the same run: the machine is shared.
	b.Run(fmt.Sprintf("N=%d/op=read", n), func(b *testing.B) {
		b.ReportAllocs()
		var events uint64
		for b.Loop() {
			err := src.Scan(ctx, ScanOptions{}, func(Msg) error { events++; return nil })
			if err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(events)/b.Elapsed().Seconds(), "events/s")
	})
	b.Run(fmt.Sprintf("N=%d/op=verify", n), func(b *testing.B) {
		b.ReportAllocs()
		var events uint64
		peak := measurePeak(b, func() {
			for b.Loop() {
				rep, err := Verify(ctx, src, VerifyOptions{})
				if err != nil || !rep.OK {
					b.Fatalf("verify: %v, %d violations", err, len(rep.Violations))
				}
				events += rep.Events
			}
		})
		b.ReportMetric(float64(events)/b.Elapsed().Seconds(), "events/s")
		b.ReportMetric(peak, "peak-heap-MB")
	})
	b.Run(fmt.Sprintf("N=%d/op=replay", n), func(b *testing.B) {
		b.ReportAllocs()
		var events uint64
		peak := measurePeak(b, func() {
			for b.Loop() {
				sum, err := Replay(ctx, src, ReplayOptions{}, discard{})
				if err != nil {
					b.Fatal(err)
				}
				events += sum.Matched
			}
		})
		b.ReportMetric(float64(events)/b.Elapsed().Seconds(), "events/s")
		b.ReportMetric(peak, "peak-heap-MB")
	})
}

// BenchmarkVerifyCheck measures what Verify does with an event once it is
// read: its hash, the digest and a family worker's checks, on one
// goroutine, over a generated ledger (200 000 events at most) held in
// memory. No server shares the process, so it varies less than
// BenchmarkAudit on a shared machine: compare changes to the checks here.
func BenchmarkVerifyCheck(b *testing.B) {
	msgs := newGenerator(42).mixed(min(benchEvents(), 200_000))
	b.ReportAllocs()
	for b.Loop() {
		w := &worker{families: map[string]*famState{}}
		var digest [sha256.Size]byte
		for i, m := range msgs {
			seq := uint64(i + 1)
			h := sha256.Sum256(m.Data)
			digest = nextDigest(digest, seq, h)
			fam, ok := strings.CutPrefix(m.Subject, "family.")
			if !ok {
				fam = ""
			}
			w.check(item{seq: seq, family: fam, data: m.Data, hash: h})
		}
		if len(w.violations) > 0 {
			b.Fatalf("%d violations, first %+v", len(w.violations), w.violations[0])
		}
	}
	b.ReportMetric(float64(len(msgs)*b.N)/b.Elapsed().Seconds(), "events/s")
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

// measurePeak runs f while sampling the live heap every 10 ms and returns
// the peak in MiB above the heap before f began.
func measurePeak(b *testing.B, f func()) float64 {
	runtime.GC()
	sample := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
	read := func() uint64 { metrics.Read(sample); return sample[0].Value.Uint64() }
	base := read()
	var peak atomic.Uint64
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		t := time.NewTicker(10 * time.Millisecond)
		defer t.Stop()
		for {
			if v := read(); v > peak.Load() {
				peak.Store(v)
			}
			select {
			case <-done:
				return
			case <-t.C:
			}
		}
	})
	b.ResetTimer()
	f()
	b.StopTimer()
	close(done)
	wg.Wait()
	if peak.Load() < base {
		return 0
	}
	return float64(peak.Load()-base) / (1 << 20)
}
