// Command cluster starts the shipped cluster topology as processes on
// loopback, from the config files docker-compose.yml uses: three NATS
// servers in one JetStream cluster (TLS, the accounts and permissions of
// config/nats-server.conf), two `tokenledger serve --replicas 3`
// instances, a `tokenledger worker` and examples/resourceserver. It builds
// the NATS server at the version go.mod requires, runs until interrupted,
// then stops everything (processes first, then the nodes).
//
//	go run ./scripts/cluster -dir /tmp/tlcluster
//
// DIR keeps the certificates (DIR/certs), the passwords and the KEK
// (DIR/secrets.env, mode 0600), each node's store and every log
// (DIR/logs); a second run on the same DIR starts the same cluster again.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/tokenledger/tokenledger/internal/cluster"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:])
	stop()
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "cluster:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("cluster", flag.ContinueOnError)
	dir := fs.String("dir", "", "directory for binaries, certificates, secrets, stores and logs (required)")
	root := fs.String("root", ".", "the repository root (config files and packages are read from there)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *dir == "" {
		fs.Usage()
		return errors.New("-dir is required")
	}
	abs, err := filepath.Abs(*dir)
	if err != nil {
		return err
	}
	rootAbs, err := filepath.Abs(*root)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(abs, 0o755); err != nil {
		return err
	}
	fmt.Fprintln(os.Stderr, "building nats-server, tokenledger and resourceserver into", abs)
	bin, err := cluster.Build(ctx, rootAbs, abs)
	if err != nil {
		return err
	}
	c, err := cluster.Start(ctx, cluster.Config{
		Root: rootAbs, Dir: abs, Bin: bin, Topology: cluster.Default(), Progress: os.Stderr,
	})
	if err != nil {
		return err
	}
	defer c.Close()
	t := c.Topology()
	fmt.Fprintf(os.Stderr, "\nready. NATS: %s\n", c.URLs())
	for _, p := range t.Processes {
		fmt.Fprintf(os.Stderr, "  %-15s http://%s:%d%s\n", p.Name, cluster.Host, p.HTTPPort, p.Health)
	}
	fmt.Fprintf(os.Stderr, `
As admin (the passwords are in %[1]s):
  . %[1]s
  export TOKENLEDGER_NATS_URL=%[2]s TOKENLEDGER_TLS_CA=%[3]s/ca.pem
  export TOKENLEDGER_USER=admin TOKENLEDGER_PASSWORD=$ADMIN_NATS_PASSWORD TOKENLEDGER_INBOX_PREFIX=_INBOX_admin
  export TOKENLEDGER_TLS_CERT=%[3]s/admin-cert.pem TOKENLEDGER_TLS_KEY=%[3]s/admin-key.pem
  %[4]s client create --id billing --scope "read write"
Relying services connect as billing or web (no inbox prefix). Interrupt to stop.
`, c.SecretsFile(), c.URLs(), c.CertsDir(), bin.Tokenledger)
	<-ctx.Done()
	fmt.Fprintln(os.Stderr, "stopping")
	return nil
}
