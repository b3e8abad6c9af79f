package jsstore

import (
	"context"
	"errors"
	"fmt"

	"github.com/tokenledger/tokenledger/ledger"
	"github.com/tokenledger/tokenledger/ledger/token"

	"github.com/nats-io/nats.go/jetstream"
)

// Key-value buckets the ledger keeps beside its stream.
const (
	KeysBucket    = "tokenledger_keys"
	ClientsBucket = "tokenledger_clients"
	signingKey    = "signing"
)

// KeyStore keeps the signing key set in a JetStream KV bucket, sealed with
// the KEK, so every instance on the same NATS signs with the same key and
// the key survives restarts. Every write is compare-and-set on the entry's
// revision, so concurrent instances agree.
type KeyStore struct {
	kv  jetstream.KeyValue
	kek token.KEK
}

// NewKeyStore opens (creating if needed) the keys bucket.
func NewKeyStore(ctx context.Context, js jetstream.JetStream, kek token.KEK, replicas int) (*KeyStore, error) {
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket: KeysBucket, Description: "tokenledger signing keys, sealed with the KEK",
		History: 16, Storage: jetstream.FileStorage, Replicas: max(replicas, 1),
	})
	if err != nil {
		return nil, fmt.Errorf("keys bucket: %w", err)
	}
	return &KeyStore{kv: kv, kek: kek}, nil
}

// Load reads the key set and its revision (0 and an empty set when none
// is stored yet).
func (s *KeyStore) Load(ctx context.Context) (token.KeySet, uint64, error) {
	entry, err := s.kv.Get(ctx, signingKey)
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound):
		return token.KeySet{}, 0, nil
	case err != nil:
		return token.KeySet{}, 0, fmt.Errorf("load signing keys: %w", unavailable(err))
	}
	ks, err := token.OpenKeySet(s.kek, entry.Value())
	if err != nil {
		return token.KeySet{}, 0, err
	}
	return ks, entry.Revision(), nil
}

// Put stores ks if the entry is still at revision rev (0: if there is
// none) and returns the new revision; ledger.ErrConflict when another
// writer came first.
func (s *KeyStore) Put(ctx context.Context, ks token.KeySet, rev uint64) (uint64, error) {
	b, err := token.SealKeySet(s.kek, ks)
	if err != nil {
		return 0, err
	}
	var next uint64
	if rev == 0 {
		next, err = s.kv.Create(ctx, signingKey, b)
	} else {
		next, err = s.kv.Update(ctx, signingKey, b, rev)
	}
	if errors.Is(err, jetstream.ErrKeyExists) || isWrongLast(err) {
		return 0, fmt.Errorf("store signing keys: %w", ledger.ErrConflict)
	}
	if err != nil {
		return 0, fmt.Errorf("store signing keys: %w", unavailable(err))
	}
	return next, nil
}

// Watch calls fn with the stored key set and then with every change, until
// ctx ends or the watch fails. A value that does not open with the KEK is
// an error: an instance must not sign with keys it cannot read.
func (s *KeyStore) Watch(ctx context.Context, fn func(token.KeySet, uint64)) error {
	w, err := s.kv.Watch(ctx, signingKey)
	if err != nil {
		return fmt.Errorf("watch signing keys: %w", err)
	}
	return followKV(ctx, w, "signing keys", func(e jetstream.KeyValueEntry) error {
		if e.Operation() != jetstream.KeyValuePut {
			return nil // a delete
		}
		ks, err := token.OpenKeySet(s.kek, e.Value())
		if err != nil {
			return err
		}
		fn(ks, e.Revision())
		return nil
	})
}

func isWrongLast(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) &&
		(apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
			apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant)
}
