package topo

import (
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
)

// ErrNoAnswer is wrapped by the traffic helpers' errors when nothing came back in time: the
// packet or its answer was dropped. A refused connection is a different error: the packet
// reached the other side.
var ErrNoAnswer = errors.New("no answer in time")

// ErrNotSent is wrapped by the traffic helpers' errors when the message could not be written
// to the socket: nothing left, so it proves neither a drop nor a pass.
var ErrNotSent = errors.New("message not sent")

// DefaultTimeout bounds each exchange. On veth pairs an answer takes well under a
// millisecond, so a longer wait only slows down the tests that expect a drop.
const DefaultTimeout = 500 * time.Millisecond

const defaultSize = 32

// writeTimeout bounds a helper's write. A small message on a fresh socket never waits for
// buffer space, so a write gets far longer than an answer: on an emulated kernel a deadline
// as short as an answer's can pass before the write even starts, and the message would be
// lost to the test, not to the network.
const writeTimeout = 10 * time.Second

type options struct {
	src     netip.Addr
	timeout time.Duration
	size    int
}

// Option changes how a traffic helper sends.
type Option func(*options)

// From sends from a given local address (for example one of a Client's Extra addresses)
// instead of the one the kernel picks.
func From(src netip.Addr) Option { return func(o *options) { o.src = src } }

// Timeout sets how long to wait for each answer.
func Timeout(d time.Duration) Option { return func(o *options) { o.timeout = d } }

// Size sets the payload size in bytes. A UDP payload above the path MTU (1500 on the veth
// pairs) is sent as IP fragments.
func Size(n int) Option { return func(o *options) { o.size = n } }

func makeOptions(opts []Option) options {
	o := options{timeout: DefaultTimeout, size: defaultSize}
	for _, opt := range opts {
		opt(&o)
	}
	return o
}

// classify wraps err with ErrNoAnswer when it is a timeout.
func classify(err error) error {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return fmt.Errorf("%w: %w", ErrNoAnswer, err)
	}
	return err
}

// deadlines is a socket whose reads and writes have deadlines of their own.
type deadlines interface {
	SetReadDeadline(time.Time) error
	SetWriteDeadline(time.Time) error
}

// sendThenWait runs write within writeTimeout and only then starts the timeout of the
// answer, so that the wait for an answer is the time the network had for it. A failed write
// wraps ErrNotSent.
func sendThenWait(c deadlines, timeout time.Duration, write func() error) error {
	if err := c.SetWriteDeadline(time.Now().Add(writeTimeout)); err != nil {
		return fmt.Errorf("set write deadline: %w", err)
	}
	if err := write(); err != nil {
		return fmt.Errorf("%w: %w", ErrNotSent, err)
	}
	if err := c.SetReadDeadline(time.Now().Add(timeout)); err != nil {
		return fmt.Errorf("set read deadline: %w", err)
	}
	return nil
}

func payload(n int) []byte {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return b
}

// ListenTCP starts a TCP echo server in ns on addr (port 0 picks one) and returns where it
// listens. It stops, closing every connection, when the test ends.
func ListenTCP(tb testing.TB, ns *Netns, addr netip.AddrPort) netip.AddrPort {
	tb.Helper()
	var ln *net.TCPListener
	err := ns.Do(func() error {
		var err error
		ln, err = net.ListenTCP("tcp", net.TCPAddrFromAddrPort(addr))
		return err
	})
	require.NoError(tb, err, "listen tcp %s in %s", addr, ns.Name)

	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		conns = map[net.Conn]struct{}{}
	)
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns[c] = struct{}{}
			mu.Unlock()
			wg.Go(func() {
				// Plain reads and writes: io.Copy between TCP sockets splices through a pipe
				// from a process-wide pool, which the leak check would see as left open.
				_, _ = io.CopyBuffer(struct{ io.Writer }{c}, struct{ io.Reader }{c}, make([]byte, 1<<16))
				mu.Lock()
				delete(conns, c)
				mu.Unlock()
				_ = c.Close()
			})
		}
	})
	tb.Cleanup(func() {
		_ = ln.Close()
		mu.Lock()
		for c := range conns {
			_ = c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return ln.Addr().(*net.TCPAddr).AddrPort()
}

// ListenUDP starts a UDP echo server in ns on addr (port 0 picks one) and returns where it
// listens. It stops when the test ends.
func ListenUDP(tb testing.TB, ns *Netns, addr netip.AddrPort) netip.AddrPort {
	tb.Helper()
	var pc *net.UDPConn
	err := ns.Do(func() error {
		var err error
		pc, err = net.ListenUDP("udp", net.UDPAddrFromAddrPort(addr))
		return err
	})
	require.NoError(tb, err, "listen udp %s in %s", addr, ns.Name)
	var wg sync.WaitGroup
	wg.Go(func() {
		buf := make([]byte, 1<<16)
		for {
			n, from, err := pc.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			_, _ = pc.WriteToUDPAddrPort(buf[:n], from)
		}
	})
	tb.Cleanup(func() {
		_ = pc.Close()
		wg.Wait()
	})
	return pc.LocalAddr().(*net.UDPAddr).AddrPort()
}

// Echo starts TCP and UDP echo servers in ns on port of every address in addrs.
func Echo(tb testing.TB, ns *Netns, port uint16, addrs ...netip.Addr) {
	tb.Helper()
	for _, a := range addrs {
		ListenTCP(tb, ns, netip.AddrPortFrom(a, port))
		ListenUDP(tb, ns, netip.AddrPortFrom(a, port))
	}
}

// Echo starts TCP and UDP echo servers on port of both of the pod's addresses.
func (p *Pod) Echo(tb testing.TB, port uint16) {
	tb.Helper()
	Echo(tb, p.NS, port, p.IPv4, p.IPv6)
}

// Echo starts TCP and UDP echo servers on port of all of the client's addresses.
func (c *Client) Echo(tb testing.TB, port uint16) {
	tb.Helper()
	Echo(tb, c.NS, port, append([]netip.Addr{c.IPv4, c.IPv6}, c.Extra...)...)
}

// Conn is a TCP connection to an echo server, kept open so that a test can check later
// whether its packets still get through.
type Conn struct {
	c       *net.TCPConn
	timeout time.Duration
	size    int
}

// DialTCP opens a TCP connection from ns to an echo server at to and proves it works with one
// exchange. The connection is closed when the test ends.
func DialTCP(tb testing.TB, from *Netns, to netip.AddrPort, opts ...Option) (*Conn, error) {
	c, err := dialTCP(from, to, makeOptions(opts))
	if err != nil {
		return nil, err
	}
	tb.Cleanup(func() { _ = c.Close() })
	if err := c.Echo(); err != nil {
		return nil, err
	}
	return c, nil
}

func dialTCP(from *Netns, to netip.AddrPort, o options) (*Conn, error) {
	d := net.Dialer{Timeout: o.timeout}
	if o.src.IsValid() {
		d.LocalAddr = &net.TCPAddr{IP: o.src.AsSlice()}
	}
	var nc net.Conn
	err := from.Do(func() error {
		var err error
		nc, err = d.Dial("tcp", to.String())
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("dial tcp %s from %s: %w", to, from.Name, classify(err))
	}
	return &Conn{c: nc.(*net.TCPConn), timeout: o.timeout, size: o.size}, nil
}

// Echo sends a fresh message and waits for it to come back. After a failed Echo the stream
// is out of step (the lost message may still arrive): open a new Conn rather than retry.
func (c *Conn) Echo() error {
	msg := payload(c.size)
	if err := sendThenWait(c.c, c.timeout, func() error {
		_, err := c.c.Write(msg)
		return err
	}); err != nil {
		return fmt.Errorf("write to %s: %w", c.c.RemoteAddr(), err)
	}
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(c.c, got); err != nil {
		return fmt.Errorf("read echo from %s: %w", c.c.RemoteAddr(), classify(err))
	}
	if !bytes.Equal(got, msg) {
		return fmt.Errorf("echo from %s differs from what was sent", c.c.RemoteAddr())
	}
	return nil
}

// LocalAddr is the connection's address in its namespace.
func (c *Conn) LocalAddr() netip.AddrPort { return c.c.LocalAddr().(*net.TCPAddr).AddrPort() }

// Close closes the connection.
func (c *Conn) Close() error { return c.c.Close() }

// TCPEcho opens a TCP connection from ns to an echo server, exchanges one message and closes
// it: nil means the connection was allowed both ways.
func TCPEcho(from *Netns, to netip.AddrPort, opts ...Option) error {
	c, err := dialTCP(from, to, makeOptions(opts))
	if err != nil {
		return err
	}
	defer c.Close()
	return c.Echo()
}

// UDPEcho sends one datagram from ns to a UDP echo server and waits for it to come back
// whole. With Size above the MTU, both ways travel as IP fragments.
func UDPEcho(from *Netns, to netip.AddrPort, opts ...Option) error {
	o := makeOptions(opts)
	var laddr *net.UDPAddr
	if o.src.IsValid() {
		laddr = net.UDPAddrFromAddrPort(netip.AddrPortFrom(o.src, 0))
	}
	var c *net.UDPConn
	err := from.Do(func() error {
		var err error
		c, err = net.DialUDP("udp", laddr, net.UDPAddrFromAddrPort(to))
		return err
	})
	if err != nil {
		return fmt.Errorf("dial udp %s from %s: %w", to, from.Name, err)
	}
	defer c.Close()
	msg := payload(o.size)
	if err := sendThenWait(c, o.timeout, func() error {
		_, err := c.Write(msg)
		return err
	}); err != nil {
		return fmt.Errorf("send udp to %s from %s: %w", to, from.Name, err)
	}
	buf := make([]byte, len(msg)+1)
	n, err := c.Read(buf)
	if err != nil {
		return fmt.Errorf("read udp echo from %s in %s: %w", to, from.Name, classify(err))
	}
	if !bytes.Equal(buf[:n], msg) {
		return fmt.Errorf("udp echo from %s: got %d bytes that differ from the %d sent", to, n, len(msg))
	}
	return nil
}

// Ping sends one ICMP (IPv4) or ICMPv6 echo request from ns to `to` and waits for the reply.
// It uses a datagram ICMP socket, so the kernel picks the echo identifier and hands this
// socket only the replies meant for it.
func Ping(from *Netns, to netip.Addr, opts ...Option) error {
	o := makeOptions(opts)
	network, laddr, proto := "udp4", "0.0.0.0", 1
	var typ, replyType icmp.Type = ipv4.ICMPTypeEcho, ipv4.ICMPTypeEchoReply
	if to.Is6() {
		network, laddr, proto = "udp6", "::", 58
		typ, replyType = ipv6.ICMPTypeEchoRequest, ipv6.ICMPTypeEchoReply
	}
	if o.src.IsValid() {
		laddr = o.src.String()
	}
	var c *icmp.PacketConn
	err := from.Do(func() error {
		var err error
		c, err = icmp.ListenPacket(network, laddr)
		return err
	})
	if err != nil {
		return fmt.Errorf("open icmp socket in %s: %w", from.Name, err)
	}
	defer c.Close()
	data := payload(o.size)
	req := icmp.Message{Type: typ, Body: &icmp.Echo{Seq: 1, Data: data}}
	b, err := req.Marshal(nil)
	if err != nil {
		return fmt.Errorf("marshal echo request: %w", err)
	}
	if err := sendThenWait(c, o.timeout, func() error {
		_, err := c.WriteTo(b, &net.UDPAddr{IP: to.AsSlice()})
		return err
	}); err != nil {
		return fmt.Errorf("ping %s from %s: %w", to, from.Name, err)
	}
	buf := make([]byte, 1<<16)
	for {
		n, _, err := c.ReadFrom(buf)
		if err != nil {
			return fmt.Errorf("ping %s from %s: %w", to, from.Name, classify(err))
		}
		m, err := icmp.ParseMessage(proto, buf[:n])
		if err != nil {
			return fmt.Errorf("parse icmp from %s: %w", to, err)
		}
		if echo, ok := m.Body.(*icmp.Echo); ok && m.Type == replyType && bytes.Equal(echo.Data, data) {
			return nil
		}
	}
}
