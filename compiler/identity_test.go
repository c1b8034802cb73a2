package compiler

import (
	"fmt"
	"net/netip"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/podwall/podwall/bpf"
)

func TestIdentityTags(t *testing.T) {
	require.Equal(t,
		[]string{"namespace_my-ns", "my-ns_app.kubernetes.io_name_web", "my-ns_tier_front__end"},
		identityTags("my-ns", map[string]string{"tier": "front_end", "app.kubernetes.io/name": "web"}))
	require.Equal(t, []string{"namespace_prod"}, identityTags("prod", nil))
}

// collidingNamespaces finds two namespaces whose identities (no labels) hash to one number.
func collidingNamespaces(t *testing.T) (string, string) {
	seen := map[uint32]string{}
	for i := range 2_000_000 {
		ns := fmt.Sprintf("ns-%d", i)
		h := identityHash(identityKey(identityTags(ns, nil)))
		if other, ok := seen[h]; ok {
			return other, ns
		}
		seen[h] = ns
	}
	t.Fatal("no identity hash collision found")
	return "", ""
}

// A new cluster numbers colliding identities by the order of their keys, whatever the order
// of the pods; a Compiler's identity keeps its number while it lives, whatever comes after.
func TestIdentityNumbers(t *testing.T) {
	a, b := collidingNamespaces(t)
	ka, kb := identityKey(identityTags(a, nil)), identityKey(identityTags(b, nil))
	h := identityHash(ka)
	require.Equal(t, h, identityHash(kb))
	first, second := a, b
	if kb < ka {
		first, second = b, a
	}
	pod := func(ns, ip string) Pod {
		return Pod{Namespace: ns, Name: "p", IPs: []netip.Addr{netip.MustParseAddr(ip)}}
	}
	id := func(s *State, ip string) uint32 { return s.IPCache[AddrKey(netip.MustParseAddr(ip))] }
	for _, pods := range [][]Pod{{pod(first, "10.0.0.1"), pod(second, "10.0.0.2")}, {pod(second, "10.0.0.2"), pod(first, "10.0.0.1")}} {
		s := Compile(Input{Pods: pods})
		require.Equal(t, h, id(s, "10.0.0.1"))
		require.Equal(t, h+1, id(s, "10.0.0.2"))
	}

	// The second comes first: it keeps the hash's number when the first comes, and the first
	// keeps the next one when the second leaves.
	var c Compiler
	c.SetPod(pod(second, "10.0.0.2"))
	s := c.CompileNode(Input{})
	require.Equal(t, h, id(s, "10.0.0.2"))
	c.SetPod(pod(first, "10.0.0.1"))
	s = c.CompileNode(Input{})
	require.Equal(t, h, id(s, "10.0.0.2"))
	require.Equal(t, h+1, id(s, "10.0.0.1"))
	require.Equal(t, map[bpf.PodwallIpAddr]struct{}{AddrKey(netip.MustParseAddr("10.0.0.1")): {}}, s.Changes.IPCache)
	c.DeletePod(second, "p")
	s = c.CompileNode(Input{})
	require.Equal(t, h+1, id(s, "10.0.0.1"))
	require.Equal(t, map[uint32][]string{h + 1: {"namespace_" + first}}, s.Identities)
	require.Equal(t, h, id(Compile(Input{Pods: []Pod{pod(first, "10.0.0.1")}}), "10.0.0.1"), "a restart numbers anew")
}

// A pod's identity depends on its namespace and labels only: not on its name, its
// addresses, the order of the pods, or unrelated pods.
func TestIdentitiesStable(t *testing.T) {
	pod := func(ns, name, ip string, labels map[string]string) Pod {
		return Pod{Namespace: ns, Name: name, Labels: labels, IPs: []netip.Addr{netip.MustParseAddr(ip)}}
	}
	web := map[string]string{"app": "web"}
	in := Input{Pods: []Pod{
		pod("prod", "web-1", "10.0.0.1", web),
		pod("prod", "web-2", "10.0.0.2", web),
		pod("prod", "db", "10.0.0.3", map[string]string{"app": "db"}),
		pod("dev", "web-1", "10.0.1.1", web),
	}}
	s := Compile(in)
	id := func(s *State, ip string) uint32 { return s.IPCache[AddrKey(netip.MustParseAddr(ip))] }
	require.Equal(t, id(s, "10.0.0.1"), id(s, "10.0.0.2"))
	require.NotEqual(t, id(s, "10.0.0.1"), id(s, "10.0.0.3"))
	require.NotEqual(t, id(s, "10.0.0.1"), id(s, "10.0.1.1"))
	require.Len(t, s.Identities, 3)
	require.Equal(t, []string{"namespace_prod", "prod_app_web"}, s.Identities[id(s, "10.0.0.1")])

	in2 := Input{Pods: []Pod{
		pod("other", "x", "10.9.0.1", map[string]string{"a": "b"}),
		pod("dev", "web-9", "10.0.1.9", web),
		pod("prod", "web-7", "10.0.0.7", web),
	}}
	s2 := Compile(in2)
	require.Equal(t, id(s, "10.0.0.1"), id(s2, "10.0.0.7"))
	require.Equal(t, id(s, "10.0.1.1"), id(s2, "10.0.1.9"))
}

func TestAddrKey(t *testing.T) {
	require.Equal(t, bpf.PodwallIpAddr{Family: bpf.FamV4, Addr: [16]byte{10, 0, 0, 1}}, AddrKey(netip.MustParseAddr("10.0.0.1")))
	require.Equal(t, bpf.PodwallIpAddr{Family: bpf.FamV6, Addr: [16]byte{0xfd, 0, 15: 1}}, AddrKey(netip.MustParseAddr("fd00::1")))
	require.Equal(t, bpf.PodwallIpAddr{Family: bpf.FamV6, Addr: [16]byte{10: 0xff, 11: 0xff, 12: 10, 15: 1}},
		AddrKey(netip.MustParseAddr("::ffff:10.0.0.1")), "a mapped address is IPv6 on the wire")
}

// Addresses in net.IP's 16-byte form are used as IPv4; invalid ones are left out.
func TestAddressForms(t *testing.T) {
	s := Compile(Input{
		Pods: []Pod{{Namespace: "a", Name: "p", IPs: []netip.Addr{netip.MustParseAddr("::ffff:10.0.0.1"), {}},
			Annotations: annotated("allow to cidr 10.0.0.0/8")}},
		Endpoints: []Endpoint{{Ifindex: 1, Namespace: "a", Name: "p"}},
		HostIPs:   []netip.Addr{netip.MustParseAddr("::ffff:192.168.0.1"), {}},
	})
	id := s.IPCache[AddrKey(netip.MustParseAddr("10.0.0.1"))]
	require.Contains(t, s.Identities, id)
	require.Equal(t, map[bpf.PodwallIpAddr]uint32{
		AddrKey(netip.MustParseAddr("10.0.0.1")):    id,
		AddrKey(netip.MustParseAddr("192.168.0.1")): bpf.IDHost,
	}, s.IPCache)
	v := Evaluate(s, 1, Packet{Src: netip.MustParseAddr("10.9.0.1"), Dst: netip.MustParseAddr("10.0.0.1"), Proto: protoUDP})
	require.Equal(t, bpf.ReasonAllowRule, v.Reason, "to cidr folds against the unmapped address")
}
