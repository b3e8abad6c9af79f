// Command resourceserver is a small HTTP API that accepts tokenledger access
// tokens: the verifier package checks them offline against the JWKS and
// follows the revocation feed, so a revoked token is refused before it
// expires, also after this server was disconnected or restarted.
//
//	go run ./examples/resourceserver --nats-url nats://127.0.0.1:4222 --issuer tokenledger
//	curl -H "Authorization: Bearer $ACCESS_TOKEN" http://127.0.0.1:8080/me
//
// It owns nothing but its wiring: flags, the NATS connection, the verifier
// and the HTTP server, stopped together when one of them stops.
package main
