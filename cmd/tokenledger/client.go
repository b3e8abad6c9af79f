package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/tokenledger/tokenledger/ledger"
)

// clientCreate registers a client in the clients bucket and prints its
// secret, which is shown this once: only its SHA-256 is stored.
func clientCreate(ctx context.Context, args []string, stdout io.Writer) error {
	var (
		nf                       natsFlags
		config, id, scope, aud   string
		rotation                 string
		rotateAfter, grace       time.Duration
		accessTTL, refreshTTL    time.Duration
		familyTTL                time.Duration
		allowedClaims, replicasS string
	)
	fs := newFlagSet("client create", "register a client in the clients bucket; prints its secret this once (only its SHA-256 is stored)")
	nf.register(fs, "nats://127.0.0.1:4222")
	fs.StringVar(&config, "config", "", "JSON config file")
	fs.StringVar(&id, "id", "", "client id (required)")
	fs.StringVar(&scope, "scope", "", "allowed scopes, space or comma separated")
	fs.StringVar(&aud, "audience", "", "allowed audiences, comma separated; the first is the default (default: the client id)")
	fs.StringVar(&allowedClaims, "allowed-claims", "", "custom claims the client may set, comma separated")
	fs.StringVar(&rotation, "rotation", "", "always (default) or periodic")
	fs.DurationVar(&rotateAfter, "rotate-after", 0, "with --rotation periodic: rotate refresh tokens older than this")
	fs.DurationVar(&grace, "grace", -1, "grace window override (default: the service's)")
	fs.DurationVar(&accessTTL, "access-ttl", 0, "access token lifetime override")
	fs.DurationVar(&refreshTTL, "refresh-ttl", 0, "refresh token idle lifetime override")
	fs.DurationVar(&familyTTL, "family-ttl", 0, "family absolute lifetime override")
	fs.StringVar(&replicasS, "replicas", "1", "bucket replicas if it must be created")
	if _, err := parseFlagsExcept(fs, args, "id"); err != nil {
		return err
	}
	if id == "" {
		return fmt.Errorf("--id is required")
	}
	secret, err := newClientSecret()
	if err != nil {
		return err
	}
	c := ledger.Client{
		ID: id, SecretSHA256: ledger.SecretSHA256(secret),
		Scopes: splitList(scope), Audiences: splitList(aud), AllowedClaims: splitList(allowedClaims),
		Rotation: ledger.Rotation(rotation), RotateAfter: ledger.Duration(rotateAfter),
		AccessTTL: ledger.Duration(accessTTL), RefreshTTL: ledger.Duration(refreshTTL),
		FamilyTTL: ledger.Duration(familyTTL), CreatedAt: time.Now().UTC(),
	}
	if len(c.Audiences) == 0 {
		// Every access token carries aud (RFC 9068 §2.2): without
		// --audience the client's own id is its default resource.
		c.Audiences = []string{id}
	}
	if grace >= 0 {
		g := ledger.Duration(grace)
		c.Grace = &g
	}
	if err := c.Validate(); err != nil {
		return err
	}
	var replicas int
	if _, err := fmt.Sscan(replicasS, &replicas); err != nil {
		return fmt.Errorf("--replicas: %w", err)
	}
	reg, ctx, stop, err := openRegistry(ctx, &nf, replicas)
	if err != nil {
		return err
	}
	defer stop()
	if err := reg.Create(ctx, c); err != nil {
		return fmt.Errorf("client create: %w", causeOf(ctx, err))
	}
	out := struct {
		ledger.Client
		ClientSecret string `json:"client_secret"`
	}{c, secret}
	enc := json.NewEncoder(stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(out)
}

func splitList(s string) []string {
	return strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == ' ' })
}
