// Package k8se2e holds the end-to-end tests of `podwall agent` against a real Kubernetes API
// server: etcd and kube-apiserver on loopback (package kapi), a node namespace with pod
// namespaces (package topo), and the podwall binary watching the API and attaching in the node
// namespace. The tests play the kubelet and the controllers (pods are created, given
// addresses, relabelled, re-annotated, moved, deleted; namespaces come and go; the API server
// restarts; the agent restarts), and check every step twice: the kernel's pinned maps hold
// exactly what compiler.Compile makes of the same pods, and real traffic between the
// namespaces passes or is dropped as SPEC says. It also validates the deploy/ manifests with
// kubectl against the live API server. It has only tests.
package k8se2e
