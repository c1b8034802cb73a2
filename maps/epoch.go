package maps

import (
	"fmt"

	"github.com/cilium/ebpf"

	"github.com/podwall/podwall/bpf"
)

// epoch keeps the node's conntrack epoch (bpf/podwall.h): to_pod passes an inbound flow
// stamped with the current even epoch without looking its endpoint up, so every change to the
// endpoints is framed by two epochs. The odd one, written before, keeps every flow on the path
// that compares generations while endpoints change; the even one, written after, is new, so
// no flow stamped before it passes on it.
type epoch struct {
	m   *ebpf.Map
	cur uint32
}

// zero is the key of the epoch's only element.
var zero uint32

// ReadEpoch reads the node's conntrack epoch from the epoch map. changing says it is odd: an
// agent is changing the endpoints, or an apply failed between its two epochs.
func ReadEpoch(m *ebpf.Map) (value uint32, changing bool, err error) {
	if err := m.Lookup(&zero, &value); err != nil {
		return 0, false, fmt.Errorf("read map %s: %w", bpf.PodwallMapEpoch, err)
	}
	return value, odd(value), nil
}

func odd(v uint32) bool { return v&1 == 1 }

func (e *epoch) load() error {
	var err error
	e.cur, _, err = ReadEpoch(e.m)
	return err
}

func (e *epoch) set(v uint32) error {
	if err := e.m.Update(&zero, &v, ebpf.UpdateExist); err != nil {
		return fmt.Errorf("write map %s: %w", bpf.PodwallMapEpoch, err)
	}
	e.cur = v
	return nil
}

// changing says whether the epoch is odd: an apply failed between its two epochs.
func (e *epoch) changing() bool { return odd(e.cur) }

// around frames the steps that change the endpoints with the two epochs. Between the last step
// and the even epoch it waits for an RCU grace period: a program run (an RCU read-side
// critical section) that reads the even epoch then wholly follows the start of the grace
// period and sees the steps' writes, even on a CPU that reorders loads, so it never stamps a
// flow with the new epoch and an old generation.
func (e *epoch) around(steps ...func() error) []func() error {
	out := []func() error{func() error { return e.set(e.cur | 1) }}
	out = append(out, steps...)
	return append(out, waitForPrograms, func() error { return e.set(e.cur + 1) })
}

// waitForPrograms returns once every BPF program running when it was called has returned.
// The kernel waits for an RCU grace period after an update of a map of maps, so that the
// caller knows no program still uses the old inner map; the map of maps here exists only for
// that wait.
func waitForPrograms() error {
	inner := &ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 4, MaxEntries: 1}
	in, err := ebpf.NewMap(inner)
	if err != nil {
		return fmt.Errorf("wait for running programs: create inner map: %w", err)
	}
	defer in.Close()
	out, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.ArrayOfMaps, KeySize: 4, MaxEntries: 1, InnerMap: inner})
	if err != nil {
		return fmt.Errorf("wait for running programs: create map of maps: %w", err)
	}
	defer out.Close()
	if err := out.Update(&zero, in, ebpf.UpdateAny); err != nil {
		return fmt.Errorf("wait for running programs: update map of maps: %w", err)
	}
	return nil
}
