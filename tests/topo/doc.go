// Package topo builds network topologies out of real network namespaces for end-to-end tests
// of podwall: a node namespace, pod namespaces joined to it by veth pairs (routed like
// Calico, or bridged), and client namespaces that stand for other nodes and the outside world.
// It also holds the traffic helpers (TCP and UDP echo, ICMP and ICMPv6 ping, fragmented UDP,
// long-lived TCP connections) that prove real reachability between them, and Expect, which
// runs a list of TCP and UDP exchanges (Check) that must each pass or be dropped.
//
// Everything is created inside namespaces the test made, never in the machine's root network
// namespace, and removed with tb.Cleanup, also when the test fails. Namespaces are registered
// under /run/netns (so `nsenter --net=/run/netns/NAME` reaches them) with names that start
// with Prefix, unique to this process.
//
// Error contract: building a topology fails the test (tb.Fatal) because no test can go on
// without it, and so does an exchange that Expect sees go otherwise than its Check says; the
// traffic helpers return errors, and an error that means "no answer in time" (the packet was
// dropped somewhere) wraps ErrNoAnswer, so a test can tell a drop from a refused connection.
// An error from writing the message wraps ErrNotSent instead: nothing was sent, so it is
// neither a drop nor a pass.
package topo
