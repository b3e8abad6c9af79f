package verifier

import (
	"context"
	"errors"
	"net/http"
	"strings"

	"github.com/tokenledger/tokenledger/ledger/token"
)

type claimsKey struct{}

// ClaimsFrom returns the verified claims the middleware put in the
// request's context.
func ClaimsFrom(ctx context.Context) (token.AccessClaims, bool) {
	c, ok := ctx.Value(claimsKey{}).(token.AccessClaims)
	return c, ok
}

// Middleware lets a request through only with a valid, unrevoked bearer
// access token (RFC 6750), and puts its claims in the request's context.
// It answers 401 with a WWW-Authenticate challenge for a missing, invalid
// or revoked token, and 503 while revocations are not loaded or stale.
func (v *Verifier) Middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		auth := r.Header.Get("Authorization")
		scheme, token, ok := strings.Cut(auth, " ")
		if !ok || !strings.EqualFold(scheme, "Bearer") || token == "" {
			w.Header().Set("WWW-Authenticate", `Bearer`)
			http.Error(w, "bearer token required", http.StatusUnauthorized)
			return
		}
		c, err := v.Verify(r.Context(), strings.TrimSpace(token))
		switch {
		case errors.Is(err, ErrNotReady), errors.Is(err, ErrStale):
			w.Header().Set("Retry-After", "1")
			http.Error(w, "token revocations unavailable", http.StatusServiceUnavailable)
			return
		case errors.Is(err, ErrAudience):
			w.Header().Set("WWW-Authenticate", `Bearer error="invalid_token", error_description="wrong audience"`)
			http.Error(w, "invalid token", http.StatusUnauthorized)
			return
		case err != nil:
			w.Header().Set("WWW-Authenticate", `Bearer error="invalid_token"`)
			http.Error(w, "invalid token", http.StatusUnauthorized)
			return
		}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), claimsKey{}, c)))
	})
}
