package netif

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/podwall/podwall/internal/netnsrun"
)

var (
	// ErrNotFound means no interface of the node leads to the address.
	ErrNotFound = errors.New("no interface leads to the address")
	// ErrUnresolved means the address is behind a bridge and the node does not know on which
	// port yet; resolution was started.
	ErrUnresolved = errors.New("bridge port of the address not known yet")
)

// discardPort is where Find sends the datagram that makes the node resolve an address: the
// discard service, which nothing is expected to answer.
const discardPort = 9

// resolveEvery is how often Find sends a datagram to one address to start its resolution: an
// address that never answers must not make the node send, nor the agent recompile, in a loop.
const resolveEvery = time.Second

// dumpRetries bounds the retries of a netlink dump the kernel interrupted because the table
// changed during it.
const dumpRetries = 5

// Finder looks up interfaces in one network namespace.
type Finder struct {
	ns netns.NsHandle // netns.None() for the process's own
	nl *netlink.Handle

	mu       sync.Mutex
	resolved map[netip.Addr]time.Time // when a datagram was last sent to start resolution
}

// Open returns a Finder for the namespace at nsPath (for example /run/netns/NAME), or for the
// process's own namespace when nsPath is empty.
func Open(nsPath string) (*Finder, error) {
	f := &Finder{ns: netns.None(), resolved: map[netip.Addr]time.Time{}}
	if nsPath != "" {
		var err error
		if f.ns, err = netns.GetFromPath(nsPath); err != nil {
			return nil, fmt.Errorf("open netns %s: %w", nsPath, err)
		}
	}
	nl, err := netlink.NewHandleAt(f.ns)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("open netlink in %q: %w", nsPath, err)
	}
	f.nl = nl
	return f, nil
}

// Close releases the Finder's handles.
func (f *Finder) Close() {
	if f.nl != nil {
		f.nl.Close()
	}
	if f.ns.IsOpen() {
		_ = f.ns.Close() // a namespace's handle: nothing is lost
	}
}

// Find returns the ifindex of the interface that carries the traffic to a pod with the
// given addresses: the first address that leads to one decides.
func (f *Finder) Find(ips []netip.Addr) (int, error) {
	if len(ips) == 0 {
		return 0, fmt.Errorf("no address: %w", ErrNotFound)
	}
	var errs []error
	for _, ip := range ips {
		ifindex, err := f.find(ip)
		if err == nil {
			return ifindex, nil
		}
		errs = append(errs, err)
	}
	// Unresolved wins over not found: the pod is probably behind the bridge, and will be
	// found once the node has learnt where.
	for _, err := range errs {
		if errors.Is(err, ErrUnresolved) {
			return 0, err
		}
	}
	return 0, errors.Join(errs...)
}

func (f *Finder) find(ip netip.Addr) (int, error) {
	routes, err := f.nl.RouteGet(ip.AsSlice())
	if err != nil {
		return 0, fmt.Errorf("route to %s: %w: %w", ip, ErrNotFound, err)
	}
	if len(routes) == 0 {
		return 0, fmt.Errorf("route to %s: none: %w", ip, ErrNotFound)
	}
	r := routes[0]
	if r.Gw != nil {
		return 0, fmt.Errorf("route to %s goes through %s: %w", ip, r.Gw, ErrNotFound)
	}
	link, err := f.nl.LinkByIndex(r.LinkIndex)
	if err != nil {
		return 0, fmt.Errorf("link %d of the route to %s: %w", r.LinkIndex, ip, err)
	}
	switch {
	case link.Attrs().Flags&net.FlagLoopback != 0:
		return 0, fmt.Errorf("%s is the node's own: %w", ip, ErrNotFound)
	case link.Type() == "bridge":
		return f.bridgePort(link, ip)
	}
	return r.LinkIndex, nil
}

// bridgePort finds the port of bridge br behind which ip is: neighbour entry -> MAC ->
// forwarding entry -> port.
func (f *Finder) bridgePort(br netlink.Link, ip netip.Addr) (int, error) {
	family := netlink.FAMILY_V4
	if ip.Is6() {
		family = netlink.FAMILY_V6
	}
	neighs, err := f.neighList(br.Attrs().Index, family)
	if err != nil {
		return 0, fmt.Errorf("neighbours of %s: %w", br.Attrs().Name, err)
	}
	var mac net.HardwareAddr
	for _, n := range neighs {
		if a, ok := netip.AddrFromSlice(n.IP); ok && a.Unmap() == ip &&
			n.State&(netlink.NUD_INCOMPLETE|netlink.NUD_FAILED) == 0 && len(n.HardwareAddr) > 0 {
			mac = n.HardwareAddr
			break
		}
	}
	if mac == nil {
		return 0, f.resolve(ip, fmt.Errorf("no neighbour entry for %s on %s: %w", ip, br.Attrs().Name, ErrUnresolved))
	}
	fdb, err := f.neighList(0, unix.AF_BRIDGE)
	if err != nil {
		return 0, fmt.Errorf("forwarding entries of %s: %w", br.Attrs().Name, err)
	}
	for _, n := range fdb {
		if n.MasterIndex == br.Attrs().Index && n.LinkIndex != br.Attrs().Index && bytes.Equal(n.HardwareAddr, mac) {
			return n.LinkIndex, nil
		}
	}
	return 0, f.resolve(ip, fmt.Errorf("no forwarding entry for %s (%s) on %s: %w", mac, ip, br.Attrs().Name, ErrUnresolved))
}

func (f *Finder) neighList(linkIndex, family int) ([]netlink.Neigh, error) {
	for i := 0; ; i++ {
		n, err := f.nl.NeighList(linkIndex, family)
		if errors.Is(err, netlink.ErrDumpInterrupted) && i < dumpRetries {
			continue
		}
		return n, err
	}
}

// resolve sends ip one datagram from the node, at most once every resolveEvery, so that the
// node resolves the address and the bridge learns the port of the answer, and returns why it
// was needed. A failure to send is joined to why.
func (f *Finder) resolve(ip netip.Addr, why error) error {
	f.mu.Lock()
	now := time.Now()
	for a, at := range f.resolved {
		if now.Sub(at) >= resolveEvery {
			delete(f.resolved, a)
		}
	}
	_, recent := f.resolved[ip]
	if !recent {
		f.resolved[ip] = now
	}
	f.mu.Unlock()
	if recent {
		return why
	}
	send := func() error {
		c, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(netip.AddrPortFrom(ip, discardPort)))
		if err != nil {
			return fmt.Errorf("resolve %s: %w", ip, err)
		}
		_, err = c.Write([]byte{0})
		if err = errors.Join(err, c.Close()); err != nil {
			return fmt.Errorf("resolve %s: %w", ip, err)
		}
		return nil
	}
	if err := f.inNetns(send); err != nil {
		return errors.Join(why, err)
	}
	return why
}

// inNetns runs fn on a thread in the Finder's namespace. A thread that cannot switch back is
// not reused.
func (f *Finder) inNetns(fn func() error) error {
	return netnsrun.Run(f.ns, fn)
}

// Exists says whether the namespace has an interface with this ifindex.
func (f *Finder) Exists(ifindex int) bool {
	_, err := f.nl.LinkByIndex(ifindex)
	return err == nil
}

// HostAddrs lists the node's own addresses: the sources of the traffic the node itself sends
// to pods (SPEC 3.2). Loopback and link-local addresses are left out: they never arrive
// from the node on a pod's interface as anything but neighbour discovery.
func (f *Finder) HostAddrs() ([]netip.Addr, error) {
	var addrs []netlink.Addr
	var err error
	for i := 0; ; i++ {
		addrs, err = f.nl.AddrList(nil, netlink.FAMILY_ALL)
		if errors.Is(err, netlink.ErrDumpInterrupted) && i < dumpRetries {
			continue
		}
		break
	}
	if err != nil {
		return nil, fmt.Errorf("list node addresses: %w", err)
	}
	var out []netip.Addr
	for _, a := range addrs {
		ip, ok := netip.AddrFromSlice(a.IP)
		if !ok {
			continue
		}
		ip = ip.Unmap()
		if ip.IsLoopback() || ip.IsLinkLocalUnicast() || ip.IsMulticast() {
			continue
		}
		out = append(out, ip)
	}
	return out, nil
}

// Links returns the ifindexes of the namespace's interfaces whose names match.
func (f *Finder) Links(match func(name string) bool) ([]int, error) {
	var links []netlink.Link
	var err error
	for i := 0; ; i++ {
		links, err = f.nl.LinkList()
		if errors.Is(err, netlink.ErrDumpInterrupted) && i < dumpRetries {
			continue
		}
		break
	}
	if err != nil {
		return nil, fmt.Errorf("list interfaces: %w", err)
	}
	var out []int
	for _, l := range links {
		if match(l.Attrs().Name) {
			out = append(out, l.Attrs().Index)
		}
	}
	return out, nil
}

// Uplinks returns the ifindexes of the interfaces that hold the namespace's default routes
// (IPv4 and IPv6, every next hop of a multipath route): where traffic from other nodes and
// from outside the cluster comes in.
func (f *Finder) Uplinks() ([]int, error) {
	var out []int
	for _, family := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		var routes []netlink.Route
		var err error
		for i := 0; ; i++ {
			routes, err = f.nl.RouteList(nil, family)
			if errors.Is(err, netlink.ErrDumpInterrupted) && i < dumpRetries {
				continue
			}
			break
		}
		if err != nil {
			return nil, fmt.Errorf("list routes: %w", err)
		}
		for _, r := range routes {
			if r.Dst != nil {
				if ones, _ := r.Dst.Mask.Size(); ones != 0 {
					continue
				}
			}
			idx := []int{r.LinkIndex}
			for _, nh := range r.MultiPath {
				idx = append(idx, nh.LinkIndex)
			}
			for _, i := range idx {
				if i > 0 && !slices.Contains(out, i) {
					out = append(out, i)
				}
			}
		}
	}
	slices.Sort(out)
	return out, nil
}

// Name is the name of the interface at ifindex.
func (f *Finder) Name(ifindex int) (string, error) {
	l, err := f.nl.LinkByIndex(ifindex)
	if err != nil {
		return "", fmt.Errorf("find interface %d: %w", ifindex, err)
	}
	return l.Attrs().Name, nil
}

// LinkType is the kind of the interface at ifindex, as netlink names it ("veth", "device"
// for a NIC, "bridge", ...).
func (f *Finder) LinkType(ifindex int) (string, error) {
	l, err := f.nl.LinkByIndex(ifindex)
	if err != nil {
		return "", fmt.Errorf("find interface %d: %w", ifindex, err)
	}
	return l.Type(), nil
}
