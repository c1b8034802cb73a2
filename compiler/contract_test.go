package compiler

import (
	"encoding/binary"
	"testing"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/stretchr/testify/require"

	"github.com/podwall/podwall/bpf"
)

// Every generated type has the size its map was declared with, and the LPM key layouts
// give the prefix offsets the compiler uses.
func TestMapTypesMatchSpec(t *testing.T) {
	spec, err := bpf.LoadPodwall()
	require.NoError(t, err)
	sizes := []struct {
		name       string
		key, value any
	}{
		{bpf.PodwallMapEndpoints, uint32(0), bpf.PodwallEndpointEntry{}},
		{bpf.PodwallMapIpcache, bpf.PodwallIpAddr{}, uint32(0)},
		{bpf.PodwallMapPolIdent, bpf.PodwallIdentKey{}, bpf.PodwallRuleVec{}},
		{bpf.PodwallMapPolCidr, bpf.PodwallCidrKey{}, bpf.PodwallRuleVec{}},
		{bpf.PodwallMapPolPort, bpf.PodwallPortKey{}, bpf.PodwallRuleVec{}},
		{bpf.PodwallMapPolIcmp, bpf.PodwallIcmpKey{}, bpf.PodwallRuleVec{}},
		{bpf.PodwallMapConntrack4, bpf.PodwallCtKey4{}, bpf.PodwallCtEntry{}},
		{bpf.PodwallMapConntrack6, bpf.PodwallCtKey6{}, bpf.PodwallCtEntry{}},
		{bpf.PodwallMapFrags, bpf.PodwallFragKey{}, bpf.PodwallFragEntry{}},
		{bpf.PodwallMapStats, uint32(0), uint64(0)},
	}
	for _, s := range sizes {
		m := spec.Maps[s.name]
		require.NotNil(t, m, s.name)
		require.Equal(t, uint32(binary.Size(s.key)), m.KeySize, "%s key", s.name)
		require.Equal(t, uint32(binary.Size(s.value)), m.ValueSize, "%s value", s.name)
	}
	require.Equal(t, uint32(bpf.NumReasons), spec.Maps[bpf.PodwallMapStats].MaxEntries)
	require.Equal(t, ebpf.LPMTrie, spec.Maps[bpf.PodwallMapPolCidr].Type)
	require.Equal(t, ebpf.LPMTrie, spec.Maps[bpf.PodwallMapPolPort].Type)

	var ck bpf.PodwallCidrKey
	require.Equal(t, uintptr(cidrKeyBits/8), unsafe.Offsetof(ck.Ip)+unsafe.Offsetof(ck.Ip.Addr)-unsafe.Sizeof(ck.Prefixlen))
	var pk bpf.PodwallPortKey
	require.Equal(t, uintptr(portKeyBits/8), unsafe.Offsetof(pk.Port)-unsafe.Sizeof(pk.Prefixlen))
	require.Len(t, bpf.PodwallRuleVec{}.Bits, bpf.VecWords)
}
