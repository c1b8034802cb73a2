package loader_test

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
	"github.com/stretchr/testify/require"
	"github.com/vishvananda/netlink"
	"go.uber.org/zap/zaptest"
	"golang.org/x/sys/unix"

	"github.com/podwall/podwall/bpf"
	"github.com/podwall/podwall/compiler"
	"github.com/podwall/podwall/loader"
	"github.com/podwall/podwall/loader/loadertest"
	"github.com/podwall/podwall/tests/topo"
)

func TestMain(m *testing.M) { topo.Main(m) }

const port = 8080

// env is a routed node with two pods and a client, and a pin folder of its own.
type env struct {
	tp     *topo.Topology
	pod    *topo.Pod
	other  *topo.Pod
	client *topo.Client
	cfg    loader.Config
}

func newEnv(t *testing.T, mode loader.Mode) *env {
	t.Helper()
	tp := topo.New(t, topo.Routed)
	e := &env{tp: tp, pod: tp.AddPod("pod"), other: tp.AddPod("other"), client: tp.AddClient("client")}
	e.pod.Echo(t, port)
	e.other.Echo(t, port)
	e.cfg = loader.Config{
		BPFFS:       topo.BPFFS(t),
		Netns:       tp.Node.Path,
		ForceClsact: mode == loader.ModeClsact,
		Logger:      zaptest.NewLogger(t),
	}
	return e
}

func (e *env) open(t *testing.T) *loader.Loader {
	t.Helper()
	l, err := loader.Open(e.cfg)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, l.Close()) })
	// An interface without its entry sends and gets nothing; the agent writes one for each
	// pod it guards. Open lets reach show that the programs pass what they are told to.
	require.NoError(t, l.Maps().Endpoints.Put(uint32(e.pod.HostIfindex), e.entry(bpf.ModeOpen)))
	return l
}

// openAttached opens a Loader and attaches it to the pod's interface.
func (e *env) openAttached(t *testing.T) (*loader.Loader, int) {
	t.Helper()
	l := e.open(t)
	require.NoError(t, l.Attach(e.pod.HostIfindex))
	return l, e.pod.HostIfindex
}

// isolate writes the pod's entry, isolated, and checks that a connection to the pod is
// dropped; it returns where the connection went.
func (e *env) isolate(t *testing.T, l *loader.Loader) netip.AddrPort {
	t.Helper()
	require.NoError(t, l.Maps().Endpoints.Put(uint32(e.pod.HostIfindex), e.entry(bpf.ModeIsolate)))
	to := netip.AddrPortFrom(e.pod.IPv4, port)
	require.ErrorIs(t, topo.TCPEcho(e.client.NS, to), topo.ErrNoAnswer, "isolated")
	return to
}

// entry is the pod's endpoint entry in a mode that needs no policy.
func (e *env) entry(mode uint8) bpf.PodwallEndpointEntry {
	return bpf.PodwallEndpointEntry{Ep: bpf.PodwallEndpoint{Mode: mode,
		Addr4: compiler.AddrKey(e.pod.IPv4), Addr6: compiler.AddrKey(e.pod.IPv6)}}
}

// reach proves traffic flows both ways through the pod's interface, in both families.
func (e *env) reach(t *testing.T) {
	t.Helper()
	for _, a := range []netip.Addr{e.pod.IPv4, e.pod.IPv6} {
		to := netip.AddrPortFrom(a, port)
		require.NoError(t, topo.TCPEcho(e.client.NS, to), "tcp to %s", a)
		require.NoError(t, topo.UDPEcho(e.client.NS, to), "udp to %s", a)
		require.NoError(t, topo.Ping(e.client.NS, a), "ping %s", a)
	}
	require.NoError(t, topo.Ping(e.pod.NS, e.client.IPv4), "ping from the pod")
	require.NoError(t, topo.Ping(e.pod.NS, e.client.IPv6), "ping6 from the pod")
}

// hooked is a program found on a hook of an interface.
type hooked struct {
	Prog ebpf.ProgramID
	Link link.ID // tcx only
	Name string
}

// hooks lists what the kernel has on each hook of an interface, keyed "<mode>/<direction>",
// as the kernel reports it: tcx links through BPF_PROG_QUERY, clsact filters through netlink.
// A kernel without tcx answers the tcx query with EINVAL: it has no tcx programs.
func (e *env) hooks(t *testing.T, ifindex int) map[string][]hooked {
	t.Helper()
	hasTCX := topo.KernelHasTCX(t)
	out := map[string][]hooked{}
	name := func(id ebpf.ProgramID) string {
		p, err := ebpf.NewProgramFromID(id)
		require.NoError(t, err)
		defer p.Close()
		info, err := p.Info()
		require.NoError(t, err)
		return info.Name
	}
	for dir, at := range map[string]ebpf.AttachType{"egress": ebpf.AttachTCXEgress, "ingress": ebpf.AttachTCXIngress} {
		var res *link.QueryResult
		require.NoError(t, e.tp.Node.Do(func() error {
			var err error
			res, err = link.QueryPrograms(link.QueryOptions{Target: ifindex, Attach: at})
			if err != nil && !hasTCX && errors.Is(err, unix.EINVAL) {
				res, err = &link.QueryResult{}, nil
			}
			return err
		}))
		for _, p := range res.Programs {
			lid, _ := p.LinkID()
			out["tcx/"+dir] = append(out["tcx/"+dir], hooked{Prog: p.ID, Link: lid, Name: name(p.ID)})
		}
	}
	nl := e.tp.Node.Handle()
	lk, err := nl.LinkByIndex(ifindex)
	require.NoError(t, err)
	qdiscs, err := nl.QdiscList(lk)
	require.NoError(t, err)
	if !slices.ContainsFunc(qdiscs, func(q netlink.Qdisc) bool { return q.Type() == "clsact" }) {
		return out
	}
	for dir, parent := range map[string]uint32{"egress": netlink.HANDLE_MIN_EGRESS, "ingress": netlink.HANDLE_MIN_INGRESS} {
		filters, err := nl.FilterList(lk, parent)
		require.NoError(t, err)
		for _, f := range filters {
			bf, ok := f.(*netlink.BpfFilter)
			require.True(t, ok, "unexpected filter %v", f)
			id := ebpf.ProgramID(bf.Id)
			out["clsact/"+dir] = append(out["clsact/"+dir], hooked{Prog: id, Name: name(id)})
		}
	}
	return out
}

// requireAttached checks that podwall's two programs, and nothing else, are on the hooks
// of mode, and returns what is there.
func (e *env) requireAttached(t *testing.T, ifindex int, mode loader.Mode) map[string][]hooked {
	t.Helper()
	h := e.hooks(t, ifindex)
	require.Len(t, h, 2, "hooks of ifindex %d: %v", ifindex, h)
	for dir, prog := range map[string]string{"egress": "to_pod", "ingress": "from_pod"} {
		got := h[string(mode)+"/"+dir]
		require.Len(t, got, 1, "%s/%s: %v", mode, dir, h)
		require.Equal(t, prog, got[0].Name)
	}
	return h
}

func (e *env) pins(t *testing.T) []string {
	t.Helper()
	entries, err := os.ReadDir(filepath.Join(loader.StateDir(e.cfg.BPFFS), "links"))
	require.NoError(t, err)
	var names []string
	for _, en := range entries {
		names = append(names, en.Name())
	}
	return names
}

func pinNames(mode loader.Mode, ifindexes ...int) []string {
	var out []string
	for _, i := range ifindexes {
		for _, d := range []string{"egress", "ingress"} {
			name := fmt.Sprintf("%d-%s", i, d)
			if mode == loader.ModeClsact {
				name += "_clsact"
			}
			out = append(out, name)
		}
	}
	slices.Sort(out)
	return out
}

// TestProbeChoosesKernelsBest: with nothing forced, the loader attaches with tcx on a kernel
// that has it (6.6 and later) and falls back to clsact below.
func TestProbeChoosesKernelsBest(t *testing.T) {
	want := loadertest.Best(t)
	e := newEnv(t, want)
	e.cfg.ForceClsact = false
	require.Equal(t, want, e.open(t).Mode(), "tcx from kernel 6.6 on, clsact below")
}

// TestProcessNamespace runs the Loader the way the agent runs under nsenter: with no
// Config.Netns, in the namespace of the thread that calls it (here a thread of the node's).
func TestProcessNamespace(t *testing.T) {
	for _, mode := range loadertest.Modes(t) {
		t.Run(string(mode), func(t *testing.T) {
			e := newEnv(t, mode)
			e.cfg.Netns = ""
			var attached []int
			err := e.tp.Node.Do(func() error {
				l, err := loader.Open(e.cfg)
				if err != nil {
					return err
				}
				if err := l.Maps().Endpoints.Put(uint32(e.pod.HostIfindex), e.entry(bpf.ModeOpen)); err != nil {
					return errors.Join(err, l.Close())
				}
				if err := l.Attach(e.pod.HostIfindex); err != nil {
					return errors.Join(err, l.Close())
				}
				attached = l.Attached()
				return l.Close()
			})
			require.NoError(t, err)
			require.Equal(t, []int{e.pod.HostIfindex}, attached)
			e.requireAttached(t, e.pod.HostIfindex, mode)
			e.reach(t)
		})
	}
}

// TestEnforces proves the programs sit on the right hooks, in both modes: an isolated pod
// gets no new inbound connection (to_pod on egress drops it) but gets the replies to its own
// (from_pod on ingress records them), also while no Loader runs.
func TestEnforces(t *testing.T) {
	for _, mode := range loadertest.Modes(t) {
		t.Run(string(mode), func(t *testing.T) {
			e := newEnv(t, mode)
			e.client.Echo(t, port)
			l, ifindex := e.openAttached(t)
			isolated := e.entry(bpf.ModeIsolate)
			require.NoError(t, l.Maps().Endpoints.Put(uint32(ifindex), isolated))

			outbound, err := topo.DialTCP(t, e.pod.NS, netip.AddrPortFrom(e.client.IPv4, port))
			require.NoError(t, err, "the pod's own connection")
			for _, a := range []netip.Addr{e.pod.IPv4, e.pod.IPv6} {
				require.ErrorIs(t, topo.TCPEcho(e.client.NS, netip.AddrPortFrom(a, port)), topo.ErrNoAnswer, "to %s", a)
			}

			require.NoError(t, l.Close())
			require.ErrorIs(t, topo.TCPEcho(e.client.NS, netip.AddrPortFrom(e.pod.IPv4, port)), topo.ErrNoAnswer,
				"still enforced while no loader runs")
			require.NoError(t, outbound.Echo())

			l = e.open(t)
			require.NoError(t, outbound.Echo())
			e.reach(t)

			require.NoError(t, l.Maps().Endpoints.Delete(uint32(ifindex)))
			require.ErrorIs(t, topo.TCPEcho(e.client.NS, netip.AddrPortFrom(e.pod.IPv4, port)), topo.ErrNoAnswer,
				"an interface without its entry gets nothing")
			require.ErrorIs(t, topo.Ping(e.pod.NS, e.client.IPv4), topo.ErrNoAnswer, "and sends nothing")
		})
	}
}

func TestAttachDetach(t *testing.T) {
	for _, mode := range loadertest.Modes(t) {
		t.Run(string(mode), func(t *testing.T) {
			e := newEnv(t, mode)
			l := e.open(t)
			require.Equal(t, mode, l.Mode())
			ifindex := e.pod.HostIfindex

			require.NoError(t, l.Attach(ifindex))
			require.Equal(t, []int{ifindex}, l.Attached())
			before := e.requireAttached(t, ifindex, mode)
			require.Equal(t, pinNames(mode, ifindex), e.pins(t))
			e.reach(t)

			require.NoError(t, l.Attach(ifindex), "attach again")
			require.Equal(t, before, e.hooks(t, ifindex), "a second attach changes nothing")

			require.Error(t, l.Attach(1<<30), "no such interface")
			require.Equal(t, []int{ifindex}, l.Attached())
			require.Equal(t, pinNames(mode, ifindex), e.pins(t), "a failed attach pins nothing")

			require.NoError(t, l.Detach(ifindex))
			require.Empty(t, l.Attached())
			require.Empty(t, e.hooks(t, ifindex))
			require.Empty(t, e.pins(t))
			e.reach(t)
			require.NoError(t, l.Detach(ifindex), "detach again")
		})
	}
}

func TestRestartKeepsLinksAndMaps(t *testing.T) {
	for _, mode := range loadertest.Modes(t) {
		t.Run(string(mode), func(t *testing.T) {
			e := newEnv(t, mode)
			l, ifindex := e.openAttached(t)
			conn, err := topo.DialTCP(t, e.client.NS, netip.AddrPortFrom(e.pod.IPv6, port))
			require.NoError(t, err)

			// An endpoint of an interface that does not exist: state that only the pins keep.
			const key = uint32(424242)
			want := bpf.PodwallEndpointEntry{Ep: bpf.PodwallEndpoint{Policy: 7, Generation: 9}}
			require.NoError(t, l.Maps().Endpoints.Put(key, want))
			mapID := func(l *loader.Loader) ebpf.MapID {
				info, err := l.Maps().Endpoints.Info()
				require.NoError(t, err)
				id, ok := info.ID()
				require.True(t, ok)
				return id
			}
			firstMap := mapID(l)
			prev := e.requireAttached(t, ifindex, mode)

			for range 3 {
				require.NoError(t, l.Close())
				require.Equal(t, prev, e.hooks(t, ifindex), "closing leaves enforcement in place")
				require.NoError(t, conn.Echo())

				l = e.open(t)
				require.Equal(t, []int{ifindex}, l.Attached())
				require.Equal(t, firstMap, mapID(l), "the pinned map is reused")
				var got bpf.PodwallEndpointEntry
				require.NoError(t, l.Maps().Endpoints.Lookup(key, &got))
				require.Equal(t, want, got)

				now := e.requireAttached(t, ifindex, mode)
				for hook, hs := range now {
					require.NotEqual(t, prev[hook][0].Prog, hs[0].Prog, "%s runs the new program", hook)
					require.Equal(t, prev[hook][0].Link, hs[0].Link, "%s keeps its link", hook)
				}
				require.Equal(t, pinNames(mode, ifindex), e.pins(t))
				require.NoError(t, conn.Echo(), "the established connection survives")
				prev = now
			}
			e.reach(t)
		})
	}
}

// TestModeSwitch: a Loader of the other mode takes over the interfaces of the last one, and
// back, without cutting a connection. Below 6.6 there is no other mode: the same steps (forced
// clsact, then the probe's choice) must keep clsact and the connection, which is what an
// agent there does when its flags change; no run is skipped.
func TestModeSwitch(t *testing.T) {
	best := loadertest.Best(t)
	e := newEnv(t, best)
	ifindex := e.pod.HostIfindex
	l := e.open(t)
	require.Equal(t, best, l.Mode())
	require.NoError(t, l.Attach(ifindex))
	conn, err := topo.DialTCP(t, e.client.NS, netip.AddrPortFrom(e.pod.IPv4, port))
	require.NoError(t, err)
	require.NoError(t, l.Close())

	for _, mode := range []loader.Mode{loader.ModeClsact, best} {
		e.cfg.ForceClsact = mode == loader.ModeClsact
		l := e.open(t)
		require.Equal(t, mode, l.Mode())
		require.Equal(t, []int{ifindex}, l.Attached())
		e.requireAttached(t, ifindex, mode)
		require.Equal(t, pinNames(mode, ifindex), e.pins(t))
		require.NoError(t, conn.Echo())
		e.reach(t)
		require.NoError(t, l.Close())
	}
}

func TestIncompatiblePinLeavesProgramsRunning(t *testing.T) {
	for _, mode := range loadertest.Modes(t) {
		t.Run(string(mode), func(t *testing.T) {
			e := newEnv(t, mode)
			l := e.open(t)
			require.NoError(t, l.Attach(e.pod.HostIfindex))
			require.NoError(t, l.Close())
			before := e.requireAttached(t, e.pod.HostIfindex, mode)

			// A map of another shape where the endpoints map was pinned, as a version with
			// another layout would have left it.
			pin := filepath.Join(loader.StateDir(e.cfg.BPFFS), "maps", "endpoints")
			require.NoError(t, os.Remove(pin))
			m, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.Hash, KeySize: 4, ValueSize: 4, MaxEntries: 1})
			require.NoError(t, err)
			defer m.Close()
			require.NoError(t, m.Pin(pin))

			_, err = loader.Open(e.cfg)
			require.ErrorIs(t, err, loader.ErrIncompatible)
			require.ErrorIs(t, err, ebpf.ErrMapIncompatible)
			require.Equal(t, before, e.hooks(t, e.pod.HostIfindex), "the running programs stay")
			require.Equal(t, pinNames(mode, e.pod.HostIfindex), e.pins(t))
			e.reach(t)

			_, err = loader.Open(e.cfg)
			require.ErrorIs(t, err, loader.ErrIncompatible, "a failed open releases its lock")
		})
	}
}

func TestLocks(t *testing.T) {
	e := newEnv(t, loadertest.Best(t))
	l := e.open(t)
	require.NoError(t, l.Attach(e.pod.HostIfindex))

	_, err := loader.Open(e.cfg)
	require.ErrorIs(t, err, loader.ErrLocked, "one agent at a time")

	maps, err := loader.OpenMaps(e.cfg.BPFFS)
	require.NoError(t, err, "readers work while the agent runs")
	require.NoError(t, l.Maps().Endpoints.Put(uint32(1), bpf.PodwallEndpointEntry{Ep: bpf.PodwallEndpoint{Policy: 3}}))
	var got bpf.PodwallEndpointEntry
	require.NoError(t, maps.Endpoints.Lookup(uint32(1), &got))
	require.Equal(t, uint32(3), got.Ep.Policy)
	require.Error(t, maps.Endpoints.Put(uint32(2), got), "readers cannot write")
	require.NoError(t, maps.Close())

	require.NoError(t, l.Close())
	e.open(t)
}

func TestUninstall(t *testing.T) {
	for _, mode := range loadertest.Modes(t) {
		t.Run(string(mode), func(t *testing.T) {
			e := newEnv(t, mode)
			l := e.open(t)
			require.NoError(t, l.Attach(e.pod.HostIfindex))
			require.NoError(t, l.Attach(e.other.HostIfindex))
			require.NoError(t, l.Uninstall())

			for _, ifindex := range []int{e.pod.HostIfindex, e.other.HostIfindex} {
				require.Empty(t, e.hooks(t, ifindex))
			}
			entries, err := os.ReadDir(e.cfg.BPFFS)
			require.NoError(t, err)
			require.Empty(t, entries, "nothing left under the pin folder")
			e.reach(t)

			_, err = loader.OpenMaps(e.cfg.BPFFS)
			require.ErrorIs(t, err, os.ErrNotExist)
			require.ErrorIs(t, l.Attach(e.pod.HostIfindex), os.ErrNotExist)
		})
	}
}

func TestRemovedInterfaces(t *testing.T) {
	for _, mode := range loadertest.Modes(t) {
		t.Run(string(mode), func(t *testing.T) {
			e := newEnv(t, mode)
			l := e.open(t)
			gone := e.tp.AddPod("gone")
			for _, p := range []*topo.Pod{e.pod, e.other, gone} {
				require.NoError(t, l.Attach(p.HostIfindex))
			}

			// A pod deleted while the agent runs: Detach still cleans up.
			deleteLink(t, e, gone.HostIfname)
			require.NoError(t, l.Detach(gone.HostIfindex))
			require.Equal(t, pinNames(mode, e.pod.HostIfindex, e.other.HostIfindex), e.pins(t))

			// A pod deleted while the agent is down: the next one drops its pins.
			require.NoError(t, l.Close())
			deleteLink(t, e, e.other.HostIfname)
			l = e.open(t)
			require.Equal(t, []int{e.pod.HostIfindex}, l.Attached())
			require.Equal(t, pinNames(mode, e.pod.HostIfindex), e.pins(t))
			e.requireAttached(t, e.pod.HostIfindex, mode)
		})
	}
}

func deleteLink(t *testing.T, e *env, name string) {
	t.Helper()
	nl := e.tp.Node.Handle()
	lk, err := nl.LinkByName(name)
	require.NoError(t, err)
	require.NoError(t, nl.LinkDel(lk))
}

// TestRepairsHalfAttached: a crash between the two hooks of an Attach leaves one; the next
// Loader attaches the other.
func TestRepairsHalfAttached(t *testing.T) {
	for _, mode := range loadertest.Modes(t) {
		t.Run(string(mode), func(t *testing.T) {
			e := newEnv(t, mode)
			l, ifindex := e.openAttached(t)
			require.NoError(t, l.Close())

			ingress := pinNames(mode, ifindex)[1]
			require.Contains(t, ingress, "ingress")
			if mode == loader.ModeClsact {
				// The filter holds the program: drop it with the pin.
				nl := e.tp.Node.Handle()
				lk, err := nl.LinkByIndex(ifindex)
				require.NoError(t, err)
				filters, err := nl.FilterList(lk, netlink.HANDLE_MIN_INGRESS)
				require.NoError(t, err)
				require.Len(t, filters, 1)
				require.NoError(t, nl.FilterDel(filters[0]))
			}
			// Unpinning the last reference to a tcx link detaches it, after an RCU grace period.
			require.NoError(t, os.Remove(filepath.Join(loader.StateDir(e.cfg.BPFFS), "links", ingress)))
			require.Eventually(t, func() bool { return len(e.hooks(t, ifindex)) == 1 }, 2*time.Second, 5*time.Millisecond)

			e.open(t)
			e.requireAttached(t, ifindex, mode)
			require.Equal(t, pinNames(mode, ifindex), e.pins(t))
		})
	}
}

// TestClsactSlotTaken: podwall never replaces another tool's filter in its slot.
func TestClsactSlotTaken(t *testing.T) {
	e := newEnv(t, loader.ModeClsact)
	l := e.open(t)
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Type:         ebpf.SchedCLS,
		License:      "MIT",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, -1), asm.Return()},
	})
	require.NoError(t, err)
	defer prog.Close()
	nl := e.tp.Node.Handle()
	lk, err := nl.LinkByIndex(e.pod.HostIfindex)
	require.NoError(t, err)
	require.NoError(t, nl.QdiscAdd(&netlink.GenericQdisc{
		QdiscAttrs: netlink.QdiscAttrs{LinkIndex: lk.Attrs().Index, Handle: netlink.MakeHandle(0xffff, 0), Parent: netlink.HANDLE_CLSACT},
		QdiscType:  "clsact",
	}))
	foreign := &netlink.BpfFilter{
		FilterAttrs: netlink.FilterAttrs{
			LinkIndex: lk.Attrs().Index, Parent: netlink.HANDLE_MIN_INGRESS,
			Handle: 0x5057, Priority: 1, Protocol: unix.ETH_P_ALL,
		},
		Fd: prog.FD(), Name: "someone_else", DirectAction: true,
	}
	require.NoError(t, nl.FilterAdd(foreign))

	require.ErrorIs(t, l.Attach(e.pod.HostIfindex), loader.ErrHookTaken)
	require.Empty(t, l.Attached())
	require.Empty(t, e.pins(t))
	h := e.hooks(t, e.pod.HostIfindex)
	require.Len(t, h, 1, "only the foreign filter: %v", h)
	require.Len(t, h["clsact/ingress"], 1)
}

func TestConstants(t *testing.T) {
	spec, err := bpf.LoadPodwall()
	require.NoError(t, err)
	var name string
	var size uint32
	for n, v := range spec.Variables {
		if v.Constant() {
			name, size = n, v.Size()
			break
		}
	}
	require.NotEmpty(t, name, "the programs have volatile consts")
	var good, bad any = uint32(1), uint64(1)
	if size == 8 {
		good, bad = uint64(1), uint32(1)
	}

	for _, tc := range []struct {
		name      string
		constants map[string]any
		check     func(t *testing.T, err error)
	}{
		{"known", map[string]any{name: good}, func(t *testing.T, err error) { require.NoError(t, err) }},
		{"unknown", map[string]any{"no_such_constant": good}, func(t *testing.T, err error) {
			require.ErrorIs(t, err, loader.ErrUnknownConstant)
		}},
		{"wrong size", map[string]any{name: bad}, func(t *testing.T, err error) { require.Error(t, err) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, loadertest.Best(t))
			e.cfg.Constants = tc.constants
			l, err := loader.Open(e.cfg)
			tc.check(t, err)
			if err == nil {
				require.NoError(t, l.Close())
			}
		})
	}
}

func TestNotBPFFS(t *testing.T) {
	_, err := loader.Open(loader.Config{BPFFS: t.TempDir()})
	require.ErrorIs(t, err, loader.ErrNotBPFFS)
}

// TestResizeKeepsStateAndEnforcement: an agent started with other map sizes copies the pinned
// maps into maps of the new sizes, moves every hook to programs on them, and only then gives
// them the pins; conntrack's flows go on. Sizes too small for what a map holds fail the open
// and leave the running programs and the pins as they were.
func TestResizeKeepsStateAndEnforcement(t *testing.T) {
	for _, mode := range loadertest.Modes(t) {
		t.Run(string(mode), func(t *testing.T) {
			e := newEnv(t, mode)
			l, ifindex := e.openAttached(t)
			conn, err := topo.DialTCP(t, e.client.NS, netip.AddrPortFrom(e.pod.IPv4, port))
			require.NoError(t, err)
			// Isolated, the pod takes no new connection; the open one passes on its
			// conntrack entry, which only a copied conntrack keeps.
			require.NoError(t, l.Maps().Endpoints.Put(uint32(ifindex), e.entry(bpf.ModeIsolate)))
			require.ErrorIs(t, topo.TCPEcho(e.client.NS, netip.AddrPortFrom(e.pod.IPv4, port), topo.Timeout(topo.DropWait)), topo.ErrNoAnswer, "isolated")
			const key = uint32(424242)
			want := bpf.PodwallEndpointEntry{Ep: bpf.PodwallEndpoint{Policy: 7, Generation: 9}}
			require.NoError(t, l.Maps().Endpoints.Put(key, want))
			require.NoError(t, l.Close())

			// Too small: two endpoints in a map of one.
			e.cfg.MapSizes = map[string]uint32{bpf.PodwallMapEndpoints: 1}
			before := e.requireAttached(t, ifindex, mode)
			_, err = loader.Open(e.cfg)
			require.ErrorContains(t, err, "resize map endpoints from 4096 to 1 entries")
			require.Equal(t, before, e.hooks(t, ifindex), "the running programs stay")
			require.NoError(t, conn.Echo())

			e.cfg.MapSizes = map[string]uint32{bpf.PodwallMapEndpoints: 8192, bpf.PodwallMapConntrack4: 65536, bpf.PodwallMapConntrack6: 65536}
			l, err = loader.Open(e.cfg)
			require.NoError(t, err)
			t.Cleanup(func() { require.NoError(t, l.Close()) })
			require.Equal(t, []int{ifindex}, l.Attached())
			now := e.requireAttached(t, ifindex, mode)
			for hook, hs := range now {
				require.NotEqual(t, before[hook][0].Prog, hs[0].Prog, "%s runs the new program", hook)
			}
			for name, size := range map[string]uint32{bpf.PodwallMapEndpoints: 8192, bpf.PodwallMapConntrack4: 65536, bpf.PodwallMapConntrack6: 65536, bpf.PodwallMapLocalPods: 16384} {
				m, err := ebpf.LoadPinnedMap(filepath.Join(loader.StateDir(e.cfg.BPFFS), "maps", name), nil)
				require.NoError(t, err)
				require.Equal(t, size, m.MaxEntries(), "the pin of %s is the new map", name)
				require.NoError(t, m.Close())
			}
			var got bpf.PodwallEndpointEntry
			require.NoError(t, l.Maps().Endpoints.Lookup(key, &got))
			require.Equal(t, want, got)
			require.NoError(t, conn.Echo(), "the connection's conntrack entry moved with it")
			require.ErrorIs(t, topo.TCPEcho(e.client.NS, netip.AddrPortFrom(e.pod.IPv4, port), topo.Timeout(topo.DropWait)), topo.ErrNoAnswer, "still isolated")
			require.Equal(t, pinNames(mode, ifindex), e.pins(t))
			mapsDir, err := os.ReadDir(filepath.Join(loader.StateDir(e.cfg.BPFFS), "maps"))
			require.NoError(t, err)
			for _, f := range mapsDir {
				require.NotContains(t, f.Name(), "_new", "no pin left beside the maps")
			}
		})
	}
}

// TestUpgradeMovesTheConntrackOfEarlierVersions: the flows of the one conntrack map of earlier
// versions (pinned as "conntrack", struct ct_key) move into the tables of their families when
// this version loads, so a connection opened before the upgrade goes on; the old pin goes.
func TestUpgradeMovesTheConntrackOfEarlierVersions(t *testing.T) {
	for _, mode := range loadertest.Modes(t) {
		t.Run(string(mode), func(t *testing.T) {
			e := newEnv(t, mode)
			l, ifindex := e.openAttached(t)
			conns := map[string]*topo.Conn{}
			for _, a := range []netip.Addr{e.pod.IPv4, e.pod.IPv6} {
				conn, err := topo.DialTCP(t, e.client.NS, netip.AddrPortFrom(a, port))
				require.NoError(t, err)
				conns[a.String()] = conn
			}
			// Isolated, the pod takes no new connection: the open ones pass on their entries.
			require.NoError(t, l.Maps().Endpoints.Put(uint32(ifindex), e.entry(bpf.ModeIsolate)))

			// What an earlier version left: the flows in the one map, none in the new ones.
			legacy, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.Hash, KeySize: uint32(unsafe.Sizeof(bpf.PodwallCtKey{})),
				ValueSize: uint32(unsafe.Sizeof(bpf.PodwallCtEntry{})), MaxEntries: 1024})
			require.NoError(t, err)
			defer legacy.Close()
			var (
				k4 bpf.PodwallCtKey4
				k6 bpf.PodwallCtKey6
				v  bpf.PodwallCtEntry
			)
			var flows []bpf.CtFlow
			for it := l.Maps().Conntrack4.Iterate(); it.Next(&k4, &v); {
				flows = append(flows, bpf.CtFlowOf4(k4))
			}
			for it := l.Maps().Conntrack6.Iterate(); it.Next(&k6, &v); {
				flows = append(flows, bpf.CtFlowOf6(k6))
			}
			require.Len(t, flows, 2, "a flow of each family")
			for _, f := range flows {
				m := f.Table(l.Maps().Conntrack4, l.Maps().Conntrack6)
				require.NoError(t, m.Lookup(f.Key(), &v))
				old := bpf.PodwallCtKey{Pod: compiler.AddrKey(f.Pod), Remote: compiler.AddrKey(f.Remote),
					PodPort: f.PodPort, RemotePort: f.RemotePort, Proto: f.Proto, Ifindex: f.Ifindex}
				require.NoError(t, legacy.Put(old, v))
				require.NoError(t, m.Delete(f.Key()))
			}
			pin := filepath.Join(loader.StateDir(e.cfg.BPFFS), "maps", "conntrack")
			require.NoError(t, legacy.Pin(pin))
			require.NoError(t, l.Close())

			l = e.open(t)
			for _, f := range flows {
				require.NoError(t, f.Table(l.Maps().Conntrack4, l.Maps().Conntrack6).Lookup(f.Key(), &v), "%+v moved", f)
			}
			_, err = os.Stat(pin)
			require.ErrorIs(t, err, os.ErrNotExist, "the old pin is gone")
			for a, conn := range conns {
				require.NoError(t, conn.Echo(), "the connection to %s goes on", a)
			}
		})
	}
}
