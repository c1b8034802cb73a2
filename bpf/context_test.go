package bpf

import (
	"encoding/binary"
	"runtime"
	"testing"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
	"github.com/stretchr/testify/require"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/podwall/podwall/tests/frames"
)

// skbContext is a __sk_buff context for BPF_PROG_TEST_RUN that sets only ingress_ifindex
// (offset 36) and ifindex (offset 40): len, pkt_type, mark, queue_mapping, protocol,
// vlan_present, vlan_tci, vlan_proto and priority come first, all __u32. The kernel takes a
// shorter context and zero-fills the rest.
func skbContext(ifindex, ingress uint32) []byte {
	ctx := make([]byte, 44)
	binary.NativeEndian.PutUint32(ctx[36:], ingress)
	binary.NativeEndian.PutUint32(ctx[40:], ifindex)
	return ctx
}

// TestContextIfindex pins down what skb->ifindex is under BPF_PROG_TEST_RUN (kernel 6.18,
// bpf_prog_test_run_skb): the context's ifindex names a device of the calling thread's network
// namespace, ENODEV when there is none; without a context, or with ifindex 1, the skb is on
// that namespace's loopback, ifindex 1. (ingress_ifindex sets skb_iif, not skb->ifindex.) The
// other tests rely on this and key the endpoint by 1; this one adds a veth pair in a
// network namespace of its own and runs there.
func TestContextIfindex(t *testing.T) {
	f := newFixture(t)
	idx := enterNewNetns(t)
	frame := in4(xV4, tcp(40000, 80, frames.TCPSyn))
	require.NoError(t, f.objs.Endpoints.Put(idx, PodwallEndpointEntry{Ep: PodwallEndpoint{Policy: polMain, Generation: genMain, Mode: modeIsolate}}))

	_, reason := f.toPodWith(&ebpf.RunOptions{Data: frame, Context: skbContext(0, forwardedFrom)})
	require.Equal(t, rsAllow, reason, "no context: loopback, ifindex 1")
	_, reason = f.toPodWith(&ebpf.RunOptions{Data: frame, Context: skbContext(1, forwardedFrom)})
	require.Equal(t, rsEstablished, reason, "ifindex 1: loopback again")
	_, reason = f.toPodWith(&ebpf.RunOptions{Data: in4(xV4, tcp(40001, 80, frames.TCPSyn)), Context: skbContext(idx, forwardedFrom)})
	require.Equal(t, rsIsolated, reason, "the veth's endpoint")

	_, err := f.objs.ToPod.Run(&ebpf.RunOptions{Data: frame, Context: skbContext(idx+100, forwardedFrom)})
	require.ErrorIs(t, err, unix.ENODEV)
}

// enterNewNetns moves the test's goroutine, locked to its thread, into a new network
// namespace with a veth pair, and returns the device's ifindex. Cleanup deletes both and
// returns the thread to its namespace; a thread that cannot return is left locked, so it ends
// with the goroutine.
func enterNewNetns(t *testing.T) uint32 {
	t.Helper()
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		t.Fatalf("get netns: %v", err)
	}
	ns, err := netns.New()
	if err != nil {
		orig.Close()
		runtime.UnlockOSThread()
		t.Fatalf("new netns: %v", err)
	}
	t.Cleanup(func() {
		err := netns.Set(orig)
		ns.Close()
		orig.Close()
		if err == nil {
			runtime.UnlockOSThread()
		}
	})
	h, err := netlink.NewHandleAt(ns)
	require.NoError(t, err)
	t.Cleanup(h.Close)
	require.NoError(t, h.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "pw0"}, PeerName: "pw1"}))
	link, err := h.LinkByName("pw0")
	require.NoError(t, err)
	return uint32(link.Attrs().Index)
}

// TestTypeSizes checks each generated Go type against the size of the C type its map holds.
func TestTypeSizes(t *testing.T) {
	spec, err := LoadPodwall()
	require.NoError(t, err)
	tests := []struct {
		m          string
		key, value uintptr
	}{
		{PodwallMapEndpoints, 4, unsafe.Sizeof(PodwallEndpointEntry{})},
		{PodwallMapIpcache, unsafe.Sizeof(PodwallIpAddr{}), 4},
		{PodwallMapPolIdent, unsafe.Sizeof(PodwallIdentKey{}), unsafe.Sizeof(PodwallRuleVec{})},
		{PodwallMapPolCidr, unsafe.Sizeof(PodwallCidrKey{}), unsafe.Sizeof(PodwallRuleVec{})},
		{PodwallMapPolPort, unsafe.Sizeof(PodwallPortKey{}), unsafe.Sizeof(PodwallRuleVec{})},
		{PodwallMapPolIcmp, unsafe.Sizeof(PodwallIcmpKey{}), unsafe.Sizeof(PodwallRuleVec{})},
		{PodwallMapConntrack4, unsafe.Sizeof(PodwallCtKey4{}), unsafe.Sizeof(PodwallCtEntry{})},
		{PodwallMapConntrack6, unsafe.Sizeof(PodwallCtKey6{}), unsafe.Sizeof(PodwallCtEntry{})},
		{PodwallMapFrags, unsafe.Sizeof(PodwallFragKey{}), unsafe.Sizeof(PodwallFragEntry{})},
		{PodwallMapStats, 4, 8},
	}
	for _, tt := range tests {
		t.Run(tt.m, func(t *testing.T) {
			ms := spec.Maps[tt.m]
			require.Equal(t, uint32(tt.key), ms.KeySize, "key")
			require.Equal(t, uint32(tt.value), ms.ValueSize, "value")
		})
	}
	t.Run(PodwallMapEvents, func(t *testing.T) {
		size, err := btf.Sizeof(spec.Maps[PodwallMapEvents].Value)
		require.NoError(t, err)
		require.Equal(t, int(unsafe.Sizeof(PodwallEvent{})), size)
	})
}
