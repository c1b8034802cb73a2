// Package loadertest gives the tests the attach modes the running kernel offers.
package loadertest

import (
	"testing"

	"github.com/podwall/podwall/loader"
	"github.com/podwall/podwall/tests/topo"
)

// Best is the mode a Loader picks on this kernel: tcx from 6.6 on, clsact below.
func Best(t testing.TB) loader.Mode {
	t.Helper()
	if topo.KernelHasTCX(t) {
		return loader.ModeTCX
	}
	return loader.ModeClsact
}

// Modes are the attach modes the running kernel offers: tcx and clsact from 6.6 on, only
// clsact below.
func Modes(t testing.TB) []loader.Mode {
	t.Helper()
	if topo.KernelHasTCX(t) {
		t.Log("attach modes: tcx and clsact (kernel 6.6 or later)")
		return []loader.Mode{loader.ModeTCX, loader.ModeClsact}
	}
	t.Log("attach modes: clsact only (the kernel is older than 6.6, which brought tcx)")
	return []loader.Mode{loader.ModeClsact}
}
