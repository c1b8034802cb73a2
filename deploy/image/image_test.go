package main

import (
	"archive/tar"
	"bytes"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/stretchr/testify/require"
)

// TestImageRunsPodwall builds the image of a static podwall binary, reads the tarball back as
// a runtime would, and runs the entrypoint it finds in the image's filesystem.
func TestImageRunsPodwall(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "podwall")
	build := exec.Command("go", "build", "-trimpath", "-o", bin, "github.com/podwall/podwall/cmd/podwall")
	build.Dir = "../.."
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	out, err := build.CombinedOutput()
	require.NoError(t, err, "%s", out)

	const tag = "ghcr.io/podwall/podwall:0.1.0-test"
	path := filepath.Join(dir, "image.tar")
	require.NoError(t, write(bin, "podwall", tag, path))
	ref, err := name.NewTag(tag)
	require.NoError(t, err)
	img, err := tarball.ImageFromPath(path, &ref)
	require.NoError(t, err)

	cfg, err := img.ConfigFile()
	require.NoError(t, err)
	require.Equal(t, []string{"/podwall"}, cfg.Config.Entrypoint)
	require.Equal(t, "linux", cfg.OS)
	require.Equal(t, "amd64", cfg.Architecture)
	layers, err := img.Layers()
	require.NoError(t, err)
	require.Len(t, layers, 1, "one layer, the binary")

	// The image's filesystem is the binary alone, executable, byte for byte.
	fs := tar.NewReader(mutate.Extract(img))
	h, err := fs.Next()
	require.NoError(t, err)
	require.Equal(t, "podwall", h.Name)
	require.Equal(t, int64(0o755), h.Mode)
	got, err := io.ReadAll(fs)
	require.NoError(t, err)
	want, err := os.ReadFile(bin)
	require.NoError(t, err)
	require.True(t, bytes.Equal(want, got), "the layer holds the binary")
	_, err = fs.Next()
	require.ErrorIs(t, err, io.EOF)

	extracted := filepath.Join(dir, "entrypoint")
	require.NoError(t, os.WriteFile(extracted, got, 0o755))
	help, err := exec.Command(extracted, "--help").CombinedOutput()
	require.NoError(t, err, "%s", help)
	require.Contains(t, string(help), "Run the node agent")

	// The same binary gives the same image.
	again, err := Image(bin, "podwall")
	require.NoError(t, err)
	d1, err := img.Digest()
	require.NoError(t, err)
	d2, err := again.Digest()
	require.NoError(t, err)
	require.Equal(t, d1, d2, "reproducible")
}
