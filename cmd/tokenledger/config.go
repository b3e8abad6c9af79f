package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/tokenledger/tokenledger/client"
)

// envPrefix: every flag --foo-bar also reads TOKENLEDGER_FOO_BAR.
const envPrefix = "TOKENLEDGER_"

// configFile is the JSON configuration: any flag by name, plus clients.
type configFile struct {
	Values  map[string]json.RawMessage
	Clients json.RawMessage
}

func readConfigFile(path string) (configFile, error) {
	var cf configFile
	if path == "" {
		return cf, nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return cf, fmt.Errorf("config: %w", err)
	}
	if err := json.Unmarshal(b, &cf.Values); err != nil {
		return cf, fmt.Errorf("config %s: %w", path, err)
	}
	cf.Clients = cf.Values["clients"]
	delete(cf.Values, "clients")
	return cf, nil
}

// parseFlags parses args into fs, then fills every flag not given on the
// command line from its environment variable, then from the config file
// (named by --config or TOKENLEDGER_CONFIG). Unknown config keys are errors.
func parseFlags(fs *flag.FlagSet, args []string) (configFile, error) {
	if err := fs.Parse(args); err != nil {
		return configFile{}, err
	}
	if fs.NArg() > 0 {
		return configFile{}, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	var firstErr error
	fs.VisitAll(func(f *flag.Flag) {
		if given[f.Name] || firstErr != nil {
			return
		}
		if v, ok := os.LookupEnv(envName(f.Name)); ok {
			if err := fs.Set(f.Name, v); err != nil {
				firstErr = fmt.Errorf("%s: %w", envName(f.Name), err)
			}
			given[f.Name] = true
		}
	})
	if firstErr != nil {
		return configFile{}, firstErr
	}
	path := ""
	if f := fs.Lookup("config"); f != nil {
		path = f.Value.String()
	}
	cf, err := readConfigFile(path)
	if err != nil {
		return cf, err
	}
	for key, raw := range cf.Values {
		f := fs.Lookup(key)
		if f == nil {
			return cf, fmt.Errorf("config %s: unknown key %q", path, key)
		}
		if given[key] {
			continue
		}
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			s = string(raw) // numbers and booleans
		}
		if err := fs.Set(key, s); err != nil {
			return cf, fmt.Errorf("config %s: %s: %w", path, key, err)
		}
	}
	return cf, nil
}

func envName(flagName string) string {
	return envPrefix + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// natsFlags are the connection options every subcommand takes.
type natsFlags struct {
	url, creds, user, password, nkey, tlsCA, tlsCert, tlsKey, inboxPrefix string
}

func (n *natsFlags) register(fs *flag.FlagSet, defaultURL string) {
	fs.StringVar(&n.url, "nats-url", defaultURL, "NATS server URL(s), comma separated")
	fs.StringVar(&n.creds, "creds", "", "NATS credentials file")
	fs.StringVar(&n.user, "user", "", "NATS user")
	fs.StringVar(&n.password, "password", "", "NATS password (prefer TOKENLEDGER_PASSWORD)")
	fs.StringVar(&n.nkey, "nkey", "", "NATS NKEY seed file (an nkey user instead of --user/--password)")
	fs.StringVar(&n.tlsCA, "tls-ca", "", "CA certificate file for the NATS server (enables TLS)")
	fs.StringVar(&n.tlsCert, "tls-cert", "", "client certificate file, where the server asks for one (with --tls-key)")
	fs.StringVar(&n.tlsKey, "tls-key", "", "client key file (with --tls-cert)")
	fs.StringVar(&n.inboxPrefix, "inbox-prefix", "", "reply subject prefix (default _INBOX); the shipped server config gives each role in the TOKENS account its own, e.g. _INBOX_admin")
}

// options are the nats.Connect options of the flags (client.ConnectOptions
// builds them) for a connection named name.
func (n *natsFlags) options(name string) ([]nats.Option, error) {
	return client.ConnectOptions{URL: n.url, Name: name, Creds: n.creds, NKey: n.nkey, User: n.user, Password: n.password,
		TLSCA: n.tlsCA, TLSCert: n.tlsCert, TLSKey: n.tlsKey, InboxPrefix: n.inboxPrefix}.Options()
}

func (n *natsFlags) connect(name string, extra ...nats.Option) (*nats.Conn, error) {
	opts, err := n.options(name)
	if err != nil {
		return nil, err
	}
	nc, err := nats.Connect(n.url, append(opts, extra...)...)
	if err != nil {
		return nil, n.explain(err)
	}
	return nc, nil
}

// explain turns a failed connect into one line that says what to do.
func (n *natsFlags) explain(err error) error {
	switch {
	case errors.Is(err, nats.ErrNoServers):
		return fmt.Errorf("no NATS server answers at %s (is `tokenledger serve` running? set --nats-url or TOKENLEDGER_NATS_URL): %w", n.url, err)
	case errors.Is(err, nats.ErrAuthorization), errors.Is(err, nats.ErrAuthExpired), errors.Is(err, nats.ErrAuthRevoked):
		how := "this server needs credentials: set --user and --password (TOKENLEDGER_USER, TOKENLEDGER_PASSWORD), --creds (TOKENLEDGER_CREDS) or --nkey (TOKENLEDGER_NKEY)"
		switch {
		case n.creds != "":
			how = "check the credentials file of --creds/TOKENLEDGER_CREDS (" + n.creds + ")"
		case n.nkey != "":
			how = "check the seed file of --nkey/TOKENLEDGER_NKEY (" + n.nkey + ")"
		case n.user != "":
			how = "check --password or TOKENLEDGER_PASSWORD for user " + strconv.Quote(n.user)
		}
		return fmt.Errorf("NATS at %s refused the credentials (%w): %s", n.url, err, how)
	}
	return fmt.Errorf("connect to NATS at %s: %w", n.url, err)
}

// dial connects for a command that makes requests: the returned context
// is cancelled with a *client.PermissionError as soon as the server refuses
// a subject, so the command fails at once with the subject named rather
// than at its timeout. stop closes the connection.
func (n *natsFlags) dial(ctx context.Context, name string) (*nats.Conn, context.Context, func(), error) {
	ctx, cancel := context.WithCancelCause(ctx)
	nc, err := n.connect(name, nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
		if pe, ok := client.ParsePermissionError(err); ok {
			cancel(pe)
		}
	}))
	if err != nil {
		cancel(nil)
		return nil, nil, nil, err
	}
	return nc, ctx, func() { nc.Close(); cancel(nil) }, nil
}

// causeOf prefers the reason a command's context was cancelled (a refused
// subject) over the error it produced (a deadline).
func causeOf(ctx context.Context, err error) error {
	if err == nil {
		return nil
	}
	if cause := context.Cause(ctx); cause != nil && !errors.Is(cause, context.Canceled) && !errors.Is(cause, context.DeadlineExceeded) {
		return cause
	}
	return err
}

// drainAndWait drains nc and waits, at most 10 s, for it to close (closed
// is signalled by its ClosedHandler), so in-flight replies and acks go out
// before what the connection depends on stops.
func drainAndWait(nc *nats.Conn, closed <-chan struct{}, log *slog.Logger) {
	if err := nc.Drain(); err != nil {
		log.Warn("drain NATS connection", "error", err)
	}
	select {
	case <-closed:
	case <-time.After(10 * time.Second):
		log.Warn("NATS connection did not drain within 10s")
	}
}
