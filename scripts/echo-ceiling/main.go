// Command echo-ceiling measures what NATS request-reply alone gives on this
// machine: a micro endpoint that answers each request with its own body, an
// embedded server, and closed-loop callers, all in one process. No
// tokenledger code runs; it is the cross-check of the bench's bare echo.
//
//	go run ./scripts/echo-ceiling                       # 900-byte bodies, 64 callers, one TCP connection
//	go run ./scripts/echo-ceiling -body 16 -pipe        # small bodies, in-process connections
//	go run ./scripts/echo-ceiling -conns 64             # a connection per caller
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "echo-ceiling:", err)
		os.Exit(1)
	}
}

func run() error {
	body := flag.Int("body", 900, "request body bytes (an introspection request is about 900)")
	callers := flag.Int("callers", 64, "closed-loop callers")
	conns := flag.Int("conns", 1, "connections the callers share")
	pipe := flag.Bool("pipe", false, "in-process connections instead of loopback TCP")
	warmup := flag.Duration("warmup", time.Second, "unmeasured time first")
	duration := flag.Duration("duration", 5*time.Second, "measured time")
	flag.Parse()
	if *callers < 1 || *conns < 1 || *body < 0 {
		return errors.New("-callers and -conns must be at least 1, -body at least 0")
	}

	ns, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, NoLog: true, NoSigs: true})
	if err != nil {
		return fmt.Errorf("server: %w", err)
	}
	go ns.Start()
	defer ns.Shutdown()
	if !ns.ReadyForConnections(5 * time.Second) {
		return errors.New("server not ready")
	}
	dial := func() (*nats.Conn, error) {
		if *pipe {
			return nats.Connect("", nats.InProcessServer(ns))
		}
		return nats.Connect(ns.ClientURL())
	}

	snc, err := dial()
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	defer snc.Close()
	svc, err := micro.AddService(snc, micro.Config{Name: "echo", Version: "1.0.0"})
	if err != nil {
		return fmt.Errorf("service: %w", err)
	}
	defer svc.Stop()
	if err := svc.AddEndpoint("echo", micro.HandlerFunc(func(r micro.Request) { _ = r.Respond(r.Data()) })); err != nil {
		return fmt.Errorf("endpoint: %w", err)
	}

	var cs []*nats.Conn
	for range *conns {
		nc, err := dial()
		if err != nil {
			return fmt.Errorf("connect: %w", err)
		}
		defer nc.Close()
		cs = append(cs, nc)
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var ok, failed atomic.Int64
	req := make([]byte, *body)
	var wg sync.WaitGroup
	for i := range *callers {
		nc := cs[i%len(cs)]
		wg.Go(func() {
			for ctx.Err() == nil {
				rctx, rcancel := context.WithTimeout(ctx, 5*time.Second)
				_, err := nc.RequestWithContext(rctx, "echo", req)
				rcancel()
				switch {
				case err == nil:
					ok.Add(1)
				case ctx.Err() == nil:
					failed.Add(1)
				}
			}
		})
	}
	time.Sleep(*warmup)
	ok.Store(0)
	failed.Store(0)
	start := time.Now()
	time.Sleep(*duration)
	n, f, elapsed := ok.Load(), failed.Load(), time.Since(start)
	cancel()
	wg.Wait()

	transport := "loopback TCP"
	if *pipe {
		transport = "in-process"
	}
	fmt.Printf("%d-byte bodies, %d callers on %d %s connection(s): %.0f requests/s, %d failed\n",
		*body, *callers, *conns, transport, float64(n)/elapsed.Seconds(), f)
	return nil
}
