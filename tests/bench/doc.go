// Package bench measures podwall against what users would run instead, all in one run on one
// machine, and writes the results into docs/BENCHMARKS.md and docs/bench-rules.png
// (`make bench`):
//
//   - throughput (iperf3 TCP stream) and packet rate (iperf3 UDP, 64-byte payloads at full
//     speed, counted where the pod receives them) from a client namespace to a pod of a
//     routed node namespace, with the pod's policy at 1, 10, 100 and 1,000 rules, for no
//     filter, podwall (its real programs through datapath.Open, Apply and Attach, the state
//     from compiler.Compile), the same compiled policy as Calico's 2015 dataplane enforced it
//     (iptables with ipsets, Felix's chain layout), and the same as an nftables ruleset with
//     sets; each figure as a ratio to no filter measured in the same run, both the rate and
//     the rate per CPU time the iperf3 processes were charged (which other load on a shared
//     machine barely moves);
//   - the control plane: compile time and memory of the compiled state for 10,000 pods.
//
// The library part turns a compiled state into the baselines' rulesets (Felix and NFT), builds
// the benchmark's cluster and policies (Cluster, PolicyText), parses iperf3's output, and
// renders the report and the plot. The measurement itself is BenchmarkEnforcers, which needs
// root, iperf3, iptables, ipset and nft; TestRulesets proves, on every `go test`, that each
// enforcer lets the benchmark's traffic in by the policy's last rule and drops the rest.
//
// Rules are installed only in namespaces the test made: every command runs through nsenter
// into one, and refuses the namespace the process itself is in (ErrOwnNetns).
//
// Error contract: functions return errors wrapped with what they were doing; ErrNoEndpoint,
// ErrNotEnforced and ErrUnnamedRule say why a compiled state has no ruleset to translate,
// ErrOwnNetns that a command was pointed at the process's own namespace, ErrIperf that
// iperf3 reported an error (ErrServerBusy with it when its server had not finished the
// previous test).
package bench
