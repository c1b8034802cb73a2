package differential

import (
	"encoding/binary"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/podwall/podwall/bpf"
	"github.com/podwall/podwall/compiler"
	"github.com/podwall/podwall/compiler/compilertest"
	"github.com/podwall/podwall/maps"
	"github.com/podwall/podwall/tests/frames"
	"github.com/podwall/podwall/tests/topo"
)

func TestMain(m *testing.M) { topo.Main(m) }

const (
	// packetsPerCluster are judged against each random cluster before the next one.
	packetsPerCluster = 250
	// vethPairs give the interfaces that packets arrive on, two per pair.
	vethPairs = 12
	// maxReports is how many disagreements are printed in full.
	maxReports = 5
)

// TestDifferential judges random packets to the endpoints of random clusters with
// compiler.Evaluate and with to_pod through BPF_PROG_TEST_RUN, and fails on any disagreement:
// pass or drop, the reason (the one verdict the stats map counted), and for the packets that
// send an event (drops and newly allowed flows) the deciding rule, the source's identity,
// the policy and the packet as the program read it.
//
// The program keeps state that Evaluate, which judges the first packet of a new flow, does
// not model: conntrack entries of passed flows and the verdicts of first fragments. Both maps
// are emptied after every packet, so each packet is judged as the first of its flow, and an
// ICMP error never finds a tracked flow to pass as.
//
// PODWALL_DIFF_SEED replays a run (with the same PODWALL_DIFF_PACKETS); the seed is logged
// at the start and in every failure.
func TestDifferential(t *testing.T) {
	seed := envUint(t, "PODWALL_DIFF_SEED", uint64(time.Now().UnixNano()))
	packets := int(envUint(t, "PODWALL_DIFF_PACKETS", 100_000))
	replay := fmt.Sprintf("PODWALL_DIFF_SEED=%d PODWALL_DIFF_PACKETS=%d", seed, packets)
	t.Logf("seed %d, %d packets (replay with %s)", seed, packets, replay)

	ns := topo.NewNetns(t, "diff")
	devices := addVeths(t, ns, vethPairs)
	enter(t, ns)
	d := loadDatapath(t, func(s *bpf.PodwallSpecs) error {
		// Small maps: they are emptied after every packet.
		s.Conntrack4.MaxEntries = 1024
		s.Conntrack6.MaxEntries = 1024
		s.Frags.MaxEntries = 1024
		// Every drop and newly allowed flow sends its event: 2^32-1 a second makes the
		// interval of the rate limit 0.
		return s.EventsPerSec.Set(uint32(math.MaxUint32))
	})

	rng := rand.New(rand.NewPCG(seed, 0))
	var reports []string
	disagreements, judged := 0, 0
	xdpDrops, xdpLeft := 0, 0 // drops from_world made, and those it left to tc
	count := map[bpf.Reason]int{}
	for n := 0; judged < packets; n++ {
		c := compilertest.Random(rng, devices)
		s := compiler.Compile(c.Input)
		require.NoError(t, d.applier.Apply(s), "apply cluster %d (%s)", n, replay)
		localPods := maps.Want(s).LocalPods
		for i := range min(packetsPerCluster, packets-judged) {
			ifindex, p := c.RandomPacket(rng)
			w := randomWire(rng, p)
			want := frameVerdict(s, ifindex, w, compiler.Evaluate(s, ifindex, p))
			f := frame(p, w)
			if !p.FromNode && localPods[compiler.AddrKey(p.Dst)] == ifindex {
				// As if it came from another node: from_world may drop it only where
				// to_pod drops it, for the same reason.
				x, err := d.runXDP(f)
				require.NoError(t, err, "cluster %d packet %d: %s (%s)", n, i, describe(p, w), replay)
				if x.action == xdpDrop {
					xdpDrops++
					if want.Pass || x.reason != want.Reason {
						disagreements++
						if len(reports) < maxReports {
							reports = append(reports, fmt.Sprintf("cluster %d packet %d on ifindex %d: from_world dropped it (%v)\n  packet: %s\n  Evaluate: %+v\n%s",
								n, i, ifindex, x, describe(p, w), want, c.Describe(ifindex)))
						}
					}
				} else if !want.Pass {
					xdpLeft++
				}
			}
			got, err := d.judge(ifindex, p.FromNode, f)
			require.NoError(t, err, "cluster %d packet %d: %s (%s)", n, i, describe(p, w), replay)
			judged++
			count[want.Reason]++
			diff := disagreement(ifindex, p, w, want, got)
			if diff == "" {
				continue
			}
			disagreements++
			if len(reports) < maxReports {
				reports = append(reports, fmt.Sprintf("cluster %d packet %d on ifindex %d: %s\n  packet: %s\n  Evaluate: %+v\n  to_pod: %v\n%s",
					n, i, ifindex, diff, describe(p, w), want, got, c.Describe(ifindex)))
			}
		}
	}
	t.Logf("%d packets judged; reasons by Evaluate: %v", judged, count)
	t.Logf("from_world dropped %d of the packets from outside that to_pod drops, and left %d to it (fragments, ICMP errors, frames it does not parse)", xdpDrops, xdpLeft)
	if disagreements > 0 {
		t.Fatalf("%d of %d packets judged differently (seed %d, replay with %s); the first %d:\n\n%s",
			disagreements, judged, seed, replay, len(reports), strings.Join(reports, "\n"))
	}
}

// disagreement says how the program's outcome differs from Evaluate's verdict, "" when it
// does not.
func disagreement(ifindex uint32, p compiler.Packet, w wire, want compiler.Verdict, got outcome) string {
	var diffs []string
	add := func(format string, args ...any) { diffs = append(diffs, fmt.Sprintf(format, args...)) }
	wantAction, wantVerdict := uint32(actShot), uint8(bpf.VerdictDrop)
	switch {
	case want.Audit:
		wantAction, wantVerdict = actNext, bpf.VerdictAudit
	case want.Pass:
		wantAction, wantVerdict = actNext, bpf.VerdictPass
	}
	if got.action != wantAction {
		add("action %d, want %d", int32(got.action), int32(wantAction))
	}
	if got.reason != want.Reason {
		add("reason %v, want %v", got.reason, want.Reason)
	}

	// Drops, audits and the first packets of newly allowed flows send an event.
	wantEvent := !want.Pass || want.Audit || want.Reason == bpf.ReasonAllowRule && opensFlow(p)
	ev := got.event
	switch {
	case ev == nil && wantEvent:
		add("no event")
	case ev != nil && !wantEvent:
		add("an event")
	case ev != nil:
		if r := bpf.Reason(ev.Reason); r != want.Reason {
			add("event reason %v, want %v", r, want.Reason)
		}
		if ev.Verdict != wantVerdict {
			add("event verdict %d, want %d", ev.Verdict, wantVerdict)
		}
		if want.Rule >= 0 && int(ev.Rule) != want.Rule {
			add("rule %d, want %d", ev.Rule, want.Rule)
		}
		if ev.Identity != want.Identity {
			add("identity %d, want %d", ev.Identity, want.Identity)
		}
		if ev.Policy != want.Policy || ev.Ifindex != ifindex {
			add("policy %d on ifindex %d, want %d on %d", ev.Policy, ev.Ifindex, want.Policy, ifindex)
		}
		// A frame dropped for its tags or lengths is not read as a packet: the event tells
		// no more of it than where it went.
		if len(w.tags) > 0 || w.lie > w.pad {
			break
		}
		if ev.Src != compiler.AddrKey(p.Src) || ev.Dst != compiler.AddrKey(p.Dst) || ev.Proto != p.Proto {
			add("event packet %v -> %v proto %d", ev.Src, ev.Dst, ev.Proto)
		}
		if sport, dport := eventPorts(p, w.echoID); ev.Sport != sport || ev.Dport != dport {
			add("event ports %#04x %#04x, want %#04x %#04x", ev.Sport, ev.Dport, sport, dport)
		}
	}
	return strings.Join(diffs, "; ")
}

// opensFlow says whether an allowed packet opens an inbound flow that conntrack follows:
// TCP, UDP and echo requests, not a later fragment.
func opensFlow(p compiler.Packet) bool {
	if p.Fragment == compiler.FragLater {
		return false
	}
	v4 := p.Src.Is4()
	return p.Proto == frames.ProtoTCP || p.Proto == frames.ProtoUDP ||
		v4 && p.Proto == frames.ProtoICMP && p.ICMPType == 8 ||
		!v4 && p.Proto == frames.ProtoICMPv6 && p.ICMPType == 128
}

// eventPorts are event.sport and event.dport as the program fills them, in the byte order
// of the packet: the ports of TCP and UDP, the ICMP type and code and the echo identifier.
func eventPorts(p compiler.Packet, echoID uint16) (uint16, uint16) {
	be := func(a, b byte) uint16 { return binary.NativeEndian.Uint16([]byte{a, b}) }
	switch {
	case p.Fragment == compiler.FragLater:
		return 0, 0
	case p.Proto == frames.ProtoTCP, p.Proto == frames.ProtoUDP:
		return be(byte(p.SrcPort>>8), byte(p.SrcPort)), be(byte(p.DstPort>>8), byte(p.DstPort))
	case p.Src.Is4() && p.Proto == frames.ProtoICMP, p.Src.Is6() && p.Proto == frames.ProtoICMPv6:
		return be(p.ICMPType, p.ICMPCode), be(byte(echoID>>8), byte(echoID))
	}
	return 0, 0
}

func envUint(tb testing.TB, name string, def uint64) uint64 {
	tb.Helper()
	s := os.Getenv(name)
	if s == "" {
		return def
	}
	n, err := strconv.ParseUint(s, 10, 64)
	require.NoError(tb, err, name)
	return n
}

// addVeths adds veth pairs to ns and returns the ifindexes packets may arrive on: both ends
// of each pair and loopback.
func addVeths(tb testing.TB, ns *topo.Netns, pairs int) []uint32 {
	tb.Helper()
	h := ns.Handle()
	devices := []uint32{1}
	for i := range pairs {
		name := fmt.Sprintf("pwd%da", i)
		require.NoError(tb, h.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: name}, PeerName: fmt.Sprintf("pwd%db", i)}))
		for _, n := range []string{name, fmt.Sprintf("pwd%db", i)} {
			l, err := h.LinkByName(n)
			require.NoError(tb, err)
			devices = append(devices, uint32(l.Attrs().Index))
		}
	}
	return devices
}

// enter moves the test's goroutine, locked to its OS thread, into ns until the test ends:
// BPF_PROG_TEST_RUN looks the context's ifindex up in the calling thread's namespace. A
// thread that cannot go back stays locked, so it ends with the goroutine.
func enter(tb testing.TB, ns *topo.Netns) {
	tb.Helper()
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err == nil {
		err = netns.Set(ns.NsHandle())
		if err != nil {
			orig.Close()
		}
	}
	if err != nil {
		runtime.UnlockOSThread()
		tb.Fatalf("enter netns %s: %v", ns.Name, err)
	}
	tb.Cleanup(func() {
		err := netns.Set(orig)
		orig.Close()
		if err == nil {
			runtime.UnlockOSThread()
		}
	})
}
