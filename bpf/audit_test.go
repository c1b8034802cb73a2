package bpf

import (
	"testing"

	"github.com/cilium/ebpf"
	"github.com/stretchr/testify/require"

	"github.com/podwall/podwall/tests/frames"
)

// counterBase is the first rule_counters slot the tests give the endpoint.
const counterBase = 100

// withAudit puts the endpoint in audit mode (or takes it out) under a new generation, counted
// from counterBase.
func withAudit(on bool) func(*fixture) {
	return func(f *fixture) {
		ep := f.endpoint()
		ep.Flags = 1 /* EP_ALLOW_HOST */
		if on {
			ep.Flags |= uint8(PodwallEndpointFlagEP_AUDIT)
		}
		ep.Counters = counterBase
		ep.Generation++
		f.setEndpoint(ep)
	}
}

// ruleCount sums slot counterBase+bit of rule_counters over the CPUs.
func (f *fixture) ruleCount(bit uint32) PodwallRuleCount {
	f.tb.Helper()
	var per []PodwallRuleCount
	require.NoError(f.tb, f.objs.RuleCounters.Lookup(counterBase+bit, &per))
	var out PodwallRuleCount
	for _, c := range per {
		out.Packets += c.Packets
		out.Flows += c.Flows
		out.Audited += c.Audited
	}
	return out
}

func TestAuditPassesWhatThePolicyDrops(t *testing.T) {
	syn, ack := uint8(frames.TCPSyn), uint8(frames.TCPAck)
	const nrules = 11 // installMain's: the undecided slot is counterBase+11
	f := newFixture(t)
	withAudit(true)(f)
	f.do(t, []step{
		pass("a deny rule's SYN", in4(worldV4, tcp(40000, 22, syn)), rsDeny).by(6),
		pass("the audited flow goes on", in4(worldV4, tcp(40000, 22, ack)), rsEstablished),
		pass("no rule matches", in4(worldV4, udp(40000, 9999)), rsNoRule),
		pass("an allow rule", in4(worldV4, tcp(40001, 8080, syn)), rsAllow).by(8),
		drop("a VLAN tag is never audited", ether(0x8100, append([]byte{0, 0, 0x08, 0}, in4(xV4, tcp(40000, 80, syn))[14:]...)), rsVLAN),
		drop("nor a malformed header", v4{src: xV4, dst: podV4, ihl: 4}.frame(tcp(1, 80, syn)), rsMalformed),
	})
	audits := f.sum(f.objs.AuditStats)
	require.Equal(t, uint64(1), audits[rsDeny])
	require.Equal(t, uint64(1), audits[rsNoRule])
	require.Zero(t, f.sum(f.objs.Stats)[rsDeny], "an audited packet is no drop")
	require.Equal(t, PodwallRuleCount{Packets: 2, Flows: 1, Audited: 2}, f.ruleCount(6), "the deny rule counts its flow's packets")
	require.Equal(t, PodwallRuleCount{Packets: 1, Flows: 1}, f.ruleCount(8))
	require.Equal(t, PodwallRuleCount{Packets: 1, Flows: 1, Audited: 1}, f.ruleCount(nrules), "no rule")

	// The event says audit, with the rule that would have dropped.
	f.drainEvents()
	act, _ := f.toPod(in4(worldV4, tcp(40002, 22, syn)))
	require.Equal(t, actNext, act)
	events := f.drainEvents()
	require.Len(t, events, 1)
	require.Equal(t, uint8(PodwallVerdictVERDICT_AUDIT), events[0].Verdict)
	require.Equal(t, uint32(6), events[0].Rule)
	require.Equal(t, uint8(rsDeny), events[0].Reason)

	// Leaving audit mode drops the next new flow and cuts the audited one.
	f.do(t, []step{
		change("audit off", withAudit(false)),
		drop("the audited flow is cut", in4(worldV4, tcp(40000, 22, ack)), rsDeny).by(6),
		drop("a new flow", in4(worldV4, tcp(40003, 22, syn)), rsDeny).by(6),
		pass("the allowed flow goes on", in4(worldV4, tcp(40001, 8080, ack)), rsAllow).by(8),
	})

	// An isolated pod in audit mode: its undecided slot is its first (no rules).
	f.do(t, []step{
		change("isolated, in audit", func(f *fixture) {
			withAudit(true)(f)
			setMode(modeIsolate)(f)
		}),
		pass("isolated", in4(worldV4, udp(40000, 53)), rsIsolated),
	})
	require.Equal(t, PodwallRuleCount{Packets: 1, Flows: 1, Audited: 1}, f.ruleCount(0))
}

// TestRuleCountersCountEveryPacket checks the counts of allow, deny and undecided packets,
// established ones included, and that an endpoint without counters counts nothing.
func TestRuleCountersCountEveryPacket(t *testing.T) {
	syn, ack := uint8(frames.TCPSyn), uint8(frames.TCPAck)
	f := newFixture(t)
	withAudit(false)(f)
	steps := []step{pass("open", in4(worldV4, tcp(40000, 8080, syn)), rsAllow).by(8)}
	for range 4 {
		steps = append(steps, pass("established", in4(worldV4, tcp(40000, 8080, ack)), rsEstablished))
	}
	for range 3 {
		steps = append(steps, drop("deny", in4(worldV4, tcp(40000, 22, syn)), rsDeny).by(6))
	}
	steps = append(steps, drop("deny, mid-stream", in4(worldV4, tcp(40000, 22, ack)), rsDeny).by(6))
	f.do(t, steps)
	require.Equal(t, PodwallRuleCount{Packets: 5, Flows: 1}, f.ruleCount(8))
	require.Equal(t, PodwallRuleCount{Packets: 4, Flows: 3}, f.ruleCount(6), "a drop mid-stream opens no flow")

	// Replies to the pod's own connections are no rule's.
	f.do(t, []step{
		sent("the pod connects", out4(worldV4, tcp(50000, 443, syn))),
		pass("reply", in4(worldV4, tcp(443, 50000, syn|ack)), rsReply),
	})
	total := uint64(0)
	for bit := uint32(0); bit <= 11; bit++ {
		total += f.ruleCount(bit).Packets
	}
	require.Equal(t, uint64(9), total)

	f.do(t, []step{
		change("uncounted", func(f *fixture) {
			ep := f.endpoint()
			ep.Counters = 0
			ep.Generation++
			f.setEndpoint(ep)
		}),
		drop("deny", in4(worldV4, tcp(40000, 22, syn)), rsDeny).by(6),
	})
	require.Equal(t, PodwallRuleCount{Packets: 4, Flows: 3}, f.ruleCount(6))
}

// TestFromWorldLeavesAuditToTC checks that the uplinks' XDP passes what an endpoint in audit
// mode would drop (tc reports it), and counts the rule of what it drops.
func TestFromWorldLeavesAuditToTC(t *testing.T) {
	syn := uint8(frames.TCPSyn)
	f := newFixture(t)
	require.NoError(t, f.objs.LocalPods.Put(ipAddr(podV4), uint32(podIfindex)))
	xdp := func() uint32 {
		ret, err := f.objs.FromWorld.Run(&ebpf.RunOptions{Data: in4(worldV4, tcp(40000, 22, syn))})
		require.NoError(t, err)
		return ret
	}
	const xdpDrop, xdpPass = 1, 2
	withAudit(true)(f)
	require.Equal(t, uint32(xdpPass), xdp())
	require.Zero(t, f.ruleCount(6).Packets)
	withAudit(false)(f)
	require.Equal(t, uint32(xdpDrop), xdp())
	require.Equal(t, PodwallRuleCount{Packets: 1, Flows: 1}, f.ruleCount(6))
}
