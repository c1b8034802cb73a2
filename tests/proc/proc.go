// Package proc runs the podwall binary in end-to-end tests: it builds it once per test and
// collects a running process's output safely. Failures fail the test (tb), nothing else.
package proc

import (
	"bytes"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
)

// BuildPodwall builds the podwall binary into the test's temp folder and returns its path.
func BuildPodwall(tb testing.TB) string {
	tb.Helper()
	bin := filepath.Join(tb.TempDir(), "podwall")
	out, err := exec.Command("go", "build", "-o", bin, "github.com/podwall/podwall/cmd/podwall").CombinedOutput()
	require.NoError(tb, err, "build podwall: %s", out)
	return bin
}

// Output collects a process's stdout and stderr while it runs, readable at any time.
type Output struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (o *Output) Write(p []byte) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.b.Write(p)
}

func (o *Output) String() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.b.String()
}
