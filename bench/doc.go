// Package bench is tokenledger's load tool, behind `tokenledger bench`: it
// measures the service next to a bare pipeline, the work any token service
// has to do on this machine with no ledger logic, and reports each result
// also as a ratio of the bare one.
//
// What it measures:
//
//   - The service, as `tokenledger serve` wires it (the command hands Run
//     its serve function and binary in Wiring; this package never assembles
//     a service), on embedded JetStream with file storage in a temporary
//     directory: a child process by default, goroutines of this process with
//     Config.InProcess. Or a running service at Config.NATSURL.
//   - The bare pipelines (bare.go): issue (EdDSA sign with golang-jwt,
//     JetStream publish, reply), rotate (direct get of the family subject's
//     last message, sign, publish expecting that sequence, reply) and echo
//     (reply only, the ceiling for any endpoint), answering the service's
//     request and reply shapes so one load generator drives both. They do
//     not import the ledger's domain, so optimising the service never moves
//     the denominator. Each service case gets a fresh bare pipeline (its own
//     embedded server and empty stream, removed after the case).
//
// How:
//
//   - Callers are closed loops over NATS request-reply on loopback TCP, each
//     keeping its own token family. An operation counts if it starts inside
//     the measured window; latency percentiles are nearest rank over every
//     successful operation; errors are counted by OAuth code.
//   - Interleaved slices: a case and its bare pipeline share one window cut
//     into Config.Slices alternating slices, bare first, the other target's
//     callers paused and a settling time before each slice, so drift of the
//     machine falls on both alike. A profiled run measures one target after
//     the other.
//   - Ratios: throughput, p50, p99 and CPU per operation of the service over
//     the bare pipeline's (Ratios); refresh-aged compares families with
//     Config.PriorRotations rotations against fresh ones in the same window.
//     CPU and peak RSS come from /proc for the process under load; the load
//     generator's CPU and the rest of the machine's are reported beside them,
//     so a noisy run says so. Report.Targets checks the targets of issue 6.
//
// Child processes re-enter the tokenledger binary as `tokenledger bench
// bare-child` and `bench serve-child`, which the command hands to RunChild.
package bench
