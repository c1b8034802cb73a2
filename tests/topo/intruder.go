package topo

import (
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
	"github.com/stretchr/testify/require"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Intrude attaches to the egress hook of an interface of n (towards the pod behind it), at
// the head of the chain, a program that passes everything, as another tool attaching
// ahead of podwall would: with tcx, or else as a clsact filter of the lowest priority. It
// is removed when the test ends.
func (n *Netns) Intrude(tb testing.TB, ifindex int, tcx bool) {
	tb.Helper()
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Name: "intruder", Type: ebpf.SchedCLS, License: "GPL",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, 0), asm.Return()}, // TC_ACT_OK, TCX_PASS
	})
	require.NoError(tb, err)
	tb.Cleanup(func() { prog.Close() })
	if tcx {
		require.NoError(tb, n.Do(func() error {
			lk, err := link.AttachTCX(link.TCXOptions{Interface: ifindex, Program: prog,
				Attach: ebpf.AttachTCXEgress, Anchor: link.Head()})
			if err == nil {
				tb.Cleanup(func() { lk.Close() })
			}
			return err
		}))
		return
	}
	require.NoError(tb, n.Handle().FilterAdd(&netlink.BpfFilter{
		FilterAttrs: netlink.FilterAttrs{LinkIndex: ifindex, Parent: netlink.HANDLE_MIN_EGRESS,
			Handle: 0x1, Priority: 1, Protocol: unix.ETH_P_ALL},
		Fd: prog.FD(), Name: "intruder", DirectAction: true,
	}))
}
