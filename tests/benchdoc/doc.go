// Package benchdoc holds what the benchmark report writers (tests/bench, tests/differential,
// tests/agentbench) share: rewriting their generated section of docs/BENCHMARKS.md between
// its markers, and the facts every report states (the go test command line that ran it, the
// kernel, the CPU) and how it prints numbers.
//
// Errors: Section.Replace and Section.Write wrap the file system's errors with the path, and
// wrap ErrMarkers when the markers are missing (Replace only) or out of order. The other
// functions do not fail: what they cannot find they print as unknown.
package benchdoc
