// Command image builds podwall's agent image without Docker and without a registry: the
// static podwall binary as the only file of one layer, its entrypoint, written as a Docker
// image tarball that `ctr images import`, `docker load` and `podman load` read.
//
//	go run ./deploy/image -binary bin/podwall-static -tag ghcr.io/podwall/podwall:0.1.0 -o bin/podwall-image.tar
//
// The test node (tests/node) builds its pause and test-pod images the same way, with -name
// naming the entrypoint.
//
// The image is reproducible: the layer's file times and the image's creation time are the
// epoch, so the same binary gives the same digest.
package main

import (
	"archive/tar"
	"bytes"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

func main() {
	binary := flag.String("binary", "", "the static podwall binary")
	tag := flag.String("tag", "", "the image's name and tag, e.g. ghcr.io/podwall/podwall:0.1.0")
	out := flag.String("o", "", "the image tarball to write")
	entry := flag.String("name", "podwall", "the binary's name in the image, its entrypoint /NAME")
	flag.Parse()
	if err := write(*binary, *entry, *tag, *out); err != nil {
		fmt.Fprintln(os.Stderr, "image:", err)
		os.Exit(1)
	}
}

// write builds the image of binary, as /entry, and writes it, named tag, as a tarball at out.
func write(binary, entry, tag, out string) error {
	if binary == "" || tag == "" || out == "" {
		return fmt.Errorf("-binary, -tag and -o are needed")
	}
	ref, err := name.NewTag(tag, name.StrictValidation)
	if err != nil {
		return fmt.Errorf("tag %q: %w", tag, err)
	}
	img, err := Image(binary, entry)
	if err != nil {
		return err
	}
	if err := tarball.WriteToFile(out, ref, img); err != nil {
		return fmt.Errorf("write %s: %w", out, err)
	}
	return nil
}

// Image is the image of the binary: /entry, mode 0755, as the entrypoint, run as root (the
// agent's capabilities come from the DaemonSet).
func Image(binary, entry string) (v1.Image, error) {
	if entry == "" || strings.Contains(entry, "/") {
		return nil, fmt.Errorf("entrypoint name %q: want a file name", entry)
	}
	data, err := os.ReadFile(binary) //nolint:gosec // G304: the binary the caller names
	if err != nil {
		return nil, fmt.Errorf("read the binary: %w", err)
	}
	var layer bytes.Buffer
	tw := tar.NewWriter(&layer)
	if err := tw.WriteHeader(&tar.Header{Name: entry, Mode: 0o755, Size: int64(len(data)), Typeflag: tar.TypeReg, Format: tar.FormatPAX}); err != nil {
		return nil, fmt.Errorf("layer: %w", err)
	}
	if _, err := tw.Write(data); err != nil {
		return nil, fmt.Errorf("layer: %w", err)
	}
	if err := tw.Close(); err != nil {
		return nil, fmt.Errorf("layer: %w", err)
	}
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(layer.Bytes())), nil
	})
	if err != nil {
		return nil, fmt.Errorf("layer: %w", err)
	}
	img, err := mutate.AppendLayers(empty.Image, l)
	if err != nil {
		return nil, fmt.Errorf("append the layer: %w", err)
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	cfg = cfg.DeepCopy()
	cfg.Architecture, cfg.OS = "amd64", "linux"
	cfg.Config.Entrypoint = []string{"/" + entry}
	cfg.Config.User = "0"
	img, err = mutate.ConfigFile(img, cfg)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	return mutate.Canonical(img)
}
