package jsstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/tokenledger/tokenledger/ledger"
)

// Errors of the client administration methods.
var (
	// ErrClientNotFound: no client with that id is in the bucket.
	ErrClientNotFound = errors.New("ledger: no such client in the clients bucket")
	// ErrStaticClient: the client is declared in the configuration, which
	// the bucket cannot change.
	ErrStaticClient = errors.New("ledger: client is declared in the configuration file, not the clients bucket")
)

// Lookup reads a client from the bucket (not from memory), with the
// record's revision.
func (r *Registry) Lookup(ctx context.Context, id string) (ledger.Client, uint64, error) {
	if _, ok := r.static[id]; ok {
		return ledger.Client{}, 0, ErrStaticClient
	}
	if !ledger.ValidClientID(id) {
		return ledger.Client{}, 0, fmt.Errorf("client %q: %w", id, ErrClientNotFound)
	}
	e, err := r.kv.Get(ctx, id)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return ledger.Client{}, 0, fmt.Errorf("client %q: %w", id, ErrClientNotFound)
	}
	if err != nil {
		return ledger.Client{}, 0, fmt.Errorf("load client %s: %w", id, unavailable(err))
	}
	var c ledger.Client
	if err := json.Unmarshal(e.Value(), &c); err != nil {
		return ledger.Client{}, 0, fmt.Errorf("client %s: malformed record: %w", id, err)
	}
	return c, e.Revision(), nil
}

// List returns the clients of the bucket, sorted by id.
func (r *Registry) List(ctx context.Context) ([]ledger.Client, error) {
	lister, err := r.kv.ListKeys(ctx)
	if err != nil {
		return nil, fmt.Errorf("list clients: %w", unavailable(err))
	}
	var ids []string
	for id := range lister.Keys() {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	out := make([]ledger.Client, 0, len(ids))
	for _, id := range ids {
		c, _, err := r.Lookup(ctx, id)
		if errors.Is(err, ErrClientNotFound) {
			continue // deleted since the listing
		}
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	return out, nil
}

// Update changes a client of the bucket with change, conditional on the
// record not having changed since it was read (a concurrent update makes
// it fail with ledger.ErrConflict). Every instance's watch applies it.
func (r *Registry) Update(ctx context.Context, id string, change func(*ledger.Client) error) (ledger.Client, error) {
	c, rev, err := r.Lookup(ctx, id)
	if err != nil {
		return c, err
	}
	if err := change(&c); err != nil {
		return c, err
	}
	if err := c.Validate(); err != nil {
		return c, err
	}
	b, err := json.Marshal(c)
	if err != nil {
		return c, err
	}
	if _, err := r.kv.Update(ctx, id, b, rev); err != nil {
		if errors.Is(err, jetstream.ErrKeyExists) {
			return c, fmt.Errorf("client %s changed meanwhile: %w", id, ledger.ErrConflict)
		}
		return c, fmt.Errorf("update client %s: %w", id, unavailable(err))
	}
	return c, nil
}

// Delete removes a client from the bucket: it can no longer authenticate.
// Its token families stay in the ledger until they expire or are revoked.
func (r *Registry) Delete(ctx context.Context, id string) error {
	if _, _, err := r.Lookup(ctx, id); err != nil {
		return err
	}
	if err := r.kv.Delete(ctx, id); err != nil {
		return fmt.Errorf("delete client %s: %w", id, unavailable(err))
	}
	return nil
}
