// Command attachmode loads podwall's programs with package loader on the running kernel and
// prints the attach mode the loader chose ("tcx" or "clsact"), so that `make test-kernels` can
// say which path each kernel's test run took. It runs on a locked thread in a network
// namespace of its own and keeps its pins in a temporary folder under /sys/fs/bpf that it
// removes, so it leaves nothing behind on the machine or in the guest.
//
// Error contract: any failure (no bpffs, a verifier rejection, a failed probe) is printed to
// stderr and the exit status is 1; nothing is printed to stdout then.
package main
