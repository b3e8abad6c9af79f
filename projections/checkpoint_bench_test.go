package projections

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
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

// publishBenchEvents appends n realistic events (families of an issue and
// three rotations, benchEvents) to the ledger stream, in chunks so the
// events never all sit in memory.
func publishBenchEvents(b *testing.B, js jetstream.JetStream, n int) {
	b.Helper()
	const chunk = 40_000
	for done := 0; done < n; done += chunk {
		events := benchEvents(b, min(chunk, n-done)/4, 3)
		for i, data := range events {
			msg := nats.NewMsg(fmt.Sprintf("ledger.family.%d", done+i))
			msg.Data = data
			if _, err := js.PublishMsgAsync(msg); err != nil {
				b.Fatal(err)
			}
			if i%2000 == 1999 {
				<-js.PublishAsyncComplete()
			}
		}
		<-js.PublishAsyncComplete()
	}
}

// BenchmarkRestart measures restart to ready over a ledger of n events (a
// quarter of them families): a rebuild from sequence 1, against a load of
// the newest checkpoint and a replay of the tail (tail events appended
// after it), both until the view has applied the stream's last event. It
// checks that both views have the same digest. Run it with -benchtime=1x;
// pick a size with -bench 'Restart/events=1000000'.
func BenchmarkRestart(b *testing.B) {
	const tail = 10_000
	for _, n := range []int{200_000, 1_000_000, 5_000_000} {
		b.Run(fmt.Sprintf("events=%d", n), func(b *testing.B) {
			f := newFixture(b)
			ctx := context.Background()
			store, err := NewCheckpointStore(ctx, f.js, CheckpointConfig{})
			if err != nil {
				b.Fatal(err)
			}
			publishBenchEvents(b, f.js, n-tail)
			// One instance folds the ledger and saves a checkpoint; the
			// tail comes after it.
			v := NewView()
			r, err := NewRunner(f.js, v, RunnerConfig{Checkpoints: store})
			if err != nil {
				b.Fatal(err)
			}
			if err := r.RunToEnd(ctx); err != nil {
				b.Fatal(err)
			}
			start := time.Now()
			info, err := r.Checkpoint(ctx)
			if err != nil {
				b.Fatal(err)
			}
			saved := time.Since(start)
			publishBenchEvents(b, f.js, tail)
			b.ResetTimer()
			for b.Loop() {
				start := time.Now()
				rebuilt := NewView()
				rr, err := NewRunner(f.js, rebuilt, RunnerConfig{})
				if err != nil {
					b.Fatal(err)
				}
				if err := rr.RunToEnd(ctx); err != nil {
					b.Fatal(err)
				}
				rebuild := time.Since(start)

				start = time.Now()
				restored := NewView()
				rc, err := NewRunner(f.js, restored, RunnerConfig{Checkpoints: store})
				if err != nil {
					b.Fatal(err)
				}
				if _, err := rc.Restore(ctx); err != nil {
					b.Fatal(err)
				}
				loaded := time.Since(start)
				if err := rc.RunToEnd(ctx); err != nil {
					b.Fatal(err)
				}
				restart := time.Since(start)
				if rebuilt.LastSeq() != uint64(n) || restored.LastSeq() != uint64(n) || rc.Applied() != uint64(n)-info.Seq {
					b.Fatalf("rebuilt to %d, restored to %d applying %d", rebuilt.LastSeq(), restored.LastSeq(), rc.Applied())
				}
				now := time.Now()
				if rebuilt.Digest(now) != restored.Digest(now) {
					b.Fatal("the restored view differs from the rebuilt one")
				}
				b.ReportMetric(rebuild.Seconds(), "rebuild-s")
				b.ReportMetric(restart.Seconds(), "restart-s")
				b.ReportMetric(loaded.Seconds(), "load-checkpoint-s")
				b.ReportMetric(saved.Seconds(), "save-checkpoint-s")
				b.ReportMetric(float64(info.Size)/(1<<20), "checkpoint-MB")
				b.ReportMetric(float64(rebuilt.Len()), "families")
			}
		})
	}
}
