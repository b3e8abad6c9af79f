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

type callFlags struct {
	nats     natsFlags
	config   string
	prefix   string
	clientID string
	secret   string
	timeout  time.Duration
}

func (c *callFlags) register(fs *flag.FlagSet) {
	c.nats.register(fs, "nats://127.0.0.1:4222")
	fs.StringVar(&c.config, "config", "", "JSON config file")
	fs.StringVar(&c.prefix, "prefix", "tokens", "subject prefix of the service")
	fs.StringVar(&c.clientID, "client-id", "", "client id (required)")
	fs.StringVar(&c.secret, "client-secret", "", "client secret (prefer TOKENLEDGER_CLIENT_SECRET)")
	fs.DurationVar(&c.timeout, "timeout", 5*time.Second, "request timeout")
}

func issue(ctx context.Context, args []string, stdout io.Writer) error {
	var c callFlags
	var subject, scope, aud string
	fs := flag.NewFlagSet("issue", flag.ContinueOnError)
	c.register(fs)
	fs.StringVar(&subject, "subject", "", "the user or entity the tokens are for (required)")
	fs.StringVar(&scope, "scope", "", "requested scope, space separated (default: all of the client's)")
	fs.StringVar(&aud, "audience", "", "audiences, comma separated (default: the client's)")
	if _, err := parseFlags(fs, args); err != nil {
		return err
	}
	body := map[string]any{"client_id": c.clientID, "client_secret": c.secret, "subject": subject}
	if scope != "" {
		body["scope"] = scope
	}
	if a := splitList(aud); len(a) > 0 {
		body["audience"] = a
	}
	return c.call(ctx, "issue", body, stdout)
}

func refresh(ctx context.Context, args []string, stdout io.Writer) error {
	var c callFlags
	var token, scope string
	fs := flag.NewFlagSet("refresh", flag.ContinueOnError)
	c.register(fs)
	fs.StringVar(&token, "refresh-token", "", "the refresh token (prefer TOKENLEDGER_REFRESH_TOKEN)")
	fs.StringVar(&scope, "scope", "", "narrower scope for the access token")
	if _, err := parseFlags(fs, args); err != nil {
		return err
	}
	body := map[string]any{"client_id": c.clientID, "client_secret": c.secret, "refresh_token": token}
	if scope != "" {
		body["scope"] = scope
	}
	return c.call(ctx, "refresh", body, stdout)
}

// call sends one request and prints the reply body on stdout; a service
// error is printed too and returned.
func (c *callFlags) call(ctx context.Context, endpoint string, body any, stdout io.Writer) error {
	if c.clientID == "" || c.secret == "" {
		return errors.New("--client-id and --client-secret (or TOKENLEDGER_CLIENT_SECRET) are required")
	}
	data, err := json.Marshal(body)
	if err != nil {
		return err
	}
	nc, err := c.nats.connect("tokenledger-cli")
	if err != nil {
		return err
	}
	defer nc.Close()
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	msg, err := nc.RequestWithContext(ctx, c.prefix+"."+endpoint, data)
	if errors.Is(err, nats.ErrNoResponders) {
		return fmt.Errorf("no tokenledger service answers on %s.%s: is `tokenledger serve` running?", c.prefix, endpoint)
	}
	if err != nil {
		return fmt.Errorf("%s: %w", endpoint, err)
	}
	if _, err := stdout.Write(append(msg.Data, '\n')); err != nil {
		return err
	}
	if code := msg.Header.Get(micro.ErrorCodeHeader); code != "" {
		return fmt.Errorf("%s failed (%s): %s", endpoint, code, msg.Header.Get(micro.ErrorHeader))
	}
	return nil
}
