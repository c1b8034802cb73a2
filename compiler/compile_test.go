package compiler

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/podwall/podwall/bpf"
	"github.com/podwall/podwall/policy"
)

// onePod compiles a cluster of one local pod, ifindex 1, in namespace ns.
func onePod(ns string, annotations map[string]string, opts Options) *State {
	return Compile(Input{
		Pods:      []Pod{{Namespace: ns, Name: "p", IPs: addrs("10.0.0.1"), Annotations: annotations}},
		Endpoints: []Endpoint{{Ifindex: 1, Namespace: ns, Name: "p"}},
		Options:   opts,
	})
}

func TestModes(t *testing.T) {
	open := []string{"kube-system"}
	for _, c := range []struct {
		name        string
		ns          string
		annotations map[string]string
		opts        Options
		mode        uint8
		problem     error
	}{
		{"annotated", "prod", annotated("allow tcp"), Options{}, bpf.ModeEnforce, nil},
		{"legacy key off", "prod", map[string]string{"policy": "allow tcp"}, Options{DefaultPolicy: DefaultDeny}, bpf.ModeIsolate, nil},
		{"legacy key on", "prod", map[string]string{"policy": "allow tcp"}, Options{DefaultPolicy: DefaultDeny, LegacyKey: true}, bpf.ModeEnforce, nil},
		{"default namespace", "prod", nil, Options{}, bpf.ModeEnforce, nil},
		{"default allow", "prod", nil, Options{DefaultPolicy: DefaultAllow}, bpf.ModeOpen, nil},
		{"default deny", "prod", nil, Options{DefaultPolicy: DefaultDeny}, bpf.ModeIsolate, nil},
		{"no rules", "prod", annotated(" ; ;"), Options{DefaultPolicy: DefaultAllow}, bpf.ModeIsolate, nil},
		{"invalid", "prod", annotated("allow tcp frm"), Options{DefaultPolicy: DefaultAllow}, bpf.ModeIsolate, &policy.SyntaxError{}},
		{"most rules", "prod", annotated(strings.Repeat("allow;", bpf.MaxRules)), Options{}, bpf.ModeEnforce, nil},
		{"too many rules", "prod", annotated(strings.Repeat("allow;", bpf.MaxRules+1)), Options{}, bpf.ModeIsolate, ErrTooManyRules},
		{"open namespace", "kube-system", nil, Options{DefaultPolicy: DefaultDeny, OpenNamespaces: open}, bpf.ModeOpen, nil},
		{"open namespace ignores annotation", "kube-system", annotated("deny"), Options{OpenNamespaces: open}, bpf.ModeOpen, ErrIgnored},
		{"open namespace ignores an invalid one", "kube-system", annotated("deny frm"), Options{OpenNamespaces: open}, bpf.ModeOpen, ErrIgnored},
	} {
		t.Run(c.name, func(t *testing.T) {
			s := onePod(c.ns, c.annotations, c.opts)
			ep := s.Endpoints[1]
			require.Equal(t, c.mode, ep.Mode)
			require.NotZero(t, ep.Generation)
			if c.mode == bpf.ModeEnforce {
				require.Contains(t, s.Policies, ep.Policy)
			} else {
				require.Zero(t, ep.Policy)
				require.Empty(t, s.Policies)
			}
			if c.problem == nil {
				require.Empty(t, s.Problems)
				return
			}
			require.Len(t, s.Problems, 1)
			p := s.Problems[0]
			require.Equal(t, c.ns, p.Namespace)
			require.Equal(t, "p", p.Name)
			var syntax *policy.SyntaxError
			if errors.As(c.problem, &syntax) {
				require.Equal(t, ProblemInvalid, p.Kind)
				require.ErrorAs(t, p.Err, &syntax)
				require.Equal(t, `rule 1, offset 10 ("frm"): expected "from", "to" or end of rule`, p.Err.Error())
				return
			}
			require.ErrorIs(t, p.Err, c.problem)
		})
	}
}

func TestAllowHostFlag(t *testing.T) {
	require.Equal(t, uint8(bpf.EPAllowHost), onePod("prod", nil, Options{AllowHost: true}).Endpoints[1].Flags)
	require.Zero(t, onePod("prod", nil, Options{}).Endpoints[1].Flags)
}

func TestProblems(t *testing.T) {
	s := Compile(Input{
		Pods: []Pod{
			{Namespace: "a", Name: "first", IPs: addrs("10.0.0.1", "10.0.0.9")},
			{Namespace: "b", Name: "second", IPs: addrs("10.0.0.1", "192.168.0.1")},
			{Namespace: "a", Name: "twin", IPs: addrs("10.0.0.5")},
			{Namespace: "a", Name: "twin", IPs: addrs("10.0.0.6")},
			{Namespace: "a", Name: "self", IPs: addrs("10.0.0.7", "10.0.0.7")},
		},
		Endpoints: []Endpoint{
			{Ifindex: 1, Namespace: "a", Name: "first"}, {Ifindex: 1, Namespace: "b", Name: "second"},
			{Ifindex: 2, Namespace: "a", Name: "twin"},
		},
		HostIPs: addrs("192.168.0.1"),
	})
	var got []string
	for _, p := range s.Problems {
		got = append(got, fmt.Sprintf("%s/%s %s: %v", p.Namespace, p.Name, p.Kind, p.Err))
	}
	require.Equal(t, []string{
		"a/first duplicate: ifindex 1: duplicate",
		"a/twin unknown-pod: ifindex 2: endpoint of an unknown pod",
		"a/twin duplicate: pod a/twin: duplicate",
		"b/second duplicate: ifindex 1: duplicate",
		"b/second address-conflict: 10.0.0.1 is also pod a/first's: address conflict",
		"b/second address-conflict: 192.168.0.1 is also the node's: address conflict",
	}, got)
	first := s.IPCache[AddrKey(netip.MustParseAddr("10.0.0.9"))]
	require.Equal(t, first, s.IPCache[AddrKey(netip.MustParseAddr("10.0.0.1"))])
	require.Equal(t, uint32(bpf.IDHost), s.IPCache[AddrKey(netip.MustParseAddr("192.168.0.1"))])
	require.NotContains(t, s.IPCache, AddrKey(netip.MustParseAddr("10.0.0.5")))
	require.Equal(t, uint8(bpf.ModeIsolate), s.Endpoints[1].Mode)
	require.Equal(t, uint8(bpf.ModeIsolate), s.Endpoints[2].Mode)
}

// Equal folded policies share one id; what the pod's labels and addresses fold in makes
// policies differ.
func TestPolicySharing(t *testing.T) {
	webPolicy := annotated("allow tcp to label role=front; allow udp to cidr 10.0.0.0/24")
	pod := func(ns, name, ip string, labels map[string]string) Pod {
		return Pod{Namespace: ns, Name: name, IPs: addrs(ip), Labels: labels, Annotations: webPolicy}
	}
	front := map[string]string{"role": "front"}
	s := Compile(Input{
		Pods: []Pod{
			pod("prod", "web-1", "10.0.0.1", front),
			pod("prod", "web-2", "10.0.0.2", front),
			pod("prod", "web-3", "10.0.1.3", front),
			pod("prod", "web-4", "10.0.0.4", nil),
			pod("dev", "web-1", "10.0.0.5", front),
		},
		Endpoints: []Endpoint{{1, "prod", "web-1"}, {2, "prod", "web-2"}, {3, "prod", "web-3"}, {4, "prod", "web-4"}, {5, "dev", "web-1"}},
	})
	id := func(i uint32) uint32 { return s.Endpoints[i].Policy }
	require.Equal(t, id(1), id(2), "replicas")
	require.NotEqual(t, id(1), id(3), "to cidr folds differently")
	require.NotEqual(t, id(1), id(4), "to label folds differently")
	require.Equal(t, id(1), id(5), "nothing namespaced is left after folding")
	require.Len(t, s.Policies, 3)
}

// A source pod's relabel changes its identity in the ipcache and the pol_ident entries of the
// policies that name it, not their ids nor the generations of the pods they judge (the
// applier has the relabelled pod's inbound flows judged again); an annotation change changes
// both; nothing else changes either.
func TestGenerations(t *testing.T) {
	in := func(clientLabel, policy string) Input {
		return Input{
			Pods: []Pod{
				{Namespace: "prod", Name: "web", IPs: addrs("10.0.0.1"), Annotations: annotated(policy)},
				{Namespace: "prod", Name: "client", IPs: addrs("10.0.0.2"), Labels: map[string]string{"app": clientLabel}},
			},
			Endpoints: []Endpoint{{1, "prod", "web"}},
		}
	}
	base := Compile(in("client", "allow from label app=client"))
	same := Compile(in("client", "allow from label app=client"))
	relabeled := Compile(in("other", "allow from label app=client"))
	edited := Compile(in("client", "allow from label app=other"))
	require.Equal(t, base.Endpoints, same.Endpoints)
	require.Equal(t, base.Endpoints[1].Policy, relabeled.Endpoints[1].Policy)
	require.Equal(t, base.Endpoints[1].Generation, relabeled.Endpoints[1].Generation)
	client := AddrKey(addrs("10.0.0.2")[0])
	require.NotEqual(t, base.IPCache[client], relabeled.IPCache[client])
	require.NotEqual(t, base.Policies[base.Endpoints[1].Policy].Ident, relabeled.Policies[relabeled.Endpoints[1].Policy].Ident)
	require.NotEqual(t, base.Endpoints[1].Policy, edited.Endpoints[1].Policy)
	require.NotEqual(t, base.Endpoints[1].Generation, edited.Endpoints[1].Generation)
}

// collidingEncodings finds two strings whose policy ids collide before probing.
func collidingEncodings(t *testing.T) (string, string) {
	seen := map[uint32]string{}
	for i := range 2_000_000 {
		s := fmt.Sprintf("policy-%d", i)
		h := fold32(fnv64(s))
		if other, ok := seen[h]; ok {
			return other, s
		}
		seen[h] = s
	}
	t.Fatal("no policy id collision found")
	return "", ""
}

func TestPolicyIDProbing(t *testing.T) {
	a, b := collidingEncodings(t)
	h := fold32(fnv64(a))
	for _, order := range [][]string{{a, b}, {b, a}} {
		m := &memo{prevPolicies: map[string]*memoMaterial{}, nextPolicies: map[string]*memoMaterial{}}
		c := &compilation{cl: newCluster(), memo: m, state: &State{Policies: map[uint32]*Policy{}}, policies: map[string]*folded{}}
		for _, enc := range order {
			c.policies[enc] = &folded{}
		}
		require.Equal(t, map[string]uint32{min(a, b): h, max(a, b): h + 1}, c.policyIDs())
		require.Len(t, c.state.Policies, 2)
	}
}

// Versions follow content: two compilations of one input agree, and a policy's version
// changes when the identities its label rules select do, as does the ipcache's.
func TestVersionsFollowContent(t *testing.T) {
	in := func(peers ...string) Input {
		pods := []Pod{{Namespace: "shop", Name: "api", IPs: addrs("10.0.0.1"),
			Annotations: annotated("allow tcp from label role=web; allow udp to ports 53")}}
		for i, ip := range peers {
			pods = append(pods, Pod{Namespace: "shop", Name: fmt.Sprint("web", i), IPs: addrs(ip),
				Labels: map[string]string{"role": "web", "n": fmt.Sprint(i)}})
		}
		return Input{Pods: pods, Endpoints: []Endpoint{{Ifindex: 1, Namespace: "shop", Name: "api"}}}
	}
	version := func(s *State) uint64 {
		require.Len(t, s.Policies, 1)
		for _, p := range s.Policies {
			require.NotZero(t, p.Version)
			return p.Version
		}
		return 0
	}
	a, b := Compile(in("10.0.0.2")), Compile(in("10.0.0.2"))
	require.Equal(t, version(a), version(b), "the same content")
	require.Equal(t, a.IPCacheVersion, b.IPCacheVersion)
	require.NotZero(t, a.IPCacheVersion)

	c := Compile(in("10.0.0.2", "10.0.0.3"))
	require.NotEqual(t, version(a), version(c), "another identity selected")
	require.NotEqual(t, a.IPCacheVersion, c.IPCacheVersion)
}
