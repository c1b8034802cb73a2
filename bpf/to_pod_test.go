package bpf

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/podwall/podwall/tests/frames"
)

// step is one thing a to_pod test case does: run a frame through to_pod and check the action
// and reason, run one through from_pod, or change the maps.
type step struct {
	name   string
	frame  []byte
	act    uint32
	reason PodwallReason
	from   bool
	change func(*fixture)
	// rule, when set, is the deciding rule, read from the step's event (drops, new flows).
	rule *uint32
}

func (s step) by(rule uint32) step {
	s.rule = &rule
	return s
}

func pass(name string, frame []byte, reason PodwallReason) step {
	return step{name: name, frame: frame, act: actNext, reason: reason}
}

func drop(name string, frame []byte, reason PodwallReason) step {
	return step{name: name, frame: frame, act: actShot, reason: reason}
}

func sent(name string, frame []byte) step {
	return step{name: name, frame: frame, from: true}
}

func change(name string, fn func(*fixture)) step {
	return step{name: name, change: fn}
}

func (f *fixture) do(t *testing.T, steps []step) {
	t.Helper()
	for i, s := range steps {
		switch {
		case s.change != nil:
			s.change(f)
		case s.from:
			f.fromPod(s.frame)
		default:
			f.drainEvents()
			act, reason := f.toPod(s.frame)
			require.Equal(t, s.reason, reason, "step %d %q: reason", i, s.name)
			require.Equal(t, s.act, act, "step %d %q: action", i, s.name)
			if s.rule != nil {
				events := f.drainEvents()
				require.Len(t, events, 1, "step %d %q: events", i, s.name)
				require.Equal(t, *s.rule, events[0].Rule, "step %d %q: rule", i, s.name)
			}
		}
	}
}

func in4(src string, l l4) []byte  { return v4{src: src, dst: podV4}.frame(l) }
func in6(src string, l l4) []byte  { return v6{src: src, dst: podV6}.frame(l) }
func out4(dst string, l l4) []byte { return v4{src: podV4, dst: dst}.frame(l) }
func out6(dst string, l l4) []byte { return v6{src: podV6, dst: dst}.frame(l) }

func cut(b []byte, n int) []byte { return b[:n] }

func setMode(mode uint8) func(*fixture) {
	return func(f *fixture) {
		ep := f.endpoint()
		ep.Mode = mode
		f.setEndpoint(ep)
	}
}

// rejudge gives the endpoint a new generation (and policy id), as the agent does when what
// judges the pod changes.
func rejudge(policy uint32, flags uint8) func(*fixture) {
	return func(f *fixture) {
		ep := f.endpoint()
		ep.Policy, ep.Flags = policy, flags
		ep.Generation++
		f.setEndpoint(ep)
	}
}

const (
	modeOpen    = 1
	modeIsolate = 2
	polEmpty    = 8 // a policy with no rules: every packet is REASON_NO_RULE
)

func installEmpty(f *fixture) {
	f.records[polEmpty] = PodwallPolicy{}
}

const (
	rsNoEntry     = PodwallReasonREASON_NO_ENTRY
	rsOpen        = PodwallReasonREASON_OPEN
	rsReply       = PodwallReasonREASON_REPLY
	rsEstablished = PodwallReasonREASON_ESTABLISHED
	rsICMPError   = PodwallReasonREASON_ICMP_ERROR
	rsHost        = PodwallReasonREASON_HOST
	rsND          = PodwallReasonREASON_ND
	rsFragment    = PodwallReasonREASON_FRAGMENT
	rsAllow       = PodwallReasonREASON_ALLOW_RULE
	rsDeny        = PodwallReasonREASON_DENY_RULE
	rsNoRule      = PodwallReasonREASON_NO_RULE
	rsIsolated    = PodwallReasonREASON_ISOLATED
	rsMalformed   = PodwallReasonREASON_MALFORMED
	rsNotIP       = PodwallReasonREASON_NOT_IP
	rsVLAN        = PodwallReasonREASON_VLAN
	rsARP         = PodwallReasonREASON_ARP
)

func TestToPod(t *testing.T) {
	syn, ack := uint8(frames.TCPSyn), uint8(frames.TCPAck)
	eightExts := []ext6{
		optsHdr(frames.NHHop, 1), optsHdr(frames.NHDest, 2), optsHdr(frames.NHRouting, 1), authHdr(),
		optsHdr(frames.NHDest, 1), optsHdr(frames.NHDest, 1), fragHdr(0, false, 5), optsHdr(frames.NHDest, 3),
	}
	ipv6v4 := v6{src: xV6, dst: podV6}.frame(tcp(40000, 80, syn))
	ipv6v4[14] = 4 << 4

	tests := []struct {
		name  string
		steps []step
	}{
		{"an interface without an entry takes nothing", []step{
			change("no endpoint", func(f *fixture) {
				require.NoError(t, f.objs.Endpoints.Delete(uint32(podIfindex)))
			}),
			drop("tcp", in4(worldV4, tcp(1, 2, syn)), rsNoEntry),
			drop("from the node", in4(hostV4, tcp(1, 2, syn)), rsNoEntry),
			drop("arp", ether(0x0806, make([]byte, 28)), rsNoEntry),
			drop("malformed", v4{src: xV4, dst: podV4, ihl: 4}.frame(tcp(1, 80, syn)), rsNoEntry),
		}},
		{"only IP and ARP reach a pod that is not open", []step{
			pass("arp", ether(0x0806, make([]byte, 28)), rsARP),
			drop("802.1Q", ether(0x8100, make([]byte, 46)), rsVLAN),
			drop("802.1Q carrying IPv4", ether(0x8100, append([]byte{0, 0, 0x08, 0}, in4(xV4, tcp(40000, 80, syn))[14:]...)), rsVLAN),
			drop("802.1ad", ether(0x88a8, make([]byte, 46)), rsVLAN),
			drop("QinQ", ether(0x9100, make([]byte, 46)), rsVLAN),
			drop("another ethertype", ether(0x88cc, make([]byte, 46)), rsNotIP),
			change("isolate", setMode(modeIsolate)),
			pass("arp, isolated", ether(0x0806, make([]byte, 28)), rsARP),
			drop("802.1Q, isolated", ether(0x8100, make([]byte, 46)), rsVLAN),
			change("open", setMode(modeOpen)),
			pass("802.1Q, open", ether(0x8100, make([]byte, 46)), rsOpen),
			pass("another ethertype, open", ether(0x88cc, make([]byte, 46)), rsOpen),
		}},
		{"each field of the rules", []step{
			pass("label", in4(xV4, tcp(40000, 80, syn)), rsAllow).by(0),
			drop("label, other identity", in4(worldV4, tcp(40000, 80, syn)), rsNoRule),
			pass("label, v6", in6(xV6, tcp(40000, 80, syn)), rsAllow),
			drop("label rule is tcp only", in4(xV4, udp(40000, 80)), rsNoRule),
			pass("to ports", in4(worldV4, tcp(40000, 8080, syn)), rsAllow).by(8),
			drop("to ports, other port", in4(worldV4, tcp(40000, 8081, syn)), rsNoRule),
			drop("to ports is tcp only", in4(worldV4, udp(40000, 8080)), rsNoRule),
			pass("from port range, low end", in4(worldV4, udp(4096, 53)), rsAllow).by(3),
			pass("from port range, high end", in4(worldV4, udp(8191, 53)), rsAllow),
			drop("from port range, below", in4(worldV4, udp(4095, 53)), rsNoRule),
			drop("from port range, above", in4(worldV4, udp(8192, 53)), rsNoRule),
			drop("from port range, wrong to port", in4(worldV4, udp(5000, 54)), rsNoRule),
			pass("from port range, v6", in6(worldV6, udp(5000, 53)), rsAllow),
			pass("cidr v6", in6(allowedV6, tcp(1, 9999, syn)), rsAllow).by(7),
			drop("cidr v6, outside", in6(worldV6, tcp(1, 9999, syn)), rsNoRule),
			pass("cidr v6, any protocol", in6(allowedV6, raw(47, 20)), rsAllow),
			pass("icmp type, any code", in4(worldV4, icmp4(8, 0, 1, nil)), rsAllow).by(4),
			pass("icmp type, other code", in4(worldV4, icmp4(8, 5, 2, nil)), rsAllow),
			drop("icmp, other type", in4(worldV4, icmp4(13, 0, 0, nil)), rsNoRule),
			pass("icmp type 8 is not icmpv6 type 8: rule 9", in6(worldV6, icmp6(8, 0, 1, nil)), rsAllow),
			pass("icmpv6 type and code", in6(worldV6, icmp6(128, 0, 1, nil)), rsAllow).by(5),
			pass("icmpv6, other code: rule 9", in6(worldV6, icmp6(128, 1, 2, nil)), rsAllow).by(9),
			drop("icmpv6 in IPv4 is another protocol", in4(worldV4, icmp6(128, 0, 1, nil)), rsNoRule),
			drop("icmp in IPv6 is another protocol", in6(worldV6, icmp4(8, 0, 1, nil)), rsNoRule),
			pass("icmp in IPv6 from the v6 cidr", in6(allowedV6, icmp4(8, 0, 1, nil)), rsAllow),
			pass("a rule in the last vector word", in4(worldV4, udp(1, 7)), rsAllow).by(1000),
			drop("unknown protocol", in4(worldV4, raw(132, 12)), rsNoRule),
		}},
		{"deny wins over allow", []step{
			drop("denied cidr, allowed by rule 2 too", in4(deniedV4, tcp(1, 80, syn)), rsDeny).by(1),
			drop("denied cidr, udp", in4(deniedV4, udp(5000, 53)), rsDeny),
			drop("denied cidr, other protocol", in4(deniedV4, raw(47, 8)), rsDeny),
			drop("label allows, port 22 denies", in4(xV4, tcp(40000, 22, syn)), rsDeny).by(6),
			drop("port 22 from anyone", in6(allowedV6, tcp(40000, 22, syn)), rsDeny).by(6),
		}},
		// BPF_PROG_TEST_RUN refuses frames shorter than their IPv4 or IPv6 header (EINVAL), so
		// short IP headers cannot be tried here.
		{"malformed headers are dropped", []step{
			drop("ihl 4", v4{src: xV4, dst: podV4, ihl: 4}.frame(tcp(1, 80, syn)), rsMalformed),
			drop("version 6 in an ipv4 frame", v4{src: xV4, dst: podV4, version: 6}.frame(tcp(1, 80, syn)), rsMalformed),
			drop("short tcp", cut(in4(xV4, tcp(1, 80, syn)), 14+20+12), rsMalformed),
			drop("short udp", cut(in4(worldV4, udp(5000, 53)), 14+20+6), rsMalformed),
			drop("short icmp", cut(in4(worldV4, icmp4(8, 0, 1, nil)), 14+20+4), rsMalformed),
			drop("ipv4 options hide the tcp header", v4{src: xV4, dst: podV4, options: make([]byte, 40)}.frame(raw(frames.ProtoTCP, 4)), rsMalformed),
			drop("version 4 in an ipv6 frame", ipv6v4, rsMalformed),
			drop("nine extension headers", v6{src: xV6, dst: podV6, exts: append(eightExts, optsHdr(frames.NHDest, 1))}.frame(tcp(1, 80, syn)), rsMalformed),
			drop("short extension header", cut(v6{src: xV6, dst: podV6, exts: []ext6{optsHdr(frames.NHHop, 2)}}.frame(tcp(1, 80, syn)), 14+40+12), rsMalformed),
			drop("two fragment headers", v6{src: xV6, dst: podV6, exts: []ext6{fragHdr(0, false, 1), fragHdr(0, false, 2)}}.frame(tcp(1, 80, syn)), rsMalformed),
			drop("short tcp after extension headers", cut(v6{src: xV6, dst: podV6, exts: []ext6{authHdr()}}.frame(tcp(1, 80, syn)), 14+40+12+8), rsMalformed),
			change("open", setMode(modeOpen)),
			pass("short tcp, open mode", cut(in4(xV4, tcp(1, 80, syn)), 14+20+12), rsOpen),
			pass("nine extension headers, open mode", v6{src: xV6, dst: podV6, exts: append(eightExts, optsHdr(frames.NHDest, 1))}.frame(tcp(1, 80, syn)), rsOpen),
		}},
		{"ipv6 extension headers are walked", []step{
			pass("hop-by-hop", v6{src: xV6, dst: podV6, exts: []ext6{optsHdr(frames.NHHop, 1)}}.frame(tcp(41001, 80, syn)), rsAllow),
			pass("routing", v6{src: xV6, dst: podV6, exts: []ext6{optsHdr(frames.NHRouting, 2)}}.frame(tcp(41002, 80, syn)), rsAllow),
			pass("destination options", v6{src: xV6, dst: podV6, exts: []ext6{optsHdr(frames.NHDest, 1)}}.frame(tcp(41003, 80, syn)), rsAllow),
			pass("ah", v6{src: xV6, dst: podV6, exts: []ext6{authHdr()}}.frame(tcp(41004, 80, syn)), rsAllow),
			pass("atomic fragment", v6{src: xV6, dst: podV6, exts: []ext6{fragHdr(0, false, 3)}}.frame(tcp(41005, 80, syn)), rsAllow),
			pass("eight", v6{src: xV6, dst: podV6, exts: eightExts}.frame(tcp(41006, 80, syn)), rsAllow).by(0),
			drop("eight, then port 22", v6{src: xV6, dst: podV6, exts: eightExts}.frame(tcp(41007, 22, syn)), rsDeny),
			pass("icmpv6 after extension headers", v6{src: worldV6, dst: podV6, exts: []ext6{optsHdr(frames.NHHop, 1)}}.frame(icmp6(128, 0, 1, nil)), rsAllow),
		}},
		{"open mode passes everything and tracks it", []step{
			change("open", setMode(modeOpen)),
			pass("world tcp", in4(worldV4, tcp(40000, 9999, syn)), rsOpen),
			pass("denied cidr", in4(deniedV4, tcp(1, 80, syn)), rsOpen),
			change("enforce, same generation", setMode(0)),
			pass("tracked flow", in4(worldV4, tcp(40000, 9999, ack)), rsEstablished),
			drop("new flow", in4(worldV4, tcp(40001, 9999, syn)), rsNoRule),
			change("new generation", rejudge(polMain, 1)),
			drop("tracked flow judged again", in4(worldV4, tcp(40000, 9999, ack)), rsNoRule),
		}},
		{"open mode keeps the pod's own flows", []step{
			change("open", setMode(modeOpen)),
			sent("syn", out4(worldV4, tcp(40000, 443, syn))),
			pass("syn-ack", in4(worldV4, tcp(443, 40000, syn|ack)), rsReply),
			change("enforce, new generation", func(f *fixture) { installEmpty(f); setMode(0)(f); rejudge(polEmpty, 1)(f) }),
			pass("reply", in4(worldV4, tcp(443, 40000, ack)), rsReply),
		}},
		{"neighbour discovery passes", []step{
			change("isolate", setMode(modeIsolate)),
			pass("133", in6(worldV6, icmp6(133, 0, 0, nil)), rsND),
			pass("134", in6(worldV6, icmp6(134, 0, 0, nil)), rsND),
			pass("135", in6("fe80::1", icmp6(135, 0, 0, nil)), rsND),
			pass("136", in6(worldV6, icmp6(136, 0, 0, nil)), rsND),
			pass("137", in6(worldV6, icmp6(137, 0, 0, nil)), rsND),
			drop("138", in6(worldV6, icmp6(138, 0, 0, nil)), rsIsolated),
			drop("132", in6(worldV6, icmp6(132, 0, 0, nil)), rsIsolated),
			drop("type 135 over IPv4", in4(worldV4, icmp4(135, 0, 0, nil)), rsIsolated),
		}},
		{"fragments of an allowed datagram", []step{
			pass("first", v4{src: worldV4, dst: podV4, id: 77, mf: true}.frame(udp(5000, 53)), rsAllow),
			pass("middle", v4{src: worldV4, dst: podV4, id: 77, fragOff: 100, mf: true}.frame(raw(frames.ProtoUDP, 800)), rsFragment),
			pass("last", v4{src: worldV4, dst: podV4, id: 77, fragOff: 200}.frame(raw(frames.ProtoUDP, 100)), rsFragment),
			drop("other datagram, first unseen", v4{src: worldV4, dst: podV4, id: 78, fragOff: 100}.frame(raw(frames.ProtoUDP, 100)), rsNoRule),
			drop("same id, other protocol", v4{src: worldV4, dst: podV4, id: 77, fragOff: 100}.frame(raw(frames.ProtoTCP, 100)), rsNoRule),
		}},
		{"fragments of a denied datagram", []step{
			drop("first", v4{src: worldV4, dst: podV4, id: 9, mf: true}.frame(tcp(1, 22, syn)), rsDeny),
			drop("later", v4{src: worldV4, dst: podV4, id: 9, fragOff: 3}.frame(raw(frames.ProtoTCP, 100)), rsFragment),
		}},
		{"fragments without their first match only portless rules", []step{
			pass("v6 cidr rule", v6{src: allowedV6, dst: podV6, exts: []ext6{fragHdr(10, true, 1)}}.frame(raw(frames.ProtoUDP, 100)), rsAllow),
			drop("world", v6{src: worldV6, dst: podV6, exts: []ext6{fragHdr(10, true, 1)}}.frame(raw(frames.ProtoUDP, 100)), rsNoRule),
			drop("denied cidr", v4{src: deniedV4, dst: podV4, id: 1, fragOff: 10}.frame(raw(frames.ProtoUDP, 100)), rsDeny),
			pass("label rule states no ports", v4{src: xV4, dst: podV4, id: 1, fragOff: 10}.frame(raw(frames.ProtoTCP, 100)), rsAllow),
			drop("port rule", v4{src: worldV4, dst: podV4, id: 2, fragOff: 10}.frame(raw(frames.ProtoUDP, 100)), rsNoRule),
			drop("icmp type rule", v4{src: worldV4, dst: podV4, id: 2, fragOff: 10}.frame(raw(frames.ProtoICMP, 100)), rsNoRule),
			pass("icmpv6 rule without a type", v6{src: worldV6, dst: podV6, exts: []ext6{fragHdr(10, false, 2)}}.frame(raw(frames.ProtoICMPv6, 100)), rsAllow),
		}},
		{"ipv6 fragments", []step{
			pass("first", v6{src: worldV6, dst: podV6, exts: []ext6{optsHdr(frames.NHHop, 1), fragHdr(0, true, 99)}}.frame(udp(5000, 53)), rsAllow),
			pass("later", v6{src: worldV6, dst: podV6, exts: []ext6{optsHdr(frames.NHHop, 1), fragHdr(185, false, 99)}}.frame(raw(frames.ProtoUDP, 100)), rsFragment),
			drop("first, denied", v6{src: worldV6, dst: podV6, exts: []ext6{fragHdr(0, true, 100)}}.frame(tcp(1, 22, syn)), rsDeny),
			drop("later, denied", v6{src: worldV6, dst: podV6, exts: []ext6{fragHdr(185, false, 100)}}.frame(raw(frames.ProtoTCP, 100)), rsFragment),
		}},
		{"a first fragment records its verdict whatever decided it", []step{
			pass("from the node", v4{src: hostV4, dst: podV4, id: 5, mf: true}.frame(udp(1, 2)), rsHost),
			change("node not allowed", rejudge(polMain, 0)),
			pass("later", v4{src: hostV4, dst: podV4, id: 5, fragOff: 10}.frame(raw(frames.ProtoUDP, 100)), rsFragment),
		}},
		{"replies to the pod's flows pass", []step{
			sent("tcp syn", out4(worldV4, tcp(40000, 443, syn))),
			pass("tcp syn-ack", in4(worldV4, tcp(443, 40000, syn|ack)), rsReply),
			pass("tcp ack", in4(worldV4, tcp(443, 40000, ack)), rsReply),
			drop("other port", in4(worldV4, tcp(443, 40001, ack)), rsNoRule),
			drop("other remote", in4(deniedV4, tcp(443, 40000, ack)), rsDeny),
			sent("udp", out4(worldV4, udp(5353, 53))),
			pass("udp reply", in4(worldV4, udp(53, 5353)), rsReply),
			sent("echo request", out4(worldV4, icmp4(8, 0, 9, nil))),
			pass("echo reply", in4(worldV4, icmp4(0, 0, 9, nil)), rsReply),
			drop("echo reply, other id", in4(worldV4, icmp4(0, 0, 10, nil)), rsNoRule),
			sent("echo request v6", out6(worldV6, icmp6(128, 0, 9, nil))),
			pass("echo reply v6", in6(worldV6, icmp6(129, 0, 9, nil)), rsReply),
			sent("tcp syn v6", out6(worldV6, tcp(40000, 443, syn))),
			pass("tcp reply v6", in6(worldV6, tcp(443, 40000, syn|ack)), rsReply),
			change("isolate, no policy", func(f *fixture) { setMode(modeIsolate)(f); rejudge(99, 0)(f) }),
			pass("reply, isolated", in4(worldV4, tcp(443, 40000, ack)), rsReply),
		}},
		{"packets mid-stream open no flow", []step{
			sent("ack", out4(worldV4, tcp(40000, 443, ack))),
			drop("reply to ack", in4(worldV4, tcp(443, 40000, ack)), rsNoRule),
			sent("syn-ack", out4(worldV4, tcp(40001, 443, syn|ack))),
			drop("reply to syn-ack", in4(worldV4, tcp(443, 40001, ack)), rsNoRule),
			sent("echo reply", out4(worldV4, icmp4(0, 0, 11, nil))),
			drop("echo reply back", in4(worldV4, icmp4(0, 0, 11, nil)), rsNoRule),
		}},
		{"established inbound flows are judged again under a new generation", []step{
			pass("syn", in4(xV4, tcp(40000, 80, syn)), rsAllow),
			sent("syn-ack", out4(xV4, tcp(80, 40000, syn|ack))),
			pass("ack", in4(xV4, tcp(40000, 80, ack)), rsEstablished),
			change("new generation, same policy", rejudge(polMain, 1)),
			pass("judged again", in4(xV4, tcp(40000, 80, ack)), rsAllow),
			pass("established again", in4(xV4, tcp(40000, 80, ack)), rsEstablished),
			change("policy without rules", func(f *fixture) { installEmpty(f); rejudge(polEmpty, 1)(f) }),
			drop("cut", in4(xV4, tcp(40000, 80, ack)), rsNoRule),
			drop("still cut", in4(xV4, tcp(40000, 80, ack)), rsNoRule),
		}},
		{"the pod's answers do not make an inbound flow its own", []step{
			pass("udp in", in4(worldV4, udp(5000, 53)), rsAllow),
			sent("udp answer", out4(worldV4, udp(53, 5000))),
			pass("udp again", in4(worldV4, udp(5000, 53)), rsEstablished),
			change("policy without rules", func(f *fixture) { installEmpty(f); rejudge(polEmpty, 1)(f) }),
			drop("udp after the change", in4(worldV4, udp(5000, 53)), rsNoRule),
		}},
		{"icmp errors about tracked flows pass", []step{
			sent("udp", out4(worldV4, udp(40000, 53))),
			pass("port unreachable", in4("192.0.2.254", icmp4(3, 3, 0, v4{src: podV4, dst: worldV4}.packet(udp(40000, 53)))), rsICMPError),
			pass("fragmentation needed, only 8 bytes quoted", in4("192.0.2.254", icmp4(3, 4, 0, cut(v4{src: podV4, dst: worldV4}.packet(udp(40000, 53)), 28))), rsICMPError),
			drop("about another flow", in4("192.0.2.254", icmp4(3, 3, 0, v4{src: podV4, dst: worldV4}.packet(udp(40001, 53)))), rsNoRule),
			drop("nothing quoted", in4("192.0.2.254", icmp4(3, 3, 0, nil)), rsNoRule),
			drop("quoted header cut", in4("192.0.2.254", icmp4(3, 3, 0, cut(v4{src: podV4, dst: worldV4}.packet(udp(40000, 53)), 24))), rsNoRule),
			drop("not an error type", in4("192.0.2.254", icmp4(13, 0, 0, v4{src: podV4, dst: worldV4}.packet(udp(40000, 53)))), rsNoRule),
			sent("echo request", out4(worldV4, icmp4(8, 0, 5, nil))),
			pass("time exceeded about the echo", in4("192.0.2.254", icmp4(11, 0, 0, v4{src: podV4, dst: worldV4}.packet(icmp4(8, 0, 5, nil)))), rsICMPError),
			sent("tcp syn v6", out6(worldV6, tcp(40000, 443, syn))),
			pass("v6 packet too big, quoted extension header", in6("2001:db9::fe", icmp6(2, 0, 0, v6{src: podV6, dst: worldV6, exts: []ext6{optsHdr(frames.NHDest, 1)}}.packet(tcp(40000, 443, syn)))), rsICMPError),
			pass("v6 error quoting v4 is judged by the rules", in6("2001:db9::fe", icmp6(1, 4, 0, v4{src: podV4, dst: worldV4}.packet(udp(40000, 53)))), rsAllow),
			pass("inbound flow", in4(xV4, tcp(40000, 80, syn)), rsAllow),
			pass("error about the pod's answer", in4("192.0.2.254", icmp4(3, 1, 0, v4{src: podV4, dst: xV4}.packet(tcp(80, 40000, syn|ack)))), rsICMPError),
			change("policy without rules", func(f *fixture) { installEmpty(f); rejudge(polEmpty, 1)(f) }),
			drop("error about the cut flow", in4("192.0.2.254", icmp4(3, 1, 0, v4{src: podV4, dst: xV4}.packet(tcp(80, 40000, ack)))), rsNoRule),
			pass("error about the pod's own flow", in4("192.0.2.254", icmp4(3, 3, 0, v4{src: podV4, dst: worldV4}.packet(udp(40000, 53)))), rsICMPError),
		}},
		{"traffic from the node", []step{
			pass("v4", in4(hostV4, tcp(40000, 9999, syn)), rsHost),
			pass("v6", in6(hostV6, udp(1, 2)), rsHost),
			change("node not allowed", rejudge(polMain, 0)),
			drop("tracked flow judged again", in4(hostV4, tcp(40000, 9999, ack)), rsNoRule),
			drop("new flow", in4(hostV4, tcp(40001, 9999, syn)), rsNoRule),
			change("node allowed, isolated", func(f *fixture) { rejudge(polMain, 1)(f); setMode(modeIsolate)(f) }),
			pass("isolated", in4(hostV4, tcp(40001, 9999, syn)), rsHost),
		}},
		{"an isolated pod gets only replies, the node and neighbour discovery", []step{
			change("isolate", setMode(modeIsolate)),
			drop("label rule", in4(xV4, tcp(40000, 80, syn)), rsIsolated),
			sent("syn", out4(worldV4, tcp(40000, 443, syn))),
			pass("reply", in4(worldV4, tcp(443, 40000, syn|ack)), rsReply),
			pass("node", in4(hostV4, tcp(1, 2, syn)), rsHost),
			pass("nd", in6(worldV6, icmp6(135, 0, 0, nil)), rsND),
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t)
			f.do(t, tt.steps)
		})
	}
}
