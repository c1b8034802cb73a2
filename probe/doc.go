// Package probe asks a node's kernel what podwall does with one packet: it runs a fresh copy
// of to_pod on the packet (BPF_PROG_TEST_RUN) against the node's pinned state, and reports
// the verdict, the reason and the deciding rule, as `podwall explain` prints them beside the
// Go model's.
//
// A probe changes nothing the node holds. The copy shares only the maps to_pod reads and
// never writes (endpoints, ipcache, the classifier maps, the epoch); every other map it uses
// (conntrack, stats, events, counters) is a scratch map of its own, so no probe shows in the
// agent's metrics, in `podwall monitor` or in the node's conntrack. The node's conntrack entry
// of the packet's flow is copied into the scratch one, so that an established flow is
// judged as one. The copy runs with the settings of the program that judges the pod
// (timeouts, conntrack quota, the kernel's tick), read from its .rodata.
//
// The packet runs as the pod's interface's: the caller must be in the network namespace
// where the agent attached podwall, since the kernel resolves the interface there.
package probe
