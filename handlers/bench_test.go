package handlers_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tokenledger/tokenledger/internal/tltest"
	"github.com/tokenledger/tokenledger/ledger"
	"github.com/tokenledger/tokenledger/ledger/jsstore"
)

// callers runs b.N operations spread over n goroutines, each with its own
// state from setup.
func callers[S any](b *testing.B, n int, setup func() S, op func(*S) error) {
	b.Helper()
	states := make([]S, n)
	for i := range states {
		states[i] = setup()
	}
	var next atomic.Int64
	var failed atomic.Value
	b.ReportAllocs()
	b.ResetTimer()
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			for next.Add(1) <= int64(b.N) {
				if err := op(&states[i]); err != nil {
					failed.Store(err)
					return
				}
			}
		})
	}
	wg.Wait()
	b.StopTimer()
	if err, _ := failed.Load().(error); err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "ops/s")
}

func benchEnv(b *testing.B) *env {
	e := newEnv(b, "")
	e.StartInstance(tltest.Options{Grace: 10 * time.Second, Wall: true})
	return e
}

// refreshOp presents *tok and keeps its successor (for callers'
// goroutines, which must not stop the benchmark).
func refreshOp(e *env) func(tok *string) error {
	return func(tok *string) error {
		r, err := e.tryRefresh(*tok)
		if err == nil && r.Error != "" {
			err = fmt.Errorf("refresh: %s", r.Raw)
		}
		if err != nil {
			return err
		}
		*tok = r.RefreshToken
		return nil
	}
}

func BenchmarkIssue(b *testing.B) {
	for _, n := range []int{1, 64} {
		b.Run(fmt.Sprintf("N=%d", n), func(b *testing.B) {
			e := benchEnv(b)
			callers(b, n, func() struct{} { return struct{}{} }, func(*struct{}) error {
				r, err := e.tryIssue("alice") // not on the benchmark's goroutine
				if err != nil {
					return err
				}
				if r.Error != "" {
					return fmt.Errorf("issue: %s", r.Raw)
				}
				return nil
			})
		})
	}
}

func BenchmarkRefresh(b *testing.B) {
	for _, n := range []int{1, 64} {
		b.Run(fmt.Sprintf("N=%d", n), func(b *testing.B) {
			e := benchEnv(b)
			callers(b, n, func() string { return e.Issue("alice").RefreshToken }, refreshOp(e))
		})
	}
}

// BenchmarkRefreshHistory refreshes a family with 10 000 prior rotations
// against a fresh one: loading a family is one direct get, so the cost must
// not grow with its history.
func BenchmarkRefreshHistory(b *testing.B) {
	for _, prior := range []int{0, 10000} {
		b.Run(fmt.Sprintf("rotations=%d", prior), func(b *testing.B) {
			e := benchEnv(b)
			tok := e.Issue("alice").RefreshToken
			l := e.Ledger()
			client := tltest.Client()
			policy := client.Policy(ledger.Policy{Rotation: ledger.RotateAlways, Grace: 10 * time.Second,
				AccessTTL: 15 * time.Minute, RefreshTTL: 336 * time.Hour, FamilyTTL: 2160 * time.Hour})
			for range prior {
				g, err := l.Refresh(context.Background(), jsstore.RefreshRequest{Client: client, Policy: policy, RefreshToken: tok, RequestID: "warm"})
				if err != nil {
					b.Fatal(err)
				}
				tok = g.RefreshToken
			}
			callers(b, 1, func() string { return tok }, refreshOp(e))
		})
	}
}
