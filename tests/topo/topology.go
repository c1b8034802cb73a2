package topo

import (
	"crypto/sha1"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Kind is how pods are joined to the node.
type Kind int

const (
	// Routed is Calico's routed mode: each pod's veth ends in the node without an address,
	// the node routes the pod's /32 and /128 to it, and the pod's default route goes through
	// a link-local gateway that the node answers for.
	Routed Kind = iota
	// Bridged enslaves the pods' host-side veths to a Linux bridge that carries the node's
	// address, the shape of the bridge and flannel plugins.
	Bridged
)

func (k Kind) String() string {
	if k == Bridged {
		return "bridged"
	}
	return "routed"
}

// Addresses of a topology. Each topology lives in namespaces of its own, so every test can
// use the same ones.
var (
	// The node's addresses in routed mode, on its loopback: the source of its traffic to pods.
	routedNodeIPv4 = netip.MustParseAddr("10.0.0.1")
	routedNodeIPv6 = netip.MustParseAddr("fd00::1")
	// The pods' gateways in routed mode, as Calico uses them. The node has 169.254.1.1 on its
	// loopback so that it answers ARP for it on every pod veth (arp_ignore=0 answers for any
	// local address), and fe80::1 on every pod veth so that it answers neighbour
	// solicitations for it; neither needs a route or proxy ARP.
	gatewayIPv4 = netip.MustParseAddr("169.254.1.1")
	gatewayIPv6 = netip.MustParseAddr("fe80::1")
	// The bridge's addresses in bridged mode: the node's addresses and the pods' gateway.
	bridgeIPv4 = netip.MustParsePrefix("10.244.0.1/24")
	bridgeIPv6 = netip.MustParsePrefix("fd00:244::1/64")
)

const (
	bridgeName = "pwbr0"
	podIfname  = "eth0"
	maxPods    = 250
	maxClients = 250
	// readyTimeout bounds the wait for a new link to be able to send; it takes milliseconds.
	readyTimeout = 3 * time.Second
)

// Topology is a node namespace with the pods and clients attached to it.
type Topology struct {
	Kind Kind
	Node *Netns
	// The node's own addresses, the source of traffic the node itself sends to pods.
	NodeIPv4, NodeIPv6 netip.Addr
	// Index tells the nodes of one cluster apart (NewNode): node i has the pods of
	// 10.244.i.0/24 and fd00:244:0:i::/64, and the addresses 10.0.i.1 and fd00:0:0:i::1.
	Index byte

	tb      testing.TB
	bridge  netlink.Link
	pods    int
	clients int
}

// Pod is a pod namespace joined to the node by a veth pair.
type Pod struct {
	Name       string
	NS         *Netns
	IPv4, IPv6 netip.Addr
	// The host side of the veth pair, in the node namespace: where podwall attaches.
	HostIfname  string
	HostIfindex int
}

// Client is a namespace that stands for another node or the outside world, joined to the node
// by a veth pair and routed through it.
type Client struct {
	Name string
	NS   *Netns
	// The client's addresses on its link to the node.
	IPv4, IPv6 netip.Addr
	// More addresses on the client's loopback, routed to it by the node: sources such as
	// another node's pods or a public address. Dial from them with From.
	Extra []netip.Addr
	// The node's side of the client's link.
	HostIfname string
}

// New builds a node namespace with IPv4 and IPv6 forwarding on, and nothing attached yet.
func New(tb testing.TB, kind Kind) *Topology {
	tb.Helper()
	t := &Topology{Kind: kind, tb: tb, Node: NewNetns(tb, "node")}
	require.NoError(tb, t.setupNode(), "set up node %s", t.Node.Name)
	return t
}

// NewNode builds node index of a cluster of routed nodes, whose pods and addresses are its
// own (Topology.Index); Connect joins two.
func NewNode(tb testing.TB, index byte) *Topology {
	tb.Helper()
	t := &Topology{Kind: Routed, Index: index, tb: tb, Node: NewNetns(tb, fmt.Sprintf("node%d", index))}
	require.NoError(tb, t.setupNode(), "set up node %s", t.Node.Name)
	return t
}

// PodPrefixes are the prefixes of the node's pods.
func (t *Topology) PodPrefixes() []netip.Prefix {
	return []netip.Prefix{
		netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 244, t.Index, 0}), 24),
		netip.PrefixFrom(netip.AddrFrom16([16]byte{0: 0xfd, 2: 0x02, 3: 0x44, 7: t.Index}), 64),
	}
}

// Connect joins two nodes of a cluster by a veth pair, each routing the other's pods and
// addresses through it, as nodes on one network do.
func Connect(tb testing.TB, a, b *Topology) {
	tb.Helper()
	require.NoError(tb, connect(a, b), "connect %s and %s", a.Node.Name, b.Node.Name)
}

func connect(a, b *Topology) error {
	if a.Kind != Routed || b.Kind != Routed {
		return errors.New("only routed nodes connect")
	}
	name := func(t *Topology) string { return fmt.Sprintf("pwnode%d", t.Index) }
	link := func(_ *Topology, last byte) (netip.Prefix, netip.Prefix) {
		return netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 98, 0, last}), 24),
			netip.PrefixFrom(netip.AddrFrom16([16]byte{0: 0xfd, 3: 0x98, 15: last}), 64)
	}
	// a's end, b's name: the veth helper names the far end podIfname; rename it once there.
	aEnd, err := a.addVeth(name(b), b.Node)
	if err != nil {
		return err
	}
	bEnd, err := b.Node.Handle().LinkByName(podIfname)
	if err != nil {
		return fmt.Errorf("find the link in %s: %w", b.Node.Name, err)
	}
	if err := b.Node.Handle().LinkSetName(bEnd, name(a)); err != nil {
		return fmt.Errorf("name the link in %s: %w", b.Node.Name, err)
	}
	for _, end := range []struct {
		t, peer *Topology
		link    netlink.Link
		last    byte
	}{{a, b, aEnd, 1}, {b, a, bEnd, 2}} {
		nl := end.t.Node.Handle()
		v4, v6 := link(end.t, end.last)
		peer4, peer6 := link(end.peer, 3-end.last)
		for _, p := range []netip.Prefix{v4, v6} {
			if err := addAddr(nl, end.link, p, 0); err != nil {
				return err
			}
		}
		if err := nl.LinkSetUp(end.link); err != nil {
			return fmt.Errorf("set %s up: %w", end.link.Attrs().Name, err)
		}
		dsts := append(end.peer.PodPrefixes(), netip.PrefixFrom(end.peer.NodeIPv4, 32), netip.PrefixFrom(end.peer.NodeIPv6, 128))
		for _, dst := range dsts {
			gw := peer6.Addr()
			if dst.Addr().Is4() {
				gw = peer4.Addr()
			}
			r := netlink.Route{Dst: ipNet(dst), Gw: gw.AsSlice()}
			if err := nl.RouteAdd(&r); err != nil {
				return fmt.Errorf("add route to %s in %s: %w", dst, end.t.Node.Name, err)
			}
		}
	}
	_, a6 := link(a, 1)
	_, b6 := link(b, 2)
	if err := waitReady(a.Node, name(b), a6.Addr()); err != nil {
		return err
	}
	return waitReady(b.Node, name(a), b6.Addr())
}

func (t *Topology) setupNode() error {
	for _, kv := range [][2]string{
		{"net/ipv4/ip_forward", "1"},
		{"net/ipv6/conf/all/forwarding", "1"},
		// Interfaces created here later skip duplicate address detection, which would keep
		// their IPv6 addresses unusable for a second or more.
		{"net/ipv6/conf/default/accept_dad", "0"},
	} {
		if err := t.Node.Sysctl(kv[0], kv[1]); err != nil {
			return err
		}
	}
	nl := t.Node.Handle()
	switch t.Kind {
	case Routed:
		t.NodeIPv4, t.NodeIPv6 = routedNodeIPv4, routedNodeIPv6
		if t.Index > 0 {
			t.NodeIPv4 = netip.AddrFrom4([4]byte{10, 0, t.Index, 1})
			t.NodeIPv6 = netip.AddrFrom16([16]byte{0: 0xfd, 7: t.Index, 15: 1})
		}
		lo, err := nl.LinkByName("lo")
		if err != nil {
			return fmt.Errorf("find lo: %w", err)
		}
		for _, a := range []netip.Addr{t.NodeIPv4, t.NodeIPv6} {
			if err := addAddr(nl, lo, netip.PrefixFrom(a, a.BitLen()), 0); err != nil {
				return err
			}
		}
		if err := addAddr(nl, lo, netip.PrefixFrom(gatewayIPv4, 32), unix.RT_SCOPE_LINK); err != nil {
			return err
		}
		if err := waitReady(t.Node, "lo", t.NodeIPv6); err != nil {
			return err
		}
	case Bridged:
		t.NodeIPv4, t.NodeIPv6 = bridgeIPv4.Addr(), bridgeIPv6.Addr()
		// STP off (the default) puts ports in forwarding state at once.
		br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: bridgeName}}
		if err := nl.LinkAdd(br); err != nil {
			return fmt.Errorf("add bridge: %w", err)
		}
		link, err := nl.LinkByName(bridgeName)
		if err != nil {
			return fmt.Errorf("find bridge: %w", err)
		}
		t.bridge = link
		for _, p := range []netip.Prefix{bridgeIPv4, bridgeIPv6} {
			if err := addAddr(nl, link, p, 0); err != nil {
				return err
			}
		}
		if err := nl.LinkSetUp(link); err != nil {
			return fmt.Errorf("set bridge up: %w", err)
		}
	}
	return nil
}

// AddPod creates a pod namespace joined to the node, with an IPv4 and an IPv6 address.
func (t *Topology) AddPod(name string) *Pod {
	t.tb.Helper()
	require.Less(t.tb, t.pods, maxPods, "too many pods")
	t.pods++
	n := t.pods + 1
	p := &Pod{
		Name:       name,
		NS:         NewNetns(t.tb, name),
		IPv4:       netip.AddrFrom4([4]byte{10, 244, t.Index, byte(n)}),
		IPv6:       netip.AddrFrom16([16]byte{0: 0xfd, 2: 0x02, 3: 0x44, 7: t.Index, 15: byte(n)}),
		HostIfname: hostIfname(name),
	}
	require.NoError(t.tb, t.addPod(p), "add pod %s", name)
	return p
}

// hostIfname names the host side of a pod's veth the way Calico does (a prefix and a hash of
// the pod), within the 15 bytes an interface name may have.
func hostIfname(pod string) string {
	sum := sha1.Sum([]byte(pod))
	return "pw" + hex.EncodeToString(sum[:])[:11]
}

func (t *Topology) addPod(p *Pod) error {
	if err := p.NS.Sysctl("net/ipv6/conf/default/accept_dad", "0"); err != nil {
		return err
	}
	host, err := t.addVeth(p.HostIfname, p.NS)
	if err != nil {
		return err
	}
	p.HostIfindex = host.Attrs().Index
	nl := t.Node.Handle()
	var podPrefixes []netip.Prefix
	var podRoutes []netlink.Route
	switch t.Kind {
	case Routed:
		podPrefixes = []netip.Prefix{netip.PrefixFrom(p.IPv4, 32), netip.PrefixFrom(p.IPv6, 128)}
		if err := addAddr(nl, host, netip.PrefixFrom(gatewayIPv6, 64), 0); err != nil {
			return err
		}
		if err := nl.LinkSetUp(host); err != nil {
			return fmt.Errorf("set %s up: %w", p.HostIfname, err)
		}
		for _, r := range []netlink.Route{
			{LinkIndex: p.HostIfindex, Dst: ipNet(podPrefixes[0]), Scope: netlink.SCOPE_LINK, Src: t.NodeIPv4.AsSlice()},
			{LinkIndex: p.HostIfindex, Dst: ipNet(podPrefixes[1]), Src: t.NodeIPv6.AsSlice()},
		} {
			if err := nl.RouteAdd(&r); err != nil {
				return fmt.Errorf("add route to %s: %w", r.Dst, err)
			}
		}
		podRoutes = []netlink.Route{
			{Dst: ipNet(netip.PrefixFrom(gatewayIPv4, 32)), Scope: netlink.SCOPE_LINK},
			{Dst: ipNet(netip.PrefixFrom(netip.IPv4Unspecified(), 0)), Gw: gatewayIPv4.AsSlice()},
			{Dst: ipNet(netip.PrefixFrom(netip.IPv6Unspecified(), 0)), Gw: gatewayIPv6.AsSlice()},
		}
	case Bridged:
		podPrefixes = []netip.Prefix{
			netip.PrefixFrom(p.IPv4, bridgeIPv4.Bits()),
			netip.PrefixFrom(p.IPv6, bridgeIPv6.Bits()),
		}
		if err := nl.LinkSetMaster(host, t.bridge); err != nil {
			return fmt.Errorf("enslave %s: %w", p.HostIfname, err)
		}
		if err := nl.LinkSetUp(host); err != nil {
			return fmt.Errorf("set %s up: %w", p.HostIfname, err)
		}
		podRoutes = []netlink.Route{
			{Dst: ipNet(netip.PrefixFrom(netip.IPv4Unspecified(), 0)), Gw: t.NodeIPv4.AsSlice()},
			{Dst: ipNet(netip.PrefixFrom(netip.IPv6Unspecified(), 0)), Gw: t.NodeIPv6.AsSlice()},
		}
	}
	if err := configurePeer(p.NS, podIfname, podPrefixes, podRoutes); err != nil {
		return err
	}
	if t.Kind == Bridged {
		if err := waitReady(t.Node, p.HostIfname); err != nil {
			return err
		}
		return waitReady(t.Node, bridgeName, bridgeIPv6.Addr())
	}
	return waitReady(t.Node, p.HostIfname, gatewayIPv6)
}

// addVeth creates a veth pair from the node to ns, deleted when the test ends; the peer is
// named podIfname and is created directly inside ns.
func (t *Topology) addVeth(name string, ns *Netns) (netlink.Link, error) {
	nl := t.Node.Handle()
	veth := &netlink.Veth{
		LinkAttrs:     netlink.LinkAttrs{Name: name},
		PeerName:      podIfname,
		PeerNamespace: netlink.NsFd(int(ns.NsHandle())),
	}
	if err := nl.LinkAdd(veth); err != nil {
		return nil, fmt.Errorf("add veth %s: %w", name, err)
	}
	t.tb.Cleanup(func() {
		link, err := nl.LinkByName(name)
		var notFound netlink.LinkNotFoundError
		if errors.As(err, &notFound) {
			return
		}
		if assert.NoError(t.tb, err, "find veth %s", name) {
			assert.NoError(t.tb, nl.LinkDel(link), "delete veth %s", name)
		}
	})
	link, err := nl.LinkByName(name)
	if err != nil {
		return nil, fmt.Errorf("find veth %s: %w", name, err)
	}
	return link, nil
}

// configurePeer brings up the namespace's end of a veth with its addresses and routes.
func configurePeer(ns *Netns, ifname string, prefixes []netip.Prefix, routes []netlink.Route) error {
	nl := ns.Handle()
	link, err := nl.LinkByName(ifname)
	if err != nil {
		return fmt.Errorf("find %s in %s: %w", ifname, ns.Name, err)
	}
	for _, p := range prefixes {
		if err := addAddr(nl, link, p, 0); err != nil {
			return err
		}
	}
	if err := nl.LinkSetUp(link); err != nil {
		return fmt.Errorf("set %s up in %s: %w", ifname, ns.Name, err)
	}
	for _, r := range routes {
		r.LinkIndex = link.Attrs().Index
		if err := nl.RouteAdd(&r); err != nil {
			return fmt.Errorf("add route to %s in %s: %w", r.Dst, ns.Name, err)
		}
	}
	var v6 []netip.Addr
	for _, p := range prefixes {
		if p.Addr().Is6() {
			v6 = append(v6, p.Addr())
		}
	}
	return waitReady(ns, ifname, v6...)
}

// waitReady waits until a link that was just set up can send, and its IPv6 addresses v6 can
// be reached. All of it happens asynchronously after the carrier comes on or the address is
// added: until the kernel's link watch work activates the link's queueing discipline, the
// link has the noop qdisc, which drops every packet; until the address configuration work
// joins an address's solicited-node multicast group, neighbour solicitations for it are
// dropped; until that work adds the address's local route, packets to it are not delivered
// even though the address can already be bound and used as a source. Each loss is retried
// only a second later, longer than the traffic helpers wait.
func waitReady(ns *Netns, ifname string, v6 ...netip.Addr) error {
	deadline := time.Now().Add(readyTimeout)
	for {
		why, err := notReady(ns, ifname, v6)
		if err != nil {
			return err
		}
		if why == "" {
			return nil
		}

		if time.Now().After(deadline) {
			return fmt.Errorf("%s in %s not ready after %s: %s", ifname, ns.Name, readyTimeout, why)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// notReady says what a link still lacks, or "" when it is ready.
func notReady(ns *Netns, ifname string, v6 []netip.Addr) (string, error) {
	nl := ns.Handle()
	link, err := nl.LinkByName(ifname)
	if err != nil {
		return "", fmt.Errorf("find %s in %s: %w", ifname, ns.Name, err)
	}
	// Loopback reports no operational state ("unknown").
	if state := link.Attrs().OperState; state != netlink.OperUp && state != netlink.OperUnknown {
		return "state " + state.String(), nil
	}
	qdiscs, err := nl.QdiscList(link)
	if err != nil {
		return "", fmt.Errorf("list qdiscs of %s in %s: %w", ifname, ns.Name, err)
	}
	if len(qdiscs) == 0 {
		return "no qdisc", nil
	}
	for _, q := range qdiscs {
		if q.Type() == "noop" {
			return "noop qdisc", nil
		}
	}
	if len(v6) == 0 {
		return "", nil
	}
	groups, err := multicastGroups(ns, ifname)
	if err != nil {
		return "", err
	}
	for _, a := range v6 {
		if link.Attrs().Flags&net.FlagLoopback == 0 && !groups[solicitedNode(a)] {
			return "not in the solicited-node group of " + a.String(), nil
		}
		filter := &netlink.Route{Table: unix.RT_TABLE_LOCAL, Dst: ipNet(netip.PrefixFrom(a, 128))}
		routes, err := nl.RouteListFiltered(netlink.FAMILY_V6, filter, netlink.RT_FILTER_TABLE|netlink.RT_FILTER_DST)
		if err != nil {
			return "", fmt.Errorf("list local routes of %s: %w", ns.Name, err)
		}
		if len(routes) == 0 {
			return "no local route to " + a.String(), nil
		}
	}
	return "", nil
}

// solicitedNode is the multicast group that neighbour solicitations for a are sent to
// (RFC 4291 2.7.1), written as /proc/net/igmp6 writes it.
func solicitedNode(a netip.Addr) string {
	b := a.As16()
	g := [16]byte{0: 0xff, 1: 0x02, 11: 0x01, 12: 0xff, 13: b[13], 14: b[14], 15: b[15]}
	return hex.EncodeToString(g[:])
}

// multicastGroups lists the IPv6 multicast groups a link of ns has joined.
func multicastGroups(ns *Netns, ifname string) (map[string]bool, error) {
	groups := map[string]bool{}
	err := ns.Do(func() error {
		b, err := os.ReadFile("/proc/thread-self/net/igmp6")
		if err != nil {
			return fmt.Errorf("read igmp6 of %s: %w", ns.Name, err)
		}
		for _, line := range strings.Split(string(b), "\n") {
			// "index ifname group users flags timer"
			if f := strings.Fields(line); len(f) >= 3 && f[1] == ifname {
				groups[f[2]] = true
			}
		}
		return nil
	})
	return groups, err
}

// AddClient creates a client namespace joined to the node by a veth pair of its own, with a
// default route through the node, and extra addresses routed to it by the node.
func (t *Topology) AddClient(name string, extra ...netip.Addr) *Client {
	t.tb.Helper()
	require.Less(t.tb, t.clients, maxClients, "too many clients")
	t.clients++
	k := byte(t.clients)
	c := &Client{
		Name:  name,
		NS:    NewNetns(t.tb, name),
		IPv4:  netip.AddrFrom4([4]byte{10, 99, k, 2}),
		IPv6:  netip.AddrFrom16([16]byte{0: 0xfd, 3: 0x99, 5: k, 15: 2}),
		Extra: extra,
	}
	require.NoError(t.tb, t.addClient(c, k), "add client %s", name)
	return c
}

func (t *Topology) addClient(c *Client, k byte) error {
	if err := c.NS.Sysctl("net/ipv6/conf/default/accept_dad", "0"); err != nil {
		return err
	}
	nodeV4 := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 99, k, 1}), 24)
	nodeV6 := netip.PrefixFrom(netip.AddrFrom16([16]byte{0: 0xfd, 3: 0x99, 5: k, 15: 1}), 64)
	c.HostIfname = fmt.Sprintf("pwup%d", k)
	uplink, err := t.addVeth(c.HostIfname, c.NS)
	if err != nil {
		return err
	}
	nl := t.Node.Handle()
	for _, p := range []netip.Prefix{nodeV4, nodeV6} {
		if err := addAddr(nl, uplink, p, 0); err != nil {
			return err
		}
	}
	if err := nl.LinkSetUp(uplink); err != nil {
		return fmt.Errorf("set %s up: %w", uplink.Attrs().Name, err)
	}
	err = configurePeer(c.NS, podIfname,
		[]netip.Prefix{netip.PrefixFrom(c.IPv4, 24), netip.PrefixFrom(c.IPv6, 64)},
		[]netlink.Route{
			{Dst: ipNet(netip.PrefixFrom(netip.IPv4Unspecified(), 0)), Gw: nodeV4.Addr().AsSlice()},
			{Dst: ipNet(netip.PrefixFrom(netip.IPv6Unspecified(), 0)), Gw: nodeV6.Addr().AsSlice()},
		})
	if err != nil {
		return err
	}
	if err := waitReady(t.Node, uplink.Attrs().Name, nodeV6.Addr()); err != nil {
		return err
	}
	lo, err := c.NS.Handle().LinkByName("lo")
	if err != nil {
		return fmt.Errorf("find lo in %s: %w", c.NS.Name, err)
	}
	var extra6 []netip.Addr
	for _, a := range c.Extra {
		if err := addAddr(c.NS.Handle(), lo, netip.PrefixFrom(a, a.BitLen()), 0); err != nil {
			return err
		}
		via := c.IPv6
		if a.Is4() {
			via = c.IPv4
		}
		r := netlink.Route{Dst: ipNet(netip.PrefixFrom(a, a.BitLen())), Gw: via.AsSlice()}
		if err := nl.RouteAdd(&r); err != nil {
			return fmt.Errorf("add route to %s: %w", a, err)
		}
		if a.Is6() {
			extra6 = append(extra6, a)
		}
	}
	return waitReady(c.NS, "lo", extra6...)
}

// addAddr adds an address without duplicate address detection, so that it is usable at once.
func addAddr(nl *netlink.Handle, link netlink.Link, p netip.Prefix, scope int) error {
	addr := &netlink.Addr{IPNet: ipNet(p), Scope: scope}
	if p.Addr().Is6() {
		addr.Flags = unix.IFA_F_NODAD
	}
	if err := nl.AddrAdd(link, addr); err != nil {
		return fmt.Errorf("add %s to %s: %w", p, link.Attrs().Name, err)
	}
	return nil
}

func ipNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}
