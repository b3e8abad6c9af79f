//go:build !unix

package main

// lockDataDir is a no-op where flock is not available: run one process per
// data directory.
func lockDataDir(string) (func(), error) { return func() {}, nil }
