package pinned

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/podwall/podwall/compiler"
	"github.com/podwall/podwall/loader"
	"github.com/podwall/podwall/maps"
)

// pollEvery is the period of the reads: far below the time an agent takes to apply a change.
const pollEvery = 10 * time.Millisecond

// Await waits up to wait until the maps pinned under bpffs hold exactly what want makes them
// hold.
func Await(tb testing.TB, bpffs string, want *compiler.State, wait time.Duration) {
	tb.Helper()
	flat := maps.Want(want)
	deadline := time.Now().Add(wait)
	for {
		got, err := read(bpffs)
		if err == nil && assert.ObjectsAreEqual(flat, got) {
			return
		}
		if time.Now().After(deadline) {
			require.NoError(tb, err, "read the pinned maps")
			// Map by map, so that a failure says which one differs.
			require.Equal(tb, flat.Endpoints, got.Endpoints, "endpoints map")
			require.Equal(tb, flat.IPCache, got.IPCache, "ipcache map")
			require.Equal(tb, flat, got, "policy classifier maps")
		}
		time.Sleep(pollEvery)
	}
}

// read reads every map the agent writes from the pins under bpffs.
func read(bpffs string) (maps.Contents, error) {
	m, err := loader.OpenMaps(bpffs)
	if err != nil {
		return maps.Contents{}, err
	}
	defer m.Close()
	return maps.Read(m)
}
