package jsstore

import (
	"context"
	"errors"
	"fmt"
	"time"

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
// the key survives restarts.
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

// LoadOrCreate returns the key set, creating a key for alg if there is none
// and rotating to a new one if the current key uses another algorithm (the
// old key stays published until its tokens expire). Concurrent instances
// agree: writes are compare-and-set on the bucket revision.
func (s *KeyStore) LoadOrCreate(ctx context.Context, alg string, now time.Time) (token.KeySet, error) {
	for range 8 {
		entry, err := s.kv.Get(ctx, signingKey)
		var ks token.KeySet
		var rev uint64
		switch {
		case errors.Is(err, jetstream.ErrKeyNotFound):
		case err != nil:
			return token.KeySet{}, fmt.Errorf("load signing keys: %w", err)
		default:
			if ks, err = token.OpenKeySet(s.kek, entry.Value()); err != nil {
				return token.KeySet{}, err
			}
			rev = entry.Revision()
		}
		if cur, ok := ks.Current(); ok && cur.Alg == alg {
			return ks, nil
		}
		next, err := token.GenerateKey(alg, now)
		if err != nil {
			return token.KeySet{}, err
		}
		for i := range ks.Keys {
			if ks.Keys[i].RetiredAt.IsZero() {
				ks.Keys[i].RetiredAt = now
			}
		}
		ks.Keys = append(ks.Keys, next)
		b, err := token.SealKeySet(s.kek, ks)
		if err != nil {
			return token.KeySet{}, err
		}
		if rev == 0 {
			_, err = s.kv.Create(ctx, signingKey, b)
		} else {
			_, err = s.kv.Update(ctx, signingKey, b, rev)
		}
		if errors.Is(err, jetstream.ErrKeyExists) || isWrongLast(err) {
			continue // another instance wrote first: read its keys
		}
		if err != nil {
			return token.KeySet{}, fmt.Errorf("store signing keys: %w", err)
		}
		return ks, nil
	}
	return token.KeySet{}, fmt.Errorf("store signing keys: too many concurrent writers: %w", ledger.ErrUnavailable)
}

func isWrongLast(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) &&
		(apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
			apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant)
}
