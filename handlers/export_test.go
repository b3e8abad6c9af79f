package handlers

// What the external tests (package handlers_test) need of the package's
// insides, and nothing more.

import (
	"sync/atomic"

	"github.com/tokenledger/tokenledger/projections"
)

// IntrospectCounters are the counters of the service's introspector that
// serves v (ok false when none does): hits, verifications answered from
// the cache, and direct, requests answered by introspectNow.
func IntrospectCounters(s *Service, v *projections.View) (hits, direct *atomic.Int64, ok bool) {
	if s == nil || s.intro == nil || s.intro.view != v {
		return nil, nil, false
	}
	return &s.intro.hits, &s.intro.direct, true
}
