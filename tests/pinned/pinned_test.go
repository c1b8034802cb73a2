package pinned

import (
	"fmt"
	"net/netip"
	"runtime"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/podwall/podwall/compiler"
	"github.com/podwall/podwall/datapath"
	"github.com/podwall/podwall/loader"
	"github.com/podwall/podwall/policy"
	"github.com/podwall/podwall/tests/topo"
)

func TestMain(m *testing.M) { topo.Main(m) }

// recorder is a testing.TB that keeps what a failure says; FailNow ends the goroutine, as it
// does in a real test.
type recorder struct {
	testing.TB
	failure string
	failed  bool
}

func (r *recorder) Helper() {}

func (r *recorder) Errorf(format string, args ...any) { r.failure += fmt.Sprintf(format, args...) }

func (r *recorder) FailNow() {
	r.failed = true
	runtime.Goexit()
}

// await runs Await with a short wait and returns what its failure says, if it failed.
func await(t *testing.T, bpffs string, want *compiler.State) (failure string, failed bool) {
	r := &recorder{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		Await(r, bpffs, want, 50*time.Millisecond)
	}()
	<-done
	return r.failure, r.failed
}

// TestAwait applies a state through the data path and checks that Await accepts exactly that
// state, and names the map that differs from any other.
func TestAwait(t *testing.T) {
	bpffs := topo.BPFFS(t)
	node := topo.NewNetns(t, "node")
	dp, err := datapath.Open(loader.Config{BPFFS: bpffs, Netns: node.Path})
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, dp.Close()) })
	in := compiler.Input{
		Pods: []compiler.Pod{
			{Namespace: "shop", Name: "api", Labels: map[string]string{"role": "api"},
				Annotations: map[string]string{policy.AnnotationKey: "allow tcp from label role=web to ports 8080"},
				IPs:         []netip.Addr{netip.MustParseAddr("10.244.0.2")}},
			{Namespace: "shop", Name: "web", Labels: map[string]string{"role": "web"},
				IPs: []netip.Addr{netip.MustParseAddr("10.244.0.3")}},
		},
		Endpoints: []compiler.Endpoint{{Ifindex: 100, Namespace: "shop", Name: "api"}, {Ifindex: 101, Namespace: "shop", Name: "web"}},
		Options:   compiler.Options{DefaultPolicy: compiler.DefaultNamespace},
	}
	require.NoError(t, dp.Apply(compiler.Compile(in)))

	for _, tt := range []struct {
		name   string
		bpffs  string
		change func(*compiler.State)
		// fails is what the failure says; empty: Await returns. A change that changes nothing
		// fails the case, as Await then returns.
		fails string
	}{
		{name: "the applied state", bpffs: bpffs, change: func(*compiler.State) {}},
		{name: "an endpoint less", bpffs: bpffs, fails: "endpoints map", change: func(s *compiler.State) {
			delete(s.Endpoints, 101)
		}},
		{name: "an address less", bpffs: bpffs, fails: "ipcache map", change: func(s *compiler.State) {
			for a := range s.IPCache {
				delete(s.IPCache, a)
				return
			}
		}},
		{name: "a classifier entry less", bpffs: bpffs, fails: "policy classifier maps", change: func(s *compiler.State) {
			for _, p := range s.Policies {
				for k := range p.Ident {
					delete(p.Ident, k)
					return
				}
			}
		}},
		{name: "nothing pinned", bpffs: topo.BPFFS(t), fails: "read the pinned maps", change: func(*compiler.State) {}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			want := compiler.Compile(in)
			tt.change(want)
			failure, failed := await(t, tt.bpffs, want)
			if tt.fails == "" {
				require.False(t, failed, failure)
				return
			}
			require.True(t, failed)
			require.Contains(t, failure, tt.fails)
		})
	}
}
