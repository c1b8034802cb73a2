// Package e2e holds podwall's end-to-end tests: real TCP, UDP, ICMP and ICMPv6 packets,
// sent by Go sockets inside network namespaces (package topo), through the data path
// (package datapath) enforcing the state compiled from pods' labels and policy annotations
// (package compiler). SPEC.md sections 3 and 4 are what the tests assert; each test is named
// for the rule it checks, and each expected verdict on a new flow is also held against the
// reference evaluator (compiler.Evaluate), so that a failure says whether the compiler or the
// programs disagree with SPEC.
//
// The package has no code of its own outside its tests. They need root, a bpf filesystem at
// /sys/fs/bpf (`make bpffs`) and a kernel with BPF, veth and network namespaces; anything
// missing fails the tests, nothing skips. Run them with
//
//	go test -count=1 ./tests/e2e/
//
// Every namespace, link, socket and pin a test makes is removed when it ends, also on
// failure, and TestMain fails the run if anything is left behind (topo.Main).
package e2e
