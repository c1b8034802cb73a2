package loader_test

import (
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/podwall/podwall/loader"
	"github.com/podwall/podwall/loader/loadertest"
)

// xdpProg is the id of the XDP program attached to the interface in the node's namespace, 0
// when none is.
func (e *env) xdpProg(t *testing.T, name string) uint32 {
	t.Helper()
	l, err := e.tp.Node.Handle().LinkByName(name)
	require.NoError(t, err)
	if x := l.Attrs().Xdp; x != nil && x.Attached {
		return x.ProgId
	}
	return 0
}

func (e *env) uplink(t *testing.T) int {
	t.Helper()
	l, err := e.tp.Node.Handle().LinkByName(e.client.HostIfname)
	require.NoError(t, err)
	return l.Attrs().Index
}

// TestXDP attaches from_world to an uplink in native mode, takes it over in place across a
// restart, detaches it, drops the link of an uplink that went while the agent was down, and
// removes it on uninstall.
func TestXDP(t *testing.T) {
	e := newEnv(t, loadertest.Modes(t)[0])
	uplink := e.uplink(t)
	pin := filepath.Join(loader.StateDir(e.cfg.BPFFS), "xdp", strconv.Itoa(uplink))

	// Loaders live as long as the test, not the subtest that opened them.
	outer := t
	l := e.open(t)
	require.NoError(t, l.AttachXDP(uplink, loader.XDPNative))
	require.NoError(t, l.AttachXDP(uplink, loader.XDPNative), "attaching again does nothing")
	first := e.xdpProg(t, e.client.HostIfname)
	require.NotZero(t, first)
	require.FileExists(t, pin)
	require.Equal(t, []int{uplink}, l.XDPAttached())

	t.Run("taken over in place by the next loader", func(t *testing.T) {
		require.NoError(t, l.Close())
		require.Equal(t, first, e.xdpProg(t, e.client.HostIfname), "attached while no loader runs")
		l = e.open(outer)
		require.Equal(t, []int{uplink}, l.XDPAttached())
		now := e.xdpProg(t, e.client.HostIfname)
		require.NotZero(t, now)
		require.NotEqual(t, first, now, "the new loader's program")
	})

	t.Run("detached", func(t *testing.T) {
		require.NoError(t, l.DetachXDP(uplink))
		require.Zero(t, e.xdpProg(t, e.client.HostIfname))
		require.NoFileExists(t, pin)
		require.Empty(t, l.XDPAttached())
	})

	t.Run("an uplink that went while no loader ran", func(t *testing.T) {
		gone := e.tp.AddClient("gone")
		goneLink, err := e.tp.Node.Handle().LinkByName(gone.HostIfname)
		require.NoError(t, err)
		require.NoError(t, l.AttachXDP(goneLink.Attrs().Index, loader.XDPNative))
		require.NoError(t, l.Close())
		deleteLink(t, e, gone.HostIfname)
		l = e.open(outer)
		require.Empty(t, l.XDPAttached())
		_, err = os.Stat(filepath.Join(loader.StateDir(e.cfg.BPFFS), "xdp", strconv.Itoa(goneLink.Attrs().Index)))
		require.ErrorIs(t, err, os.ErrNotExist)
	})

	t.Run("removed by uninstall", func(t *testing.T) {
		require.NoError(t, l.AttachXDP(uplink, loader.XDPNative))
		require.NoError(t, l.Uninstall())
		require.Zero(t, e.xdpProg(t, e.client.HostIfname))
	})
}

// TestXDPTaken: an uplink whose XDP hook holds another tool's program is left to it.
func TestXDPTaken(t *testing.T) {
	e := newEnv(t, loadertest.Modes(t)[0])
	uplink := e.uplink(t)
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Type:         ebpf.XDP,
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, 2), asm.Return()},
		License:      "Dual BSD/GPL",
	})
	require.NoError(t, err)
	defer prog.Close()
	var theirs link.Link
	require.NoError(t, e.tp.Node.Do(func() error {
		theirs, err = link.AttachXDP(link.XDPOptions{Program: prog, Interface: uplink, Flags: link.XDPDriverMode})
		return err
	}))
	defer theirs.Close()
	before := e.xdpProg(t, e.client.HostIfname)

	l := e.open(t)
	err = l.AttachXDP(uplink, loader.XDPNative)
	require.ErrorIs(t, err, loader.ErrXDPTaken)
	require.ErrorIs(t, err, unix.EBUSY)
	require.Equal(t, before, e.xdpProg(t, e.client.HostIfname), "the other tool's program stays")
	require.Empty(t, l.XDPAttached())
}
