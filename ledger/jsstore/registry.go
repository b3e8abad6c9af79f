package jsstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"

	"github.com/tokenledger/tokenledger/ledger"

	"github.com/nats-io/nats.go/jetstream"
)

// ErrClientExists: a client with that id is already registered.
var ErrClientExists = errors.New("ledger: client already exists")

// Registry holds the clients: those declared in the configuration and those
// created at run time in a JetStream KV bucket (so every instance sees
// them). Reads are served from memory, kept current by a watch.
type Registry struct {
	kv     jetstream.KeyValue
	static map[string]ledger.Client
	log    *slog.Logger

	mu      sync.RWMutex
	dynamic map[string]ledger.Client
}

// NewRegistry opens the clients bucket and validates the static clients.
func NewRegistry(ctx context.Context, js jetstream.JetStream, static []ledger.Client, replicas int, log *slog.Logger) (*Registry, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	r := &Registry{static: map[string]ledger.Client{}, dynamic: map[string]ledger.Client{}, log: log}
	for _, c := range static {
		if err := c.Validate(); err != nil {
			return nil, err
		}
		if _, dup := r.static[c.ID]; dup {
			return nil, fmt.Errorf("client %s declared twice: %w", c.ID, ErrClientExists)
		}
		r.static[c.ID] = c
	}
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket: ClientsBucket, Description: "tokenledger clients (secrets as SHA-256)",
		History: 8, Storage: jetstream.FileStorage, Replicas: max(replicas, 1),
	})
	if err != nil {
		return nil, fmt.Errorf("clients bucket: %w", err)
	}
	r.kv = kv
	return r, nil
}

// Run keeps the in-memory copy current until ctx ends.
func (r *Registry) Run(ctx context.Context) error {
	w, err := r.kv.WatchAll(ctx)
	if err != nil {
		return fmt.Errorf("watch clients: %w", err)
	}
	return followKV(ctx, w, "clients", func(e jetstream.KeyValueEntry) error {
		r.apply(e)
		return nil
	})
}

func (r *Registry) apply(e jetstream.KeyValueEntry) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if e.Operation() != jetstream.KeyValuePut {
		delete(r.dynamic, e.Key())
		return
	}
	var c ledger.Client
	if err := json.Unmarshal(e.Value(), &c); err != nil || c.Validate() != nil {
		r.log.Warn("ignoring malformed client record", "client_id", e.Key(), "revision", e.Revision())
		return
	}
	r.dynamic[c.ID] = c
}

// Known returns a client the registry holds in memory (from the config or
// seen by the watch) without asking the bucket: it never blocks.
func (r *Registry) Known(id string) (ledger.Client, bool) {
	if c, ok := r.static[id]; ok {
		return c, true
	}
	r.mu.RLock()
	c, ok := r.dynamic[id]
	r.mu.RUnlock()
	return c, ok
}

// Get returns a client, looking in the bucket if the watch has not seen it.
func (r *Registry) Get(ctx context.Context, id string) (ledger.Client, error) {
	if c, ok := r.Known(id); ok {
		return c, nil
	}
	if !ledger.ValidClientID(id) {
		return ledger.Client{}, ledger.ErrInvalidClient
	}
	e, err := r.kv.Get(ctx, id)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return ledger.Client{}, ledger.ErrInvalidClient
	}
	if err != nil {
		return ledger.Client{}, fmt.Errorf("load client: %w", unavailable(err))
	}
	r.apply(e)
	r.mu.RLock()
	defer r.mu.RUnlock()
	if c, ok := r.dynamic[id]; ok {
		return c, nil
	}
	return ledger.Client{}, ledger.ErrInvalidClient
}

// Authenticate returns the client if secret is its secret.
func (r *Registry) Authenticate(ctx context.Context, id, secret string) (ledger.Client, error) {
	c, err := r.Get(ctx, id)
	if err != nil {
		return ledger.Client{}, err
	}
	if !c.Authenticate(secret) {
		return ledger.Client{}, ledger.ErrInvalidClient
	}
	return c, nil
}

// Create registers a client; it fails if the id is taken.
func (r *Registry) Create(ctx context.Context, c ledger.Client) error {
	if err := c.Validate(); err != nil {
		return err
	}
	if _, ok := r.static[c.ID]; ok {
		return ErrClientExists
	}
	b, err := json.Marshal(c)
	if err != nil {
		return err
	}
	if _, err := r.kv.Create(ctx, c.ID, b); err != nil {
		if errors.Is(err, jetstream.ErrKeyExists) {
			return ErrClientExists
		}
		return fmt.Errorf("create client %s: %w", c.ID, unavailable(err))
	}
	return nil
}
