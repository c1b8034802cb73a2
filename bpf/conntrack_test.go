package bpf

import (
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/stretchr/testify/require"

	"github.com/podwall/podwall/tests/frames"
)

func TestConntrackRecordsInboundFlows(t *testing.T) {
	syn := uint8(frames.TCPSyn)
	tests := []struct {
		name  string
		setup func(*fixture)
		frame []byte
		key   CtFlow
		track bool
	}{
		{"tcp allowed by a rule", nil, in4(xV4, tcp(40000, 80, syn)), ctKey(podV4, xV4, 80, 40000, frames.ProtoTCP), true},
		{"udp allowed by a rule, v6", nil, in6(worldV6, udp(5000, 53)), ctKey(podV6, worldV6, 53, 5000, frames.ProtoUDP), true},
		{"echo request allowed by a rule", nil, in4(worldV4, icmp4(8, 0, 3, nil)), ctKey(podV4, worldV4, 3, 0, frames.ProtoICMP), true},
		{"echo request v6 allowed by a rule", nil, in6(worldV6, icmp6(128, 0, 3, nil)), ctKey(podV6, worldV6, 3, 0, frames.ProtoICMPv6), true},
		{"tcp from the node", nil, in4(hostV4, tcp(40000, 9999, syn)), ctKey(podV4, hostV4, 9999, 40000, frames.ProtoTCP), true},
		{"tcp in open mode", setMode(modeOpen), in4(worldV4, tcp(40000, 9999, syn)), ctKey(podV4, worldV4, 9999, 40000, frames.ProtoTCP), true},
		{"echo reply in open mode", setMode(modeOpen), in4(worldV4, icmp4(0, 0, 3, nil)), ctKey(podV4, worldV4, 3, 0, frames.ProtoICMP), false},
		{"other icmp allowed by a rule", nil, in6(worldV6, icmp6(140, 0, 3, nil)), ctKey(podV6, worldV6, 3, 0, frames.ProtoICMPv6), false},
		{"tcp denied", nil, in4(xV4, tcp(40000, 22, syn)), ctKey(podV4, xV4, 22, 40000, frames.ProtoTCP), false},
		{"tcp with no rule", nil, in4(worldV4, tcp(40000, 80, syn)), ctKey(podV4, worldV4, 80, 40000, frames.ProtoTCP), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixtureWith(t, tt.setup)
			before := monotonicNow(t)
			f.toPod(tt.frame)
			e, ok := f.ct(tt.key)
			require.Equal(t, tt.track, ok, "entry")
			if tt.track {
				require.Equal(t, PodwallCtEntry{LastSeen: e.LastSeen, Generation: genMain, Epoch: f.epoch, Flags: ctIn}, e)
				require.GreaterOrEqual(t, e.LastSeen, before)
			}
		})
	}
}

func TestConntrackEntries(t *testing.T) {
	const second = uint64(1e9)
	key := ctKey(podV4, worldV4, 443, 40000, frames.ProtoTCP)
	frame := in4(worldV4, tcp(40000, 443, frames.TCPAck))
	tests := []struct {
		name   string
		entry  PodwallCtEntry // LastSeen: age in ns; Epoch: the fixture's is 2
		reason PodwallReason
		want   PodwallCtEntry // LastSeen: 0 unchanged, 1 now
	}{
		{"reply, seen just now: not refreshed", PodwallCtEntry{LastSeen: second / 2, Flags: ctOut}, rsReply, PodwallCtEntry{Flags: ctOut | ctAnswered}},
		{"reply, seen a while ago: refreshed", PodwallCtEntry{LastSeen: 10 * second, Flags: ctOut}, rsReply, PodwallCtEntry{LastSeen: 1, Flags: ctOut | ctAnswered}},
		{"established, refreshed", PodwallCtEntry{LastSeen: 10 * second, Generation: genMain, Flags: ctIn}, rsEstablished, PodwallCtEntry{LastSeen: 1, Generation: genMain, Epoch: 2, Flags: ctIn}},
		{"expired reply is judged", PodwallCtEntry{LastSeen: 3 * 3600 * second, Flags: ctOut}, rsNoRule, PodwallCtEntry{Flags: ctOut}},
		{"expired inbound flow is judged", PodwallCtEntry{LastSeen: 3 * 3600 * second, Generation: genMain, Flags: ctIn}, rsNoRule, PodwallCtEntry{Generation: genMain, Flags: ctIn}},
		{"old generation is judged", PodwallCtEntry{LastSeen: 10 * second, Generation: genMain + 5, Flags: ctIn}, rsNoRule, PodwallCtEntry{Generation: genMain + 5, Flags: ctIn}},
		{"neither bit is judged", PodwallCtEntry{LastSeen: 10 * second, Generation: genMain}, rsNoRule, PodwallCtEntry{Generation: genMain}},
		// The epoch vouches for the generation: the endpoint is not looked at.
		{"current epoch passes on it", PodwallCtEntry{LastSeen: second / 2, Generation: genMain + 5, Epoch: 2, Flags: ctIn}, rsEstablished, PodwallCtEntry{Generation: genMain + 5, Epoch: 2, Flags: ctIn}},
		{"old epoch, old generation is judged", PodwallCtEntry{LastSeen: second / 2, Generation: genMain + 5, Epoch: 0, Flags: ctIn}, rsNoRule, PodwallCtEntry{Generation: genMain + 5, Flags: ctIn}},
		{"old epoch, current generation takes the epoch", PodwallCtEntry{LastSeen: second / 2, Generation: genMain, Epoch: 0, Flags: ctIn}, rsEstablished, PodwallCtEntry{Generation: genMain, Epoch: 2, Flags: ctIn}},
	}
	for _, clk := range clocks(t) {
		for _, tt := range tests {
			t.Run(clk.name+"/"+tt.name, func(t *testing.T) {
				f := newFixture(t, clk.setup)
				require.Equal(t, uint32(2), f.epoch)
				now := clk.now(t)
				entry := tt.entry
				entry.LastSeen = now - tt.entry.LastSeen/clk.unit
				f.ctPut(key, entry)
				_, reason := f.toPod(frame)
				require.Equal(t, tt.reason, reason)
				got, ok := f.ct(key)
				require.True(t, ok)
				want := tt.want
				switch want.LastSeen {
				case 0:
					want.LastSeen = entry.LastSeen
				case 1:
					require.GreaterOrEqual(t, got.LastSeen, now)
					require.LessOrEqual(t, got.LastSeen, clk.now(t))
					want.LastSeen = got.LastSeen
				}
				require.Equal(t, want, got)
			})
		}
	}

	t.Run("an allowed flow over an expired entry starts over", func(t *testing.T) {
		f := newFixture(t)
		key := ctKey(podV4, xV4, 80, 40000, frames.ProtoTCP)
		f.ctPut(key, PodwallCtEntry{LastSeen: monotonicNow(t) - 3*3600*second, Generation: 9, Flags: ctOut})
		_, reason := f.toPod(in4(xV4, tcp(40000, 80, frames.TCPSyn)))
		require.Equal(t, rsAllow, reason)
		e, _ := f.ct(key)
		require.Equal(t, uint8(ctIn), e.Flags, "the expired CT_OUT is gone")
		require.Equal(t, uint32(genMain), e.Generation)
	})

	t.Run("an epoch in the middle of a change vouches for no flow", func(t *testing.T) {
		f := newFixture(t)
		key := ctKey(podV4, worldV4, 443, 40000, frames.ProtoTCP)
		f.ctPut(key, PodwallCtEntry{LastSeen: monotonicNow(t), Generation: genMain + 5, Epoch: 3, Flags: ctIn})
		require.NoError(t, f.objs.Epoch.Put(uint32(0), uint32(3)))
		_, reason := f.toPod(in4(worldV4, tcp(40000, 443, frames.TCPAck)))
		require.Equal(t, rsNoRule, reason)
	})

	t.Run("in open mode, a reply passes on the pod's flow", func(t *testing.T) {
		f := newFixture(t)
		setMode(modeOpen)(f)
		f.fromPod(out4(xV4, tcp(80, 40000, frames.TCPSyn)))
		_, reason := f.toPod(in4(xV4, tcp(40000, 80, frames.TCPSyn|frames.TCPAck)))
		require.Equal(t, rsReply, reason)
		e, _ := f.ct(ctKey(podV4, xV4, 80, 40000, frames.ProtoTCP))
		require.Equal(t, uint8(ctOut|ctAnswered), e.Flags, "still the pod's own flow, answered")
	})
}

func TestConntrackTimeouts(t *testing.T) {
	for _, clk := range clocks(t) {
		t.Run(clk.name, func(t *testing.T) {
			f := newFixture(t, clk.setup, func(s *PodwallSpecs, _ *ebpf.CollectionSpec) {
				setVar(t, s.CtTimeoutUdpNs, uint64(time.Millisecond))
				setVar(t, s.CtTimeoutIcmpNs, uint64(time.Millisecond))
			})
			f.fromPod(out4(worldV4, udp(5353, 53)))
			f.fromPod(out4(worldV4, icmp4(8, 0, 4, nil)))
			f.fromPod(out4(worldV4, tcp(40000, 443, frames.TCPSyn)))
			// A tick at 100 Hz is 10 ms; two ticks later the entries are a tick old at least.
			time.Sleep(25 * time.Millisecond)
			f.do(t, []step{
				drop("udp reply after its timeout", in4(worldV4, udp(53, 5353)), rsNoRule),
				drop("echo reply after its timeout", in4(worldV4, icmp4(0, 0, 4, nil)), rsNoRule),
				pass("tcp keeps its own", in4(worldV4, tcp(443, 40000, frames.TCPAck)), rsReply),
			})
		})
	}
}

// clock is one of conntrack's two clocks: jiffies once jiffy_ns is set (as the agent loads
// the programs), else the coarse monotonic clock in ns.
type clock struct {
	name  string
	setup func(*PodwallSpecs, *ebpf.CollectionSpec)
	unit  uint64 // ns a unit of last_seen
	now   func(testing.TB) uint64
}

func clocks(tb testing.TB) []clock {
	jns, err := JiffyNS()
	require.NoError(tb, err)
	return []clock{
		{"jiffies", func(s *PodwallSpecs, _ *ebpf.CollectionSpec) { setVar(tb, s.JiffyNs, jns) }, jns, jiffies},
		{"coarse ns", func(*PodwallSpecs, *ebpf.CollectionSpec) {}, 1, monotonicNow},
	}
}

// jiffies is the kernel's jiffies64, read by a program that stores it in an array.
func jiffies(tb testing.TB) uint64 {
	tb.Helper()
	m, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 8, MaxEntries: 1})
	require.NoError(tb, err)
	defer m.Close()
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Type: ebpf.SchedCLS,
		Instructions: asm.Instructions{
			asm.FnJiffies64.Call(),
			asm.StoreMem(asm.RFP, -8, asm.R0, asm.DWord),
			asm.StoreImm(asm.RFP, -16, 0, asm.Word),
			asm.LoadMapPtr(asm.R1, m.FD()),
			asm.Mov.Reg(asm.R2, asm.RFP), asm.Add.Imm(asm.R2, -16),
			asm.Mov.Reg(asm.R3, asm.RFP), asm.Add.Imm(asm.R3, -8),
			asm.Mov.Imm(asm.R4, 0),
			asm.FnMapUpdateElem.Call(),
			asm.Return(),
		},
		License: "Dual BSD/GPL",
	})
	require.NoError(tb, err)
	defer prog.Close()
	_, err = prog.Run(&ebpf.RunOptions{Data: make([]byte, 14)})
	require.NoError(tb, err)
	var j uint64
	require.NoError(tb, m.Lookup(uint32(0), &j))
	return j
}

func TestJiffyNS(t *testing.T) {
	jns, err := JiffyNS()
	require.NoError(t, err)
	require.Contains(t, []uint64{1e7, 4e6, 3333333, 1e6}, jns, "1e9 / CONFIG_HZ")
	// The ticks counted in half a second of the clock must add up to it, within a slack that
	// a virtual machine needs (its tick can run tens of ms late and then catch up, at either
	// end) and that stays well under what a wrong HZ is off: 20% or more (250 against 300).
	const window = 500 * time.Millisecond
	slack := window/10 + 2*time.Duration(jns)
	start, j0 := time.Now(), jiffies(t)
	time.Sleep(window)
	ticks, elapsed := jiffies(t)-j0, time.Since(start)
	counted := time.Duration(ticks * jns)
	require.GreaterOrEqual(t, counted, window-slack, "%d ticks in %v", ticks, elapsed)
	require.LessOrEqual(t, counted, elapsed+slack, "%d ticks in %v", ticks, elapsed)
}

func TestFragmentEntries(t *testing.T) {
	f := newFixture(t)
	f.toPod(v4{src: worldV4, dst: podV4, id: 0xbeef, mf: true}.frame(udp(5000, 53)))
	f.toPod(v6{src: worldV6, dst: podV6, exts: []ext6{fragHdr(0, true, 0xdeadbeef)}}.frame(tcp(1, 22, frames.TCPSyn)))
	f.toPod(v4{src: xV4, dst: podV4, id: 1}.frame(udp(5000, 53)))
	want := map[PodwallFragKey]uint8{
		{Src: ipAddr(worldV4), Dst: ipAddr(podV4), Id: 0xbeef, Proto: frames.ProtoUDP}:     1, // VERDICT_PASS
		{Src: ipAddr(worldV6), Dst: ipAddr(podV6), Id: 0xdeadbeef, Proto: frames.ProtoTCP}: 2, // VERDICT_DROP
	}
	got := map[PodwallFragKey]uint8{}
	var k PodwallFragKey
	var e PodwallFragEntry
	it := f.objs.Frags.Iterate()
	for it.Next(&k, &e) {
		got[k] = e.Verdict
	}
	require.NoError(t, it.Err())
	require.Equal(t, want, got)
}

// A conntrack or fragment table that refuses an update costs the packet nothing: it keeps its
// verdict and REASON_CT_FULL counts. A hash of one entry stands for a full table (an LRU map
// makes room instead).
func TestTableFull(t *testing.T) {
	f := newFixture(t, func(_ *PodwallSpecs, spec *ebpf.CollectionSpec) {
		for _, name := range []string{PodwallMapConntrack4, PodwallMapConntrack6, PodwallMapFrags} {
			spec.Maps[name].Type = ebpf.Hash
			spec.Maps[name].MaxEntries = 1
		}
	})
	full := func() uint64 { return f.stats()[PodwallReasonREASON_CT_FULL] }
	f.do(t, []step{
		pass("first flow", in4(xV4, tcp(40000, 80, frames.TCPSyn)), rsAllow),
		pass("first fragment, of a protocol not tracked", v6{src: allowedV6, dst: podV6, exts: []ext6{fragHdr(0, true, 1)}}.frame(raw(47, 100)), rsAllow),
	})
	require.Zero(t, full())
	f.do(t, []step{
		pass("second flow", in4(xV4, tcp(40001, 80, frames.TCPSyn)), rsAllow),
		drop("second first fragment", v4{src: worldV4, dst: podV4, id: 2, mf: true}.frame(tcp(1, 22, frames.TCPSyn)), rsDeny),
	})
	require.Equal(t, uint64(2), full())
	f.do(t, []step{
		drop("a fragment whose first did not fit is judged", v4{src: worldV4, dst: podV4, id: 2, fragOff: 10}.frame(raw(frames.ProtoTCP, 100)), rsNoRule),
	})
	f.fromPod(out4(worldV4, udp(5353, 53)))
	require.Equal(t, uint64(3), full(), "from_pod counts too")
}

// The policy's flags say which fields any rule constrains: the others are not looked up, so
// vectors stored for them, even ones that match no rule, change nothing. A field that does
// not apply to the packet (ports of ICMP, the type of TCP) uses its wildcard mask.
func TestUnconstrainedFieldsAreNotLookedUp(t *testing.T) {
	const pol = 20
	tcpFrame, icmpFrame := in4(xV4, tcp(40000, 80, frames.TCPSyn)), in4(xV4, icmp4(8, 0, 1, nil))
	tests := []struct {
		name  string
		flag  uint32
		frame []byte
		want  PodwallReason
	}{
		{"identity", 1, tcpFrame, rsNoRule},
		{"cidr", 2, tcpFrame, rsNoRule},
		{"source port", 4, tcpFrame, rsNoRule},
		{"destination port", 8, tcpFrame, rsNoRule},
		{"icmp", 16, icmpFrame, rsNoRule},
		{"source port of icmp", 4, icmpFrame, rsAllow},
		{"destination port of icmp", 8, icmpFrame, rsAllow},
		{"icmp of tcp", 16, tcpFrame, rsAllow},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t)
			// One rule, bit 0, in every mask, the wildcards included; the field entries that
			// hold the packet match no rule.
			all := bits(0)
			rec := PodwallPolicy{WildIdent: all, WildCidr: all, WildSport: all, WildDport: all, WildIcmp: all}
			for fam := range rec.Proto {
				for class := range rec.Proto[fam] {
					rec.Proto[fam][class] = all
				}
			}
			none := vec{}
			f.put(f.objs.PolIdent, PodwallIdentKey{Policy: pol, Identity: idX}, none)
			f.put(f.objs.PolCidr, PodwallCidrKey{Prefixlen: 64, Policy: pol, Ip: PodwallIpAddr{Family: 4}}, none)
			f.put(f.objs.PolPort, portKey(pol, 0, 0, 0, 0), none)
			f.put(f.objs.PolPort, portKey(pol, 0, 1, 0, 0), none)
			f.put(f.objs.PolIcmp, PodwallIcmpKey{Policy: pol, Family: 4, Type: 8, Code: 0}, none)

			f.records[pol] = rec
			rejudge(pol, 0)(f)
			_, reason := f.toPod(tt.frame)
			require.Equal(t, rsAllow, reason, "no flags")

			rec.Flags = tt.flag
			f.records[pol] = rec
			rejudge(pol, 0)(f)
			_, reason = f.toPod(tt.frame)
			require.Equal(t, tt.want, reason, "flag %d", tt.flag)
		})
	}
}
