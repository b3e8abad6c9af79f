// Package cluster is the shipped multi-node topology, in one place: three
// NATS servers in one JetStream cluster (config/cluster/nats-N.conf), two
// `tokenledger serve --replicas 3` instances, a `tokenledger worker` and
// examples/resourceserver. scripts/cluster starts it as processes on
// loopback (Start), docker-compose.yml runs it as containers, and a test
// checks that both name the same services, ports and config files.
package cluster
