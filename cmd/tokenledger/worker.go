package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/tokenledger/tokenledger/instance"
	"github.com/tokenledger/tokenledger/ledger/jsstore"
	secworker "github.com/tokenledger/tokenledger/worker"
)

// securityFlags configure the security-event worker, in serve and alone.
type securityFlags struct {
	policy       string
	transmitters string
	maxDeliver   int
	ackWait      time.Duration
	retention    time.Duration
	concurrency  int
}

func (s *securityFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&s.policy, "security-policy", "", "JSON policy file mapping security event type and severity to an action (default: docs/security-events.md)")
	fs.StringVar(&s.transmitters, "security-transmitters", "", "JSON file of SET transmitters: issuer, audience and keys (JWKS or PEM)")
	fs.IntVar(&s.maxDeliver, "security-max-deliver", secworker.DefaultSecurityMaxDeliver, "deliveries of one security event before it is dead-lettered")
	fs.DurationVar(&s.ackWait, "security-ack-wait", secworker.DefaultSecurityAckWait, "redelivery timeout and claim lease of a security event")
	fs.DurationVar(&s.retention, "security-retention", secworker.DefaultSecurityRetention, "how long the intake stream keeps security events")
	fs.IntVar(&s.concurrency, "security-concurrency", secworker.DefaultSecurityConcurrency, "security events one worker handles at once")
}

// transmitterFile is one entry of the --security-transmitters file.
type transmitterFile struct {
	Issuer   string          `json:"issuer"`
	Audience string          `json:"audience"`
	KeysFile string          `json:"keys_file,omitempty"`
	JWKS     json.RawMessage `json:"jwks,omitempty"`
}

// config reads the policy and transmitter files into a worker
// configuration without the ledger and selector, which the caller adds.
func (s *securityFlags) config(log *slog.Logger, replicas int) (secworker.Config, error) {
	cfg := secworker.Config{
		Policy: secworker.DefaultPolicy(), MaxDeliver: s.maxDeliver, AckWait: s.ackWait,
		Retention: s.retention, Concurrency: s.concurrency, Replicas: replicas, Log: log,
	}
	if s.policy != "" {
		b, err := os.ReadFile(s.policy)
		if err != nil {
			return cfg, fmt.Errorf("--security-policy: %w", err)
		}
		if cfg.Policy, err = secworker.ParsePolicy(b); err != nil {
			return cfg, fmt.Errorf("--security-policy %s: %w", s.policy, err)
		}
	}
	if s.transmitters == "" {
		return cfg, nil
	}
	b, err := os.ReadFile(s.transmitters)
	if err != nil {
		return cfg, fmt.Errorf("--security-transmitters: %w", err)
	}
	var entries []transmitterFile
	if err := json.Unmarshal(b, &entries); err != nil {
		return cfg, fmt.Errorf("--security-transmitters %s: %w", s.transmitters, err)
	}
	for _, e := range entries {
		keys := []byte(e.JWKS)
		if e.KeysFile != "" {
			path := e.KeysFile
			if !filepath.IsAbs(path) {
				path = filepath.Join(filepath.Dir(s.transmitters), path)
			}
			if keys, err = os.ReadFile(path); err != nil {
				return cfg, fmt.Errorf("transmitter %s: %w", e.Issuer, err)
			}
		}
		parsed, err := secworker.ParseTransmitterKeys(keys)
		if err != nil {
			return cfg, fmt.Errorf("transmitter %s: %w", e.Issuer, err)
		}
		cfg.Transmitters = append(cfg.Transmitters, secworker.Transmitter{Issuer: e.Issuer, Audience: e.Audience, Keys: parsed})
	}
	return cfg, nil
}

// worker runs the security-event worker alone, for separate scaling: it
// folds its own view of the ledger to select families and shares the
// durable consumer with every other worker.
func worker(ctx context.Context, args []string) error {
	var (
		nf        natsFlags
		sec       securityFlags
		config    string
		stream    string
		replicas  int
		maxOffset time.Duration
		history   time.Duration
		httpAddr  string
		logLevel  string
	)
	fs := flag.NewFlagSet("worker", flag.ContinueOnError)
	nf.register(fs, "nats://127.0.0.1:4222")
	sec.register(fs)
	fs.StringVar(&config, "config", "", "JSON config file: any flag by name")
	fs.StringVar(&stream, "stream", jsstore.DefaultStream, "ledger stream name")
	fs.IntVar(&replicas, "replicas", 1, "stream and bucket replicas (3 on a cluster)")
	fs.DurationVar(&maxOffset, "max-clock-offset", jsstore.DefaultMaxClockOffset, "largest offset of this instance's clock from the NATS server's before it refuses decisions until back in bound")
	registerHistoryMargin(fs, &history)
	fs.StringVar(&logLevel, "log-level", "info", "debug, info, warn or error")
	fs.StringVar(&httpAddr, "http", "", "address of the HTTP listener for /healthz, /readyz and Prometheus /metrics (off when empty)")
	if _, err := parseFlags(fs, args); err != nil {
		return err
	}
	log, err := newLogger(logLevel)
	if err != nil {
		return err
	}
	wcfg, err := sec.config(log, replicas)
	if err != nil {
		return err
	}
	closed := make(chan struct{})
	nc, err := nf.connect("tokenledger-worker", nats.ClosedHandler(func(*nats.Conn) { close(closed) }))
	if err != nil {
		return err
	}
	defer drainAndWait(nc, closed, log)
	log.Info("connected to NATS", "url", nc.ConnectedUrlRedacted())
	in, err := instance.New(ctx, nc, nc, instance.Config{
		Stream: stream, Replicas: replicas, Worker: true, Security: wcfg,
		MaxClockOffset: maxOffset, HistoryMargin: history, Log: log,
	})
	if err != nil {
		return err
	}
	err = runWithOps(ctx, in, nil, httpAddr, log)
	w := in.Worker()
	s := w.Stats()
	log.Info("security worker stopped", "handled", s.Handled, "duplicates", s.Duplicates, "dead_lettered", s.DeadLettered, "retried", s.Retried)
	if errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}
