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
  client          create, list, show, rotate-secret, disable, enable, delete clients
  issue           ask the service for tokens
  refresh         refresh a token
  revoke          revoke a token (RFC 7009)
  introspect      is a token active? (RFC 7662)
  jwks            the service's public keys
  sessions        a subject's active token families of a client
  admin           revoke, sessions, digest: operators' calls (tokens.admin.*)
  version         print the version (also --version)
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
		os.Exit(0) // -h or --help: the usage was asked for
	}
	if errors.Is(err, errUsage) {
		if err != errUsage {
			fmt.Fprintln(os.Stderr, "tokenledger:", err)
		}
		os.Exit(2)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "tokenledger:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout io.Writer) error {
	if len(args) == 0 {
		return usageError(usage)
	}
	switch args[0] {
	case "worker":
		return worker(ctx, args[1:])
	case "serve":
		return serve(ctx, args[1:])
	case "client":
		return clientCmd(ctx, args[1:], stdout)
	case "revoke", "introspect", "jwks", "sessions", "admin":
		return map[string]func(context.Context, []string, io.Writer) error{
			"revoke": revoke, "introspect": introspect, "jwks": jwks, "sessions": sessions, "admin": adminCmd,
		}[args[0]](ctx, args[1:], stdout)
	case "version", "--version", "-version":
		_, err := fmt.Fprintln(stdout, version())
		return err
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
	return unknownCommand("tokenledger", args[0])
}
