package bpf

import (
	"testing"

	"github.com/cilium/ebpf"
	"github.com/stretchr/testify/require"

	"github.com/podwall/podwall/tests/frames"
)

const (
	verdictPass = 1
	verdictDrop = 2
)

// be16 is a port as the generated uint16 field holds it: big endian in memory.
func be16(v uint16) uint16 { return v>>8 | v<<8 }

func TestEvents(t *testing.T) {
	tests := []struct {
		name  string
		setup func(*fixture)
		frame []byte
		want  *PodwallEvent // nil: no event
	}{
		{"no rule", nil, in4(worldV4, tcp(40000, 8081, frames.TCPSyn)), &PodwallEvent{
			Src: ipAddr(worldV4), Dst: ipAddr(podV4), Sport: be16(40000), Dport: be16(8081), Proto: frames.ProtoTCP,
			Verdict: verdictDrop, Reason: uint8(rsNoRule)}},
		{"deny rule", nil, in6(xV6, tcp(40000, 22, frames.TCPSyn)), &PodwallEvent{
			Identity: idX, Rule: 6, Src: ipAddr(xV6), Dst: ipAddr(podV6), Sport: be16(40000), Dport: be16(22), Proto: frames.ProtoTCP,
			Verdict: verdictDrop, Reason: uint8(rsDeny)}},
		{"new flow", nil, in4(xV4, tcp(40000, 80, frames.TCPSyn)), &PodwallEvent{
			Identity: idX, Rule: 0, Src: ipAddr(xV4), Dst: ipAddr(podV4), Sport: be16(40000), Dport: be16(80), Proto: frames.ProtoTCP,
			Verdict: verdictPass, Reason: uint8(rsAllow)}},
		{"icmp: type and code, echo identifier", nil, in4(worldV4, icmp4(13, 2, 0x1234, nil)), &PodwallEvent{
			Src: ipAddr(worldV4), Dst: ipAddr(podV4), Sport: 13 | 2<<8, Dport: be16(0x1234), Proto: frames.ProtoICMP,
			Verdict: verdictDrop, Reason: uint8(rsNoRule)}},
		{"malformed", nil, cut(in4(worldV4, udp(1, 2)), 14+20+4), &PodwallEvent{
			Src: ipAddr(worldV4), Dst: ipAddr(podV4), Proto: frames.ProtoUDP,
			Verdict: verdictDrop, Reason: uint8(rsMalformed)}},
		{"isolated", setMode(modeIsolate), in4(xV4, udp(1, 2)), &PodwallEvent{
			Identity: idX, Src: ipAddr(xV4), Dst: ipAddr(podV4), Sport: be16(1), Dport: be16(2), Proto: frames.ProtoUDP,
			Verdict: verdictDrop, Reason: uint8(rsIsolated)}},
		{"allowed, not tracked", nil, in6(allowedV6, raw(47, 8)), nil},
		{"from the node", nil, in4(hostV4, tcp(1, 2, frames.TCPSyn)), nil},
		{"open", setMode(modeOpen), in4(worldV4, tcp(1, 2, frames.TCPSyn)), nil},
		{"no entry", func(f *fixture) {
			require.NoError(t, f.objs.Endpoints.Delete(uint32(podIfindex)))
		}, in4(worldV4, tcp(1, 2, frames.TCPSyn)), &PodwallEvent{
			Src: ipAddr(worldV4), Dst: ipAddr(podV4), Sport: be16(1), Dport: be16(2), Proto: frames.ProtoTCP,
			Verdict: verdictDrop, Reason: uint8(rsNoEntry)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixtureWith(t, tt.setup)
			before := monotonicNow(t)
			f.toPod(tt.frame)
			events := f.drainEvents()
			if tt.want == nil {
				require.Empty(t, events)
				return
			}
			require.Len(t, events, 1)
			got := events[0]
			require.GreaterOrEqual(t, got.Timestamp, before)
			require.LessOrEqual(t, got.Timestamp, monotonicNow(t))
			want := *tt.want
			want.Timestamp, want.Ifindex, want.Policy = got.Timestamp, podIfindex, polMain
			if want.Reason == uint8(rsNoEntry) {
				want.Policy = 0 // no entry, no policy
			}
			require.Equal(t, want, got)
		})
	}

	t.Run("an established flow sends no event", func(t *testing.T) {
		f := newFixture(t)
		f.toPod(in4(xV4, tcp(40000, 80, frames.TCPSyn)))
		require.Len(t, f.drainEvents(), 1)
		f.toPod(in4(xV4, tcp(40000, 80, frames.TCPAck)))
		require.Empty(t, f.drainEvents())
	})
}

func TestEventsRateLimit(t *testing.T) {
	f := newFixture(t, func(s *PodwallSpecs, _ *ebpf.CollectionSpec) {
		setVar(t, s.EventsPerSec, uint32(1))
		setVar(t, s.EventsBurst, uint32(2))
	})
	for port := uint16(1); port <= 5; port++ {
		f.toPod(in4(worldV4, tcp(port, 8081, frames.TCPSyn)))
	}
	require.Len(t, f.drainEvents(), 2, "drops: a burst of 2")
	f.toPod(in4(xV4, tcp(1, 80, frames.TCPSyn)))
	f.toPod(in4(xV4, tcp(2, 80, frames.TCPSyn)))
	f.toPod(in4(xV4, tcp(3, 80, frames.TCPSyn)))
	require.Len(t, f.drainEvents(), 2, "new flows have a budget of their own")
	require.Zero(t, f.stats()[PodwallReasonREASON_EVENT_LOST], "the rate limit is no loss")
}

func TestEventsOff(t *testing.T) {
	f := newFixture(t, func(s *PodwallSpecs, _ *ebpf.CollectionSpec) {
		setVar(t, s.EventsPerSec, uint32(0))
	})
	f.toPod(in4(worldV4, tcp(1, 8081, frames.TCPSyn)))
	f.toPod(in4(xV4, tcp(1, 80, frames.TCPSyn)))
	require.Empty(t, f.drainEvents())
}

func TestEventsLostWhenTheRingIsFull(t *testing.T) {
	const drops = 200
	f := newFixture(t, func(_ *PodwallSpecs, spec *ebpf.CollectionSpec) {
		spec.Maps[PodwallMapEvents].MaxEntries = 4096 // one page: 51 events of 80 bytes
	})
	for port := uint16(1); port <= drops; port++ {
		f.toPod(in4(worldV4, tcp(port, 8081, frames.TCPSyn)))
	}
	got := len(f.drainEvents())
	lost := f.stats()[PodwallReasonREASON_EVENT_LOST]
	require.Less(t, got, drops)
	require.Equal(t, uint64(drops-got), lost)
}
