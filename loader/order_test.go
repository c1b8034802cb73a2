package loader_test

import (
	"fmt"
	"path/filepath"
	"testing"

	"github.com/cilium/ebpf/link"
	"github.com/stretchr/testify/require"
	"github.com/vishvananda/netlink"

	"github.com/podwall/podwall/bpf"
	"github.com/podwall/podwall/loader"
	"github.com/podwall/podwall/loader/loadertest"
	"github.com/podwall/podwall/tests/topo"
)

// TestEnsureFirstPutsPodwallAheadAgain: a program attached ahead of podwall's that passes
// everything opens an isolated pod; EnsureFirst finds it and puts podwall first again,
// leaving the other program in place, and a restarted Loader keeps the moved attachment.
func TestEnsureFirstPutsPodwallAheadAgain(t *testing.T) {
	for _, mode := range loadertest.Modes(t) {
		t.Run(string(mode), func(t *testing.T) {
			e := newEnv(t, mode)
			l, ifindex := e.openAttached(t)
			to := e.isolate(t, l)
			displaced, err := l.EnsureFirst()
			require.NoError(t, err)
			require.Empty(t, displaced, "podwall is first")

			e.tp.Node.Intrude(t, ifindex, mode == loader.ModeTCX)
			require.NoError(t, topo.TCPEcho(e.client.NS, to), "the program ahead passes what podwall would drop")

			displaced, err = l.EnsureFirst()
			require.NoError(t, err)
			require.Equal(t, []loader.Displaced{{Ifindex: ifindex, Direction: "egress"}}, displaced)
			require.ErrorIs(t, topo.TCPEcho(e.client.NS, to), topo.ErrNoAnswer, "podwall judges first again")
			hooks := e.hooks(t, ifindex)[string(mode)+"/egress"]
			require.Len(t, hooks, 2, "the other program stays")
			require.Equal(t, []string{"to_pod", "intruder"}, []string{hooks[0].Name, hooks[1].Name})
			displaced, err = l.EnsureFirst()
			require.NoError(t, err)
			require.Empty(t, displaced)

			require.NoError(t, l.Close())
			l = e.open(t)
			require.NoError(t, l.Maps().Endpoints.Put(uint32(ifindex), e.entry(bpf.ModeIsolate)))
			require.Equal(t, []int{ifindex}, l.Attached())
			require.Equal(t, pinNames(mode, ifindex), e.pins(t))
			require.ErrorIs(t, topo.TCPEcho(e.client.NS, to), topo.ErrNoAnswer, "after a restart")
			displaced, err = l.EnsureFirst()
			require.NoError(t, err)
			require.Empty(t, displaced)
			require.NoError(t, l.Detach(ifindex))
			require.Len(t, e.hooks(t, ifindex)[string(mode)+"/egress"], 1, "detach removes podwall's, not the other")
		})
	}
}

// TestDetachAfterEnsureFirstLeavesNoPin: the link EnsureFirst put ahead is detached with its
// pin, so the interface can be attached again by the same Loader.
func TestDetachAfterEnsureFirstLeavesNoPin(t *testing.T) {
	for _, mode := range loadertest.Modes(t) {
		t.Run(string(mode), func(t *testing.T) {
			e := newEnv(t, mode)
			l, ifindex := e.openAttached(t)
			e.tp.Node.Intrude(t, ifindex, mode == loader.ModeTCX)
			displaced, err := l.EnsureFirst()
			require.NoError(t, err)
			require.Len(t, displaced, 1)

			require.NoError(t, l.Detach(ifindex))
			require.Empty(t, e.pins(t), "no pin left")
			require.Len(t, e.hooks(t, ifindex)[string(mode)+"/egress"], 1, "the other program only")
			require.NoError(t, l.Attach(ifindex), "attached again")
			require.Equal(t, pinNames(mode, ifindex), e.pins(t))
		})
	}
}

// TestEnsureFirstPutsBackWhatAnotherToolRemoved: podwall's tcx link detached, or the clsact
// qdisc deleted, by another tool leaves the pod unguarded; EnsureFirst attaches podwall again.
func TestEnsureFirstPutsBackWhatAnotherToolRemoved(t *testing.T) {
	for _, mode := range loadertest.Modes(t) {
		t.Run(string(mode), func(t *testing.T) {
			e := newEnv(t, mode)
			l, ifindex := e.openAttached(t)
			to := e.isolate(t, l)

			if mode == loader.ModeTCX {
				pinned, err := link.LoadPinnedLink(filepath.Join(loader.StateDir(e.cfg.BPFFS), "links", fmt.Sprintf("%d-egress", ifindex)), nil)
				require.NoError(t, err)
				require.NoError(t, pinned.Detach())
				require.NoError(t, pinned.Close())
			} else {
				lk, err := e.tp.Node.Handle().LinkByIndex(ifindex)
				require.NoError(t, err)
				require.NoError(t, e.tp.Node.Handle().QdiscDel(&netlink.GenericQdisc{QdiscAttrs: netlink.QdiscAttrs{
					LinkIndex: lk.Attrs().Index, Handle: netlink.MakeHandle(0xffff, 0), Parent: netlink.HANDLE_CLSACT}, QdiscType: "clsact"}))
			}
			require.NoError(t, topo.TCPEcho(e.client.NS, to), "unguarded")

			displaced, err := l.EnsureFirst()
			require.NoError(t, err)
			require.NotEmpty(t, displaced)
			for _, d := range displaced {
				require.NoError(t, d.Err)
			}
			require.ErrorIs(t, topo.TCPEcho(e.client.NS, to), topo.ErrNoAnswer, "guarded again")
			displaced, err = l.EnsureFirst()
			require.NoError(t, err)
			require.Empty(t, displaced)
		})
	}
}
