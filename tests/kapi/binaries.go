package kapi

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// Version is the Kubernetes release the binaries are built from; it names their cache dir
// and must equal the k8s.io/kubernetes version in tests/k8s/build/go.mod (a test checks).
const Version = "v1.37.2"

// BinDirEnv names a directory holding kube-apiserver, etcd and kubectl, used instead of the
// per-machine cache.
const BinDirEnv = "PODWALL_K8S_BIN"

var errNotExecutable = errors.New("not an executable file")

type binaries struct {
	apiserver, etcd, kubectl string
}

// BinDir is where tests/k8s/build.sh puts the binaries, unless BinDirEnv says otherwise.
func BinDir() string {
	if dir := os.Getenv(BinDirEnv); dir != "" {
		return dir
	}
	cache := os.Getenv("PODWALL_CACHE")
	if cache == "" {
		cache = "/var/cache/podwall"
	}
	return filepath.Join(cache, "k8s-"+Version)
}

func findBinaries(tb testing.TB) binaries {
	tb.Helper()
	dir := BinDir()
	b := binaries{
		apiserver: filepath.Join(dir, "kube-apiserver"),
		etcd:      filepath.Join(dir, "etcd"),
		kubectl:   filepath.Join(dir, "kubectl"),
	}
	for _, path := range []string{b.apiserver, b.etcd, b.kubectl} {
		fi, err := os.Stat(path)
		if err == nil {
			if fi.Mode().IsRegular() && fi.Mode().Perm()&0o111 != 0 {
				continue
			}
			err = fmt.Errorf("%s: %w", path, errNotExecutable)
		}
		tb.Fatalf("kapi: kubernetes %s binaries missing (%v): run `make k8s-bins` (tests/k8s/build.sh), "+
			"or set %s to a directory holding kube-apiserver, etcd and kubectl", Version, err, BinDirEnv)
	}
	return b
}
