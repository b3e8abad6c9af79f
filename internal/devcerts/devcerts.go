package devcerts

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// The files Write creates in its directory, besides one certificate and
// key per client (ClientCertFile, ClientKeyFile).
const (
	CAFile         = "ca.pem"
	ServerCertFile = "server-cert.pem"
	ServerKeyFile  = "server-key.pem"
)

// ClientCertFile is the name of a client's certificate file.
func ClientCertFile(client string) string { return client + "-cert.pem" }

// ClientKeyFile is the name of a client's private key file.
func ClientKeyFile(client string) string { return client + "-key.pem" }

// DefaultHosts are the names the server certificate is valid for unless
// Config.Hosts says otherwise.
var DefaultHosts = []string{"localhost", "127.0.0.1", "::1"}

// Config says what to make.
type Config struct {
	// Hosts are the DNS names and IP addresses the server certificate
	// is valid for (default DefaultHosts).
	Hosts []string
	// Clients are the names of the client certificates (their common
	// names), such as the roles of config/nats-server.conf.
	Clients []string
	// Validity is how long the certificates are valid (default 365 days).
	Validity time.Duration
	// Overwrite lets Write replace files that exist.
	Overwrite bool
}

// ErrExists is returned by Write when a file it would write exists and
// Config.Overwrite is false.
var ErrExists = errors.New("devcerts: file exists")

// Write makes a new CA, a server certificate and the client certificates,
// and writes them as PEM files in dir (created if missing). Private keys
// are written with mode 0600.
func Write(dir string, cfg Config) error {
	if len(cfg.Hosts) == 0 {
		cfg.Hosts = DefaultHosts
	}
	if cfg.Validity <= 0 {
		cfg.Validity = 365 * 24 * time.Hour
	}
	files := []string{CAFile, ServerCertFile, ServerKeyFile}
	for _, c := range cfg.Clients {
		if c == "" || filepath.Base(c) != c || c == "ca" || c == "server" {
			return fmt.Errorf("devcerts: client name %q: want a plain file name other than ca and server", c)
		}
		files = append(files, ClientCertFile(c), ClientKeyFile(c))
	}
	if !cfg.Overwrite {
		for _, f := range files {
			if _, err := os.Stat(filepath.Join(dir, f)); err == nil {
				return fmt.Errorf("%w: %s", ErrExists, filepath.Join(dir, f))
			}
		}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("devcerts: %w", err)
	}

	notBefore := time.Now().Add(-time.Hour) // a clock a little behind still accepts them
	notAfter := notBefore.Add(cfg.Validity)
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fmt.Errorf("devcerts: CA key: %w", err)
	}
	caTmpl := &x509.Certificate{
		Subject:               pkix.Name{CommonName: "tokenledger development CA", Organization: []string{"tokenledger development"}},
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	caDER, err := sign(caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return err
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		return fmt.Errorf("devcerts: %w", err)
	}
	if err := writePEM(filepath.Join(dir, CAFile), "CERTIFICATE", caDER, 0o644); err != nil {
		return err
	}

	// The server certificate also serves NATS routes, where each node is
	// both client and server: it carries both extended key usages.
	serverTmpl := &x509.Certificate{
		Subject:     pkix.Name{CommonName: cfg.Hosts[0], Organization: []string{"tokenledger development"}},
		NotBefore:   notBefore,
		NotAfter:    notAfter,
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	for _, h := range cfg.Hosts {
		if ip := net.ParseIP(h); ip != nil {
			serverTmpl.IPAddresses = append(serverTmpl.IPAddresses, ip)
		} else {
			serverTmpl.DNSNames = append(serverTmpl.DNSNames, h)
		}
	}
	if err := issue(dir, ServerCertFile, ServerKeyFile, serverTmpl, ca, caKey); err != nil {
		return err
	}
	for _, c := range cfg.Clients {
		tmpl := &x509.Certificate{
			Subject:     pkix.Name{CommonName: c, Organization: []string{"tokenledger development"}},
			NotBefore:   notBefore,
			NotAfter:    notAfter,
			KeyUsage:    x509.KeyUsageDigitalSignature,
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		}
		if err := issue(dir, ClientCertFile(c), ClientKeyFile(c), tmpl, ca, caKey); err != nil {
			return err
		}
	}
	return nil
}

// issue makes a key, signs a certificate for it with the CA and writes both.
func issue(dir, certFile, keyFile string, tmpl, ca *x509.Certificate, caKey *ecdsa.PrivateKey) error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fmt.Errorf("devcerts: key for %s: %w", certFile, err)
	}
	der, err := sign(tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		return err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return fmt.Errorf("devcerts: key for %s: %w", certFile, err)
	}
	if err := writePEM(filepath.Join(dir, keyFile), "PRIVATE KEY", keyDER, 0o600); err != nil {
		return err
	}
	return writePEM(filepath.Join(dir, certFile), "CERTIFICATE", der, 0o644)
}

// sign gives tmpl a random serial number and signs it.
func sign(tmpl, parent *x509.Certificate, pub *ecdsa.PublicKey, parentKey *ecdsa.PrivateKey) ([]byte, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("devcerts: serial: %w", err)
	}
	tmpl.SerialNumber = serial
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, parentKey)
	if err != nil {
		return nil, fmt.Errorf("devcerts: certificate %s: %w", tmpl.Subject.CommonName, err)
	}
	return der, nil
}

// writePEM writes one PEM block, replacing the file (and its mode).
func writePEM(path, typ string, der []byte, mode os.FileMode) error {
	data := pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
	_ = os.Remove(path) // so a 0600 key never inherits a wider mode
	if err := os.WriteFile(path, data, mode); err != nil {
		return fmt.Errorf("devcerts: %w", err)
	}
	return nil
}
