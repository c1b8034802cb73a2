package maps

import (
	"net/netip"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/podwall/podwall/bpf"
	"github.com/podwall/podwall/compiler"
)

func addr(s string) bpf.PodwallIpAddr { return compiler.AddrKey(netip.MustParseAddr(s)) }

// now is the collector's clock when the programs count in ns (jiffy_ns 0, as a collection
// loaded without the loader has it).
func now(t *testing.T) uint64 {
	var ts unix.Timespec
	require.NoError(t, unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts))
	return uint64(ts.Nano())
}

// TestCollectRemovesExpiredAndFlushedEntries: the collector keeps live entries, removes
// expired ones, and with addresses to flush removes every entry that names one of them, on
// the pod's side or the remote's; each pod interface's count goes down with its entries.
func TestCollectRemovesExpiredAndFlushedEntries(t *testing.T) {
	objs := load(t, 0)
	ct := NewConntrack(objs)
	const hour = uint64(3600e9)
	key := func(pod, remote string, ifindex uint32) bpf.CtFlow {
		return bpf.CtFlow{Pod: netip.MustParseAddr(pod), Remote: netip.MustParseAddr(remote), PodPort: 80, RemotePort: 40000, Proto: 6, Ifindex: ifindex}
	}
	t0 := now(t)
	answered := uint8(bpf.CTOut | bpf.CTAnswered)
	entries := map[bpf.CtFlow]bpf.PodwallCtEntry{
		key("10.0.0.2", "10.0.0.9", 7):  {LastSeen: t0, Flags: answered},           // live
		key("10.0.0.2", "10.0.0.8", 7):  {LastSeen: t0 - 3*hour, Flags: answered},  // expired
		key("10.0.0.3", "10.0.0.9", 8):  {LastSeen: t0 - 2*60e9, Flags: bpf.CTOut}, // an unanswered SYN, 2 min old
		key("10.0.0.4", "10.0.0.2", 9):  {LastSeen: t0, Flags: answered},           // remote 10.0.0.4 leaves
		key("10.0.0.5", "10.0.0.6", 10): {LastSeen: t0, Flags: answered},           // pod 10.0.0.5 leaves
		key("fd00::2", "fd00::9", 7):    {LastSeen: t0, Flags: answered},           // live, IPv6
		key("fd00::2", "fd00::8", 7):    {LastSeen: t0 - 3*hour, Flags: answered},  // expired, IPv6
	}
	used := map[uint32]int64{7: 4, 8: 1, 9: 1, 10: 1}
	for k, v := range entries {
		require.NoError(t, k.Table(objs.Conntrack4, objs.Conntrack6).Put(k.Key(), v))
	}
	for ifindex, n := range used {
		require.NoError(t, objs.CtUsed.Put(ifindex, bpf.PodwallCtCount{Entries: n}))
	}

	col, err := ct.Collect(nil, nil)
	require.NoError(t, err)
	capacity := Collection{Capacity4: objs.Conntrack4.MaxEntries(), Capacity6: objs.Conntrack6.MaxEntries()}
	want := capacity
	want.Live4, want.Live6, want.Expired = 3, 1, 3
	require.Equal(t, want, col)
	col, err = ct.Collect([]bpf.PodwallIpAddr{addr("10.0.0.5"), addr("10.0.0.2"), addr("fd00::9")}, nil)
	require.NoError(t, err)
	want = capacity
	want.Flushed = 4
	require.Equal(t, want, col, "10.0.0.2 is the pod of one entry and the remote of another")

	var v bpf.PodwallCtEntry
	var k4 bpf.PodwallCtKey4
	it := objs.Conntrack4.Iterate()
	require.False(t, it.Next(&k4, &v), "an entry is left: %+v", k4)
	require.NoError(t, it.Err())
	var k6 bpf.PodwallCtKey6
	it = objs.Conntrack6.Iterate()
	require.False(t, it.Next(&k6, &v), "an entry is left: %+v", k6)
	require.NoError(t, it.Err())
	// The counts of interfaces that are no endpoint went to 0 and are gone.
	var n bpf.PodwallCtCount
	for ifindex := range used {
		require.ErrorIs(t, objs.CtUsed.Lookup(ifindex, &n), ebpf.ErrKeyNotExist, "count of %d", ifindex)
	}
	// The flush list is empty again.
	var a bpf.PodwallIpAddr
	var mark uint8
	require.False(t, objs.CtFlush.Iterate().Next(&a, &mark))
}

// TestCollectJudgesAgainTheFlowsOfAChangedSource: an address whose identity changed loses
// the flows it opened (inbound, CT_IN), on every pod, and keeps the pods' own flows to it
// (CT_OUT, with or without CT_IN) and the flows of other addresses; and, gone as well, it
// loses all.
func TestCollectJudgesAgainTheFlowsOfAChangedSource(t *testing.T) {
	objs := load(t, 0)
	ct := NewConntrack(objs)
	key := func(pod, remote string, ifindex uint32) bpf.CtFlow {
		return bpf.CtFlow{Pod: netip.MustParseAddr(pod), Remote: netip.MustParseAddr(remote), PodPort: 80, RemotePort: 40000, Proto: 6, Ifindex: ifindex}
	}
	t0 := now(t)
	in, out := uint8(bpf.CTIn|bpf.CTAnswered), uint8(bpf.CTOut|bpf.CTAnswered)
	entries := map[bpf.CtFlow]bpf.PodwallCtEntry{
		key("10.0.0.2", "10.0.0.9", 7): {LastSeen: t0, Flags: in},             // opened by 10.0.0.9: judged again
		key("10.0.0.3", "10.0.0.9", 8): {LastSeen: t0, Flags: in},             // on another pod too
		key("10.0.0.2", "10.0.1.9", 7): {LastSeen: t0, Flags: out},            // the pod's own, to 10.0.1.9: stays
		key("10.0.0.3", "10.0.1.9", 8): {LastSeen: t0, Flags: out | bpf.CTIn}, // the pod's own, then allowed in: stays
		key("10.0.0.2", "10.0.0.8", 7): {LastSeen: t0, Flags: in},             // another source: stays
		key("10.0.0.9", "10.0.0.2", 9): {LastSeen: t0, Flags: in},             // 10.0.0.9's own pod side: stays
	}
	for k, v := range entries {
		require.NoError(t, k.Table(objs.Conntrack4, objs.Conntrack6).Put(k.Key(), v))
	}
	col, err := ct.Collect(nil, []bpf.PodwallIpAddr{addr("10.0.0.9"), addr("10.0.1.9")})
	require.NoError(t, err)
	require.Equal(t, uint32(2), col.Flushed)
	require.Equal(t, uint32(4), col.Live())
	for k := range entries {
		var v bpf.PodwallCtEntry
		err := k.Table(objs.Conntrack4, objs.Conntrack6).Lookup(k.Key(), &v)
		if k.Remote == netip.MustParseAddr("10.0.0.9") {
			require.ErrorIs(t, err, ebpf.ErrKeyNotExist, "%+v", k)
		} else {
			require.NoError(t, err, "%+v", k)
		}
	}
	// Gone and changed at once: gone wins.
	col, err = ct.Collect([]bpf.PodwallIpAddr{addr("10.0.1.9")}, []bpf.PodwallIpAddr{addr("10.0.1.9")})
	require.NoError(t, err)
	require.Equal(t, uint32(2), col.Flushed)
}

// TestApplyFlushesTheConntrackOfAddressesThatLeave: a pod's address that leaves the ipcache
// takes its conntrack entries with it, so a pod that reuses it starts clean.
func TestApplyFlushesTheConntrackOfAddressesThatLeave(t *testing.T) {
	objs := load(t, 0)
	a := NewApplier(objs)
	in := input("allow tcp")
	require.NoError(t, a.Apply(compiler.Compile(in)))
	front := bpf.CtFlow{Pod: netip.MustParseAddr("10.0.0.2"), Remote: netip.MustParseAddr("10.0.0.3"), PodPort: 80, RemotePort: 40000, Proto: 6, Ifindex: 7}
	other := bpf.CtFlow{Pod: netip.MustParseAddr("10.0.0.2"), Remote: netip.MustParseAddr("10.0.1.4"), PodPort: 80, RemotePort: 40000, Proto: 6, Ifindex: 7}
	for _, k := range []bpf.CtFlow{front, other} {
		require.NoError(t, objs.Conntrack4.Put(k.Key(), bpf.PodwallCtEntry{LastSeen: now(t), Flags: bpf.CTIn | bpf.CTAnswered}))
	}

	in.Pods = in.Pods[:2] // other/x and its 10.0.1.4 go
	require.NoError(t, a.Apply(compiler.Compile(in)))
	var e bpf.PodwallCtEntry
	require.NoError(t, objs.Conntrack4.Lookup(front.Key(), &e), "a flow of addresses that stay")
	require.ErrorIs(t, objs.Conntrack4.Lookup(other.Key(), &e), ebpf.ErrKeyNotExist, "a flow of the address that left")
}
