package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"
)

const keysUsage = `usage: tokenledger keys list | rotate | revoke --kid KID [--reason R]`

// keysCmd lists, rotates or revokes the signing keys through the
// service's tokens.admin.keys endpoints and prints the reply (JSON: every
// key with its state and dates).
func keysCmd(ctx context.Context, args []string, stdout io.Writer) error {
	if len(args) == 0 {
		return errors.New(keysUsage)
	}
	var (
		nf          natsFlags
		config      string
		prefix      string
		kid, reason string
		timeout     time.Duration
	)
	fs := flag.NewFlagSet("keys "+args[0], flag.ContinueOnError)
	nf.register(fs, "nats://127.0.0.1:4222")
	fs.StringVar(&config, "config", "", "JSON config file")
	fs.StringVar(&prefix, "prefix", "tokens", "subject prefix of the service")
	fs.DurationVar(&timeout, "timeout", 10*time.Second, "request timeout")
	var body any = struct{}{}
	switch args[0] {
	case "list", "rotate":
	case "revoke":
		fs.StringVar(&kid, "kid", "", "the key id to revoke (required)")
		fs.StringVar(&reason, "reason", "", "why, recorded in the key.revoked.v1 event")
	default:
		return fmt.Errorf("keys %q: %s", args[0], keysUsage)
	}
	if _, err := parseFlags(fs, args[1:]); err != nil {
		return err
	}
	if args[0] == "revoke" {
		if kid == "" {
			return errors.New("--kid is required")
		}
		req := map[string]string{"kid": kid}
		if reason != "" {
			req["reason"] = reason
		}
		body = req
	}
	data, err := json.Marshal(body)
	if err != nil {
		return err
	}
	nc, err := nf.connect("tokenledger-keys")
	if err != nil {
		return err
	}
	defer nc.Close()
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	subject := prefix + ".admin.keys." + args[0]
	msg, err := nc.RequestWithContext(ctx, subject, data)
	if errors.Is(err, nats.ErrNoResponders) {
		return fmt.Errorf("no tokenledger service answers on %s: is `tokenledger serve` running?", subject)
	}
	if err != nil {
		return fmt.Errorf("%s: %w", subject, err)
	}
	if _, err := stdout.Write(append(msg.Data, '\n')); err != nil {
		return err
	}
	if code := msg.Header.Get(micro.ErrorCodeHeader); code != "" {
		return fmt.Errorf("keys %s failed (%s): %s", args[0], code, msg.Header.Get(micro.ErrorHeader))
	}
	return nil
}
