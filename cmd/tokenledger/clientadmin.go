package main

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/tokenledger/tokenledger/ledger"
	"github.com/tokenledger/tokenledger/ledger/jsstore"
)

const clientUsage = `usage: tokenledger client <create|list|show|rotate-secret|disable|enable|delete> [flags]

  create          register a client; prints its secret once
  new-secret      print a fresh secret and its secret_sha256, for clients declared in a config file
  list            the clients of the clients bucket (no secrets)
  show            one client (no secret)
  rotate-secret   a new secret for a client, printed once; the old one stops working
  disable         the client can no longer authenticate (its tokens stay valid until revoked)
  enable          undo disable
  delete          remove the client from the bucket

These read and write the clients KV bucket directly (JetStream permissions on
$KV.tokenledger_clients.> and its stream's API).`

func clientCmd(ctx context.Context, args []string, stdout io.Writer) error {
	if len(args) == 0 {
		return usageError(clientUsage)
	}
	switch args[0] {
	case "create":
		return clientCreate(ctx, args[1:], stdout)
	case "new-secret":
		fs := newFlagSet("client new-secret", "print a fresh client secret and its secret_sha256 (for the \"clients\" of a config file); nothing is stored")
		if _, err := parseFlags(fs, args[1:]); err != nil {
			return err
		}
		secret, err := newClientSecret()
		if err != nil {
			return err
		}
		return writeJSON(stdout, map[string]string{"client_secret": secret, "secret_sha256": ledger.SecretSHA256(secret)})
	case "list":
		return clientAdmin(ctx, "client list", "list the clients of the clients bucket (no secrets)", false, args[1:], stdout,
			func(ctx context.Context, reg *jsstore.Registry, _ string) (any, error) {
				cs, err := reg.List(ctx)
				views := make([]clientView, 0, len(cs))
				for _, c := range cs {
					views = append(views, clientView{Client: c})
				}
				return views, err
			})
	case "show":
		return clientAdmin(ctx, "client show", "show one client (no secret)", true, args[1:], stdout,
			func(ctx context.Context, reg *jsstore.Registry, id string) (any, error) {
				c, _, err := reg.Lookup(ctx, id)
				return clientView{Client: c}, err
			})
	case "rotate-secret":
		return clientAdmin(ctx, "client rotate-secret", "give a client a new secret, printed this once; the old secret stops working", true, args[1:], stdout,
			func(ctx context.Context, reg *jsstore.Registry, id string) (any, error) {
				secret, err := newClientSecret()
				if err != nil {
					return nil, err
				}
				if _, err := reg.Update(ctx, id, func(c *ledger.Client) error {
					c.SecretSHA256 = ledger.SecretSHA256(secret)
					return nil
				}); err != nil {
					return nil, err
				}
				return map[string]string{"client_id": id, "client_secret": secret}, nil
			})
	case "disable", "enable":
		disable := args[0] == "disable"
		doc := "stop a client from authenticating (its issued tokens stay valid until they expire or are revoked)"
		if !disable {
			doc = "let a disabled client authenticate again"
		}
		return clientAdmin(ctx, "client "+args[0], doc, true, args[1:], stdout,
			func(ctx context.Context, reg *jsstore.Registry, id string) (any, error) {
				c, err := reg.Update(ctx, id, func(c *ledger.Client) error {
					c.Disabled = disable
					return nil
				})
				return clientView{Client: c}, err
			})
	case "delete":
		return clientAdmin(ctx, "client delete", "remove a client from the clients bucket", true, args[1:], stdout,
			func(ctx context.Context, reg *jsstore.Registry, id string) (any, error) {
				if err := reg.Delete(ctx, id); err != nil {
					return nil, err
				}
				return map[string]any{"client_id": id, "deleted": true}, nil
			})
	}
	if isHelp(args[0]) {
		fmt.Fprintln(os.Stderr, clientUsage)
		return nil
	}
	return unknownCommand("client", args[0])
}

// clientView is a client as the commands print it: never the secret's
// hash.
type clientView struct {
	ledger.Client
	SecretSHA256 string `json:"secret_sha256,omitempty"` // shadows the client's; always empty
}

// clientAdmin runs one client administration command against the bucket.
func clientAdmin(ctx context.Context, name, doc string, needID bool, args []string, stdout io.Writer,
	fn func(context.Context, *jsstore.Registry, string) (any, error)) error {
	var (
		nf       natsFlags
		config   string
		id       string
		replicas int
	)
	fs := newFlagSet(name, doc)
	nf.register(fs, "nats://127.0.0.1:4222")
	fs.StringVar(&config, "config", "", "JSON config file")
	if needID {
		fs.StringVar(&id, "id", "", "client id (required)")
	}
	fs.IntVar(&replicas, "replicas", 1, "bucket replicas if it must be created")
	if _, err := parseFlagsExcept(fs, args, "id"); err != nil {
		return err
	}
	if needID && id == "" {
		return errors.New("--id is required")
	}
	reg, ctx, stop, err := openRegistry(ctx, &nf, replicas)
	if err != nil {
		return err
	}
	defer stop()
	out, err := fn(ctx, reg, id)
	if err != nil {
		return fmt.Errorf("%s: %w", name, causeOf(ctx, err))
	}
	return writeJSON(stdout, out)
}

// openRegistry connects and opens the clients bucket; the context fails
// with the refused subject if NATS permissions refuse one.
func openRegistry(ctx context.Context, nf *natsFlags, replicas int) (*jsstore.Registry, context.Context, func(), error) {
	nc, ctx, stop, err := nf.dial(ctx, "tokenledger-client-admin")
	if err != nil {
		return nil, nil, nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	stopAll := func() { cancel(); stop() }
	js, err := jetstream.New(nc)
	if err != nil {
		stopAll()
		return nil, nil, nil, err
	}
	reg, err := jsstore.NewRegistry(ctx, js, nil, replicas, nil)
	if err != nil {
		stopAll()
		return nil, nil, nil, causeOf(ctx, err)
	}
	return reg, ctx, stopAll, nil
}

// newClientSecret is a fresh random client secret.
func newClientSecret() (string, error) { return ledger.NewClientSecret(rand.Reader) }
