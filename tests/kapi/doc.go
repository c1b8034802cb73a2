// Package kapi starts a real Kubernetes API server for a test: etcd and kube-apiserver on
// loopback, with kubectl next to them, built from their Go modules by tests/k8s/build.sh
// (`make k8s-bins`) and cached per machine. No kubelet, scheduler or controller manager runs,
// so the helpers here do what those would have done to the objects a test cares about: pod IPs
// are set through the status subresource, pods are deleted with grace period 0, and a deleted
// namespace is emptied of pods and finalized.
//
// Both processes listen on 127.0.0.1 only, on free ports, with their state in a per-test temp
// dir. kube-apiserver runs with RBAC, a token file holding one admin token in system:masters,
// and service-account keys generated for the test. Cleanup stops kube-apiserver before etcd
// (the other order makes kube-apiserver retry for about 20 s), SIGTERM first and SIGKILL after
// a timeout, and removes the temp dir, also when the test fails; the processes also die with
// the test binary (Pdeathsig). Call Start from a goroutine that is not locked to an OS thread
// left to die, as netns helpers do: the servers would inherit that thread's network namespace
// and die with the thread.
//
// Error contract: every function takes the test's testing.TB and fails the test (tb.Fatalf)
// on any error, because no test can go on without its API server. A machine where the
// binaries are missing fails too, with a message naming `make k8s-bins`; nothing here skips.
package kapi
