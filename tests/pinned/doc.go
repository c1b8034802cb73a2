// Package pinned lets end-to-end tests wait for podwall's pinned BPF maps to hold a compiled
// state. An agent applies a change some time after the test makes it, so the test polls: it
// reads every map the agent writes back from the pins under the test's bpffs (read-only, as
// `podwall maps` does) and compares them with what maps.Want makes of the compiler.State that
// the same input compiles to.
//
// Error contract: Await fails the test (tb.FailNow) when the maps cannot be read, or still
// differ from the state when its wait is over; the failure names the first map that differs
// (the endpoints, then the ipcache, then the policy classifier maps) and shows the diff.
package pinned
