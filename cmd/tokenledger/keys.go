package main

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/tokenledger/tokenledger/api"
	"github.com/tokenledger/tokenledger/client"
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
		c           callFlags
		kid, reason string
	)
	fs := newFlagSet("keys "+args[0], "the signing keys: list them, publish the next one, or revoke one at once")
	c.register(fs, false)
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
	if args[0] == "revoke" && kid == "" {
		return errors.New("--kid is required")
	}
	return c.call(ctx, "keys "+args[0], stdout, func(ctx context.Context, cl *client.Client) (any, error) {
		switch args[0] {
		case "rotate":
			return cl.RotateKey(ctx)
		case "revoke":
			return cl.RevokeKey(ctx, api.KeyRevokeRequest{KID: kid, Reason: reason})
		}
		return cl.Keys(ctx)
	})
}
