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

const rolloutUsage = `usage: tokenledger rollout start|set|status --client-id ID [flags]

  start   --version V [--percent P] [--deadline RFC3339]   start a rollout (percent default 100)
  set     [--version V] [--percent P] [--deadline RFC3339]  raise the percent or set the deadline
                                                            (version default: the current rollout's)
  status                                                    the rollout's state and progress

Each prints the reply of tokens.admin.rollout as JSON.`

// rolloutFlags are the flags of the rollout subcommands.
type rolloutFlags struct {
	nats     natsFlags
	prefix   string
	clientID string
	version  int
	percent  int
	deadline string
	timeout  time.Duration
}

func rolloutCmd(ctx context.Context, args []string, stdout io.Writer) error {
	if len(args) == 0 || (args[0] != "start" && args[0] != "set" && args[0] != "status") {
		return errors.New(rolloutUsage)
	}
	var f rolloutFlags
	fs := flag.NewFlagSet("rollout "+args[0], flag.ContinueOnError)
	f.nats.register(fs, "nats://127.0.0.1:4222")
	fs.StringVar(&f.prefix, "prefix", "tokens", "subject prefix of the service")
	fs.StringVar(&f.clientID, "client-id", "", "client id (required)")
	fs.DurationVar(&f.timeout, "timeout", 5*time.Second, "request timeout")
	if args[0] != "status" {
		fs.IntVar(&f.version, "version", 0, "target token version")
		fs.IntVar(&f.percent, "percent", 0, "share of the client's families, 1-100 (start: default 100)")
		fs.StringVar(&f.deadline, "deadline", "", "RFC 3339 time after which families below the version must log in again")
	}
	if _, err := parseFlags(fs, args[1:]); err != nil {
		return err
	}
	if f.clientID == "" {
		return errors.New("--client-id is required")
	}
	body := map[string]any{"client_id": f.clientID}
	switch args[0] {
	case "start":
		if f.version <= 0 {
			return errors.New("--version is required")
		}
	case "set":
		if f.percent == 0 && f.deadline == "" {
			return errors.New("--percent or --deadline is required")
		}
		if f.version <= 0 { // the current rollout's
			var cur struct {
				Version int `json:"version"`
			}
			reply, err := f.request(ctx, body)
			if err != nil {
				return err
			}
			if err := json.Unmarshal(reply, &cur); err != nil || cur.Version == 0 {
				return fmt.Errorf("client %s has no rollout to set: start one", f.clientID)
			}
			f.version = cur.Version
		}
	}
	if f.version > 0 {
		body["version"] = f.version
	}
	if f.percent != 0 {
		body["percent"] = f.percent
	}
	if f.deadline != "" {
		body["deadline"] = f.deadline
	}
	reply, err := f.request(ctx, body)
	if reply != nil {
		if _, werr := stdout.Write(append(reply, '\n')); werr != nil && err == nil {
			err = werr
		}
	}
	return err
}

// request sends one tokens.admin.rollout request and returns the reply;
// an OAuth error reply is returned with an error.
func (f *rolloutFlags) request(ctx context.Context, body map[string]any) ([]byte, error) {
	data, err := json.Marshal(body)
	if err != nil {
		return nil, err
	}
	nc, err := f.nats.connect("tokenledger-cli")
	if err != nil {
		return nil, err
	}
	defer nc.Close()
	ctx, cancel := context.WithTimeout(ctx, f.timeout)
	defer cancel()
	subject := f.prefix + ".admin.rollout"
	msg, err := nc.RequestWithContext(ctx, subject, data)
	if errors.Is(err, nats.ErrNoResponders) {
		return nil, fmt.Errorf("no tokenledger service answers on %s: is `tokenledger serve` running?", subject)
	}
	if err != nil {
		return nil, fmt.Errorf("rollout: %w", err)
	}
	if code := msg.Header.Get(micro.ErrorCodeHeader); code != "" {
		return msg.Data, fmt.Errorf("rollout failed (%s): %s", code, msg.Header.Get(micro.ErrorHeader))
	}
	return msg.Data, nil
}
