package topo

import (
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// KernelHasTCX says whether the running kernel must offer tcx, which came with Linux 6.6.
// Below it podwall attaches through clsact by design, so tests expect clsact there instead of
// failing for a feature the product does not need; from 6.6 on, a kernel without tcx (or a
// loader that does not find it) is a failure.
func KernelHasTCX(tb testing.TB) bool {
	tb.Helper()
	var u unix.Utsname
	require.NoError(tb, unix.Uname(&u), "uname")
	release := unix.ByteSliceToString(u.Release[:])
	var major, minor int
	_, err := fmt.Sscanf(release, "%d.%d", &major, &minor)
	require.NoError(tb, err, "parse kernel release %q", release)
	return major > 6 || major == 6 && minor >= 6
}
