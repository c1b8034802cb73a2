// Package differential holds the data path to its reference and measures it. It has no
// library code; everything is in its tests, which need root and a kernel with BPF:
//
//   - TestDifferential generates random clusters (pods with labels and addresses in
//     namespaces, the node's addresses, the agent's options), random policies and random
//     packets, compiles each cluster with compiler.Compile, writes the state into a loaded
//     podwall collection with maps.Applier, and judges every packet twice: with
//     compiler.Evaluate and with the to_pod program through BPF_PROG_TEST_RUN on the
//     endpoint's interface. Both must agree on pass or drop, on the reason, and, where the
//     program reports one, on the deciding rule and the source's identity.
//   - BenchmarkVerdict measures to_pod per packet for a new and an established flow, at 1, 64
//     and 1024 rules and 10, 10,000 and 100,000 ipcache entries, against an empty program;
//     with -benchmarks-md it rewrites its section of docs/BENCHMARKS.md (`make bench`).
//
// Error contract: none; a harness failure (a map that cannot be read, a program that does not
// load) fails the test, and nothing here skips.
package differential
