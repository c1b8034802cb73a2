package loader

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"unsafe"

	"github.com/cilium/ebpf"

	"github.com/podwall/podwall/bpf"
)

// legacyConntrack is the pin of the one conntrack map of earlier versions (keyed by struct
// ct_key, both families), which conntrack4 and conntrack6 replace.
const legacyConntrack = "conntrack"

// migration moves the flows of the legacy conntrack map into the tables of their families, so
// that an upgrade keeps the node's connections: without it, the replies to the connections
// pods opened would be judged as new flows and dropped. Like a resize, it copies before the
// new programs are attached and again once they are (the flows the old programs recorded
// meanwhile), and only then removes the old pin, so that a crash in between leaves it whole.
type migration struct {
	pin string
	old *ebpf.Map
}

// openLegacyConntrack returns the migration of the pinned legacy conntrack, or nil when there
// is none.
func (l *Loader) openLegacyConntrack() (*migration, error) {
	pin := filepath.Join(l.mapsDir(), legacyConntrack)
	old, err := ebpf.LoadPinnedMap(pin, nil)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("open pinned map %s: %w", pin, err)
	}
	if old.KeySize() != uint32(unsafe.Sizeof(bpf.PodwallCtKey{})) || old.ValueSize() != uint32(unsafe.Sizeof(bpf.PodwallCtEntry{})) {
		_ = old.Close()
		return nil, fmt.Errorf("pinned map %s of %d-byte keys and %d-byte values: %w", pin, old.KeySize(), old.ValueSize(), ErrIncompatible)
	}
	return &migration{pin: pin, old: old}, nil
}

// copy writes every flow of the legacy map that v4 and v6 lack into the one of its family,
// and says how many it wrote.
func (m *migration) copy(v4, v6 *ebpf.Map) (int, error) {
	var (
		k bpf.PodwallCtKey
		e bpf.PodwallCtEntry
		n int
	)
	it := m.old.Iterate()
	for it.Next(&k, &e) {
		f, err := bpf.CtFlowOfLegacy(k)
		if err != nil {
			// The data path never wrote such a key; it opens nothing anywhere.
			continue
		}
		err = f.Table(v4, v6).Update(f.Key(), &e, ebpf.UpdateNoExist)
		switch {
		case errors.Is(err, ebpf.ErrKeyExist):
			continue
		case err != nil:
			table := bpf.PodwallMapConntrack6
			if f.Pod.Is4() {
				table = bpf.PodwallMapConntrack4
			}
			return n, fmt.Errorf("move flow %d of %s into %s: %w (--conntrack-size may be too small for the flows it holds)",
				n+1, m.pin, table, err)
		}
		n++
	}
	if err := it.Err(); err != nil {
		return n, fmt.Errorf("read pinned map %s: %w", m.pin, err)
	}
	return n, nil
}

// commit copies what the old programs recorded since the first copy, then removes the old pin.
func (m *migration) commit(v4, v6 *ebpf.Map) error {
	if _, err := m.copy(v4, v6); err != nil {
		return err
	}
	if err := os.Remove(m.pin); err != nil {
		return fmt.Errorf("remove the pin of the moved conntrack: %w", err)
	}
	return nil
}
