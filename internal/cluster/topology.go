package cluster

import (
	"fmt"
	"net"
	"slices"
	"strconv"
)

// Node is one NATS server of the cluster.
type Node struct {
	// Name is the server_name its config file sets, and the compose
	// service.
	Name string
	// Config is its config file, relative to the repository root.
	Config string
	// ClientPort, ClusterPort and MonitorPort are where it listens for
	// clients (TLS), for the other nodes' routes (TLS) and for its HTTP
	// monitoring endpoints (/healthz).
	ClientPort, ClusterPort, MonitorPort int
}

// Program names what a Process runs.
type Program string

// The programs of the topology.
const (
	Tokenledger    Program = "tokenledger"
	ResourceServer Program = "resourceserver"
)

// Process is one client of the cluster: an instance, the worker or the
// resource server.
type Process struct {
	// Name is the compose service and the name Cluster methods take.
	Name string
	// Program is the binary; Args its arguments before the connection
	// flags (which come from the environment) and before the HTTP
	// listener's flag.
	Program Program
	Args    []string
	// Role is its NATS user in config/nats-server.conf; InboxPrefix its
	// inbox prefix there ("" is the default _INBOX).
	Role, InboxPrefix string
	// HTTPFlag is the flag that sets its HTTP listener, HTTPPort the port
	// and Health the path that answers 200 once it is ready.
	HTTPFlag string
	HTTPPort int
	Health   string
}

// Topology is what scripts/cluster starts and docker-compose.yml runs.
type Topology struct {
	Nodes     []Node
	Processes []Process
}

// ClusterName is the NATS cluster's name (config/cluster/cluster.conf).
const ClusterName = "tokenledger"

// Roles are the NATS users of config/nats-server.conf, each with a
// client certificate and a password variable (ROLE_NATS_PASSWORD).
var Roles = []string{"tokenledger", "billing", "web", "admin", "auditor", "security", "resource", "breakglass"}

// InboxPrefixes are the inbox prefixes of the roles in the TOKENS
// account (docs/permissions.md); the others use the default.
var InboxPrefixes = map[string]string{
	"admin": "_INBOX_admin", "auditor": "_INBOX_auditor",
	"security": "_INBOX_security", "resource": "_INBOX_resource",
}

// Default is the shipped topology: three NATS servers in one JetStream
// cluster, two service instances (three replicas of every stream and
// bucket), the security worker alone, and the example resource server.
func Default() Topology {
	t := Topology{}
	for i := range 3 {
		t.Nodes = append(t.Nodes, Node{
			Name:       fmt.Sprintf("nats-%d", i+1),
			Config:     fmt.Sprintf("config/cluster/nats-%d.conf", i+1),
			ClientPort: 4222 + i, ClusterPort: 6222 + i, MonitorPort: 8222 + i,
		})
	}
	serve := []string{"serve", "--replicas", "3", "--worker=false"}
	t.Processes = []Process{
		{Name: "tokenledger-1", Program: Tokenledger, Args: serve, Role: "tokenledger", HTTPFlag: "--http", HTTPPort: 8081, Health: "/readyz"},
		{Name: "tokenledger-2", Program: Tokenledger, Args: serve, Role: "tokenledger", HTTPFlag: "--http", HTTPPort: 8082, Health: "/readyz"},
		{Name: "worker", Program: Tokenledger, Args: []string{"worker", "--replicas", "3"}, Role: "tokenledger", HTTPFlag: "--http", HTTPPort: 8083, Health: "/readyz"},
		{Name: "resourceserver", Program: ResourceServer, Role: "resource", InboxPrefix: "_INBOX_resource", HTTPFlag: "--listen", HTTPPort: 8080, Health: "/healthz"},
	}
	return t
}

// Node returns the node called name.
func (t Topology) Node(name string) (Node, bool) {
	i := slices.IndexFunc(t.Nodes, func(n Node) bool { return n.Name == name })
	if i < 0 {
		return Node{}, false
	}
	return t.Nodes[i], true
}

// Process returns the process called name.
func (t Topology) Process(name string) (Process, bool) {
	i := slices.IndexFunc(t.Processes, func(p Process) bool { return p.Name == name })
	if i < 0 {
		return Process{}, false
	}
	return t.Processes[i], true
}

// WithFreePorts returns t with every port replaced by one free on the
// loopback interface now, so a test's cluster does not collide with
// anything else running on the machine.
func (t Topology) WithFreePorts() (Topology, error) {
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	free := func() (int, error) {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, fmt.Errorf("free port: %w", err)
		}
		ls = append(ls, l) // held until all are chosen, so none repeats
		return l.Addr().(*net.TCPAddr).Port, nil
	}
	out := Topology{Nodes: slices.Clone(t.Nodes), Processes: slices.Clone(t.Processes)}
	for i := range out.Nodes {
		for _, p := range []*int{&out.Nodes[i].ClientPort, &out.Nodes[i].ClusterPort, &out.Nodes[i].MonitorPort} {
			port, err := free()
			if err != nil {
				return t, err
			}
			*p = port
		}
	}
	for i := range out.Processes {
		port, err := free()
		if err != nil {
			return t, err
		}
		out.Processes[i].HTTPPort = port
	}
	return out, nil
}

// NodeEnv is the environment config/cluster/cluster.conf reads for node
// n: listen host, ports, store directory and the routes to every node,
// each node reached at routeHost(node) (127.0.0.1 on one machine, the
// service name under compose).
func (t Topology) NodeEnv(n Node, host, storeDir, monitorHost string, routeHost func(Node) string) map[string]string {
	env := map[string]string{
		"NATS_HOST":           host,
		"NATS_PORT":           strconv.Itoa(n.ClientPort),
		"NATS_CLUSTER_LISTEN": net.JoinHostPort(host, strconv.Itoa(n.ClusterPort)),
		"NATS_MONITOR":        net.JoinHostPort(monitorHost, strconv.Itoa(n.MonitorPort)),
		"NATS_STORE_DIR":      storeDir,
	}
	for i, o := range t.Nodes {
		env[RouteVar(i)] = fmt.Sprintf("nats-route://%s:%d", routeHost(o), o.ClusterPort)
	}
	return env
}

// RouteVar is the variable config/cluster/cluster.conf reads the route
// to the i-th node (from 0) from.
func RouteVar(i int) string { return fmt.Sprintf("NATS_ROUTE_%d", i+1) }

// ClientURLs are the client URLs of every node at host, comma separated,
// as --nats-url takes them.
func (t Topology) ClientURLs(host func(Node) string) string {
	s := ""
	for i, n := range t.Nodes {
		if i > 0 {
			s += ","
		}
		s += fmt.Sprintf("tls://%s:%d", host(n), n.ClientPort)
	}
	return s
}

// PasswordVar is the environment variable config/nats-server.conf reads
// role's password from.
func PasswordVar(role string) string {
	b := []byte(role)
	for i, c := range b {
		if 'a' <= c && c <= 'z' {
			b[i] = c - 'a' + 'A'
		}
	}
	return string(b) + "_NATS_PASSWORD"
}
