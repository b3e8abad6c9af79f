package verifier

import (
	"os/exec"
	"strings"
	"testing"
)

// A resource server that imports verifier compiles none of the server:
// not the read models, the endpoints, the JetStream adapter or the worker.
func TestImportsNoServerPackage(t *testing.T) {
	gobin, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("the go command is needed to list imports: %v", err)
	}
	out, err := exec.Command(gobin, "list", "-deps", ".").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	const mod = "github.com/tokenledger/tokenledger/"
	forbidden := []string{"projections", "handlers", "ledger/jsstore", "worker", "audit", "cmd/"}
	for dep := range strings.FieldsSeq(string(out)) {
		rel, ok := strings.CutPrefix(dep, mod)
		if !ok {
			continue
		}
		for _, f := range forbidden {
			if rel == f || strings.HasPrefix(rel, strings.TrimSuffix(f, "/")+"/") {
				t.Errorf("verifier depends on %s", dep)
			}
		}
	}
}
