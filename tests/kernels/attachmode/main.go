package main

import (
	"errors"
	"fmt"
	"os"
	"runtime"

	"golang.org/x/sys/unix"

	"github.com/podwall/podwall/loader"
)

func main() {
	mode, err := probe()
	if err != nil {
		fmt.Fprintln(os.Stderr, "attachmode:", err)
		os.Exit(1)
	}
	fmt.Println(mode)
}

// probe opens a Loader, which loads the programs (the verifier runs) and probes for tcx, and
// uninstalls it again.
func probe() (_ loader.Mode, err error) {
	// The namespace belongs to this thread only; it is never unlocked, so no other goroutine
	// runs in it and it ends with the process.
	runtime.LockOSThread()
	if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
		return "", fmt.Errorf("unshare network namespace: %w", err)
	}
	dir, err := os.MkdirTemp(loader.DefaultBPFFS, "podwall-attachmode-")
	if err != nil {
		return "", fmt.Errorf("create pin folder: %w", err)
	}
	defer func() {
		if rmErr := os.RemoveAll(dir); rmErr != nil {
			err = errors.Join(err, fmt.Errorf("remove pin folder: %w", rmErr))
		}
	}()
	l, err := loader.Open(loader.Config{BPFFS: dir})
	if err != nil {
		return "", fmt.Errorf("open loader: %w", err)
	}
	mode := l.Mode()
	if err := l.Uninstall(); err != nil {
		return "", fmt.Errorf("uninstall loader: %w", err)
	}
	return mode, nil
}
