package topo

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// What a pod with CAP_NET_RAW (the container default) can do to the node: send any frame
// on its interface, forged sources, VLAN tags and odd ethertypes included; and a raw
// listener in another pod that counts what reaches its interface, whatever its kernel then
// does with it.

// HardwareAddr is the MAC address of the interface ifname in ns.
func (n *Netns) HardwareAddr(ifname string) (net.HardwareAddr, error) {
	l, err := n.nl.LinkByName(ifname)
	if err != nil {
		return nil, fmt.Errorf("find %s in %s: %w", ifname, n.Name, err)
	}
	return l.Attrs().HardwareAddr, nil
}

// PodMAC is the MAC address of a pod's or a client's own interface.
func (n *Netns) PodMAC() (net.HardwareAddr, error) { return n.HardwareAddr(podIfname) }

// GatewayMAC is the MAC address a pod sends its routed traffic to: its veth's host side when
// routed, the bridge when bridged.
func (t *Topology) GatewayMAC(p *Pod) (net.HardwareAddr, error) {
	if t.Kind == Bridged {
		return t.Node.HardwareAddr(bridgeName)
	}
	return t.Node.HardwareAddr(p.HostIfname)
}

// UplinkMAC is the MAC address a client sends to the node at.
func (t *Topology) UplinkMAC(c *Client) (net.HardwareAddr, error) {
	return t.Node.HardwareAddr(c.HostIfname)
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// rawSocket opens a packet socket on the pod-side interface of ns, from inside ns.
func rawSocket(n *Netns) (fd int, err error) {
	err = n.Do(func() error {
		ifi, err := net.InterfaceByName(podIfname)
		if err != nil {
			return err
		}
		fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(htons(unix.ETH_P_ALL)))
		if err != nil {
			return fmt.Errorf("packet socket: %w", err)
		}
		if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: ifi.Index}); err != nil {
			unix.Close(fd)
			return fmt.Errorf("bind packet socket to %s: %w", podIfname, err)
		}
		return nil
	})
	return fd, err
}

// SendFrames sends whole Ethernet frames on the pod-side interface of ns, as they are.
func SendFrames(n *Netns, frames ...[]byte) error {
	fd, err := rawSocket(n)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	for _, f := range frames {
		if _, err := unix.Write(fd, f); err != nil {
			return fmt.Errorf("send frame of %d bytes from %s: %w", len(f), n.Name, err)
		}
	}
	return nil
}

// Capture counts the frames that arrive on the pod-side interface of a namespace and carry a
// marker, until the test ends.
type Capture struct {
	marker []byte
	n      atomic.Int64
}

// Count is how many marked frames arrived so far.
func (c *Capture) Count() int { return int(c.n.Load()) }

// CaptureFrames starts counting the frames that arrive on the pod-side interface of ns and
// hold marker anywhere in them.
func CaptureFrames(tb testing.TB, n *Netns, marker []byte) *Capture {
	tb.Helper()
	fd, err := rawSocket(n)
	require.NoError(tb, err)
	// Incoming frames only; a read times out now and then so that the reader sees the stop.
	tv := unix.Timeval{Usec: 100_000}
	require.NoError(tb, unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv))
	c := &Capture{marker: marker}
	var stop atomic.Bool
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		buf := make([]byte, 65536)
		for !stop.Load() {
			k, from, err := unix.Recvfrom(fd, buf, 0)
			if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
				continue
			}
			if err != nil {
				return
			}
			if ll, ok := from.(*unix.SockaddrLinklayer); ok && ll.Pkttype == unix.PACKET_OUTGOING {
				continue
			}
			if bytes.Contains(buf[:k], c.marker) {
				c.n.Add(1)
			}
		}
	}()
	tb.Cleanup(func() {
		stop.Store(true)
		wg.Wait()
		unix.Close(fd)
	})
	return c
}

// Ethertypes and tag protocol identifiers.
const (
	EtherIPv4   = 0x0800
	EtherIPv6   = 0x86dd
	EtherARP    = 0x0806
	Ether8021Q  = 0x8100
	Ether8021AD = 0x88a8
)

// Frame is an Ethernet frame.
func Frame(dst, src net.HardwareAddr, etherType uint16, payload []byte) []byte {
	b := make([]byte, 14, 14+len(payload))
	copy(b[0:6], dst)
	copy(b[6:12], src)
	binary.BigEndian.PutUint16(b[12:], etherType)
	return append(b, payload...)
}

// Tag inserts a VLAN tag (tpid 0x8100 or 0x88a8, and a VLAN id) after a frame's addresses.
func Tag(frame []byte, tpid, vid uint16) []byte {
	out := make([]byte, 0, len(frame)+4)
	out = append(out, frame[:12]...)
	out = binary.BigEndian.AppendUint16(out, tpid)
	out = binary.BigEndian.AppendUint16(out, vid&0x0fff)
	return append(out, frame[12:]...)
}

// IP protocol numbers of the segments below.
const (
	ProtoICMP   = 1
	ProtoTCP    = 6
	ProtoUDP    = 17
	ProtoICMPv6 = 58
)

// IPPacket is an IPv4 or IPv6 packet from src to dst carrying l4 as protocol proto, with its
// ethertype. The transport checksum is l4's own (see UDPSegment, TCPSegment, ICMPMessage).
func IPPacket(src, dst netip.Addr, proto uint8, l4 []byte) (uint16, []byte) {
	if src.Is4() {
		h := make([]byte, 20, 20+len(l4))
		h[0] = 0x45
		binary.BigEndian.PutUint16(h[2:], uint16(20+len(l4)))
		h[8] = 64
		h[9] = proto
		s, d := src.As4(), dst.As4()
		copy(h[12:], s[:])
		copy(h[16:], d[:])
		binary.BigEndian.PutUint16(h[10:], ^uint16(sum(0, h)))
		return EtherIPv4, append(h, l4...)
	}
	h := make([]byte, 40, 40+len(l4))
	h[0] = 0x60
	binary.BigEndian.PutUint16(h[4:], uint16(len(l4)))
	h[6] = proto
	h[7] = 64
	s, d := src.As16(), dst.As16()
	copy(h[8:], s[:])
	copy(h[24:], d[:])
	return EtherIPv6, append(h, l4...)
}

// UDPSegment is a UDP header and payload, its checksum computed for src and dst.
func UDPSegment(src, dst netip.Addr, sport, dport uint16, payload []byte) []byte {
	b := make([]byte, 8, 8+len(payload))
	binary.BigEndian.PutUint16(b[0:], sport)
	binary.BigEndian.PutUint16(b[2:], dport)
	binary.BigEndian.PutUint16(b[4:], uint16(8+len(payload)))
	b = append(b, payload...)
	binary.BigEndian.PutUint16(b[6:], transportChecksum(src, dst, ProtoUDP, b))
	return b
}

// TCP flags.
const (
	TCPSyn = 0x02
	TCPAck = 0x10
)

// TCPSegment is a TCP header with flags and a payload, its checksum computed for src and dst.
func TCPSegment(src, dst netip.Addr, sport, dport uint16, flags uint8, payload []byte) []byte {
	b := make([]byte, 20, 20+len(payload))
	binary.BigEndian.PutUint16(b[0:], sport)
	binary.BigEndian.PutUint16(b[2:], dport)
	binary.BigEndian.PutUint32(b[4:], 1)
	b[12] = 5 << 4
	b[13] = flags
	binary.BigEndian.PutUint16(b[14:], 65535)
	b = append(b, payload...)
	binary.BigEndian.PutUint16(b[16:], transportChecksum(src, dst, ProtoTCP, b))
	return b
}

// ICMPMessage is an ICMP (IPv4) or ICMPv6 message of a type and code; rest is what follows the
// first four bytes (an echo's identifier and sequence, an error's unused word and quote).
func ICMPMessage(src, dst netip.Addr, typ, code uint8, rest []byte) []byte {
	b := make([]byte, 4, 4+len(rest))
	b[0], b[1] = typ, code
	b = append(b, rest...)
	if src.Is4() {
		binary.BigEndian.PutUint16(b[2:], ^uint16(sum(0, b)))
	} else {
		binary.BigEndian.PutUint16(b[2:], transportChecksum(src, dst, ProtoICMPv6, b))
	}
	return b
}

func transportChecksum(src, dst netip.Addr, proto uint8, seg []byte) uint16 {
	var pseudo []byte
	pseudo = append(pseudo, src.AsSlice()...)
	pseudo = append(pseudo, dst.AsSlice()...)
	pseudo = append(pseudo, 0, proto)
	pseudo = binary.BigEndian.AppendUint16(pseudo, uint16(len(seg)))
	c := ^uint16(sum(sum(0, pseudo), seg))
	if c == 0 && proto == ProtoUDP {
		return 0xffff
	}
	return c
}

// sum is the ones' complement sum of b added to s, folded to 16 bits.
func sum(s uint32, b []byte) uint32 {
	for i := 0; i+1 < len(b); i += 2 {
		s += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	if len(b)%2 == 1 {
		s += uint32(b[len(b)-1]) << 8
	}
	for s > 0xffff {
		s = s>>16 + s&0xffff
	}
	return s
}
