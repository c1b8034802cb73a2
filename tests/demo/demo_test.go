package main

import (
	"os/exec"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/podwall/podwall/tests/proc"
)

// TestDemo runs `make demo`'s program on a freshly built podwall: the demo checks every
// connection it prints against SPEC (compiler.Evaluate) and fails on any difference.
func TestDemo(t *testing.T) {
	bin := proc.BuildPodwall(t)
	out, err := exec.Command("go", "run", ".", "-podwall", bin).CombinedOutput()
	require.NoError(t, err, "%s", out)
	require.Contains(t, string(out), "cleaned up")
}
