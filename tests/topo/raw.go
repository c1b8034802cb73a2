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

	"github.com/podwall/podwall/tests/frames"
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

// IPPacket is an IPv4 or IPv6 packet from src to dst carrying l4 as protocol proto, with its
// ethertype. The transport checksum is l4's own (see UDPSegment, TCPSegment, ICMPMessage).
func IPPacket(src, dst netip.Addr, proto uint8, l4 []byte) (uint16, []byte) {
	if src.Is4() {
		return frames.EtherIPv4, frames.SealIPv4(frames.IPv4{Src: src, Dst: dst}.Packet(frames.Raw(proto, l4)))
	}
	return frames.EtherIPv6, frames.IPv6{Src: src, Dst: dst}.Packet(frames.Raw(proto, l4))
}

// UDPSegment is a UDP header and payload, its checksum computed for src and dst.
func UDPSegment(src, dst netip.Addr, sport, dport uint16, payload []byte) []byte {
	b := frames.UDP(sport, dport, payload).B
	binary.BigEndian.PutUint16(b[6:], frames.Checksum(src, dst, frames.ProtoUDP, b))
	return b
}

// TCPSegment is a TCP header with flags and a payload, its checksum computed for src and dst.
func TCPSegment(src, dst netip.Addr, sport, dport uint16, flags uint8, payload []byte) []byte {
	b := frames.TCP(sport, dport, flags, payload).B
	binary.BigEndian.PutUint32(b[4:], 1)      // sequence number
	binary.BigEndian.PutUint16(b[14:], 65535) // window
	binary.BigEndian.PutUint16(b[16:], frames.Checksum(src, dst, frames.ProtoTCP, b))
	return b
}

// ICMPMessage is an ICMP (IPv4) or ICMPv6 message of a type and code; rest is what follows the
// first four bytes (an echo's identifier and sequence, an error's unused word and quote).
func ICMPMessage(src, dst netip.Addr, typ, code uint8, rest []byte) []byte {
	b := append([]byte{typ, code, 0, 0}, rest...)
	proto := uint8(frames.ProtoICMPv6)
	if src.Is4() {
		proto = frames.ProtoICMP
	}
	binary.BigEndian.PutUint16(b[2:], frames.Checksum(src, dst, proto, b))
	return b
}
