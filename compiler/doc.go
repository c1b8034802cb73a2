// Package compiler turns the pods of a cluster and their policy annotations (package policy)
// into what the data path enforces: each local pod's rules are folded into the entries of the
// classifier maps, with identities, the ipcache and the endpoints, as one State; Evaluate is
// the reference of what the data path does with a packet under that State.
//
// # Error contract
//
// Compile never fails as a whole: a pod whose policy cannot be compiled as written is isolated
// (invalid annotation, more than bpf.MaxRules rules, a policy over its budget or without room
// in the maps, an endpoint of an unknown or duplicate pod), left out, or has its annotation
// ignored (open namespaces), and is listed in State.Problems with a kind and, but for a
// *policy.SyntaxError, one of the sentinel errors ErrTooManyRules, ErrOverBudget, ErrNoRoom,
// ErrIgnored, ErrUnknownPod, ErrDuplicate, ErrAddressConflict. Problems are recomputed by every
// Compile: reporting each once is the caller's job.
package compiler
