package bpf

import (
	"testing"

	"github.com/stretchr/testify/require"
)

// Every reason of the header has a name of its own: a reason added in C without one fails here.
func TestReasonsHaveNames(t *testing.T) {
	seen := map[string]Reason{}
	for r := range NumReasons {
		name := r.String()
		require.NotEmpty(t, name, "reason %d", r)
		require.NotContains(t, seen, name, "reason %d", r)
		seen[name] = r
	}
	require.Equal(t, "reason-99", Reason(99).String())
}
