// Package standalone holds the end-to-end tests of the agent in standalone mode: a node
// namespace with pod namespaces (package topo), a pods file that the tests edit, and the agent
// following it, in-process or as the podwall binary entered into the node namespace with
// nsenter. Every step is checked twice: the kernel's maps hold what compiler.Compile makes of
// the same file, and real traffic between the namespaces passes or is dropped as SPEC says.
// It has only tests.
package standalone
