package client_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tokenledger/tokenledger/client"
	"github.com/tokenledger/tokenledger/internal/devcerts"
	"github.com/tokenledger/tokenledger/internal/natstest"
)

// Settings that cannot work are reported before connecting, naming the
// flag; good ones connect.
func TestConnectOptions(t *testing.T) {
	dir := t.TempDir()
	if err := devcerts.Write(dir, devcerts.Config{Clients: []string{"web"}}); err != nil {
		t.Fatal(err)
	}
	notPEM := filepath.Join(dir, "not.pem")
	if err := os.WriteFile(notPEM, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		o    client.ConnectOptions
		want string // error substring; "" for none
	}{
		{"plain", client.ConnectOptions{Name: "t"}, ""},
		{"user and inbox", client.ConnectOptions{User: "u", Password: "p", InboxPrefix: "_INBOX_t"}, ""},
		{"tls", client.ConnectOptions{TLSCA: filepath.Join(dir, devcerts.CAFile),
			TLSCert: filepath.Join(dir, devcerts.ClientCertFile("web")), TLSKey: filepath.Join(dir, devcerts.ClientKeyFile("web"))}, ""},
		{"cert without key", client.ConnectOptions{TLSCert: filepath.Join(dir, devcerts.ClientCertFile("web"))}, "--tls-cert and --tls-key go together"},
		{"missing CA", client.ConnectOptions{TLSCA: filepath.Join(dir, "missing.pem")}, "tls-ca: "},
		{"CA not PEM", client.ConnectOptions{TLSCA: notPEM}, "no certificates"},
		{"key of no cert", client.ConnectOptions{TLSCert: notPEM, TLSKey: notPEM}, "tls client certificate: "},
		{"missing nkey seed", client.ConnectOptions{NKey: filepath.Join(dir, "missing.nk")}, "--nkey: "},
	} {
		t.Run(tc.name, func(t *testing.T) {
			opts, err := tc.o.Options()
			if tc.want == "" {
				if err != nil || len(opts) == 0 {
					t.Fatalf("options: %v (%d)", err, len(opts))
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one containing %q", err, tc.want)
			}
		})
	}

	s := natstest.Start(t, "")
	nc, err := client.ConnectOptions{URL: s.ClientURL(), Name: "client-test", InboxPrefix: "_INBOX_t"}.Connect()
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	if nc.Opts.Name != "client-test" || nc.Opts.InboxPrefix != "_INBOX_t" || nc.Opts.MaxReconnect != -1 {
		t.Fatalf("connection options: name %q, inbox %q, reconnects %d", nc.Opts.Name, nc.Opts.InboxPrefix, nc.Opts.MaxReconnect)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
}
