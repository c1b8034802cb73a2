package maps

import (
	"errors"
	"fmt"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// ErrMapFull is returned when a map has no room for an entry the desired state needs.
var ErrMapFull = errors.New("map full")

// table is one BPF map with typed keys and values and the contents the applier believes it
// holds.
type table[K comparable, V comparable] struct {
	m       *ebpf.Map
	name    string
	present map[K]V
}

func newTable[K comparable, V comparable](m *ebpf.Map, name string) *table[K, V] {
	return &table[K, V]{m: m, name: name}
}

// load reads the whole map: on start, to diff against what a previous agent left pinned, and
// after a failed apply.
func (t *table[K, V]) load() error {
	present := make(map[K]V)
	var (
		k K
		v V
	)
	it := t.m.Iterate()
	for it.Next(&k, &v) {
		present[k] = v
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("read map %s: %w", t.name, err)
	}
	t.present = present
	return nil
}

// put writes every entry of desired that is missing or different.
func (t *table[K, V]) put(desired map[K]V) error {
	var keys []K
	var vals []V
	for k, v := range desired {
		if old, ok := t.present[k]; ok && old == v {
			continue
		}
		keys = append(keys, k)
		vals = append(vals, v)
	}
	if len(keys) == 0 {
		return nil
	}
	if err := t.update(keys, vals); err != nil {
		return err
	}
	for i, k := range keys {
		t.present[k] = vals[i]
	}
	return nil
}

// differs says whether put or prune would change anything.
func (t *table[K, V]) differs(desired map[K]V) bool {
	if len(desired) != len(t.present) {
		return true
	}
	for k, v := range desired {
		if old, ok := t.present[k]; !ok || old != v {
			return true
		}
	}
	return false
}

// prune deletes every present entry that desired does not have.
func (t *table[K, V]) prune(desired map[K]V) error {
	var keys []K
	for k := range t.present {
		if _, ok := desired[k]; !ok {
			keys = append(keys, k)
		}
	}
	return t.remove(keys)
}

// remove deletes the keys, which the map holds.
func (t *table[K, V]) remove(keys []K) error {
	if len(keys) == 0 {
		return nil
	}
	if err := t.delete(keys); err != nil {
		return err
	}
	for _, k := range keys {
		delete(t.present, k)
	}
	return nil
}

// update writes in one batch where the map type has batch operations, one by one where not
// (LPM tries).
func (t *table[K, V]) update(keys []K, vals []V) error {
	_, err := t.m.BatchUpdate(keys, vals, nil)
	if err == nil {
		return nil
	}
	if !errors.Is(err, ebpf.ErrNotSupported) {
		return t.wrap("update", len(keys), err)
	}
	for i := range keys {
		if err := t.m.Update(&keys[i], &vals[i], ebpf.UpdateAny); err != nil {
			return t.wrap("update", 1, err)
		}
	}
	return nil
}

func (t *table[K, V]) delete(keys []K) error {
	_, err := t.m.BatchDelete(keys, nil)
	if err == nil {
		return nil
	}
	if !errors.Is(err, ebpf.ErrNotSupported) {
		return t.wrap("delete", len(keys), err)
	}
	for i := range keys {
		if err := t.m.Delete(&keys[i]); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return t.wrap("delete", 1, err)
		}
	}
	return nil
}

func (t *table[K, V]) wrap(op string, n int, err error) error {
	// A full hash map answers E2BIG, a full LPM trie ENOSPC.
	if errors.Is(err, unix.E2BIG) || errors.Is(err, unix.ENOSPC) {
		return fmt.Errorf("%s %d entries of map %s (%d entries at most, %d present): %w",
			op, n, t.name, t.m.MaxEntries(), len(t.present), ErrMapFull)
	}
	return fmt.Errorf("%s %d entries of map %s: %w", op, n, t.name, err)
}

func (t *table[K, V]) fill() Fill {
	return Fill{Map: t.name, Entries: len(t.present), Max: t.m.MaxEntries()}
}
