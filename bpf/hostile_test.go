package bpf

import (
	"encoding/binary"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/stretchr/testify/require"

	"github.com/podwall/podwall/tests/frames"
)

// The attacks of SPEC 8 on the programs alone: each test here failed before the defence it
// names. tests/e2e sends the same attacks as real traffic between namespaces.

const rsSpoofed = PodwallReasonREASON_SPOOFED

// fromPodAction runs from_pod on a frame the pod sends and returns its action.
func (f *fixture) fromPodAction(frame []byte) uint32 {
	f.tb.Helper()
	return run(f.tb, f.objs.FromPod, frame)
}

func (f *fixture) entries() int {
	f.tb.Helper()
	return len(f.ctFlows())
}

// arp is an IPv4-over-Ethernet ARP request whose sender claims the address spa.
func arp(spa [4]byte) []byte {
	b := make([]byte, 28)
	binary.BigEndian.PutUint16(b[0:], 1)      // Ethernet
	binary.BigEndian.PutUint16(b[2:], 0x0800) // IPv4
	b[4], b[5] = 6, 4
	binary.BigEndian.PutUint16(b[6:], 1) // request
	copy(b[14:], spa[:])
	return ether(0x0806, b)
}

func TestFromPodDropsForgedSources(t *testing.T) {
	syn := uint8(frames.TCPSyn)
	linkLocal := "fe80::1"
	tests := []struct {
		name   string
		frame  []byte
		passes bool
	}{
		{"own IPv4", out4(worldV4, udp(5353, 53)), true},
		{"own IPv6", out6(worldV6, tcp(40000, 443, syn)), true},
		{"another pod's IPv4, udp", v4{src: xV4, dst: worldV4}.frame(udp(8080, 40002)), false},
		{"another pod's IPv4, tcp syn", v4{src: xV4, dst: worldV4}.frame(tcp(8080, 40002, syn)), false},
		{"another pod's IPv4, echo", v4{src: xV4, dst: worldV4}.frame(icmp4(8, 0, 9, nil)), false},
		{"another pod's IPv6, udp", v6{src: xV6, dst: worldV6}.frame(udp(8080, 40002)), false},
		{"the node's address", v4{src: hostV4, dst: worldV4}.frame(udp(53, 40002)), false},
		{"the node's IPv6 address", v6{src: hostV6, dst: worldV6}.frame(udp(53, 40002)), false},
		{"an ICMP error in another's name", v4{src: xV4, dst: worldV4}.frame(icmp4(3, 3, 0, nil)), false},
		{"link-local neighbour solicitation", v6{src: linkLocal, dst: "ff02::1:ff00:10"}.frame(icmp6(135, 0, 0, nil)), true},
		{"unspecified source, duplicate address detection", v6{src: "::", dst: "ff02::1:ff00:10"}.frame(icmp6(135, 0, 0, nil)), true},
		{"link-local listener report", v6{src: linkLocal, dst: "ff02::16"}.frame(icmp6(143, 0, 0, nil)), true},
		{"link-local udp", v6{src: linkLocal, dst: worldV6}.frame(udp(5353, 53)), false},
		{"link-local echo", v6{src: linkLocal, dst: worldV6}.frame(icmp6(128, 0, 9, nil)), false},
		{"arp for its own address", arp([4]byte{10, 0, 0, 10}), true},
		{"arp probe", arp([4]byte{}), true},
		{"arp claiming another pod's address", arp([4]byte{10, 0, 0, 20}), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t)
			before := f.stats()
			action := f.fromPodAction(tt.frame)
			spoofed := f.stats()[rsSpoofed] - before[rsSpoofed]
			if tt.passes {
				require.Equal(t, actNext, action)
				require.Zero(t, spoofed)
				return
			}
			require.Equal(t, uint32(actShot), action)
			require.Equal(t, uint64(1), spoofed, "counted as spoofed")
			require.Zero(t, f.entries(), "a forged packet records no flow")
		})
	}

	t.Run("the drop is an event", func(t *testing.T) {
		f := newFixture(t)
		f.fromPodAction(v4{src: xV4, dst: worldV4}.frame(udp(8080, 40002)))
		evs := f.drainEvents()
		require.Len(t, evs, 1)
		require.Equal(t, uint8(rsSpoofed), evs[0].Reason)
		require.Equal(t, uint8(2), evs[0].Verdict)
		require.Equal(t, ipAddr(xV4), evs[0].Src)
	})

	t.Run("a forged packet refreshes no flow", func(t *testing.T) {
		f := newFixture(t)
		key := ctKey(xV4, worldV4, 8080, 40002, frames.ProtoUDP)
		old := monotonicNow(t) - uint64(100*time.Second)
		f.ctPut(key, PodwallCtEntry{LastSeen: old, Flags: ctOut})
		f.fromPodAction(v4{src: xV4, dst: worldV4}.frame(udp(8080, 40002)))
		e, _ := f.ct(key)
		require.Equal(t, old, e.LastSeen)
	})

	t.Run("an interface without its entry sends nothing, and records nothing", func(t *testing.T) {
		f := newFixture(t)
		require.NoError(t, f.objs.Endpoints.Delete(uint32(podIfindex)))
		before := f.stats()
		require.Equal(t, uint32(actShot), f.fromPodAction(out4(worldV4, udp(5353, 53))))
		require.Equal(t, uint32(actShot), f.fromPodAction(ether(0x0806, make([]byte, 28))), "arp")
		require.Equal(t, uint64(2), f.stats()[rsNoEntry]-before[rsNoEntry])
		_, ok := f.ct(ctKey(podV4, worldV4, 5353, 53, frames.ProtoUDP))
		require.False(t, ok)
		evs := f.drainEvents()
		require.NotEmpty(t, evs)
		require.Equal(t, uint8(rsNoEntry), evs[0].Reason)
	})
}

func TestConntrackIsBoundToTheInterface(t *testing.T) {
	f := newFixture(t)
	setMode(modeIsolate)(f)
	// What a pod on another interface recorded, forging this pod's address (or this pod's
	// own flow, moved): no reply passes on it here.
	other := ctKey(podV4, worldV4, 8080, 40002, frames.ProtoUDP)
	other.Ifindex = podIfindex + 1
	f.ctPut(other, PodwallCtEntry{LastSeen: monotonicNow(t), Flags: ctOut})
	_, reason := f.toPod(in4(worldV4, udp(40002, 8080)))
	require.Equal(t, rsIsolated, reason)

	// An ICMP error passes only when it quotes a flow of the pod it goes to, on its
	// interface.
	quoted := func(src, dst string) []byte {
		return v4{src: src, dst: dst}.packet(udp(8080, 40002))
	}
	f.fromPod(out4(worldV4, udp(8080, 40002)))
	f.do(t, []step{
		pass("error about the pod's flow", in4(worldV4, icmp4(3, 3, 0, quoted(podV4, worldV4))), rsICMPError),
		drop("error quoting another source", in4(worldV4, icmp4(3, 3, 0, quoted(xV4, worldV4))), rsIsolated),
	})
	f.ctPut(ctKey(xV4, worldV4, 8080, 40002, frames.ProtoUDP), PodwallCtEntry{LastSeen: monotonicNow(t), Flags: ctOut})
	f.do(t, []step{
		drop("error quoting another pod's tracked flow", in4(worldV4, icmp4(3, 3, 0, quoted(xV4, worldV4))), rsIsolated),
	})
}

func TestTheNodeIsWhereAPacketComesFrom(t *testing.T) {
	f := newFixture(t)
	fromNode := &ebpf.RunOptions{Data: in4(worldV4, tcp(40000, 9999, frames.TCPSyn)), Context: skbContext(podIfindex, 0)}
	_, reason := f.toPodWith(fromNode)
	require.Equal(t, rsHost, reason, "the node's stack, whatever its source")

	forwarded := &ebpf.RunOptions{Data: in4(hostV4, tcp(40001, 9999, frames.TCPSyn)), Context: skbContext(podIfindex, forwardedFrom)}
	_, reason = f.toPodWith(forwarded)
	require.Equal(t, rsNoRule, reason, "a forwarded packet with the node's address is the world's")
	evs := f.drainEvents()
	require.NotEmpty(t, evs)
	require.Equal(t, uint32(0), evs[len(evs)-1].Identity, "identity ID_WORLD")

	forwarded6 := &ebpf.RunOptions{Data: in6(hostV6, udp(1, 2)), Context: skbContext(podIfindex, forwardedFrom)}
	_, reason = f.toPodWith(forwarded6)
	require.Equal(t, rsNoRule, reason)
}

func TestLengthsMustAgree(t *testing.T) {
	syn := uint8(frames.TCPSyn)
	setLen4 := func(frame []byte, n uint16) []byte {
		binary.BigEndian.PutUint16(frame[14+2:], n)
		return frame
	}
	setLen6 := func(frame []byte, n uint16) []byte {
		binary.BigEndian.PutUint16(frame[14+4:], n)
		return frame
	}
	padded := append(in4(xV4, tcp(40010, 80, syn)), make([]byte, 6)...)
	f := newFixture(t)
	f.do(t, []step{
		pass("lengths that agree", in4(xV4, tcp(40000, 80, syn)), rsAllow),
		pass("a frame padded past its packet", padded, rsAllow),
		drop("IPv4 total length past the frame", setLen4(in4(xV4, tcp(40001, 80, syn)), 20+20+100), rsMalformed),
		drop("IPv4 total length under its header", setLen4(in4(xV4, tcp(40002, 80, syn)), 16), rsMalformed),
		drop("TCP header past the total length", setLen4(in4(xV4, tcp(40003, 80, syn)), 20+10), rsMalformed),
		drop("UDP header past the total length", setLen4(in4(worldV4, udp(4096, 53)), 20+4), rsMalformed),
		drop("IPv6 payload length past the frame", setLen6(in6(xV6, tcp(40004, 80, syn)), 200), rsMalformed),
		drop("TCP header past the IPv6 payload", setLen6(in6(xV6, tcp(40005, 80, syn)), 12), rsMalformed),
		drop("an extension header past the IPv6 payload", setLen6(v6{src: xV6, dst: podV6, exts: []ext6{optsHdr(frames.NHDest, 1)}}.frame(tcp(40006, 80, syn)), 8), rsMalformed),
	})
	// A quoted packet is read only within the error that quotes it.
	f.fromPod(out4(worldV4, udp(1, 2)))
	quoted := v4{src: podV4, dst: worldV4}.packet(udp(1, 2))
	f.do(t, []step{
		pass("an error quoting a flow of the pod", in4(worldV4, icmp4(3, 3, 0, quoted)), rsICMPError),
		drop("the same error, its quote past its length", setLen4(in4(worldV4, icmp4(3, 3, 0, quoted)), 20+8+10), rsNoRule),
	})
}

func TestTCPFlowsCloseAndGoUnanswered(t *testing.T) {
	for _, clk := range clocks(t) {
		t.Run(clk.name, func(t *testing.T) {
			f := newFixture(t, clk.setup)
			setMode(modeIsolate)(f)
			// An unanswered SYN, and a connection the pod opened, answered, then closed.
			f.fromPod(out4(worldV4, tcp(40000, 443, frames.TCPSyn)))
			f.fromPod(out4(worldV4, tcp(40001, 443, frames.TCPSyn)))
			f.fromPod(out4(worldV4, tcp(40002, 443, frames.TCPSyn)))
			f.do(t, []step{
				pass("answered", in4(worldV4, tcp(443, 40001, frames.TCPSyn|frames.TCPAck)), rsReply),
				pass("answered, to be closed", in4(worldV4, tcp(443, 40002, frames.TCPSyn|frames.TCPAck)), rsReply),
			})
			f.fromPod(out4(worldV4, tcp(40002, 443, frames.TCPFin|frames.TCPAck)))
			e, _ := f.ct(ctKey(podV4, worldV4, 40002, 443, frames.ProtoTCP))
			require.Equal(t, uint8(ctOut|ctAnswered|ctClosing), e.Flags)
			// Past the SYN's timeout (60 s) and the close's (10 s), far within an open one's (2 h).
			f.age(clk.unit, 61*time.Second)
			f.do(t, []step{
				drop("an unanswered SYN opens nothing for long", in4(worldV4, tcp(443, 40000, frames.TCPSyn|frames.TCPAck)), rsIsolated),
				pass("an answered connection lives on", in4(worldV4, tcp(443, 40001, frames.TCPAck)), rsReply),
				drop("a closed connection is no pinhole", in4(worldV4, tcp(443, 40002, frames.TCPAck)), rsIsolated),
			})
		})
	}

	t.Run("a SYN on a closing inbound flow is judged as new", func(t *testing.T) {
		f := newFixture(t)
		f.do(t, []step{
			pass("opened by a rule", in4(xV4, tcp(40000, 80, frames.TCPSyn)), rsAllow),
			pass("established", in4(xV4, tcp(40000, 80, frames.TCPRst)), rsEstablished),
		})
		e, _ := f.ct(ctKey(podV4, xV4, 80, 40000, frames.ProtoTCP))
		require.Equal(t, uint8(ctIn|ctClosing), e.Flags)
		f.do(t, []step{pass("the SYN of a new connection", in4(xV4, tcp(40000, 80, frames.TCPSyn)), rsAllow)})
		e, _ = f.ct(ctKey(podV4, xV4, 80, 40000, frames.ProtoTCP))
		require.Equal(t, uint8(ctIn), e.Flags, "a new flow")
	})
}

func TestFragmentVerdictsAgeOut(t *testing.T) {
	f := newFixture(t)
	f.do(t, []step{
		pass("first fragment", v4{src: worldV4, dst: podV4, id: 9, mf: true}.frame(udp(4096, 53)), rsAllow),
		pass("a later one at once", v4{src: worldV4, dst: podV4, id: 9, fragOff: 10, mf: true}.frame(raw(frames.ProtoUDP, 16)), rsFragment),
	})
	f.age(1, 31*time.Second) // frag_timeout_ns is 30 s
	f.do(t, []step{
		drop("a later one after the timeout", v4{src: worldV4, dst: podV4, id: 9, fragOff: 20}.frame(raw(frames.ProtoUDP, 16)), rsNoRule),
	})
}

func TestEachPodHasItsShareOfConntrack(t *testing.T) {
	f := newFixture(t, func(s *PodwallSpecs, _ *ebpf.CollectionSpec) {
		setVar(t, s.CtEndpointMax, uint32(2))
	})
	f.fromPod(out4(worldV4, udp(5000, 53)))
	f.fromPod(out4(worldV4, udp(5001, 53)))
	before := f.stats()
	f.fromPod(out4(worldV4, udp(5002, 53)))
	require.Equal(t, uint64(1), f.stats()[PodwallReasonREASON_CT_QUOTA]-before[PodwallReasonREASON_CT_QUOTA])
	_, ok := f.ct(ctKey(podV4, worldV4, 5002, 53, frames.ProtoUDP))
	require.False(t, ok, "over the pod's share")
	var n PodwallCtCount
	require.NoError(t, f.objs.CtUsed.Lookup(uint32(podIfindex), &n))
	require.Equal(t, int64(2), n.Entries)

	// Another interface has a share of its own.
	other := ctKey(podV4, worldV4, 5003, 53, frames.ProtoUDP)
	other.Ifindex = podIfindex + 1
	require.NoError(t, f.objs.CtUsed.Put(uint32(podIfindex+1), PodwallCtCount{}))
	require.NoError(t, f.objs.CtUsed.Lookup(uint32(podIfindex+1), &n))
	require.Zero(t, n.Entries)

	// The collector gives the share back as entries go.
	var run PodwallCtGcRun
	f.ctPut(ctKey(podV4, worldV4, 5000, 53, frames.ProtoUDP), PodwallCtEntry{LastSeen: monotonicNow(t) - uint64(3*time.Hour), Flags: ctOut})
	_, err := f.objs.CtGc.Run(&ebpf.RunOptions{Context: run, ContextOut: &run})
	require.NoError(t, err)
	require.Equal(t, uint32(1), run.Expired)
	f.fromPod(out4(worldV4, udp(5002, 53)))
	_, ok = f.ct(ctKey(podV4, worldV4, 5002, 53, frames.ProtoUDP))
	require.True(t, ok, "within the share again")
}
