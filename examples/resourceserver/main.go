package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"golang.org/x/sync/errgroup"

	"github.com/tokenledger/tokenledger/client"
	"github.com/tokenledger/tokenledger/verifier"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:])
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "resourceserver:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("resourceserver", flag.ContinueOnError)
	nf := client.ConnectOptions{Name: "resourceserver"}
	fs.StringVar(&nf.URL, "nats-url", nats.DefaultURL, "NATS server of the token ledger (tls://… with TLS)")
	fs.StringVar(&nf.Creds, "creds", "", "NATS credentials file")
	fs.StringVar(&nf.User, "user", "", "NATS user (the shipped server config: resource)")
	fs.StringVar(&nf.Password, "password", "", "NATS password (prefer RESOURCESERVER_PASSWORD)")
	fs.StringVar(&nf.NKey, "nkey", "", "NATS NKEY seed file")
	fs.StringVar(&nf.TLSCA, "tls-ca", "", "CA certificate file for the NATS server (enables TLS)")
	fs.StringVar(&nf.TLSCert, "tls-cert", "", "client certificate file (with --tls-key)")
	fs.StringVar(&nf.TLSKey, "tls-key", "", "client key file")
	fs.StringVar(&nf.InboxPrefix, "inbox-prefix", "", "reply subject prefix (the shipped server config: _INBOX_resource)")
	listen := fs.String("listen", "127.0.0.1:8080", "HTTP listen address")
	issuer := fs.String("issuer", "tokenledger", "iss claim the tokens must carry")
	audience := fs.String("audience", "", "aud value the tokens must carry (empty: any)")
	prefix := fs.String("prefix", "tokens", "the ledger's subject prefix")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if err := fromEnv(fs); err != nil {
		return err
	}
	log := slog.New(slog.NewJSONHandler(os.Stderr, nil))

	nc, err := nf.Connect()
	if err != nil {
		return fmt.Errorf("connect to NATS: %w", err)
	}
	defer nc.Close()

	v, err := verifier.New(nc, verifier.Config{Issuer: *issuer, Audience: *audience, Prefix: *prefix, Log: log})
	if err != nil {
		return err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-v.Ready():
			fmt.Fprintln(w, "ok")
		default:
			http.Error(w, "loading revocations", http.StatusServiceUnavailable)
		}
	})
	// Everything under /me needs a valid, unrevoked access token.
	mux.Handle("GET /me", v.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, _ := verifier.ClaimsFrom(r.Context())
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{
			"subject": c.Subject, "client_id": c.ClientID, "scope": c.Scope,
			"session": c.SID, "expires_at": time.Unix(c.ExpiresAt, 0).UTC(),
		})
	})))
	srv := &http.Server{Addr: *listen, Handler: mux, ReadHeaderTimeout: 5 * time.Second}

	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return v.Run(gctx) })
	g.Go(func() error {
		log.Info("listening", "addr", *listen)
		if err := srv.ListenAndServe(); !errors.Is(err, http.ErrServerClosed) {
			return err
		}
		return nil
	})
	g.Go(func() error {
		<-gctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		return srv.Shutdown(sctx)
	})
	return g.Wait()
}

// fromEnv sets every flag not given on the command line from
// RESOURCESERVER_<FLAG> (upper case, - as _), as tokenledger does with
// TOKENLEDGER_, so the password stays out of the command line.
func fromEnv(fs *flag.FlagSet) error {
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	var err error
	fs.VisitAll(func(f *flag.Flag) {
		name := "RESOURCESERVER_" + strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_"))
		if v, ok := os.LookupEnv(name); ok && !given[f.Name] && err == nil {
			if serr := fs.Set(f.Name, v); serr != nil {
				err = fmt.Errorf("%s: %w", name, serr)
			}
		}
	})
	return err
}
