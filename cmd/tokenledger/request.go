package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/tokenledger/tokenledger/client"
)

// callFlags are the flags of the commands that call the service: the NATS
// connection, the prefix, and (for a relying service's calls) the client's
// credentials.
type callFlags struct {
	nats       natsFlags
	config     string
	prefix     string
	timeout    time.Duration
	requestID  string
	creds      bool // the command takes client credentials
	clientID   string
	secret     string
	secretFile string
}

func (c *callFlags) register(fs *flag.FlagSet, creds bool) {
	c.nats.register(fs, "nats://127.0.0.1:4222")
	fs.StringVar(&c.config, "config", "", "JSON config file")
	fs.StringVar(&c.prefix, "prefix", "tokens", "subject prefix of the service")
	fs.DurationVar(&c.timeout, "timeout", 5*time.Second, "request timeout")
	fs.StringVar(&c.requestID, "request-id", "", "request id recorded as the cause of the events (default: minted by the service)")
	c.creds = creds
	if creds {
		fs.StringVar(&c.clientID, "client-id", "", "client id (required)")
		fs.StringVar(&c.secret, "client-secret", "", "client secret (prefer TOKENLEDGER_CLIENT_SECRET or --client-secret-file)")
		fs.StringVar(&c.secretFile, "client-secret-file", "", "file holding the client secret (- for stdin)")
	}
}

// credentials are the client's id and secret, the secret from the flag,
// the environment or a file.
func (c *callFlags) credentials() (client.Credentials, error) {
	secret, err := secretValue(c.secret, c.secretFile, "client secret", "--client-secret, TOKENLEDGER_CLIENT_SECRET or --client-secret-file")
	if err != nil {
		return client.Credentials{}, err
	}
	if c.clientID == "" {
		return client.Credentials{}, errors.New("--client-id (or TOKENLEDGER_CLIENT_ID) is required")
	}
	return client.Credentials{ID: c.clientID, Secret: secret}, nil
}

// secretValue is value, or the first line of file ("-": stdin). Secrets
// come from a file or the environment so they stay out of shell history.
func secretValue(value, file, what, how string) (string, error) {
	if file != "" {
		var r io.Reader = os.Stdin
		if file != "-" {
			f, err := os.Open(file)
			if err != nil {
				return "", fmt.Errorf("%s file: %w", what, err)
			}
			defer f.Close()
			r = f
		}
		line, err := bufio.NewReader(r).ReadString('\n')
		if err != nil && !errors.Is(err, io.EOF) {
			return "", fmt.Errorf("%s file: %w", what, err)
		}
		value = strings.TrimSpace(line)
	}
	if value == "" {
		return "", fmt.Errorf("the %s is required: set %s", what, how)
	}
	return value, nil
}

// call connects, runs fn with a client and a context bounded by --timeout,
// and prints what fn returns as JSON. A service error's body is printed
// too (the OAuth error, as the service sent it) and returned.
func (c *callFlags) call(ctx context.Context, name string, stdout io.Writer, fn func(context.Context, *client.Client) (any, error)) error {
	nc, ctx, stop, err := c.nats.dial(ctx, "tokenledger-cli")
	if err != nil {
		return err
	}
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	if c.requestID != "" {
		ctx = client.WithRequestID(ctx, c.requestID)
	}
	out, err := fn(ctx, client.New(nc, client.WithPrefix(c.prefix), client.WithTimeout(c.timeout)))
	var se *client.Error
	if errors.As(err, &se) {
		if werr := writeJSON(stdout, se); werr != nil {
			return werr
		}
		return fmt.Errorf("%s failed (%d): %w", name, se.Status, se)
	}
	if err != nil {
		return fmt.Errorf("%s: %w", name, causeOf(ctx, err))
	}
	return writeJSON(stdout, out)
}

func issue(ctx context.Context, args []string, stdout io.Writer) error {
	var c callFlags
	var subject, scope, aud, claims string
	fs := newFlagSet("issue", "ask the service for tokens for a subject (prints the token response)")
	c.register(fs, true)
	fs.StringVar(&subject, "subject", "", "the user or entity the tokens are for (required)")
	fs.StringVar(&scope, "scope", "", "requested scope, space separated (default: all of the client's)")
	fs.StringVar(&aud, "audience", "", "audiences, comma separated (default: the client's)")
	fs.StringVar(&claims, "claims", "", `custom claims, a JSON object such as {"tenant":"acme"}`)
	if _, err := parseFlags(fs, args); err != nil {
		return err
	}
	creds, err := c.credentials()
	if err != nil {
		return err
	}
	req := client.IssueRequest{Subject: subject, Scope: scope, Audience: splitList(aud)}
	if claims != "" {
		if err := json.Unmarshal([]byte(claims), &req.Claims); err != nil {
			return fmt.Errorf("--claims: want a JSON object: %w", err)
		}
	}
	return c.call(ctx, "issue", stdout, func(ctx context.Context, tl *client.Client) (any, error) {
		return tl.Issue(ctx, creds, req)
	})
}

func refresh(ctx context.Context, args []string, stdout io.Writer) error {
	var c callFlags
	var token, tokenFile, scope string
	fs := newFlagSet("refresh", "present a refresh token; prints the successor's token response")
	c.register(fs, true)
	fs.StringVar(&token, "refresh-token", "", "the refresh token (prefer TOKENLEDGER_REFRESH_TOKEN or --refresh-token-file)")
	fs.StringVar(&tokenFile, "refresh-token-file", "", "file holding the refresh token (- for stdin)")
	fs.StringVar(&scope, "scope", "", "narrower scope for the access token")
	if _, err := parseFlags(fs, args); err != nil {
		return err
	}
	creds, err := c.credentials()
	if err != nil {
		return err
	}
	if token, err = secretValue(token, tokenFile, "refresh token", "--refresh-token, TOKENLEDGER_REFRESH_TOKEN or --refresh-token-file"); err != nil {
		return err
	}
	return c.call(ctx, "refresh", stdout, func(ctx context.Context, tl *client.Client) (any, error) {
		return tl.Refresh(ctx, creds, client.RefreshRequest{RefreshToken: token, Scope: scope})
	})
}

// tokenCommand is revoke or introspect: credentials and a token.
func tokenCommand(ctx context.Context, name, doc string, args []string, stdout io.Writer,
	fn func(context.Context, *client.Client, client.Credentials, client.TokenRequest) (any, error)) error {
	var c callFlags
	var token, tokenFile, hint string
	fs := newFlagSet(name, doc)
	c.register(fs, true)
	fs.StringVar(&token, "token", "", "the access or refresh token (prefer TOKENLEDGER_TOKEN or --token-file)")
	fs.StringVar(&tokenFile, "token-file", "", "file holding the token (- for stdin)")
	fs.StringVar(&hint, "token-type-hint", "", "refresh_token or access_token (optional)")
	if _, err := parseFlags(fs, args); err != nil {
		return err
	}
	creds, err := c.credentials()
	if err != nil {
		return err
	}
	if token, err = secretValue(token, tokenFile, "token", "--token, TOKENLEDGER_TOKEN or --token-file"); err != nil {
		return err
	}
	return c.call(ctx, name, stdout, func(ctx context.Context, tl *client.Client) (any, error) {
		return fn(ctx, tl, creds, client.TokenRequest{Token: token, TokenTypeHint: hint})
	})
}

func revoke(ctx context.Context, args []string, stdout io.Writer) error {
	return tokenCommand(ctx, "revoke", "revoke a token (RFC 7009): a refresh token ends its family, an access token is denied until it expires",
		args, stdout, func(ctx context.Context, tl *client.Client, creds client.Credentials, req client.TokenRequest) (any, error) {
			if err := tl.Revoke(ctx, creds, req); err != nil {
				return nil, err
			}
			return map[string]bool{"revoked": true}, nil
		})
}

func introspect(ctx context.Context, args []string, stdout io.Writer) error {
	return tokenCommand(ctx, "introspect", "is a token active? (RFC 7662)",
		args, stdout, func(ctx context.Context, tl *client.Client, creds client.Credentials, req client.TokenRequest) (any, error) {
			return tl.Introspect(ctx, creds, req)
		})
}

func jwks(ctx context.Context, args []string, stdout io.Writer) error {
	var c callFlags
	fs := newFlagSet("jwks", "print the service's public keys (JWKS)")
	c.register(fs, false)
	if _, err := parseFlags(fs, args); err != nil {
		return err
	}
	return c.call(ctx, "jwks", stdout, func(ctx context.Context, tl *client.Client) (any, error) {
		return tl.JWKS(ctx)
	})
}

func sessions(ctx context.Context, args []string, stdout io.Writer) error {
	var c callFlags
	var subject string
	fs := newFlagSet("sessions", "list a subject's active token families of this client")
	c.register(fs, true)
	fs.StringVar(&subject, "subject", "", "the user or entity (required)")
	if _, err := parseFlags(fs, args); err != nil {
		return err
	}
	creds, err := c.credentials()
	if err != nil {
		return err
	}
	return c.call(ctx, "sessions", stdout, func(ctx context.Context, tl *client.Client) (any, error) {
		return tl.Sessions(ctx, creds, subject)
	})
}

const adminUsage = `usage: tokenledger admin <revoke|sessions|digest> [flags]

  revoke     revoke the active families of one family, subject or client
  sessions   list a subject's active families of every client
  digest     the live valid-token view's digest

These call tokens.admin.*: NATS permissions keep them to operators.`

func adminCmd(ctx context.Context, args []string, stdout io.Writer) error {
	if len(args) == 0 {
		return usageError(adminUsage)
	}
	switch args[0] {
	case "revoke":
		return adminRevoke(ctx, args[1:], stdout)
	case "sessions":
		return adminSessions(ctx, args[1:], stdout)
	case "digest":
		return adminDigest(ctx, args[1:], stdout)
	case "-h", "-help", "--help", "help":
		fmt.Fprintln(os.Stderr, adminUsage)
		return nil
	}
	return unknownCommand("admin", args[0])
}

func adminRevoke(ctx context.Context, args []string, stdout io.Writer) error {
	var c callFlags
	var req client.AdminRevokeRequest
	fs := newFlagSet("admin revoke", "revoke the active families of exactly one of --family, --subject, --client (from the command line only)")
	c.register(fs, false)
	fs.StringVar(&req.FamilyID, "family", "", "a family id")
	fs.StringVar(&req.Subject, "subject", "", "every family of this subject")
	fs.StringVar(&req.ClientID, "client", "", "every family of this client")
	fs.StringVar(&req.Reason, "reason", "", "why (required, recorded in the ledger)")
	// A selector left in the environment must not widen a revocation.
	if _, err := parseFlagsExcept(fs, args, "family", "subject", "client"); err != nil {
		return err
	}
	n := 0
	for _, s := range []string{req.FamilyID, req.Subject, req.ClientID} {
		if s != "" {
			n++
		}
	}
	if n != 1 {
		return errors.New("give exactly one of --family, --subject, --client")
	}
	if req.Reason == "" {
		return errors.New("--reason is required")
	}
	return c.call(ctx, "admin revoke", stdout, func(ctx context.Context, tl *client.Client) (any, error) {
		return tl.AdminRevoke(ctx, req)
	})
}

func adminSessions(ctx context.Context, args []string, stdout io.Writer) error {
	var c callFlags
	var subject string
	fs := newFlagSet("admin sessions", "list a subject's active families of every client")
	c.register(fs, false)
	fs.StringVar(&subject, "subject", "", "the user or entity (required)")
	if _, err := parseFlags(fs, args); err != nil {
		return err
	}
	return c.call(ctx, "admin sessions", stdout, func(ctx context.Context, tl *client.Client) (any, error) {
		return tl.AdminSessions(ctx, subject)
	})
}

func adminDigest(ctx context.Context, args []string, stdout io.Writer) error {
	var c callFlags
	fs := newFlagSet("admin digest", "print the live valid-token view's digest and the ledger sequence it had applied")
	c.register(fs, false)
	if _, err := parseFlags(fs, args); err != nil {
		return err
	}
	return c.call(ctx, "admin digest", stdout, func(ctx context.Context, tl *client.Client) (any, error) {
		return tl.AdminDigest(ctx)
	})
}
