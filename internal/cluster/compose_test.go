package cluster_test

import (
	"crypto/tls"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/nats-io/nats-server/v2/server"
	"go.yaml.in/yaml/v3"

	"github.com/tokenledger/tokenledger/internal/cluster"
	"github.com/tokenledger/tokenledger/internal/devcerts"
)

// composeService is what the test reads of a docker-compose.yml service.
type composeService struct {
	Image       string            `yaml:"image"`
	Build       any               `yaml:"build"`
	Entrypoint  []string          `yaml:"entrypoint"`
	Command     []string          `yaml:"command"`
	Environment map[string]string `yaml:"environment"`
	Ports       []string          `yaml:"ports"`
	Volumes     []string          `yaml:"volumes"`
	Restart     string            `yaml:"restart"`
	DependsOn   map[string]struct {
		Condition string `yaml:"condition"`
	} `yaml:"depends_on"`
	Healthcheck struct {
		Test []string `yaml:"test"`
	} `yaml:"healthcheck"`
}

func readCompose(t *testing.T) map[string]composeService {
	t.Helper()
	b, err := os.ReadFile("../../docker-compose.yml")
	if err != nil {
		t.Fatal(err)
	}
	var f struct {
		Services map[string]composeService `yaml:"services"`
	}
	if err := yaml.Unmarshal(b, &f); err != nil {
		t.Fatalf("docker-compose.yml: %v", err)
	}
	return f.Services
}

// natsServerVersion is the nats-server version go.mod requires.
func natsServerVersion(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile("../../go.mod")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`github.com/nats-io/nats-server/v2 v(\S+)`).FindSubmatch(b)
	if m == nil {
		t.Fatal("go.mod requires no nats-server")
	}
	return string(m[1])
}

// docker-compose.yml runs what scripts/cluster starts: the same services,
// config files, ports, arguments and users, with health checks, restart
// policies and the store directory set once.
func TestComposeMatchesTopology(t *testing.T) {
	services := readCompose(t)
	top := cluster.Default()
	var want []string
	for _, n := range top.Nodes {
		want = append(want, n.Name)
	}
	for _, p := range top.Processes {
		want = append(want, p.Name)
	}
	var got []string
	for name := range services {
		got = append(got, name)
	}
	slices.Sort(want)
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Fatalf("docker-compose.yml services %v, the topology %v", got, want)
	}
	serviceHost := func(n cluster.Node) string { return n.Name }
	healthy := func(t *testing.T, s composeService, url string) {
		t.Helper()
		if s.Restart == "" || s.Restart == "no" {
			t.Errorf("restart policy %q", s.Restart)
		}
		if !slices.Contains(s.Healthcheck.Test, url) {
			t.Errorf("health check %q does not probe %s", s.Healthcheck.Test, url)
		}
	}
	published := func(t *testing.T, s composeService, port int) {
		t.Helper()
		want := fmt.Sprintf("127.0.0.1:%d:%d", port, port)
		if !slices.Equal(s.Ports, []string{want}) {
			t.Errorf("ports %q, want [%s]", s.Ports, want)
		}
	}
	version := natsServerVersion(t)

	for _, n := range top.Nodes {
		t.Run(n.Name, func(t *testing.T) {
			s := services[n.Name]
			if !strings.HasPrefix(s.Image, "nats:"+version) {
				t.Errorf("image %s, go.mod requires nats-server %s", s.Image, version)
			}
			if !slices.Contains(s.Volumes, "./config:/etc/nats/config:ro") {
				t.Errorf("volumes %q do not mount ./config", s.Volumes)
			}
			wantCmd := []string{"-c", "/etc/nats/config/" + strings.TrimPrefix(n.Config, "config/")}
			if !slices.Equal(s.Command, wantCmd) {
				t.Errorf("command %q, want %q (the store directory is the config's alone)", s.Command, wantCmd)
			}
			env := top.NodeEnv(n, "0.0.0.0", "/data", "127.0.0.1", serviceHost)
			for k, v := range env {
				if s.Environment[k] != v {
					t.Errorf("environment %s=%q, want %q", k, s.Environment[k], v)
				}
			}
			if !slices.ContainsFunc(s.Volumes, func(v string) bool { return strings.HasSuffix(v, ":/data") }) {
				t.Errorf("volumes %q: no volume for the store directory /data", s.Volumes)
			}
			published(t, s, n.ClientPort)
			healthy(t, s, fmt.Sprintf("http://127.0.0.1:%d/healthz", n.MonitorPort))
			conf, err := os.ReadFile(filepath.Join("../..", n.Config))
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(string(conf), "server_name: "+n.Name+"\n") {
				t.Errorf("%s does not set server_name: %s", n.Config, n.Name)
			}
		})
	}
	for _, p := range top.Processes {
		t.Run(p.Name, func(t *testing.T) {
			s := services[p.Name]
			if s.Build == nil {
				t.Error("not built from this repository's Dockerfile")
			}
			if p.Program == cluster.ResourceServer && !slices.Equal(s.Entrypoint, []string{"/resourceserver"}) {
				t.Errorf("entrypoint %q, want /resourceserver", s.Entrypoint)
			}
			wantCmd := append(slices.Clone(p.Args), p.HTTPFlag, "0.0.0.0:"+strconv.Itoa(p.HTTPPort))
			if !slices.Equal(s.Command, wantCmd) {
				t.Errorf("command %q, want %q", s.Command, wantCmd)
			}
			prefix := "TOKENLEDGER_"
			if p.Program == cluster.ResourceServer {
				prefix = "RESOURCESERVER_"
			}
			for k, v := range map[string]string{
				"NATS_URL": top.ClientURLs(serviceHost), "USER": p.Role,
				"TLS_CERT": "/certs/" + p.Role + "-cert.pem", "TLS_KEY": "/certs/" + p.Role + "-key.pem",
			} {
				if s.Environment[prefix+k] != v {
					t.Errorf("environment %s%s=%q, want %q", prefix, k, s.Environment[prefix+k], v)
				}
			}
			if s.Environment[prefix+"INBOX_PREFIX"] != p.InboxPrefix {
				t.Errorf("inbox prefix %q, want %q", s.Environment[prefix+"INBOX_PREFIX"], p.InboxPrefix)
			}
			for _, n := range top.Nodes {
				if s.DependsOn[n.Name].Condition != "service_healthy" {
					t.Errorf("does not wait for %s to be healthy", n.Name)
				}
			}
			published(t, s, p.HTTPPort)
			healthy(t, s, fmt.Sprintf("http://127.0.0.1:%d%s", p.HTTPPort, p.Health))
		})
	}
}

// Each node's config file, with the environment scripts/cluster gives
// it, is the shipped accounts and TLS plus one node of one cluster: its
// own name, ports and store, routes to all three over TLS.
func TestNodeConfigs(t *testing.T) {
	top := cluster.Default()
	certs := t.TempDir()
	if err := devcerts.Write(certs, devcerts.Config{}); err != nil {
		t.Fatal(err)
	}
	t.Setenv("NATS_TLS_CA", filepath.Join(certs, devcerts.CAFile))
	t.Setenv("NATS_TLS_CERT", filepath.Join(certs, devcerts.ServerCertFile))
	t.Setenv("NATS_TLS_KEY", filepath.Join(certs, devcerts.ServerKeyFile))
	for _, r := range cluster.Roles {
		t.Setenv(cluster.PasswordVar(r), "pw-"+r)
	}
	loop := func(cluster.Node) string { return cluster.Host }
	for _, n := range top.Nodes {
		t.Run(n.Name, func(t *testing.T) {
			for k, v := range top.NodeEnv(n, cluster.Host, "/store/"+n.Name, cluster.Host, loop) {
				t.Setenv(k, v)
			}
			o, err := server.ProcessConfigFile(filepath.Join("../..", n.Config))
			if err != nil {
				t.Fatal(err)
			}
			var routes []string
			for _, r := range o.Routes {
				routes = append(routes, r.String())
			}
			for _, c := range []struct {
				what      string
				got, want any
			}{
				{"server_name", o.ServerName, n.Name},
				{"host", o.Host, cluster.Host},
				{"port", o.Port, n.ClientPort},
				{"monitor port", o.HTTPPort, n.MonitorPort},
				{"store_dir", o.StoreDir, "/store/" + n.Name},
				{"jetstream", o.JetStream, true},
				{"cluster name", o.Cluster.Name, cluster.ClusterName},
				{"cluster port", o.Cluster.Port, n.ClusterPort},
				{"routes", len(routes), len(top.Nodes)},
				{"client TLS verify", o.TLSConfig != nil && o.TLSConfig.ClientAuth == tls.RequireAndVerifyClientCert, true},
				{"route TLS verify", o.Cluster.TLSConfig != nil && o.Cluster.TLSConfig.ClientAuth == tls.RequireAndVerifyClientCert, true},
				{"accounts", len(o.Accounts) >= 3, true},
			} {
				if fmt.Sprint(c.got) != fmt.Sprint(c.want) {
					t.Errorf("%s = %v, want %v", c.what, c.got, c.want)
				}
			}
		})
	}
}
