package main

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/tokenledger/tokenledger/api"
	"github.com/tokenledger/tokenledger/client"
)

const rolloutUsage = `usage: tokenledger rollout start|set|status --client-id ID [flags]

  start   --version V [--percent P] [--deadline RFC3339]   start a rollout (percent default 100)
  set     [--version V] [--percent P] [--deadline RFC3339]  raise the percent or set the deadline
                                                            (version default: the current rollout's)
  status                                                    the rollout's state and progress

Each prints the reply of tokens.admin.rollout as JSON.`

func rolloutCmd(ctx context.Context, args []string, stdout io.Writer) error {
	if len(args) == 0 || (args[0] != "start" && args[0] != "set" && args[0] != "status") {
		return errors.New(rolloutUsage)
	}
	var (
		c                callFlags
		clientID         string
		version, percent int
		deadline         string
	)
	fs := newFlagSet("rollout "+args[0], "a client's token-version rollout (tokens.admin.rollout)")
	c.register(fs, false)
	fs.StringVar(&clientID, "client-id", "", "client id (required)")
	if args[0] != "status" {
		fs.IntVar(&version, "version", 0, "target token version")
		fs.IntVar(&percent, "percent", 0, "share of the client's families, 1-100 (start: default 100)")
		fs.StringVar(&deadline, "deadline", "", "RFC 3339 time after which families below the version must log in again")
	}
	if _, err := parseFlags(fs, args[1:]); err != nil {
		return err
	}
	if clientID == "" {
		return errors.New("--client-id is required")
	}
	switch args[0] {
	case "start":
		if version <= 0 {
			return errors.New("--version is required")
		}
	case "set":
		if percent == 0 && deadline == "" {
			return errors.New("--percent or --deadline is required")
		}
	}
	return c.call(ctx, "rollout "+args[0], stdout, func(ctx context.Context, cl *client.Client) (any, error) {
		if args[0] == "status" {
			return cl.Rollout(ctx, clientID)
		}
		req := api.RolloutRequest{ClientID: clientID, Version: version, Deadline: deadline}
		if percent != 0 {
			req.Percent = &percent
		}
		if req.Version <= 0 { // set: the current rollout's version
			cur, err := cl.Rollout(ctx, clientID)
			if err != nil {
				return nil, err
			}
			if cur.Version == 0 {
				return nil, fmt.Errorf("client %s has no rollout to set: start one", clientID)
			}
			req.Version = cur.Version
		}
		return cl.SetRollout(ctx, req)
	})
}
