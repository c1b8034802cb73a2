// Package datapath is the small API the agent drives: it loads podwall's programs (package
// loader), keeps the pinned maps equal to a compiled state (package maps), and attaches the
// programs to pods' host-side interfaces.
//
// Errors: Open fails when the programs cannot be loaded or the pinned state is held by another
// agent or incompatible (loader's sentinel errors); Apply fails with maps.ErrMapFull when a map
// has no room, having changed nothing any endpoint can see half of. Close leaves enforcement
// in place; Uninstall removes it.
package datapath
