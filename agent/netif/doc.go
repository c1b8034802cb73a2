// Package netif finds, in the node's network namespace, the host-side interface that carries
// a local pod's traffic, and tells when interfaces, routes or neighbours change.
//
// A pod's interface is where the node sends packets for the pod's address: the link of the
// route to it (Calico's routed mode: a /32 or /128 route to the pod's veth), or, when that
// link is a Linux bridge, the bridge port that has the pod's MAC address in the bridge's
// forwarding database, the MAC coming from the node's neighbour entry for the address.
//
// Error contract: Find returns an error wrapping ErrNotFound when no interface of the node
// leads to the address (no route, a route through a gateway, or the address is the node's
// own), and ErrUnresolved when the address is behind a bridge whose neighbour or forwarding
// entry is not known yet: Find has then sent the address a datagram to make the node learn
// it, and a later Find (after a neighbour change) can succeed. Netlink failures are wrapped
// with what was asked.
package netif
