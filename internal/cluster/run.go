package cluster

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/tokenledger/tokenledger/internal/devcerts"
)

// Binaries are the programs a cluster runs, built by Build.
type Binaries struct {
	NATSServer, Tokenledger, ResourceServer string
}

// Build builds the NATS server (the version go.mod requires, from the
// module cache or the Go module proxy), tokenledger and the example
// resource server from the module at root into dir.
func Build(ctx context.Context, root, dir string) (Binaries, error) {
	b := Binaries{
		NATSServer:     filepath.Join(dir, "nats-server"),
		Tokenledger:    filepath.Join(dir, "tokenledger"),
		ResourceServer: filepath.Join(dir, "resourceserver"),
	}
	for _, p := range []struct{ out, pkg string }{
		{b.NATSServer, "github.com/nats-io/nats-server/v2"},
		{b.Tokenledger, "./cmd/tokenledger"},
		{b.ResourceServer, "./examples/resourceserver"},
	} {
		cmd := exec.CommandContext(ctx, "go", "build", "-o", p.out, p.pkg)
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			return b, fmt.Errorf("go build %s: %w\n%s", p.pkg, err, out)
		}
	}
	return b, nil
}

// Config is what Start needs.
type Config struct {
	// Root is the repository root: the config files are read from there.
	Root string
	// Dir holds the certificates, the secrets, each node's store and
	// every process's log (DIR/logs/NAME.log). A second Start on the
	// same Dir reuses its certificates, secrets and stores.
	Dir      string
	Bin      Binaries
	Topology Topology
	// ExtraArgs are appended to a process's arguments, by name.
	ExtraArgs map[string][]string
	// Progress, if set, is told what is being started.
	Progress io.Writer
}

// Cluster is a running process cluster on loopback.
type Cluster struct {
	cfg     Config
	secrets map[string]string // variable -> value
	mu      sync.Mutex
	procs   map[string]*proc
}

type proc struct {
	cmd  *exec.Cmd
	done chan struct{}
	log  *os.File
}

// Host is the loopback address everything listens on.
const Host = "127.0.0.1"

func loopback(Node) string { return Host }

// Start starts the nodes, waits for JetStream to be healthy on each, then
// starts the processes in order, each once the one before is ready (the
// first instance creates the streams and buckets). On error it stops what
// it started.
func Start(ctx context.Context, cfg Config) (*Cluster, error) {
	c := &Cluster{cfg: cfg, procs: map[string]*proc{}}
	if err := os.MkdirAll(filepath.Join(cfg.Dir, "logs"), 0o755); err != nil {
		return nil, err
	}
	if err := c.prepare(); err != nil {
		return nil, err
	}
	ok := false
	defer func() {
		if !ok {
			c.Close()
		}
	}()
	for _, n := range cfg.Topology.Nodes {
		if err := c.StartProcess(n.Name); err != nil {
			return nil, err
		}
	}
	for _, n := range cfg.Topology.Nodes {
		if err := c.WaitReady(ctx, n.Name); err != nil {
			return nil, err
		}
	}
	for _, p := range cfg.Topology.Processes {
		// As compose's restart policy does: a process that exits while
		// the cluster is still placing the replicas of the streams it
		// just created is started again.
		for attempt := 1; ; attempt++ {
			if err := c.StartProcess(p.Name); err != nil {
				return nil, err
			}
			err := c.WaitReady(ctx, p.Name)
			if err == nil {
				break
			}
			if c.Running(p.Name) || attempt == 5 {
				return nil, err
			}
			if cfg.Progress != nil {
				fmt.Fprintf(cfg.Progress, "%s exited before it was ready; starting it again\n", p.Name)
			}
			time.Sleep(time.Second)
		}
	}
	ok = true
	return c, nil
}

// CertsDir is where the CA and every certificate are.
func (c *Cluster) CertsDir() string { return filepath.Join(c.cfg.Dir, "certs") }

// SecretsFile is the file with every password and the KEK, as shell
// exports.
func (c *Cluster) SecretsFile() string { return filepath.Join(c.cfg.Dir, "secrets.env") }

// LogFile is where the process or node called name logs.
func (c *Cluster) LogFile(name string) string {
	return filepath.Join(c.cfg.Dir, "logs", name+".log")
}

// Topology is the cluster's topology.
func (c *Cluster) Topology() Topology { return c.cfg.Topology }

// prepare makes the certificates and secrets unless Dir has them.
func (c *Cluster) prepare() error {
	certs := c.CertsDir()
	if _, err := os.Stat(filepath.Join(certs, devcerts.CAFile)); errors.Is(err, os.ErrNotExist) {
		hosts := []string{"localhost", Host}
		for _, n := range c.cfg.Topology.Nodes {
			hosts = append(hosts, n.Name)
		}
		if err := devcerts.Write(certs, devcerts.Config{Hosts: hosts, Clients: Roles}); err != nil {
			return err
		}
	} else if err != nil {
		return err
	}
	c.secrets = map[string]string{}
	b, err := os.ReadFile(c.SecretsFile())
	switch {
	case err == nil:
		for _, line := range strings.Split(string(b), "\n") {
			k, v, ok := strings.Cut(strings.TrimPrefix(line, "export "), "=")
			if ok {
				c.secrets[k] = strings.Trim(v, "'")
			}
		}
		return nil
	case !errors.Is(err, os.ErrNotExist):
		return err
	}
	random := func(n int) string {
		b := make([]byte, n)
		_, _ = rand.Read(b) // never fails (crypto/rand)
		return base64.StdEncoding.EncodeToString(b)
	}
	for _, r := range Roles {
		c.secrets[PasswordVar(r)] = strings.NewReplacer("+", "x", "/", "y", "=", "").Replace(random(18))
	}
	c.secrets["TOKENLEDGER_KEK"] = random(32)
	var sb strings.Builder
	for _, k := range slices.Sorted(maps.Keys(c.secrets)) {
		fmt.Fprintf(&sb, "export %s='%s'\n", k, c.secrets[k])
	}
	return os.WriteFile(c.SecretsFile(), []byte(sb.String()), 0o600)
}

// Password is role's NATS password.
func (c *Cluster) Password(role string) string { return c.secrets[PasswordVar(role)] }

// URLs are the client URLs of every node.
func (c *Cluster) URLs() string { return c.cfg.Topology.ClientURLs(loopback) }

// Env is the environment a tokenledger command runs with as role: every
// node's URL, the role's user, password, client certificate and inbox
// prefix (TOKENLEDGER_*; RESOURCESERVER_* too).
func (c *Cluster) Env(role string) []string {
	var env []string
	for _, p := range []string{"TOKENLEDGER_", "RESOURCESERVER_"} {
		env = append(env,
			p+"NATS_URL="+c.URLs(),
			p+"USER="+role,
			p+"PASSWORD="+c.Password(role),
			p+"TLS_CA="+filepath.Join(c.CertsDir(), devcerts.CAFile),
			p+"TLS_CERT="+filepath.Join(c.CertsDir(), devcerts.ClientCertFile(role)),
			p+"TLS_KEY="+filepath.Join(c.CertsDir(), devcerts.ClientKeyFile(role)),
			p+"INBOX_PREFIX="+InboxPrefixes[role],
		)
	}
	return env
}

// command is the command line and environment of the node or process
// called name.
func (c *Cluster) command(name string) (*exec.Cmd, error) {
	t := c.cfg.Topology
	certs := c.CertsDir()
	base := os.Environ()
	if n, ok := t.Node(name); ok {
		cmd := exec.Command(c.cfg.Bin.NATSServer, "-c", filepath.Join(c.cfg.Root, n.Config))
		env := t.NodeEnv(n, Host, filepath.Join(c.cfg.Dir, n.Name), Host, loopback)
		env["NATS_TLS_CA"] = filepath.Join(certs, devcerts.CAFile)
		env["NATS_TLS_CERT"] = filepath.Join(certs, devcerts.ServerCertFile)
		env["NATS_TLS_KEY"] = filepath.Join(certs, devcerts.ServerKeyFile)
		for _, r := range Roles {
			env[PasswordVar(r)] = c.Password(r)
		}
		cmd.Env = base
		for _, k := range slices.Sorted(maps.Keys(env)) {
			cmd.Env = append(cmd.Env, k+"="+env[k])
		}
		return cmd, nil
	}
	p, ok := t.Process(name)
	if !ok {
		return nil, fmt.Errorf("cluster: no node or process %q", name)
	}
	bin := c.cfg.Bin.Tokenledger
	if p.Program == ResourceServer {
		bin = c.cfg.Bin.ResourceServer
	}
	args := append(slices.Clone(p.Args), p.HTTPFlag, net.JoinHostPort(Host, strconv.Itoa(p.HTTPPort)))
	args = append(args, c.cfg.ExtraArgs[name]...)
	cmd := exec.Command(bin, args...)
	cmd.Env = append(append(base, c.Env(p.Role)...), "TOKENLEDGER_KEK="+c.secrets["TOKENLEDGER_KEK"])
	return cmd, nil
}

// StartProcess starts the node or process called name (again, after
// Kill or Stop), logging to LogFile(name).
func (c *Cluster) StartProcess(name string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if p := c.procs[name]; p != nil && !p.exited() {
		return fmt.Errorf("cluster: %s is running", name)
	}
	cmd, err := c.command(name)
	if err != nil {
		return err
	}
	log, err := os.OpenFile(c.LogFile(name), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		log.Close()
		return fmt.Errorf("cluster: start %s: %w", name, err)
	}
	if c.cfg.Progress != nil {
		fmt.Fprintf(c.cfg.Progress, "started %s (pid %d), log %s\n", name, cmd.Process.Pid, c.LogFile(name))
	}
	p := &proc{cmd: cmd, done: make(chan struct{}), log: log}
	go func() {
		_ = cmd.Wait()
		log.Close()
		close(p.done)
	}()
	c.procs[name] = p
	return nil
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Running reports whether the node or process called name is running.
func (c *Cluster) Running(name string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	p := c.procs[name]
	return p != nil && !p.exited()
}

// healthURL is the URL that answers 200 once name is ready.
func (c *Cluster) healthURL(name string) (string, error) {
	t := c.cfg.Topology
	if n, ok := t.Node(name); ok {
		return fmt.Sprintf("http://%s:%d/healthz", Host, n.MonitorPort), nil
	}
	if p, ok := t.Process(name); ok {
		return fmt.Sprintf("http://%s:%d%s", Host, p.HTTPPort, p.Health), nil
	}
	return "", fmt.Errorf("cluster: no node or process %q", name)
}

// Ready reports whether name's health URL answers 200 now.
func (c *Cluster) Ready(ctx context.Context, name string) bool {
	url, err := c.healthURL(name)
	if err != nil {
		return false
	}
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return false
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// WaitReady waits until name is ready (a node: JetStream healthy; a
// process: its Health path answers 200), for at most a minute.
func (c *Cluster) WaitReady(ctx context.Context, name string) error {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	for !c.Ready(ctx, name) {
		if !c.Running(name) {
			return fmt.Errorf("cluster: %s exited before it was ready: %s", name, c.tail(name))
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("cluster: %s not ready: %w: %s", name, ctx.Err(), c.tail(name))
		case <-time.After(100 * time.Millisecond):
		}
	}
	return nil
}

// tail is the end of name's log, for errors.
func (c *Cluster) tail(name string) string {
	b, _ := os.ReadFile(c.LogFile(name))
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return string(b)
}

// Kill kills name with SIGKILL (a crash) and waits for it to exit.
func (c *Cluster) Kill(name string) error { return c.signal(name, syscall.SIGKILL, 0) }

// Stop sends name SIGTERM and waits for it to exit, at most 20 s before
// it is killed.
func (c *Cluster) Stop(name string) error { return c.signal(name, syscall.SIGTERM, 20*time.Second) }

func (c *Cluster) signal(name string, sig syscall.Signal, wait time.Duration) error {
	c.mu.Lock()
	p := c.procs[name]
	c.mu.Unlock()
	if p == nil || p.exited() {
		return nil
	}
	if err := p.cmd.Process.Signal(sig); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("cluster: signal %s: %w", name, err)
	}
	if wait > 0 {
		select {
		case <-p.done:
			return nil
		case <-time.After(wait):
			_ = p.cmd.Process.Kill()
		}
	}
	<-p.done
	return nil
}

// Close stops every process, then every node (SIGTERM, in reverse
// order of start).
func (c *Cluster) Close() {
	t := c.cfg.Topology
	for i := len(t.Processes) - 1; i >= 0; i-- {
		_ = c.Stop(t.Processes[i].Name)
	}
	var wg sync.WaitGroup
	for _, n := range t.Nodes {
		wg.Go(func() { _ = c.Stop(n.Name) })
	}
	wg.Wait()
}
