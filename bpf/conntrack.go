package bpf

import (
	"fmt"
	"net/netip"

	"github.com/cilium/ebpf"
)

// CtFlow is a flow as conntrack keys it: oriented from the pod, whichever side opened it, on
// the pod's host-side interface. Ports are in network byte order, as the kernel stores them.
// Its entry is in the table of its family, conntrack4 or conntrack6.
type CtFlow struct {
	Pod, Remote         netip.Addr
	PodPort, RemotePort uint16
	Proto               uint8
	Ifindex             uint32
}

func (f CtFlow) head() PodwallCtHead {
	return PodwallCtHead{PodPort: f.PodPort, RemotePort: f.RemotePort, Proto: f.Proto, Ifindex: f.Ifindex}
}

// Key is the flow's key in the map of its family: a PodwallCtKey4 or a PodwallCtKey6.
func (f CtFlow) Key() any {
	if f.Pod.Is4() {
		return PodwallCtKey4{H: f.head(), Pod: f.Pod.As4(), Remote: f.Remote.As4()}
	}
	return PodwallCtKey6{H: f.head(), Pod: f.Pod.As16(), Remote: f.Remote.As16()}
}

// Table is the one of v4 and v6 (conntrack4, conntrack6) that holds the flow.
func (f CtFlow) Table(v4, v6 *ebpf.Map) *ebpf.Map {
	if f.Pod.Is4() {
		return v4
	}
	return v6
}

// CtFlowOf4 and CtFlowOf6 are the flows of the keys of conntrack4 and conntrack6.
func CtFlowOf4(k PodwallCtKey4) CtFlow {
	return CtFlow{Pod: netip.AddrFrom4(k.Pod), Remote: netip.AddrFrom4(k.Remote), PodPort: k.H.PodPort,
		RemotePort: k.H.RemotePort, Proto: k.H.Proto, Ifindex: k.H.Ifindex}
}

func CtFlowOf6(k PodwallCtKey6) CtFlow {
	return CtFlow{Pod: netip.AddrFrom16(k.Pod), Remote: netip.AddrFrom16(k.Remote), PodPort: k.H.PodPort,
		RemotePort: k.H.RemotePort, Proto: k.H.Proto, Ifindex: k.H.Ifindex}
}

// CtFlowOfLegacy is the flow of a key of the one conntrack map of earlier versions (struct
// ct_key), which the loader moves into conntrack4 and conntrack6.
func CtFlowOfLegacy(k PodwallCtKey) (CtFlow, error) {
	pod, remote := KeyAddr(k.Pod), KeyAddr(k.Remote)
	if !pod.IsValid() || !remote.IsValid() || pod.Is4() != remote.Is4() {
		return CtFlow{}, fmt.Errorf("flow of addresses of families %d and %d", k.Pod.Family, k.Remote.Family)
	}
	return CtFlow{Pod: pod, Remote: remote, PodPort: k.PodPort, RemotePort: k.RemotePort,
		Proto: k.Proto, Ifindex: k.Ifindex}, nil
}
