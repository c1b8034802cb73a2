// Package agent is podwall's reconcile loop: it keeps the kernel's maps and attachments in
// step with what a source (the cluster's API or a pods file, package k8s) says runs.
//
// One loop does all the work. Any change (the source's, or a link, route or neighbour of the
// node, package netif) wakes it; it waits for a burst of changes to settle (Config.Debounce),
// then compiles the whole snapshot into the desired state (compiler.Compile), attaches the
// programs to the interfaces of the node's pods that have none, applies the state to the maps
// (datapath.Apply), detaches the programs from interfaces that are no longer a pod's, and
// reports what it could not do: invalid policies, pods whose interface is not found, attach
// failures, full maps, each as a log line, a metric and, once per change of its message, a
// Kubernetes Event.
// What failed is retried with a growing delay.
//
// Enforcement is never dropped by the agent's own troubles: nothing is applied before the
// source first holds a whole view; a source that breaks keeps its last view; a failed apply
// leaves the maps at a whole state; a pod whose interface cannot be found again keeps the
// interface it had while that interface exists; and on exit the programs and maps stay
// pinned for the next agent.
//
// Error contract: Run returns an error only when it cannot go on at all (the source failed to
// start); everything else is reported and retried. Serve returns the HTTP server's error.
package agent
