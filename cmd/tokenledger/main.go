// Command tokenledger is the token authority: `serve` runs it, the other
// subcommands talk to a running instance. See README.md.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

const usage = `tokenledger: an event-sourced token authority on NATS JetStream

usage: tokenledger <command> [flags]

commands:
  serve           run the service (embedded NATS unless --nats-url)
  client create   register a client; prints its secret once
  issue           ask the service for tokens
  refresh         refresh a token
  worker          the security-event worker alone, for separate scaling
  audit           replay, verify, at, diff: the auditor's tools (read-only)
  rollout         start, set, status: token-version rollouts of a client
  bench           load-test the service against the bare pipeline (scripts/bench.sh)
  keys            list, rotate or revoke the signing keys

Every flag also reads TOKENLEDGER_<FLAG> (upper case, - as _).
Run "tokenledger <command> -h" for its flags.
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout)
	stop()
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(2)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "tokenledger:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(os.Stderr, usage)
		return flag.ErrHelp
	}
	switch args[0] {
	case "worker":
		return worker(ctx, args[1:])
	case "serve":
		return serve(ctx, args[1:])
	case "client":
		if len(args) < 2 || args[1] != "create" {
			return errors.New(`usage: tokenledger client create --id ID [--scope S] [--audience A]`)
		}
		return clientCreate(ctx, args[2:], stdout)
	case "issue":
		return issue(ctx, args[1:], stdout)
	case "audit":
		return auditCmd(ctx, args[1:], stdout)
	case "refresh":
		return refresh(ctx, args[1:], stdout)
	case "bench":
		return benchCmd(ctx, args[1:], stdout)
	case "rollout":
		return rolloutCmd(ctx, args[1:], stdout)
	case "keys":
		return keysCmd(ctx, args[1:], stdout)
	case "-h", "-help", "--help", "help":
		fmt.Fprint(os.Stderr, usage)
		return nil
	}
	fmt.Fprint(os.Stderr, usage)
	return fmt.Errorf("unknown command %q", args[0])
}
