// Package agentbench measures `podwall agent` against a real Kubernetes API server at the
// scale of issue 4 (`make bench`): 10,000 pods in the API, 100 of them on the agent's node
// with real interfaces in a node namespace, the rest spread over fake nodes with no kubelet.
// BenchmarkAgent runs the podwall binary and measures the time from an annotation update (the
// API write) to the change of the pod's endpoint in the kernel's pinned map, over 1,000
// updates; the agent's resident memory; and the full resync time, from the start of the
// process to its ready file, with empty and with pinned state. With -benchmarks-md FILE it
// rewrites its section of FILE (docs/BENCHMARKS.md). It has only a benchmark.
package agentbench
