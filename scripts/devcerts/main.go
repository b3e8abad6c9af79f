// Command devcerts writes a development CA, a NATS server certificate and
// one client certificate per role of config/nats-server.conf, made with
// Go's standard library (nothing is downloaded). For development and
// tests only: use your own PKI in production (docs/production.md).
//
//	go run ./scripts/devcerts -out certs
//	go run ./scripts/devcerts -out certs -hosts localhost,127.0.0.1,nats.internal -clients tokenledger,billing
//
// It writes ca.pem, server-cert.pem, server-key.pem and, per client,
// NAME-cert.pem and NAME-key.pem (keys mode 0600). It refuses to replace
// existing files unless -force.
package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/tokenledger/tokenledger/internal/devcerts"
)

// roles are the users of config/nats-server.conf.
const roles = "tokenledger,billing,web,admin,auditor,security,resource,breakglass"

func main() {
	err := run(os.Args[1:])
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "devcerts:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("devcerts", flag.ContinueOnError)
	out := fs.String("out", "", "directory to write the PEM files to (required)")
	hosts := fs.String("hosts", strings.Join(devcerts.DefaultHosts, ","), "DNS names and IP addresses of the server certificate, comma separated")
	clients := fs.String("clients", roles, "client certificates to make, comma separated")
	days := fs.Int("days", 365, "validity in days")
	force := fs.Bool("force", false, "replace existing files")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *out == "" {
		fs.Usage()
		return errors.New("-out is required")
	}
	cfg := devcerts.Config{
		Hosts: split(*hosts), Clients: split(*clients),
		Validity: time.Duration(*days) * 24 * time.Hour, Overwrite: *force,
	}
	if err := devcerts.Write(*out, cfg); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "wrote %s, %s, %s and client certificates for %s in %s\n",
		devcerts.CAFile, devcerts.ServerCertFile, devcerts.ServerKeyFile, strings.Join(cfg.Clients, ", "), *out)
	return nil
}

func split(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}
