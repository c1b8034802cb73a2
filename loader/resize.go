package loader

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/cilium/ebpf"
	"go.uber.org/zap"
)

// resized is a pinned map whose size a load changes (the agent's --map-size or
// --conntrack-size changed between two runs). Its entries are copied into a new map of the new
// size, which the new programs use; the new map takes the pin only once those programs are
// attached (commit), so that until then the running programs keep the old map and a crash
// leaves the old state whole under its pin.
type resized struct {
	name, pin string
	old, new  *ebpf.Map
}

// resize makes, for each pinned map whose size spec changes and whose shape it keeps, a new
// map of the new size holding the pinned one's entries. A map of another shape is left to the
// load, which refuses it (ErrIncompatible). On error, nothing attached or pinned has changed.
func (l *Loader) resize(spec *ebpf.CollectionSpec) (_ []resized, err error) {
	var out []resized
	defer func() {
		if err != nil {
			for _, r := range out {
				r.close()
			}
		}
	}()
	for name, ms := range spec.Maps {
		if isDataSection(name) {
			continue
		}
		pin := filepath.Join(l.mapsDir(), name)
		old, err := ebpf.LoadPinnedMap(pin, nil)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("open pinned map %s: %w", pin, err)
		}
		same := ms.Copy()
		same.MaxEntries = old.MaxEntries()
		if old.MaxEntries() == ms.MaxEntries || same.Compatible(old) != nil {
			_ = old.Close()
			continue
		}
		r := resized{name: name, pin: pin, old: old}
		fresh := ms.Copy()
		fresh.Pinning = ebpf.PinNone
		if r.new, err = ebpf.NewMap(fresh); err != nil {
			_ = old.Close()
			return nil, fmt.Errorf("create map %s of %d entries: %w", name, ms.MaxEntries, err)
		}
		out = append(out, r)
		n, err := copyEntries(old, r.new, ebpf.UpdateAny)
		if err != nil {
			return nil, fmt.Errorf("resize map %s from %d to %d entries: %w", name, old.MaxEntries(), ms.MaxEntries, err)
		}
		l.log.Info("resizing pinned map", zap.String("map", name), zap.Uint32("from", old.MaxEntries()),
			zap.Uint32("to", ms.MaxEntries), zap.Int("entries", n))
	}
	return out, nil
}

// copyEntries writes every entry of from into to, and says how many it copied. With
// UpdateNoExist it only adds the keys to lacks.
func copyEntries(from, to *ebpf.Map, flags ebpf.MapUpdateFlags) (int, error) {
	key := make([]byte, from.KeySize())
	value := make([]byte, from.ValueSize())
	n := 0
	it := from.Iterate()
	for it.Next(&key, &value) {
		err := to.Update(key, value, flags)
		switch {
		case errors.Is(err, ebpf.ErrKeyExist) && flags == ebpf.UpdateNoExist:
			continue
		case err != nil:
			return n, fmt.Errorf("entry %d: %w (the new size may be too small for what the map holds)", n+1, err)
		}
		n++
	}
	if err := it.Err(); err != nil {
		return n, fmt.Errorf("read: %w", err)
	}
	return n, nil
}

// commit gives the pin to the new map, once the programs that use it are attached: the
// entries the old programs added since the first copy (flows opened meanwhile) are copied
// too, then the new map is pinned beside the old one and renamed over it, so that the pin
// never goes missing.
func (r resized) commit() error {
	if _, err := copyEntries(r.old, r.new, ebpf.UpdateNoExist); err != nil {
		return fmt.Errorf("resize map %s: %w", r.name, err)
	}
	tmp := r.pin + newSuffix
	_ = os.Remove(tmp) // left by an agent that stopped here
	if err := r.new.Pin(tmp); err != nil {
		return fmt.Errorf("pin map %s: %w", tmp, err)
	}
	if err := os.Rename(tmp, r.pin); err != nil {
		return fmt.Errorf("replace the pin of map %s: %w", r.name, err)
	}
	return nil
}

func (r resized) close() {
	_ = r.old.Close()
	_ = r.new.Close()
}
