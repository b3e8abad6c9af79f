// Package devcerts makes a development certificate authority, a server
// certificate and client certificates for running NATS with TLS on one
// machine, with the standard library only. scripts/devcerts writes them
// for people; the permission test makes them the same way.
//
// They are for development and tests: the CA's private key is never
// written, so adding a certificate means making a new set. Keys are ECDSA
// P-256, private keys are written with mode 0600, and Write refuses to
// replace existing files unless told to.
package devcerts
