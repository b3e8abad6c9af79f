package jsstore

import (
	"sync"

	"github.com/tokenledger/tokenledger/ledger"
)

// DefaultStateCacheSize is how many families a state cache holds.
const DefaultStateCacheSize = 32768

// stateCache holds the state of the families this ledger appended to
// last, so that the next refresh of one (a grace retry, a racing refresh,
// a retry after a timeout) can decide on it without loading it first.
// Families it has just issued are not held: their first refresh is an
// access-token lifetime away.
//
// A cached state is only ever a guess: every append is still conditional
// on the family's last sequence, so a state another writer has moved past
// fails its append and the command reloads. To keep such conflicts rare,
// an entry is used only while newer (the view, fed from the whole stream)
// knows of no later event of its family.
type stateCache struct {
	newer func(familyID string, seq uint64) bool
	size  int

	mu sync.Mutex
	m  map[string]ledger.State
}

// WithStateCache lets the ledger decide on the state it last appended for
// a family instead of loading it, for as long as newer(familyID, seq)
// reports no later event of the family than seq. newer must see every
// event of the stream, whoever appended it (projections.View.Newer does);
// size bounds the families held (DefaultStateCacheSize if not positive).
// Refusals are never decided on a cached state: a command refused on one
// is decided again on the loaded state.
func WithStateCache(newer func(familyID string, seq uint64) bool, size int) Option {
	return func(l *Ledger) {
		if newer == nil {
			return
		}
		if size <= 0 {
			size = DefaultStateCacheSize
		}
		l.cache = &stateCache{newer: newer, size: size, m: make(map[string]ledger.State)}
	}
}

// get returns the cached state of the family if nothing later is known.
func (c *stateCache) get(familyID string) (ledger.State, bool) {
	if c == nil {
		return ledger.State{}, false
	}
	c.mu.Lock()
	st, ok := c.m[familyID]
	c.mu.Unlock()
	if !ok || c.newer(familyID, st.Seq) {
		return ledger.State{}, false
	}
	return st, true
}

// put records the state after an append, unless a later one is held.
func (c *stateCache) put(st ledger.State) {
	if c == nil || !st.Exists() || st.Seq == 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if old, ok := c.m[st.FamilyID]; ok {
		if old.Seq >= st.Seq {
			return
		}
	} else if len(c.m) >= c.size {
		for k := range c.m { // an arbitrary entry makes room
			delete(c.m, k)
			break
		}
	}
	c.m[st.FamilyID] = st
}

// drop forgets the family.
func (c *stateCache) drop(familyID string) {
	if c == nil {
		return
	}
	c.mu.Lock()
	delete(c.m, familyID)
	c.mu.Unlock()
}
