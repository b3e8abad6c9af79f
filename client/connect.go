package client

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/nats-io/nats.go"
)

// ConnectOptions are the NATS connection settings of tokenledger's
// commands and of a relying service or resource server: where the server
// is, how this connection authenticates, TLS, and the reply subject
// prefix. Errors name a setting by its tokenledger flag (--nkey, --tls-ca,
// …), which programs with flags of their own reuse.
type ConnectOptions struct {
	// URL is the NATS server URL(s), comma separated.
	URL string
	// Name is the connection's name, as the server's monitoring shows it.
	Name string
	// Creds is a NATS credentials file.
	Creds string
	// NKey is an NKEY seed file (an nkey user instead of User/Password).
	NKey string
	// User and Password authenticate a user of the server configuration.
	User, Password string
	// TLSCA is the CA certificate file of the server; it enables TLS.
	TLSCA string
	// TLSCert and TLSKey are the client certificate and its key, where the
	// server asks for one; both or neither.
	TLSCert, TLSKey string
	// InboxPrefix is the reply subject prefix (default _INBOX); the shipped
	// server configuration gives each role its own, e.g. _INBOX_admin.
	InboxPrefix string
}

// Options returns the nats.Connect options for o: the name, reconnects
// without end (every 250 ms), credentials and TLS (1.2 or later). The
// files it names are read now, so a missing one is reported here.
func (o ConnectOptions) Options() ([]nats.Option, error) {
	opts := []nats.Option{nats.Name(o.Name), nats.MaxReconnects(-1), nats.ReconnectWait(250 * time.Millisecond)}
	if o.Creds != "" {
		opts = append(opts, nats.UserCredentials(o.Creds))
	}
	if o.NKey != "" {
		opt, err := nats.NkeyOptionFromSeed(o.NKey)
		if err != nil {
			return nil, fmt.Errorf("--nkey: %w", err)
		}
		opts = append(opts, opt)
	}
	if o.User != "" {
		opts = append(opts, nats.UserInfo(o.User, o.Password))
	}
	if o.InboxPrefix != "" {
		opts = append(opts, nats.CustomInboxPrefix(o.InboxPrefix))
	}
	if (o.TLSCert == "") != (o.TLSKey == "") {
		return nil, errors.New("--tls-cert and --tls-key go together")
	}
	if o.TLSCA != "" || o.TLSCert != "" {
		cfg, err := o.tlsConfig()
		if err != nil {
			return nil, err
		}
		opts = append(opts, nats.Secure(cfg))
	}
	return opts, nil
}

// tlsConfig reads the CA and the client certificate.
func (o ConnectOptions) tlsConfig() (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if o.TLSCA != "" {
		pem, err := os.ReadFile(o.TLSCA)
		if err != nil {
			return nil, fmt.Errorf("tls-ca: %w", err)
		}
		cfg.RootCAs = x509.NewCertPool()
		if !cfg.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("tls-ca %s: no certificates", o.TLSCA)
		}
	}
	if o.TLSCert != "" {
		cert, err := tls.LoadX509KeyPair(o.TLSCert, o.TLSKey)
		if err != nil {
			return nil, fmt.Errorf("tls client certificate: %w", err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg, nil
}

// Connect connects to o.URL with o's options and then extra ones (an
// error handler, say). The caller owns the connection.
func (o ConnectOptions) Connect(extra ...nats.Option) (*nats.Conn, error) {
	opts, err := o.Options()
	if err != nil {
		return nil, err
	}
	return nats.Connect(o.URL, append(opts, extra...)...)
}
