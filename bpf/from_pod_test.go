package bpf

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/podwall/podwall/tests/frames"
)

const (
	ctOut      = 1
	ctIn       = 2
	ctAnswered = 4
	ctClosing  = 8
)

func TestFromPodOpensFlows(t *testing.T) {
	syn, ack := uint8(frames.TCPSyn), uint8(frames.TCPAck)
	tests := []struct {
		name  string
		frame []byte
		key   CtFlow
		opens bool
	}{
		{"tcp syn", out4(worldV4, tcp(40000, 443, syn)), ctKey(podV4, worldV4, 40000, 443, frames.ProtoTCP), true},
		{"tcp syn v6", out6(worldV6, tcp(40000, 443, syn)), ctKey(podV6, worldV6, 40000, 443, frames.ProtoTCP), true},
		{"tcp syn-ack", out4(worldV4, tcp(40000, 443, syn|ack)), ctKey(podV4, worldV4, 40000, 443, frames.ProtoTCP), false},
		{"tcp ack", out4(worldV4, tcp(40000, 443, ack)), ctKey(podV4, worldV4, 40000, 443, frames.ProtoTCP), false},
		{"udp", out4(worldV4, udp(5353, 53)), ctKey(podV4, worldV4, 5353, 53, frames.ProtoUDP), true},
		{"udp v6", out6(worldV6, udp(5353, 53)), ctKey(podV6, worldV6, 5353, 53, frames.ProtoUDP), true},
		{"udp, first fragment", v4{src: podV4, dst: worldV4, id: 1, mf: true}.frame(udp(5353, 53)), ctKey(podV4, worldV4, 5353, 53, frames.ProtoUDP), true},
		{"echo request", out4(worldV4, icmp4(8, 0, 77, nil)), ctKey(podV4, worldV4, 77, 0, frames.ProtoICMP), true},
		{"echo request v6", out6(worldV6, icmp6(128, 0, 77, nil)), ctKey(podV6, worldV6, 77, 0, frames.ProtoICMPv6), true},
		{"echo reply", out4(worldV4, icmp4(0, 0, 77, nil)), ctKey(podV4, worldV4, 77, 0, frames.ProtoICMP), false},
		{"echo reply v6", out6(worldV6, icmp6(129, 0, 77, nil)), ctKey(podV6, worldV6, 77, 0, frames.ProtoICMPv6), false},
		{"icmp error", out4(worldV4, icmp4(3, 3, 0, nil)), ctKey(podV4, worldV4, 0, 0, frames.ProtoICMP), false},
		{"v6 echo type in IPv4", out4(worldV4, icmp6(128, 0, 77, nil)), ctKey(podV4, worldV4, 77, 0, frames.ProtoICMPv6), false},
		{"unknown protocol", out4(worldV4, raw(47, 8)), ctKey(podV4, worldV4, 0, 0, 47), false},
		{"malformed", cut(out4(worldV4, tcp(40000, 443, syn)), 14+20+12), ctKey(podV4, worldV4, 40000, 443, frames.ProtoTCP), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t)
			before := monotonicNow(t)
			f.fromPod(tt.frame)
			e, ok := f.ct(tt.key)
			require.Equal(t, tt.opens, ok, "entry created")
			if tt.opens {
				require.Equal(t, uint8(ctOut), e.Flags)
				require.GreaterOrEqual(t, e.LastSeen, before)
				require.LessOrEqual(t, e.LastSeen, monotonicNow(t))
			}
			if !tt.opens {
				require.Empty(t, f.ctFlows(), "entries")
			}
		})
	}
}

func TestFromPodExistingEntries(t *testing.T) {
	const second = uint64(1e9)
	key := ctKey(podV4, worldV4, 5353, 53, frames.ProtoUDP)
	tests := []struct {
		name      string
		flags     uint8
		age       uint64
		frame     []byte
		wantFlags uint8
		refreshed bool
	}{
		{"the pod answers a live inbound flow", ctIn, 0, out4(worldV4, udp(5353, 53)), ctIn | ctAnswered, false},
		{"refreshed at most once a second", ctIn, second / 2, out4(worldV4, udp(5353, 53)), ctIn | ctAnswered, false},
		{"refreshed after a second", ctIn, 2 * second, out4(worldV4, udp(5353, 53)), ctIn | ctAnswered, true},
		{"an opening packet on an expired entry starts a flow of the pod", ctIn, 200 * second, out4(worldV4, udp(5353, 53)), ctOut, true},
		{"both bits kept", ctIn | ctOut, 2 * second, out4(worldV4, udp(5353, 53)), ctIn | ctOut | ctAnswered, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t)
			old := monotonicNow(t) - tt.age
			f.ctPut(key, PodwallCtEntry{LastSeen: old, Generation: genMain, Flags: tt.flags})
			f.fromPod(tt.frame)
			e, ok := f.ct(key)
			require.True(t, ok)
			require.Equal(t, tt.wantFlags, e.Flags)
			require.Equal(t, tt.refreshed, e.LastSeen != old, "last_seen refreshed")
		})
	}

	t.Run("a tcp packet mid-stream refreshes an expired flow of the pod", func(t *testing.T) {
		f := newFixture(t)
		key := ctKey(podV4, worldV4, 40000, 443, frames.ProtoTCP)
		now := monotonicNow(t)
		// Wraps around on a machine up for less than 3 hours, as in the kernel: ages are
		// differences modulo 2^64.
		f.ctPut(key, PodwallCtEntry{LastSeen: now - 3*3600*second, Flags: ctOut})
		f.fromPod(out4(worldV4, tcp(40000, 443, frames.TCPAck)))
		e, ok := f.ct(key)
		require.True(t, ok)
		require.Equal(t, uint8(ctOut), e.Flags)
		require.GreaterOrEqual(t, e.LastSeen, now)
		act, reason := f.toPod(in4(worldV4, tcp(443, 40000, frames.TCPAck)))
		require.Equal(t, rsReply, reason)
		require.Equal(t, actNext, act)
	})
}
