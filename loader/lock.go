package loader

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/podwall/podwall/bpf"
)

// lock takes a flock on a folder and returns the file that holds it: closing it releases
// the lock. A non-blocking lock that is held elsewhere is ErrLocked.
func lock(dir string, how int) (*os.File, error) {
	f, err := os.Open(dir) //nolint:gosec // G304: podwall's own state folder
	if err != nil {
		return nil, fmt.Errorf("open %s to lock it: %w", dir, err)
	}
	if err := unix.Flock(int(f.Fd()), how); err != nil {
		_ = f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("lock %s: %w", dir, ErrLocked)
		}
		return nil, fmt.Errorf("lock %s: %w", dir, err)
	}
	return f, nil
}

// OpenMaps opens the pinned maps read-only, for readers such as `podwall maps`: it waits for
// a Loader that is changing the pins and works while an agent runs. A missing state folder
// is an error wrapping os.ErrNotExist. The events ring buffer cannot be consumed through a
// read-only map.
func OpenMaps(bpffs string) (*bpf.PodwallMaps, error) {
	if bpffs == "" {
		bpffs = DefaultBPFFS
	}
	dir := StateDir(bpffs)
	f, err := lock(dir, unix.LOCK_SH)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	spec, err := bpf.LoadPodwall()
	if err != nil {
		return nil, fmt.Errorf("load spec: %w", err)
	}
	coll := &ebpf.Collection{Maps: map[string]*ebpf.Map{}}
	defer coll.Close()
	for name, ms := range spec.Maps {
		if isDataSection(name) {
			continue
		}
		path := filepath.Join(dir, "maps", name)
		m, err := ebpf.LoadPinnedMap(path, &ebpf.LoadPinOptions{ReadOnly: true})
		if err != nil {
			return nil, fmt.Errorf("open pinned map %s: %w", name, err)
		}
		coll.Maps[name] = m
		if Sizable(name) || name == bpf.PodwallMapLocalPods {
			// The agent sizes these by its flags (local_pods by the endpoints' size): a
			// reader takes the size it finds.
			ms = ms.Copy()
			ms.MaxEntries = m.MaxEntries()
		}
		if err := ms.Compatible(m); err != nil {
			return nil, fmt.Errorf("open pinned map %s: %w: %w", name, ErrIncompatible, err)
		}
	}
	var maps bpf.PodwallMaps
	if err := coll.Assign(&maps); err != nil {
		return nil, fmt.Errorf("assign pinned maps: %w", err)
	}
	return &maps, nil
}
