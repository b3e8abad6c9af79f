package devcerts

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// The certificates chain to the CA for their purpose and names, keys are
// private, and a second Write does not replace them unless told to.
func TestWrite(t *testing.T) {
	dir := t.TempDir()
	if err := Write(dir, Config{Clients: []string{"billing"}}); err != nil {
		t.Fatal(err)
	}
	caPEM, err := os.ReadFile(filepath.Join(dir, CAFile))
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(caPEM) {
		t.Fatal("ca.pem holds no certificate")
	}
	load := func(cert, key string) *x509.Certificate {
		t.Helper()
		pair, err := tls.LoadX509KeyPair(filepath.Join(dir, cert), filepath.Join(dir, key))
		if err != nil {
			t.Fatal(err)
		}
		if fi, err := os.Stat(filepath.Join(dir, key)); err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("%s: mode %v, %v", key, fi.Mode(), err)
		}
		c, err := x509.ParseCertificate(pair.Certificate[0])
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	tests := []struct {
		name  string
		cert  *x509.Certificate
		host  string
		usage x509.ExtKeyUsage
	}{
		{"server for localhost", load(ServerCertFile, ServerKeyFile), "localhost", x509.ExtKeyUsageServerAuth},
		{"server for 127.0.0.1", load(ServerCertFile, ServerKeyFile), "127.0.0.1", x509.ExtKeyUsageServerAuth},
		{"server as a route client", load(ServerCertFile, ServerKeyFile), "", x509.ExtKeyUsageClientAuth},
		{"client", load(ClientCertFile("billing"), ClientKeyFile("billing")), "", x509.ExtKeyUsageClientAuth},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := tt.cert.Verify(x509.VerifyOptions{Roots: roots, DNSName: tt.host, KeyUsages: []x509.ExtKeyUsage{tt.usage}})
			if err != nil {
				t.Fatal(err)
			}
		})
	}
	if _, err := load(ClientCertFile("billing"), ClientKeyFile("billing")).Verify(x509.VerifyOptions{
		Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err == nil {
		t.Fatal("a client certificate is valid for a server")
	}

	if err := Write(dir, Config{}); !errors.Is(err, ErrExists) {
		t.Fatalf("second Write: %v, want ErrExists", err)
	}
	if err := Write(dir, Config{Overwrite: true}); err != nil {
		t.Fatal(err)
	}
	if err := Write(t.TempDir(), Config{Clients: []string{"../x"}}); err == nil {
		t.Fatal("a client name with a path accepted")
	}
}
