// Package archtest keeps the documents that describe the code true: the
// import rules of docs/architecture.md and the subjects and event types of
// docs/asyncapi.yaml. It has tests only.
package archtest

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/micro"

	"github.com/tokenledger/tokenledger/handlers"
	"github.com/tokenledger/tokenledger/internal/natstest"
	"github.com/tokenledger/tokenledger/ledger"
	"github.com/tokenledger/tokenledger/ledger/jsstore"
	tltoken "github.com/tokenledger/tokenledger/ledger/token"
	"github.com/tokenledger/tokenledger/projections"
)

// moduleRoot is the directory of the module's go.mod.
func moduleRoot(t *testing.T) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("no go.mod above the test's directory")
		}
		dir = parent
	}
}

func readDoc(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(moduleRoot(t), "docs", name))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// ---------------------------------------------------------------------
// Import rules (docs/architecture.md)

// rule is one row of the rules table: the module packages a package may
// import and the other imports it must not have.
type rule struct {
	pkg    string   // module-relative path or pattern ("cmd/...")
	allow  []string // module-relative patterns; "*" is any
	forbid []string // import path patterns outside the module
}

// match reports whether path matches pattern: the same path, or for
// "p/..." p itself or a package under it.
func match(pattern, path string) bool {
	if pattern == "*" {
		return true
	}
	if base, ok := strings.CutSuffix(pattern, "/..."); ok {
		return path == base || strings.HasPrefix(path, base+"/")
	}
	return path == pattern
}

// parseRules reads the table between the rules markers of architecture.md.
func parseRules(doc string) ([]rule, error) {
	_, rest, ok := strings.Cut(doc, "<!-- rules:begin -->")
	table, _, ok2 := strings.Cut(rest, "<!-- rules:end -->")
	if !ok || !ok2 {
		return nil, errors.New("architecture.md: no rules:begin/rules:end markers")
	}
	var rules []rule
	for line := range strings.Lines(table) {
		line = strings.TrimSpace(line)
		if !strings.HasPrefix(line, "| `") {
			continue // blank, header or separator
		}
		cells := strings.Split(strings.Trim(line, "|"), "|")
		if len(cells) != 3 {
			return nil, fmt.Errorf("architecture.md: rules row %q: want 3 cells", line)
		}
		pkg := codeSpans(cells[0])
		if len(pkg) != 1 {
			return nil, fmt.Errorf("architecture.md: rules row %q: want one package", line)
		}
		rules = append(rules, rule{pkg: pkg[0], allow: codeSpans(cells[1]), forbid: codeSpans(cells[2])})
	}
	if len(rules) == 0 {
		return nil, errors.New("architecture.md: empty rules table")
	}
	return rules, nil
}

// codeSpans returns the `quoted` items of a table cell ("none" has none).
func codeSpans(cell string) []string {
	var out []string
	parts := strings.Split(cell, "`")
	for i := 1; i < len(parts); i += 2 {
		out = append(out, parts[i])
	}
	return out
}

// ruleFor is the row of a package: its exact row, else the longest
// pattern row that covers it.
func ruleFor(rules []rule, rel string) (rule, bool) {
	var best rule
	found := false
	for _, r := range rules {
		if r.pkg == rel {
			return r, true
		}
		if match(r.pkg, rel) && (!found || len(r.pkg) > len(best.pkg)) {
			best, found = r, true
		}
	}
	return best, found
}

// listedPackage is what go list reports of a package.
type listedPackage struct {
	ImportPath string
	Imports    []string
	Deps       []string
}

func goList(t *testing.T, root string) (module string, pkgs []listedPackage) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	run := func(args ...string) []byte {
		cmd := exec.CommandContext(ctx, "go", args...)
		cmd.Dir = root
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("go %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
		}
		return out
	}
	module = strings.TrimSpace(string(run("list", "-m")))
	dec := json.NewDecoder(bytes.NewReader(run("list", "-json=ImportPath,Imports,Deps", "./...")))
	for {
		var p listedPackage
		if err := dec.Decode(&p); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatalf("go list output: %v", err)
		}
		pkgs = append(pkgs, p)
	}
	return module, pkgs
}

// isStd reports whether an import path is of the standard library: its
// first element has no dot.
func isStd(path string) bool {
	first, _, _ := strings.Cut(path, "/")
	return !strings.Contains(first, ".")
}

// violations checks one package against the rules.
func violations(rules []rule, module string, p listedPackage) []string {
	rel, ok := strings.CutPrefix(p.ImportPath, module+"/")
	if !ok {
		rel = "." // the module root
	}
	r, ok := ruleFor(rules, rel)
	if !ok {
		return []string{fmt.Sprintf("%s has no row in the rules of docs/architecture.md", rel)}
	}
	var out []string
	for _, imp := range p.Imports {
		ours, isOurs := strings.CutPrefix(imp, module+"/")
		switch {
		case isOurs || imp == module:
			if !slices.ContainsFunc(r.allow, func(a string) bool { return match(a, ours) }) {
				out = append(out, fmt.Sprintf("%s imports %s, which its row does not allow", rel, ours))
			}
		case slices.ContainsFunc(r.forbid, func(f string) bool { return match(f, imp) }):
			out = append(out, fmt.Sprintf("%s imports %s", rel, imp))
		}
	}
	// Third-party bans hold for the whole dependency set.
	for _, dep := range p.Deps {
		if isStd(dep) || slices.Contains(p.Imports, dep) {
			continue
		}
		if slices.ContainsFunc(r.forbid, func(f string) bool { return !isStd(f) && match(f, dep) }) {
			out = append(out, fmt.Sprintf("%s depends on %s (through an import)", rel, dep))
		}
	}
	return out
}

// TestImportRules fails on an import that breaks the table of
// docs/architecture.md.
func TestImportRules(t *testing.T) {
	rules, err := parseRules(readDoc(t, "architecture.md"))
	if err != nil {
		t.Fatal(err)
	}
	module, pkgs := goList(t, moduleRoot(t))
	if len(pkgs) == 0 {
		t.Fatal("go list found no packages")
	}
	for _, p := range pkgs {
		for _, v := range violations(rules, module, p) {
			t.Error(v)
		}
	}
}

// TestRulesCatchViolations runs the checker on made-up packages, so a
// checker that accepts everything cannot pass unnoticed.
func TestRulesCatchViolations(t *testing.T) {
	rules, err := parseRules(readDoc(t, "architecture.md"))
	if err != nil {
		t.Fatal(err)
	}
	const m = "example.com/m"
	tests := []struct {
		name string
		pkg  listedPackage
		want int
	}{
		{"domain imports nothing of ours", listedPackage{ImportPath: m + "/ledger", Imports: []string{"fmt", m + "/ledger/token"}}, 1},
		{"domain imports no NATS", listedPackage{ImportPath: m + "/ledger", Imports: []string{"github.com/nats-io/nats.go"}, Deps: []string{"github.com/nats-io/nats.go"}}, 1},
		{"domain depends on no JWT library", listedPackage{ImportPath: m + "/ledger", Imports: []string{"example.org/x"}, Deps: []string{"example.org/x", "github.com/golang-jwt/jwt/v5"}}, 1},
		{"domain does not open files", listedPackage{ImportPath: m + "/ledger", Imports: []string{"os"}}, 1},
		{"domain may use fmt, which uses os", listedPackage{ImportPath: m + "/ledger", Imports: []string{"fmt"}, Deps: []string{"fmt", "os"}}, 0},
		{"verifier imports no read model", listedPackage{ImportPath: m + "/verifier", Imports: []string{m + "/projections", m + "/ledger/token"}}, 1},
		{"verifier imports the feed's wire types", listedPackage{ImportPath: m + "/verifier", Imports: []string{m + "/revocation", m + "/ledger/token"}}, 0},
		{"nobody but cmd imports cmd", listedPackage{ImportPath: m + "/bench", Imports: []string{m + "/cmd/tokenledger"}}, 1},
		{"cmd imports anything", listedPackage{ImportPath: m + "/cmd/tokenledger", Imports: []string{m + "/bench", m + "/handlers"}}, 0},
		{"a package without a row", listedPackage{ImportPath: m + "/util"}, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := violations(rules, m, tt.pkg); len(got) != tt.want {
				t.Errorf("violations = %q, want %d", got, tt.want)
			}
		})
	}
}

// ---------------------------------------------------------------------
// The AsyncAPI document (docs/asyncapi.yaml)

// yamlValues returns the values of every "key: value" line of the
// document (any indentation, quotes removed).
func yamlValues(doc, key string) []string {
	var out []string
	sc := bufio.NewScanner(strings.NewReader(doc))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		v, ok := strings.CutPrefix(line, key+": ")
		if !ok {
			continue
		}
		v = strings.TrimSpace(v)
		if u, err := strconv.Unquote(v); err == nil {
			v = u
		} else {
			v = strings.Trim(v, "'")
		}
		out = append(out, v)
	}
	return out
}

// readyWriter is a log destination that reports when the service has
// registered every endpoint (it logs "service ready" then).
type readyWriter struct {
	once  sync.Once
	ready chan struct{}
}

func (w *readyWriter) Write(p []byte) (int, error) {
	if bytes.Contains(p, []byte("service ready")) {
		w.once.Do(func() { close(w.ready) })
	}
	return len(p), nil
}

// registeredEndpoints starts the service with a valid-token view (as
// serve runs it) on an embedded server and returns the subjects of the
// endpoints it registered, from the micro INFO of the service.
func registeredEndpoints(t *testing.T) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	srv := natstest.Start(t, "")
	nc, js := natstest.Connect(t, srv)
	store, err := jsstore.NewStore(ctx, js, jsstore.StoreConfig{})
	if err != nil {
		t.Fatal(err)
	}
	kek, err := tltoken.ParseKEK("MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=")
	if err != nil {
		t.Fatal(err)
	}
	keyStore, err := jsstore.NewKeyStore(ctx, js, kek, 1)
	if err != nil {
		t.Fatal(err)
	}
	// A key ring, as serve runs: with it the service serves the
	// tokens.admin.keys endpoints.
	ring, err := jsstore.NewKeyRing(jsstore.KeyRingConfig{Keys: keyStore, Store: store, Alg: tltoken.AlgEdDSA, MaxTokenAge: 16 * time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	if err := ring.Start(ctx); err != nil {
		t.Fatal(err)
	}
	reg, err := jsstore.NewRegistry(ctx, js, nil, 1, nil)
	if err != nil {
		t.Fatal(err)
	}
	logs := &readyWriter{ready: make(chan struct{})}
	svc, err := handlers.NewService(handlers.Config{
		Ledger: jsstore.New(store), Registry: reg, Ring: ring,
		Defaults: ledger.Policy{AccessTTL: 15 * time.Minute},
		View:     projections.NewView(),
		Log:      slog.New(slog.NewTextHandler(logs, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- svc.Run(runCtx, nc) }()
	t.Cleanup(func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("service stopped with %v", err)
		}
	})
	select {
	case <-logs.ready:
	case err := <-done:
		t.Fatalf("service stopped before it was ready: %v", err)
	case <-ctx.Done():
		t.Fatal("service not ready in time")
	}

	subject, err := micro.ControlSubject(micro.InfoVerb, handlers.ServiceName, "")
	if err != nil {
		t.Fatal(err)
	}
	msg, err := nc.RequestWithContext(ctx, subject, nil)
	if err != nil {
		t.Fatalf("%s: %v", subject, err)
	}
	var info micro.Info
	if err := json.Unmarshal(msg.Data, &info); err != nil {
		t.Fatalf("%s reply: %v", subject, err)
	}
	var subjects []string
	for _, ep := range info.Endpoints {
		subjects = append(subjects, ep.Subject)
	}
	if len(subjects) == 0 {
		t.Fatalf("%s lists no endpoints", subject)
	}
	return subjects
}

// TestAsyncAPIHasEveryEndpoint: every subject the service registers is the
// address of a channel, and every channel under the service's prefix is
// registered (the revocation feed aside), so the document neither misses
// an endpoint nor describes one that is not served.
func TestAsyncAPIHasEveryEndpoint(t *testing.T) {
	doc := readDoc(t, "asyncapi.yaml")
	if !strings.HasPrefix(doc, "asyncapi: 3.") {
		t.Fatal("docs/asyncapi.yaml is not an AsyncAPI 3 document")
	}
	addresses := yamlValues(doc, "address")
	served := registeredEndpoints(t)
	for _, s := range served {
		if !slices.Contains(addresses, s) {
			t.Errorf("endpoint %s is registered but has no channel in docs/asyncapi.yaml", s)
		}
	}
	for _, a := range addresses {
		if strings.HasPrefix(a, "tokens.") && !strings.HasPrefix(a, "tokens.revocations.") && !slices.Contains(served, a) {
			t.Errorf("docs/asyncapi.yaml has a channel %s that the service does not register", a)
		}
	}
}

// TestAsyncAPIHasEveryEventType: every event type of the ledger is the
// name of a message, and every message named like an event type is one.
func TestAsyncAPIHasEveryEventType(t *testing.T) {
	names := yamlValues(readDoc(t, "asyncapi.yaml"), "name")
	types := ledger.EventTypes()
	for _, typ := range types {
		if !slices.Contains(names, string(typ)) {
			t.Errorf("event type %s has no message in docs/asyncapi.yaml", typ)
		}
	}
	for _, n := range names {
		if strings.HasSuffix(n, ".v1") && !slices.Contains(types, ledger.EventType(n)) {
			t.Errorf("docs/asyncapi.yaml has a message %s that is not an event type of ledger", n)
		}
	}
}

// TestEventTypesIsComplete: ledger.EventTypes lists exactly the EventType
// constants declared in package ledger, read from its source.
func TestEventTypesIsComplete(t *testing.T) {
	fset := token.NewFileSet()
	dir := filepath.Join(moduleRoot(t), "ledger")
	files, err := filepath.Glob(filepath.Join(dir, "*.go"))
	if err != nil {
		t.Fatal(err)
	}
	var declared []ledger.EventType
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, name, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, decl := range f.Decls {
			gen, ok := decl.(*ast.GenDecl)
			if !ok || gen.Tok != token.CONST {
				continue
			}
			for _, spec := range gen.Specs {
				vs := spec.(*ast.ValueSpec)
				if id, ok := vs.Type.(*ast.Ident); !ok || id.Name != "EventType" {
					continue
				}
				for _, v := range vs.Values {
					lit, ok := v.(*ast.BasicLit)
					if !ok {
						t.Fatalf("%s: an EventType constant that is not a string literal", fset.Position(v.Pos()))
					}
					s, err := strconv.Unquote(lit.Value)
					if err != nil {
						t.Fatal(err)
					}
					declared = append(declared, ledger.EventType(s))
				}
			}
		}
	}
	listed := ledger.EventTypes()
	slices.Sort(declared)
	sorted := slices.Sorted(slices.Values(listed))
	if !slices.Equal(declared, sorted) {
		t.Fatalf("ledger.EventTypes() = %v, the source declares %v", listed, declared)
	}
}
