package e2e

import (
	"encoding/binary"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/podwall/podwall/bpf"
	"github.com/podwall/podwall/loader/loadertest"
	"github.com/podwall/podwall/tests/frames"
	"github.com/podwall/podwall/tests/topo"
)

// The attacks of SPEC 8, sent as a pod on the node would send them: raw frames from a pod's
// namespace (CAP_NET_RAW), forged sources, VLAN tags, odd ethertypes and lying lengths. A
// raw listener in the victim counts what reaches its interface, whatever its kernel does with
// it afterwards.

// marker tags the frames a test sends, so that a capture counts them and nothing else.
func marker(s string) []byte { return []byte("podwall-marker-" + s) }

// attack sends frames from a pod's namespace and waits for them to arrive wherever they go.
type attack struct {
	t  *testing.T
	c  *cluster
	to net.HardwareAddr // where the attacker's frames go
	by *topo.Netns
	me net.HardwareAddr
}

func (c *cluster) attacker(t *testing.T, p *pod, to net.HardwareAddr) *attack {
	t.Helper()
	me, err := p.NS.PodMAC()
	require.NoError(t, err)
	if to == nil {
		to, err = c.tp.GatewayMAC(p.Pod)
		require.NoError(t, err)
	}
	return &attack{t: t, c: c, to: to, by: p.NS, me: me}
}

func (c *cluster) clientAttacker(t *testing.T, cl *topo.Client) *attack {
	t.Helper()
	me, err := cl.NS.PodMAC()
	require.NoError(t, err)
	to, err := c.tp.UplinkMAC(cl)
	require.NoError(t, err)
	return &attack{t: t, c: c, to: to, by: cl.NS, me: me}
}

// ip sends one IP packet.
func (a *attack) ip(src, dst netip.Addr, proto uint8, l4 []byte) {
	a.t.Helper()
	et, pkt := topo.IPPacket(src, dst, proto, l4)
	a.frames(frames.Ether(a.to, a.me, et, pkt))
}

// frames sends frames as they are.
func (a *attack) frames(frames ...[]byte) {
	a.t.Helper()
	require.NoError(a.t, topo.SendFrames(a.by, frames...))
	settle()
}

// settle waits for frames sent on veths to arrive everywhere they go.
func settle() { time.Sleep(200 * time.Millisecond * time.Duration(slowdown())) }

func udpPacket(src, dst netip.Addr, sport, dport uint16, payload []byte) (netip.Addr, netip.Addr, uint8, []byte) {
	return src, dst, frames.ProtoUDP, topo.UDPSegment(src, dst, sport, dport, payload)
}

func synPacket(src, dst netip.Addr, sport, dport uint16) (netip.Addr, netip.Addr, uint8, []byte) {
	return src, dst, frames.ProtoTCP, topo.TCPSegment(src, dst, sport, dport, frames.TCPSyn, nil)
}

// echo is an ICMP(v6) echo request or reply with an identifier.
func echo(src, dst netip.Addr, reply bool, id uint16, payload []byte) (netip.Addr, netip.Addr, uint8, []byte) {
	typ, proto := uint8(8), uint8(frames.ProtoICMP)
	if src.Is6() {
		typ, proto = 128, frames.ProtoICMPv6
	}
	if reply {
		typ++
		if src.Is4() {
			typ = 0
		}
	}
	rest := binary.BigEndian.AppendUint16(nil, id)
	rest = append(rest, 0, 1)
	return src, dst, proto, topo.ICMPMessage(src, dst, typ, 0, append(rest, payload...))
}

// unreachable is an ICMP(v6) port unreachable quoting a UDP datagram from qsrc to qdst.
func unreachable(src, dst, qsrc, qdst netip.Addr, qsport, qdport uint16, payload []byte) (netip.Addr, netip.Addr, uint8, []byte) {
	_, quoted := topo.IPPacket(qsrc, qdst, frames.ProtoUDP, topo.UDPSegment(qsrc, qdst, qsport, qdport, nil))
	typ, code, proto := uint8(3), uint8(3), uint8(frames.ProtoICMP)
	if src.Is6() {
		typ, code, proto = 1, 4, frames.ProtoICMPv6
	}
	rest := append(make([]byte, 4), quoted...)
	return src, dst, proto, topo.ICMPMessage(src, dst, typ, code, append(rest, payload...))
}

func addrOf(p *pod, v6 bool) netip.Addr {
	if v6 {
		return p.IPv6
	}
	return p.IPv4
}

func clientAddr(cl *topo.Client, v6 bool) netip.Addr {
	if v6 {
		return cl.IPv6
	}
	return cl.IPv4
}

func famName(v6 bool) string {
	if v6 {
		return "v6"
	}
	return "v4"
}

// TestForgedSourcesOpenNothing: a pod that sends packets in another pod's name (or the
// node's) records no flow for it; the forged flow's "replies" are judged by the victim's
// policy, and the forged packets are dropped and counted as spoofed. Before, one forged UDP
// datagram or TCP SYN from V:8080 to R:p let R reach V's port 8080 from p as a reply.
func TestForgedSourcesOpenNothing(t *testing.T) {
	for _, kind := range []topo.Kind{topo.Routed, topo.Bridged} {
		t.Run(kind.String(), func(t *testing.T) {
			c := newCluster(t, kind, loadertest.Best(t))
			victim := c.addPod(t, "victim", nsProd, nil, policyOf("allow tcp from label role=frontend to ports 5432"))
			isolated := c.addPod(t, "isolated", nsProd, nil, policyOf(""))
			evil := c.addPod(t, "evil", nsDev, nil, nil)
			r := c.tp.AddClient("r")
			c.apply(t)
			a := c.attacker(t, evil, nil)

			port := uint16(40100)
			for _, v6 := range []bool{false, true} {
				for _, target := range []*pod{victim, isolated} {
					for _, f := range []flow{udpTo(portWeb), tcpTo(portWeb)} {
						f = f.from(port)
						if v6 {
							f = f.v6()
						} else {
							f = f.v4()
						}
						src, dst := addrOf(target, v6), clientAddr(r, v6)
						c.counted(t, []bpf.Reason{bpf.ReasonSpoofed}, nil, func() {
							if f.proto == tcp {
								a.ip(synPacket(src, dst, portWeb, port))
							} else {
								a.ip(udpPacket(src, dst, portWeb, port, nil))
							}
						})
						c.verify(t, drops(clientPeer(r), target, f))
						port++
					}
				}
			}

			t.Run("echo replies to a forged request", func(t *testing.T) {
				for _, v6 := range []bool{false, true} {
					got := topo.CaptureFrames(t, victim.NS, marker("echo-"+famName(v6)))
					control := topo.CaptureFrames(t, victim.NS, marker("echo-control-"+famName(v6)))
					v, ra := addrOf(victim, v6), clientAddr(r, v6)
					// The victim's own request: its reply passes.
					c.attacker(t, victim, nil).ip(echo(v, ra, false, 7, nil))
					c.clientAttacker(t, r).ip(echo(ra, v, true, 7, marker("echo-control-"+famName(v6))))
					require.Equal(t, 1, control.Count(), "the reply to the victim's own request")
					// A request forged in the victim's name: its reply does not.
					a.ip(echo(v, ra, false, 9, nil))
					c.clientAttacker(t, r).ip(echo(ra, v, true, 9, marker("echo-"+famName(v6))))
					require.Zero(t, got.Count(), "the reply to a forged request")
				}
			})

			t.Run("a packet in the node's name", func(t *testing.T) {
				for _, v6 := range []bool{false, true} {
					node := c.tp.NodeIPv4
					if v6 {
						node = c.tp.NodeIPv6
					}
					got := topo.CaptureFrames(t, isolated.NS, marker("node-"+famName(v6)))
					to, err := isolated.NS.PodMAC()
					require.NoError(t, err)
					if kind == topo.Routed {
						to = nil // routed through the node
					}
					c.counted(t, []bpf.Reason{bpf.ReasonSpoofed}, []bpf.Reason{bpf.ReasonHost}, func() {
						c.attacker(t, evil, to).ip(udpPacket(node, addrOf(isolated, v6), 53, portWeb, marker("node-"+famName(v6))))
					})
					require.Zero(t, got.Count(), "the isolated pod got it")
				}
			})
		})
	}
}

// TestICMPErrorsReachOnlyThePodTheyAreAbout: an ICMP error passes to a pod only when it
// quotes a flow of that pod. Before, an error quoting any tracked flow reached any pod.
func TestICMPErrorsReachOnlyThePodTheyAreAbout(t *testing.T) {
	for _, kind := range []topo.Kind{topo.Routed, topo.Bridged} {
		t.Run(kind.String(), func(t *testing.T) {
			c := newCluster(t, kind, loadertest.Best(t))
			victim := c.addPod(t, "victim", nsProd, nil, policyOf(""))
			other := c.addPod(t, "other", nsDev, nil, nil)
			r := c.tp.AddClient("r")
			c.apply(t)
			for _, v6 := range []bool{false, true} {
				v, o, ra := addrOf(victim, v6), addrOf(other, v6), clientAddr(r, v6)
				// Both pods have a flow to r.
				c.attacker(t, victim, nil).ip(udpPacket(v, ra, 41000, portWeb, nil))
				c.attacker(t, other, nil).ip(udpPacket(o, ra, 41001, portWeb, nil))
				control := topo.CaptureFrames(t, victim.NS, marker("error-control-"+famName(v6)))
				got := topo.CaptureFrames(t, victim.NS, marker("error-"+famName(v6)))
				from := c.clientAttacker(t, r)
				from.ip(unreachable(ra, v, v, ra, 41000, portWeb, marker("error-control-"+famName(v6))))
				require.Equal(t, 1, control.Count(), "an error about the victim's own flow")
				from.ip(unreachable(ra, v, o, ra, 41001, portWeb, marker("error-"+famName(v6))))
				require.Zero(t, got.Count(), "an error about another pod's flow")
			}
		})
	}
}

// TestOnlyIPAndARPReachAPod: tagged frames (802.1Q, 802.1ad, any VLAN id, one tag or two)
// and other ethertypes do not reach a pod on a bridge; before, a UDP datagram in two VID-0
// tags reached a pod whose policy denies UDP.
func TestOnlyIPAndARPReachAPod(t *testing.T) {
	c := newCluster(t, topo.Bridged, loadertest.Best(t))
	// Where br_netfilter is loaded, the bridge checks IP headers itself and drops a lying
	// length before podwall sees it; a node without it forwards the frame as it is, which is
	// what the tests of lengths need.
	for _, key := range []string{"net/bridge/bridge-nf-call-iptables", "net/bridge/bridge-nf-call-ip6tables"} {
		if _, err := c.tp.Node.ReadSysctl(key); err == nil {
			require.NoError(t, c.tp.Node.Sysctl(key, "0"))
		}
	}
	victim := c.addPod(t, "victim", nsProd, nil, policyOf("allow tcp; deny udp to ports 8080; allow udp to ports 9090"))
	evil := c.addPod(t, "evil", nsDev, nil, nil)
	c.apply(t)
	vmac, err := victim.NS.PodMAC()
	require.NoError(t, err)
	a := c.attacker(t, evil, vmac)

	frame := func(name string, proto uint8, port uint16) []byte {
		src, dst := evil.IPv4, victim.IPv4
		var l4 []byte
		if proto == frames.ProtoTCP {
			l4 = topo.TCPSegment(src, dst, 40200, port, frames.TCPSyn, marker(name))
		} else {
			l4 = topo.UDPSegment(src, dst, 40200, port, marker(name))
		}
		et, pkt := topo.IPPacket(src, dst, proto, l4)
		return frames.Ether(vmac, a.me, et, pkt)
	}
	arp := func(name string) []byte {
		b := make([]byte, 28)
		binary.BigEndian.PutUint16(b[0:], 1)
		binary.BigEndian.PutUint16(b[2:], frames.EtherIPv4)
		b[4], b[5] = 6, 4
		binary.BigEndian.PutUint16(b[6:], 1)
		copy(b[8:], a.me)
		src, dst := evil.IPv4.As4(), victim.IPv4.As4()
		copy(b[14:], src[:])
		copy(b[24:], dst[:])
		return frames.Ether(vmac, a.me, frames.EtherARP, append(b, marker(name)...))
	}
	tests := []struct {
		name, mark string
		frame      func(mark string) []byte
		reason     bpf.Reason
		passes     bool
	}{
		{"tcp", "tcp", func(m string) []byte { return frame(m, frames.ProtoTCP, portWeb) }, bpf.ReasonAllowRule, true},
		{"arp", "arp", arp, bpf.ReasonARP, true},
		{"udp, denied", "udp", func(m string) []byte { return frame(m, frames.ProtoUDP, portWeb) }, bpf.ReasonDenyRule, false},
		{"udp in a VID-0 tag", "vid0", func(m string) []byte {
			return frames.Tag(frame(m, frames.ProtoUDP, portWeb), frames.Ether8021Q, 0)
		}, bpf.ReasonVLAN, false},
		{"udp in two VID-0 tags", "qinq0", func(m string) []byte {
			return frames.Tag(frames.Tag(frame(m, frames.ProtoUDP, portWeb), frames.Ether8021Q, 0), frames.Ether8021Q, 0)
		}, bpf.ReasonVLAN, false},
		{"tcp in a VID-5 tag", "vid5", func(m string) []byte {
			return frames.Tag(frame(m, frames.ProtoTCP, portWeb), frames.Ether8021Q, 5)
		}, bpf.ReasonVLAN, false},
		{"udp in 802.1ad and 802.1Q", "ad", func(m string) []byte {
			return frames.Tag(frames.Tag(frame(m, frames.ProtoUDP, portWeb), frames.Ether8021Q, 0), frames.Ether8021AD, 0)
		}, bpf.ReasonVLAN, false},
		{"another ethertype", "88b5", func(m string) []byte {
			return frames.Ether(vmac, a.me, 0x88b5, append(make([]byte, 46), marker(m)...))
		}, bpf.ReasonNotIP, false},
		{"udp whose IPv4 length is past the frame", "long", func(m string) []byte {
			return lie(frame(m, frames.ProtoUDP, portAlt), 400)
		}, bpf.ReasonMalformed, false},
		{"udp whose IPv4 length cuts its header", "short", func(m string) []byte {
			return lie(frame(m, frames.ProtoUDP, portAlt), 24)
		}, bpf.ReasonMalformed, false},
		{"udp to the allowed port, lengths that agree", "agree", func(m string) []byte {
			return frame(m, frames.ProtoUDP, portAlt)
		}, bpf.ReasonAllowRule, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := topo.CaptureFrames(t, victim.NS, marker(tt.mark))
			c.counted(t, []bpf.Reason{tt.reason}, nil, func() { a.frames(tt.frame(tt.mark)) })
			if tt.passes {
				require.Positive(t, got.Count(), "reached the pod")
			} else {
				require.Zero(t, got.Count(), "reached the pod")
			}
		})
	}
}

// lie sets the IPv4 total length of an untagged frame.
func lie(frame []byte, n uint16) []byte {
	binary.BigEndian.PutUint16(frame[14+2:], n)
	return frame
}

// TestAReusedAddressStartsClean: the conntrack entries of an address that leaves the
// cluster go with it, so a pod that gets the address next inherits none of its flows. Before,
// the victim's flow to the old pod stayed, and the new holder of the address reached the
// isolated victim through it as a reply.
func TestAReusedAddressStartsClean(t *testing.T) {
	c := newCluster(t, topo.Routed, loadertest.Best(t))
	victim := c.addPod(t, "victim", nsProd, nil, policyOf(""))
	old := c.addPod(t, "old", nsDev, nil, nil)
	c.apply(t)
	for _, v6 := range []bool{false, true} {
		// The victim talks to the old pod: its flow to the old pod's address is tracked.
		c.attacker(t, victim, nil).ip(udpPacket(addrOf(victim, v6), addrOf(old, v6), 41100, portWeb, nil))
	}

	// The old pod goes; its address comes back with a pod of another namespace.
	oldNS, oldLabels := old.namespace, old.labels
	c.pods = c.pods[:1]
	c.apply(t)
	old.namespace, old.labels = nsSystem+"-reuse", labels("app", "reuser")
	c.pods = append(c.pods, old)
	c.apply(t)
	for _, v6 := range []bool{false, true} {
		got := topo.CaptureFrames(t, victim.NS, marker("reuse-"+famName(v6)))
		c.counted(t, []bpf.Reason{bpf.ReasonIsolated}, []bpf.Reason{bpf.ReasonReply}, func() {
			c.attacker(t, old, nil).ip(udpPacket(addrOf(old, v6), addrOf(victim, v6), portWeb, 41100, marker("reuse-"+famName(v6))))
		})
		require.Zero(t, got.Count(), "the new pod reached the victim on the old pod's flow")
	}
	old.namespace, old.labels = oldNS, oldLabels
}

// TestClosedAndUnansweredConnectionsAreNoPinholes: a TCP connection's entry outlives its FIN
// or RST by the close timeout, and a SYN nobody answered by the SYN timeout, not by the 2
// hours of an open connection. Both timeouts are set to a second here.
func TestClosedAndUnansweredConnectionsAreNoPinholes(t *testing.T) {
	c := newCluster(t, topo.Routed, loadertest.Best(t), withConstants(map[string]any{
		"ct_timeout_tcp_close_ns": uint64(time.Second),
		"ct_timeout_tcp_syn_ns":   uint64(time.Second),
	}))
	isolated := c.addPod(t, "isolated", nsProd, nil, policyOf(""))
	r := c.tp.AddClient("r")
	r.Echo(t, portWeb)
	c.apply(t)

	// A connection the pod opened and closed, and a SYN to a port nobody answers from.
	for _, v6 := range []bool{false, true} {
		to := netip.AddrPortFrom(clientAddr(r, v6), portWeb)
		conn, err := topo.DialTCP(t, isolated.NS, to)
		require.NoError(t, err)
		require.NoError(t, conn.Echo())
		local := conn.LocalAddr()
		require.NoError(t, conn.Close())
		c.attacker(t, isolated, nil).ip(synPacket(addrOf(isolated, v6), clientAddr(r, v6), 41200, portAlt))
		time.Sleep(1500 * time.Millisecond)

		got := topo.CaptureFrames(t, isolated.NS, marker("pinhole-"+famName(v6)))
		from := c.clientAttacker(t, r)
		c.counted(t, []bpf.Reason{bpf.ReasonIsolated}, []bpf.Reason{bpf.ReasonReply}, func() {
			ack := topo.TCPSegment(to.Addr(), local.Addr(), portWeb, local.Port(), frames.TCPAck, marker("pinhole-"+famName(v6)))
			from.ip(to.Addr(), local.Addr(), frames.ProtoTCP, ack)
			synAck := topo.TCPSegment(to.Addr(), addrOf(isolated, v6), portAlt, 41200, frames.TCPSyn|frames.TCPAck, marker("pinhole-"+famName(v6)))
			from.ip(to.Addr(), addrOf(isolated, v6), frames.ProtoTCP, synAck)
		})
		require.Zero(t, got.Count(), "a packet reached the pod through a closed or unanswered connection")
	}
}

// floodSeconds is how long TestAFloodBreaksNoOtherPodsFlows floods: 60 s, as long as an idle
// connection must sit under a full table to show that nothing pushes it out.
const floodSeconds = 60

// flood sends UDP datagrams from ns to every port of to, round after round from fresh source
// ports (each a new flow), at most rate a second, until stop is closed.
func flood(ns *topo.Netns, to netip.Addr, rate int, stop <-chan struct{}) (sent int, err error) {
	err = ns.Do(func() error {
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		var conn *net.UDPConn
		defer func() {
			if conn != nil {
				conn.Close()
			}
		}()
		port := 0
		for {
			select {
			case <-stop:
				return nil
			case <-tick.C:
			}
			for range rate / 100 {
				if port%65535 == 0 {
					if conn != nil {
						conn.Close()
					}
					var err error
					if conn, err = net.ListenUDP("udp", nil); err != nil {
						return err
					}
				}
				port++
				// Nothing listens there: errors of the send are the ICMP answers.
				_, _ = conn.WriteToUDPAddrPort([]byte("flood"), netip.AddrPortFrom(to, uint16(port%65535+1)))
				sent++
			}
		}
	})
	return sent, err
}

// startFlood floods from ns in the background until the returned function is called, which
// returns how many datagrams were sent.
func startFlood(t *testing.T, ns *topo.Netns, to netip.Addr) func() int {
	t.Helper()
	stop := make(chan struct{})
	type result struct {
		sent int
		err  error
	}
	done := make(chan result)
	go func() {
		n, err := flood(ns, to, 20000, stop)
		done <- result{n, err}
	}()
	return func() int {
		close(stop)
		r := <-done
		require.NoError(t, r.err, "flood")
		return r.sent
	}
}

// TestAFloodBreaksNoOtherPodsFlows: one pod's flood of new flows fills conntrack for a
// minute while another pod holds idle TCP connections both ways; afterwards they carry data.
// The table evicts nothing (an LRU evicted them before, and their packets were judged as new
// and dropped). And with a share per pod, the flooding pod fills its own share, and another
// pod still opens new connections.
func TestAFloodBreaksNoOtherPodsFlows(t *testing.T) {
	const size = 4096
	t.Run("a full table", func(t *testing.T) {
		c := newCluster(t, topo.Routed, loadertest.Best(t), withConntrackSize(size))
		holder := c.addPod(t, "holder", nsProd, nil, policyOf("allow tcp to ports 8080"))
		flooder := c.addPod(t, "flooder", nsDev, nil, nil)
		r := c.tp.AddClient("r")
		r.Echo(t, portWeb)
		c.apply(t)
		var streams []*stream
		for _, v6 := range []bool{false, true} {
			streams = append(streams,
				openStream(t, holder.NS, "tcp", netip.AddrPortFrom(clientAddr(r, v6), portWeb)),
				openStream(t, r.NS, "tcp", netip.AddrPortFrom(addrOf(holder, v6), portWeb)))
		}

		before := c.stats(t)
		stopFlood := startFlood(t, flooder.NS, r.IPv4)
		time.Sleep(floodSeconds * time.Second)
		sent := stopFlood()
		after := c.stats(t)
		col, err := c.dp.CollectConntrack()
		require.NoError(t, err)
		t.Logf("%d datagrams of new flows sent; conntrack %d of %d live; %d inserts found no room",
			sent, col.Live4, col.Capacity4, after[bpf.ReasonCTFull]-before[bpf.ReasonCTFull])
		require.Greater(t, sent, 4*size, "the flood went past the table's size")
		require.Greater(t, after[bpf.ReasonCTFull], before[bpf.ReasonCTFull], "the table was full")
		require.GreaterOrEqual(t, col.Live4, uint32(size-16), "the table is full")

		for _, s := range streams {
			require.NoError(t, s.echo(passWait), "an idle connection after the flood")
		}
	})

	t.Run("a share per pod", func(t *testing.T) {
		const share = 1024
		c := newCluster(t, topo.Routed, loadertest.Best(t), withConntrackSize(size),
			withConstants(map[string]any{"ct_endpoint_max": uint32(share)}))
		holder := c.addPod(t, "holder", nsProd, nil, policyOf("allow tcp to ports 8080"))
		flooder := c.addPod(t, "flooder", nsDev, nil, nil)
		r := c.tp.AddClient("r")
		r.Echo(t, portWeb)
		c.apply(t)

		before := c.stats(t)
		stopFlood := startFlood(t, flooder.NS, r.IPv4)
		time.Sleep(2 * time.Second)
		// New connections of another pod, while the flood goes on.
		for _, v6 := range []bool{false, true} {
			require.NoError(t, topo.TCPEcho(holder.NS, netip.AddrPortFrom(clientAddr(r, v6), portWeb), topo.Timeout(passWait)),
				"a new connection of another pod during the flood")
		}
		stopFlood()
		after := c.stats(t)
		require.Greater(t, after[bpf.ReasonCTQuota], before[bpf.ReasonCTQuota], "the flooder hit its share")
		require.Equal(t, before[bpf.ReasonCTFull], after[bpf.ReasonCTFull], "the table never filled")
	})
}
