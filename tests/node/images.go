package node

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestPodImage is the image of tests/node/testpod.
const TestPodImage = "podwall.test/testpod:1"

// BuildTestImages builds the pause and test-pod images (static Go programs, each the only file
// of its image, made by deploy/image as the agent's is) into the test's temp folder and
// returns their tarballs, for Options.Images.
func BuildTestImages(tb testing.TB) []string {
	tb.Helper()
	_, self, _, ok := runtime.Caller(0)
	require.True(tb, ok)
	here := filepath.Dir(self)
	dir := tb.TempDir()
	var tars []string
	for _, img := range []struct{ pkg, name, tag string }{
		{"./pause", "pause", SandboxImage},
		{"./testpod", "testpod", TestPodImage},
	} {
		bin := filepath.Join(dir, img.name)
		build := exec.Command("go", "build", "-trimpath", "-o", bin, img.pkg)
		build.Dir = here
		build.Env = append(os.Environ(), "CGO_ENABLED=0")
		out, err := build.CombinedOutput()
		require.NoError(tb, err, "build %s: %s", img.pkg, out)
		tar := filepath.Join(dir, img.name+".tar")
		//nolint:gosec // G204: our own image tool
		mk := exec.Command("go", "run", ".", "-binary", bin, "-name", img.name, "-tag", img.tag, "-o", tar)
		mk.Dir = filepath.Join(here, "..", "..", "deploy", "image")
		out, err = mk.CombinedOutput()
		require.NoError(tb, err, "image %s: %s", img.tag, out)
		tars = append(tars, tar)
	}
	return tars
}
