package probe

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"

	"github.com/podwall/podwall/bpf"
	"github.com/podwall/podwall/loader"
)

// rodata is the section of the programs' `volatile const` settings.
const rodata = ".rodata"

// liveSettings sets spec's constants to those of the to_pod that judges the interface
// ifindex, which the agent set from its flags when it loaded it: the conntrack timeouts and
// quota, and the kernel's tick, in which the node's conntrack entries count their age. Where
// that fails, the copy keeps the agent's defaults, and the error says which and why.
func liveSettings(spec *ebpf.CollectionSpec, bpffs string, ifindex uint32) error {
	copied, err := copyLiveConstants(spec, bpffs, ifindex)
	if copied[jiffyNS] {
		return err
	}
	// The agent's default: the tick as it measures it.
	vs, ok := spec.Variables[jiffyNS]
	if !ok {
		return errors.Join(err, fmt.Errorf("set %s: the program has no such constant", jiffyNS))
	}
	jns, jerr := bpf.JiffyNS()
	if jerr != nil {
		return errors.Join(err, fmt.Errorf("kernel tick unknown, conntrack ages count in ns: %w", jerr))
	}
	if serr := vs.Set(jns); serr != nil {
		return errors.Join(err, fmt.Errorf("set %s: %w", jiffyNS, serr))
	}
	return err
}

// jiffyNS is the constant of the kernel's tick, which the agent measures.
const jiffyNS = "jiffy_ns"

// copyLiveConstants copies the constants of the live program into spec and says which it
// copied.
func copyLiveConstants(spec *ebpf.CollectionSpec, bpffs string, ifindex uint32) (map[string]bool, error) {
	prog, err := loader.AttachedToPod(bpffs, int(ifindex))
	if err != nil {
		return nil, err
	}
	defer prog.Close()
	info, err := prog.Info()
	if err != nil {
		return nil, fmt.Errorf("read the attached program's info: %w", err)
	}
	ids, ok := info.MapIDs()
	if !ok {
		return nil, errors.New("the kernel does not say which maps the attached program uses")
	}
	for _, id := range ids {
		m, err := ebpf.NewMapFromID(id)
		if err != nil {
			return nil, fmt.Errorf("open map %d of the attached program: %w", id, err)
		}
		mi, err := m.Info()
		if err == nil && !strings.HasSuffix(mi.Name, rodata) {
			_ = m.Close()
			continue
		}
		if err != nil {
			_ = m.Close()
			return nil, fmt.Errorf("read the info of map %d of the attached program: %w", id, err)
		}
		copied, err := copyConstants(spec, m, mi)
		_ = m.Close()
		return copied, err
	}
	return nil, fmt.Errorf("the attached program has no %s map", rodata)
}

// copyConstants sets each constant of spec to its value in the live section m, matched by
// name through the section's BTF (an agent of another build may lay the section out
// otherwise), and says which it set. A constant the live section lacks keeps its default, and
// the error names it.
func copyConstants(spec *ebpf.CollectionSpec, m *ebpf.Map, mi *ebpf.MapInfo) (map[string]bool, error) {
	id, ok := mi.BTFID()
	if !ok {
		return nil, fmt.Errorf("the live %s has no BTF to find its constants by", rodata)
	}
	h, err := btf.NewHandleFromID(id)
	if err != nil {
		return nil, fmt.Errorf("open the BTF of the live %s: %w", rodata, err)
	}
	defer func() { _ = h.Close() }()
	types, err := h.Spec(nil)
	if err != nil {
		return nil, fmt.Errorf("read the BTF of the live %s: %w", rodata, err)
	}
	var sec *btf.Datasec
	if err := types.TypeByName(rodata, &sec); err != nil {
		return nil, fmt.Errorf("find %s in the live program's BTF: %w", rodata, err)
	}
	value := make([]byte, m.ValueSize())
	if err := m.Lookup(uint32(0), &value); err != nil {
		return nil, fmt.Errorf("read the live %s: %w", rodata, err)
	}
	live := map[string][]byte{}
	for _, v := range sec.Vars {
		if bv, ok := v.Type.(*btf.Var); ok && int(v.Offset+v.Size) <= len(value) {
			live[bv.Name] = value[v.Offset : v.Offset+v.Size]
		}
	}
	copied := map[string]bool{}
	var missing []string
	for name, vs := range spec.Variables {
		if vs.SectionName != rodata {
			continue
		}
		b, ok := live[name]
		if !ok || len(b) != int(vs.Size()) {
			missing = append(missing, name)
			continue
		}
		vs.Value = slices.Clone(b)
		copied[name] = true
	}
	if len(missing) > 0 {
		slices.Sort(missing)
		return copied, fmt.Errorf("the live program has no constant %s of this size", strings.Join(missing, ", "))
	}
	return copied, nil
}
