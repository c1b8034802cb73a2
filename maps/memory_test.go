package maps

import (
	"crypto/rand"
	"encoding/binary"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/stretchr/testify/require"

	"github.com/podwall/podwall/bpf"
)

// BenchmarkMapMemory measures the kernel memory of each map the agent sizes, as the kernel
// accounts it (the map's memlock, which since Linux 6.4 is its real usage): the map empty at
// its default size, and the bytes each entry adds (filled with entries distinct keys, random
// apart from the fields a trie orders by). Preallocated maps (conntrack) cost their whole size
// empty. `make bench` runs it; docs/SCALE.md turns it into the memory of a node.
func BenchmarkMapMemory(b *testing.B) {
	spec, err := bpf.LoadPodwall()
	require.NoError(b, err)
	const entries = 20000
	for _, name := range []string{bpf.PodwallMapEndpoints, bpf.PodwallMapIpcache, bpf.PodwallMapLocalPods,
		bpf.PodwallMapPolIdent, bpf.PodwallMapPolCidr, bpf.PodwallMapPolPort, bpf.PodwallMapPolIcmp,
		bpf.PodwallMapConntrack4, bpf.PodwallMapConntrack6, bpf.PodwallMapCtUsed, bpf.PodwallMapFrags, bpf.PodwallMapRuleCounters} {
		b.Run(name, func(b *testing.B) {
			ms := spec.Maps[name].Copy()
			ms.Pinning = ebpf.PinNone
			var empty, full uint64
			filled := 0
			for range b.N {
				m, err := ebpf.NewMap(ms)
				require.NoError(b, err)
				empty = memlock(b, m)
				n := min(entries, int(ms.MaxEntries))
				filled = fill(b, m, ms, n)
				full = memlock(b, m)
				require.NoError(b, m.Close())
			}
			b.ReportMetric(float64(empty), "B-empty")
			b.ReportMetric(float64(full-empty)/float64(filled), "B/entry")
			b.ReportMetric(float64(ms.MaxEntries), "max-entries")
		})
	}
}

// memlock is the map's memlock; 0 (an empty trie) reads as not reported.
func memlock(b *testing.B, m *ebpf.Map) uint64 {
	b.Helper()
	info, err := m.Info()
	require.NoError(b, err)
	n, _ := info.Memlock()
	return n
}

// fill writes n entries of distinct random keys, and says how many it wrote (an array is
// full from the start: 0).
func fill(b *testing.B, m *ebpf.Map, ms *ebpf.MapSpec, n int) int {
	b.Helper()
	if ms.Type == ebpf.Array || ms.Type == ebpf.PerCPUArray {
		return 1 // its memory does not move: report it per slot through B-empty
	}
	value := make([]byte, ms.ValueSize)
	if ms.Type == ebpf.PerCPUHash || ms.Type == ebpf.LRUCPUHash {
		value = make([]byte, int(ms.ValueSize)*ebpf.MustPossibleCPU())
	}
	key := make([]byte, ms.KeySize)
	for i := range n {
		_, _ = rand.Read(key)
		if ms.Type == ebpf.LPMTrie {
			// A full-length prefix of distinct data: the prefix length leads the key.
			binary.NativeEndian.PutUint32(key, (ms.KeySize-4)*8)
			binary.BigEndian.PutUint32(key[ms.KeySize-4:], uint32(i))
		}
		if err := m.Update(key, value, ebpf.UpdateAny); err != nil {
			b.Fatalf("fill %s: entry %d: %v", ms.Name, i, err)
		}
	}
	return n
}
