package jsstore

import (
	"context"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"
)

// followKV calls fn with every entry w delivers (the initial values, then
// each change) until ctx ends or fn fails, and stops w. The nil entry that
// marks the end of the initial values is skipped. A watch that ends while
// ctx is live is an error naming what: a copy fed by it would go stale.
func followKV(ctx context.Context, w jetstream.KeyWatcher, what string, fn func(jetstream.KeyValueEntry) error) error {
	defer func() { _ = w.Stop() }()
	for {
		select {
		case <-ctx.Done():
			return nil
		case e, ok := <-w.Updates():
			if !ok {
				if ctx.Err() != nil {
					return nil
				}
				return fmt.Errorf("watch %s: the watch ended", what)
			}
			if e == nil {
				continue // the end of the initial values
			}
			if err := fn(e); err != nil {
				return err
			}
		}
	}
}
