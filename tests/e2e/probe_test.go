package e2e

import (
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/podwall/podwall/compiler"
	"github.com/podwall/podwall/tests/topo"
)

// Waits for an answer. A packet that is let through is answered in well under a millisecond
// on these veth pairs, so a probe expected to be dropped waits only long enough to be sure
// (the wait is its whole cost); one expected to pass waits long, so a busy machine never
// turns it into a false drop.
//
// passWait grows with PODWALL_TEST_SLOWDOWN (a whole number, default 1), which the kernel
// matrix sets for its emulated guests: there a program load under test can hold the virtual
// CPUs for seconds, and a connection that must pass would time out without being dropped.
const dropWait = 300 * time.Millisecond

var passWait = 2 * time.Second * time.Duration(slowdown())

func slowdown() int {
	n, err := strconv.Atoi(os.Getenv("PODWALL_TEST_SLOWDOWN"))
	if err != nil || n < 1 {
		return 1
	}
	return n
}

// ephemeralPort stands for the source port the kernel picks, in the reference verdict of a
// probe that does not choose its own; only policies with `from ports` depend on it, and their
// probes choose.
const ephemeralPort = 50000

// Message sizes: small, and a UDP datagram that travels as three IP fragments on links with
// an MTU of 1500.
const (
	messageSize = 32
	bigSize     = 4000
)

// peer is where probes are sent from.
type peer struct {
	name   string
	ns     *topo.Netns
	v4, v6 netip.Addr
	// pick says the addresses must be chosen explicitly (topo.From): the kernel would pick
	// others.
	pick bool
	// local says the peer is the node itself: its packets leave through the interface
	// podwall judges them on, so a drop fails the send (ENOBUFS) instead of going
	// unanswered when the socket reports it (ICMP sockets do, UDP sockets do not).
	local bool
}

func (p peer) addr(v6 bool) netip.Addr {
	if v6 {
		return p.v6
	}
	return p.v4
}

func podPeer(p *pod) peer { return peer{name: p.Name, ns: p.NS, v4: p.IPv4, v6: p.IPv6} }

func (c *cluster) node() peer {
	return peer{name: "node", ns: c.tp.Node, v4: c.tp.NodeIPv4, v6: c.tp.NodeIPv6, local: true}
}

func clientPeer(cl *topo.Client) peer {
	return peer{name: cl.Name, ns: cl.NS, v4: cl.IPv4, v6: cl.IPv6}
}

// extraPeer sends from extra addresses of a client.
func extraPeer(name string, cl *topo.Client, v4, v6 netip.Addr) peer {
	return peer{name: name, ns: cl.NS, v4: v4, v6: v6, pick: true}
}

type proto int

const (
	tcp proto = iota
	udp
	icmp   // ICMP echo for IPv4, ICMPv6 echo for IPv6
	bigUDP // a 4000-byte UDP datagram: IP fragments both ways
)

// flow is a kind of traffic a probe sends, in both families unless narrowed.
type flow struct {
	proto   proto
	port    uint16 // destination port (tcp, udp, bigUDP)
	srcPort uint16 // 0: the kernel picks
	only    int    // 4 or 6: one family only
}

func tcpTo(port uint16) flow    { return flow{proto: tcp, port: port} }
func udpTo(port uint16) flow    { return flow{proto: udp, port: port} }
func bigUDPTo(port uint16) flow { return flow{proto: bigUDP, port: port} }

var ping = flow{proto: icmp}

// Every kind of traffic to portWeb.
var everything = []flow{tcpTo(portWeb), udpTo(portWeb), ping}

func (f flow) v4() flow { f.only = 4; return f }
func (f flow) v6() flow { f.only = 6; return f }

// from sends from a chosen source port, one of topo.ChosenPorts, which no other socket gets
// as its ephemeral port. A source port is used by one flow only, in the whole test: a second
// use would find the first one's conntrack entry (or TIME_WAIT socket).
func (f flow) from(port uint16) flow { f.srcPort = port; return f }

func (f flow) String() string {
	var s string
	switch f.proto {
	case tcp:
		s = fmt.Sprintf("tcp:%d", f.port)
	case udp:
		s = fmt.Sprintf("udp:%d", f.port)
	case bigUDP:
		s = fmt.Sprintf("udp-4000B:%d", f.port)
	case icmp:
		s = "ping"
	}
	if f.srcPort != 0 {
		s += fmt.Sprintf("-from-%d", f.srcPort)
	}
	return s
}

// check is an expectation: the flows from a peer to a pod pass, or are dropped.
type check struct {
	from  peer
	to    *pod
	flows []flow
	pass  bool
}

func passes(from peer, to *pod, flows ...flow) check {
	return check{from: from, to: to, flows: flows, pass: true}
}

func drops(from peer, to *pod, flows ...flow) check {
	return check{from: from, to: to, flows: flows, pass: false}
}

// probe is one exchange of a check in one family.
type probe struct {
	check
	flow flow
	v6   bool
}

func (p probe) name() string {
	verdict := "dropped"
	if p.pass {
		verdict = "passes"
	}
	fam := "v4"
	if p.v6 {
		fam = "v6"
	}
	return fmt.Sprintf("%s_to_%s_%s_%s_%s", p.from.name, p.to.Name, p.flow, fam, verdict)
}

func (p probe) src() netip.Addr { return p.from.addr(p.v6) }

func (p probe) dst() netip.Addr {
	if p.v6 {
		return p.to.IPv6
	}
	return p.to.IPv4
}

// packet is the first packet of the probe as the data path reads it.
func (p probe) packet() compiler.Packet {
	pk := compiler.Packet{Src: p.src(), Dst: p.dst(), FromNode: p.from.local, SrcPort: ephemeralPort, DstPort: p.flow.port}
	if p.flow.srcPort != 0 {
		pk.SrcPort = p.flow.srcPort
	}
	switch p.flow.proto {
	case tcp:
		pk.Proto = unix.IPPROTO_TCP
	case udp:
		pk.Proto = unix.IPPROTO_UDP
	case bigUDP:
		pk.Proto, pk.Fragment = unix.IPPROTO_UDP, compiler.FragFirst
	case icmp:
		pk.SrcPort, pk.DstPort = 0, 0
		pk.Proto, pk.ICMPType = unix.IPPROTO_ICMP, 8
		if p.v6 {
			pk.Proto, pk.ICMPType = unix.IPPROTO_ICMPV6, 128
		}
	}
	return pk
}

// bigSends is how many fresh datagrams a big UDP probe that must pass may send. SPEC 3 judges
// a fragment that overtakes its datagram's first fragment without ports, so under a port rule
// the datagram is lost, as on any network that reorders. An emulated guest of the kernel
// matrix can reorder: a sender that migrates between CPUs mid-datagram, while the first CPU's
// backlog waits for ksoftirqd (a lost datagram was seen there once in many runs). An
// application resends; so does the probe. A probe that must be dropped sends once: no resend
// can turn a drop into a pass.
const bigSends = 3

// run sends the probe and waits for its answer.
func (p probe) run() error {
	err := p.send()
	for i := 1; i < bigSends && p.pass && p.flow.proto == bigUDP && errors.Is(err, topo.ErrNoAnswer); i++ {
		err = p.send()
	}
	return err
}

// send sends the probe once and waits for its answer.
func (p probe) send() error {
	wait := dropWait
	if p.pass {
		wait = passWait
	}
	size := messageSize
	if p.flow.proto == bigUDP {
		size = bigSize
	}
	opts := []topo.Option{topo.Timeout(wait), topo.Size(size)}
	if p.from.pick {
		opts = append(opts, topo.From(p.src()))
	}
	to := netip.AddrPortFrom(p.dst(), p.flow.port)
	switch {
	case p.flow.proto == icmp:
		return topo.Ping(p.from.ns, p.dst(), opts...)
	case p.flow.srcPort != 0:
		network := "udp"
		if p.flow.proto == tcp {
			network = "tcp"
		}
		return echoFromPort(p.from.ns, network, netip.AddrPortFrom(p.src(), p.flow.srcPort), to, wait, size)
	case p.flow.proto == tcp:
		return topo.TCPEcho(p.from.ns, to, opts...)
	default:
		return topo.UDPEcho(p.from.ns, to, opts...)
	}
}

func (ch check) probes() []probe {
	var out []probe
	for _, f := range ch.flows {
		for _, v6 := range []bool{false, true} {
			if (f.only == 4 && v6) || (f.only == 6 && !v6) {
				continue
			}
			out = append(out, probe{check: ch, flow: f, v6: v6})
		}
	}
	return out
}

// maxInFlight bounds the probes sent at once.
const maxInFlight = 32

// verify runs the probes of every check at once, since most of their cost is the wait for
// an answer that never comes, then reports each as a subtest. Each expectation is first held
// against the reference evaluator: the data path must answer what it answers for the first
// packet of a new flow.
func (c *cluster) verify(t *testing.T, checks ...check) {
	t.Helper()
	var probes []probe
	for _, ch := range checks {
		probes = append(probes, ch.probes()...)
	}
	errs := make([]error, len(probes))
	var wg sync.WaitGroup
	sem := make(chan struct{}, maxInFlight)
	for i, p := range probes {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			errs[i] = p.run()
		})
	}
	wg.Wait()
	for i, p := range probes {
		t.Run(p.name(), func(t *testing.T) {
			want := compiler.Evaluate(c.state, uint32(p.to.HostIfindex), p.packet())
			require.Equal(t, p.pass, want.Pass, "the reference evaluator disagrees: %s (rule bit %d)", want.Reason, want.Rule)
			switch {
			case p.pass:
				require.NoError(t, errs[i])
			case p.from.local && errors.Is(errs[i], unix.ENOBUFS):
			default:
				require.ErrorIs(t, errs[i], topo.ErrNoAnswer, "the packet or its answer must be dropped")
			}
		})
	}
}

// echoFromPort exchanges one message with an echo server from a chosen source address and
// port; topo's helpers let the kernel pick the port. SO_REUSEADDR lets the port be bound
// while an earlier connection from it lingers.
func echoFromPort(ns *topo.Netns, network string, src, to netip.AddrPort, wait time.Duration, size int) error {
	d := net.Dialer{Timeout: wait, Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		err := rc.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEADDR, 1)
		})
		return errors.Join(err, serr)
	}}
	if network == "tcp" {
		d.LocalAddr = net.TCPAddrFromAddrPort(src)
	} else {
		d.LocalAddr = net.UDPAddrFromAddrPort(src)
	}
	var conn net.Conn
	err := ns.Do(func() error {
		var err error
		conn, err = d.Dial(network, to.String())
		return err
	})
	if err != nil {
		return fmt.Errorf("dial %s %s from %s: %w", network, to, src, noAnswer(err))
	}
	defer conn.Close()
	return exchange(conn, wait, size)
}

// writeWait bounds a write, which does not wait on the network: far longer than an answer,
// since on an emulated kernel a deadline as short as an answer's can pass before the write
// starts.
const writeWait = 10 * time.Second

// exchange sends a fresh message of size bytes and reads it back; wait starts once the
// message is sent. A failed write wraps topo.ErrNotSent: it proves neither a drop nor a pass.
func exchange(conn net.Conn, wait time.Duration, size int) error {
	msg := make([]byte, size)
	_, _ = rand.Read(msg)
	if err := conn.SetWriteDeadline(time.Now().Add(writeWait)); err != nil {
		return fmt.Errorf("set write deadline: %w", err)
	}
	if _, err := conn.Write(msg); err != nil {
		return fmt.Errorf("write to %s: %w: %w", conn.RemoteAddr(), topo.ErrNotSent, err)
	}
	if err := conn.SetReadDeadline(time.Now().Add(wait)); err != nil {
		return fmt.Errorf("set read deadline: %w", err)
	}
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(conn, got); err != nil {
		return fmt.Errorf("read echo from %s: %w", conn.RemoteAddr(), noAnswer(err))
	}
	if !bytes.Equal(got, msg) {
		return fmt.Errorf("echo from %s differs from what was sent", conn.RemoteAddr())
	}
	return nil
}

// noAnswer wraps a timeout with topo.ErrNoAnswer, as topo's helpers do.
func noAnswer(err error) error {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return fmt.Errorf("%w: %w", topo.ErrNoAnswer, err)
	}
	return err
}

// stream is a connection to an echo server that stays open while the data path changes, to
// see whether its next packets still get through.
type stream struct {
	name string
	conn net.Conn
}

// openStream connects from ns to an echo server and proves the connection works.
func openStream(t *testing.T, ns *topo.Netns, network string, to netip.AddrPort) *stream {
	t.Helper()
	var conn net.Conn
	err := ns.Do(func() error {
		var err error
		conn, err = net.DialTimeout(network, to.String(), passWait)
		return err
	})
	require.NoError(t, err, "dial %s %s", network, to)
	t.Cleanup(func() { _ = conn.Close() })
	s := &stream{name: network + " " + to.String(), conn: conn}
	require.NoError(t, s.echo(passWait), "first exchange on %s", s.name)
	return s
}

// echo exchanges one message. After a failure the stream is out of step (a lost message may
// still arrive): do not use it again.
func (s *stream) echo(wait time.Duration) error {
	if err := exchange(s.conn, wait, messageSize); err != nil {
		return fmt.Errorf("%s: %w", s.name, err)
	}
	return nil
}

// retransmits is how many segments a TCP stream has sent again: none on a path that lost
// nothing.
func (s *stream) retransmits() (uint32, error) {
	rc, err := s.conn.(*net.TCPConn).SyscallConn()
	if err != nil {
		return 0, fmt.Errorf("raw conn: %w", err)
	}
	var info *unix.TCPInfo
	var serr error
	if err := rc.Control(func(fd uintptr) {
		info, serr = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO)
	}); err != nil {
		return 0, fmt.Errorf("control: %w", err)
	}
	if serr != nil {
		return 0, fmt.Errorf("get TCP_INFO: %w", serr)
	}
	return info.Total_retrans, nil
}
