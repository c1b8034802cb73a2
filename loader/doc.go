// Package loader puts podwall's data path into the kernel and keeps it there: it loads the
// programs of package bpf, pins every map under <bpffs>/podwall/v1/maps, attaches `to_pod`
// (tcx egress) and `from_pod` (tcx ingress) to a pod's host-side interface by ifindex, and
// pins the attachments under <bpffs>/podwall/v1/links, so that enforcement outlives the agent.
//
// A new Loader reuses the pinned maps and swaps its programs into the pinned attachments in
// place (link.Update for tcx, filter replacement for clsact), so a restart or an upgrade
// leaves no moment without enforcement and loses no map state. Close leaves everything in
// the kernel; Uninstall removes it.
//
// podwall's programs go first on each hook; another tool can attach ahead of them later (tcx
// with link.Head, a clsact filter of the same priority). EnsureFirst finds that and puts
// podwall first again without a moment off the hook: with tcx it attaches a twin of the
// program (a second load on the same maps and globals, since tcx takes a program once per
// hook) at the head and then detaches the old link; with clsact it adds its filter again
// under its other handle, which runs before the older filters of the priority, and then
// deletes the old one. The other tool's program stays where it is, after podwall's.
//
// On kernels without tcx (before 6.6) the programs are attached as direct-action bpf filters
// of a clsact qdisc instead; Config.ForceClsact picks that path on any kernel so that tests
// cover it.
//
// Locking: a Loader holds an exclusive flock on <bpffs>/podwall for its whole life, so one
// agent runs at a time (a second Open fails with ErrLocked). Changes to the pins take an
// exclusive flock on <bpffs>/podwall/v1 for their duration; OpenMaps takes it shared, so a
// reader never sees pins half replaced or half removed.
//
// Error contract: every error is wrapped with the operation and the object it was about, and
// these sentinel errors are matched with errors.Is: ErrLocked, ErrIncompatible (pinned maps of
// another layout: the running programs are left untouched), ErrNotBPFFS, ErrHookTaken,
// ErrUnknownConstant, ErrUnknownMap, ErrClosed. An Open that fails to load (incompatible pins, a verifier
// rejection) changes nothing that was attached before it.
package loader
