package compiler

import (
	"math"
	"net/netip"
	"slices"
	"strings"

	"github.com/podwall/podwall/bpf"
	"github.com/podwall/podwall/policy"
)

// identityTags are the tags of a pod's identity: its namespace tag, then one tag per label
// sorted by label key. The pod tag is left out on purpose: no rule can name it, and with it
// every pod would be an identity of its own.
func identityTags(ns string, labels map[string]string) []string {
	keys := make([]string, 0, len(labels))
	for k := range labels {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	tags := make([]string, 0, 1+len(keys))
	tags = append(tags, policy.NamespaceTag(ns))
	for _, k := range keys {
		tags = append(tags, policy.LabelTag(ns, policy.Label{Key: k, Value: labels[k]}))
	}
	return tags
}

// identityKey is a tag set as one string: tags never hold a comma.
func identityKey(tags []string) string { return strings.Join(tags, ",") }

// identityHash is where an identity is placed before probing: a hash of its tags in
// [IDFirstPod, 2^32), so a restarted agent finds the same numbers.
func identityHash(key string) uint32 {
	return bpf.IDFirstPod + uint32(fnv64(key)%(math.MaxUint32+1-uint64(bpf.IDFirstPod)))
}

// splitKey is the tags of an identity key.
func splitKey(key string) []string { return strings.Split(key, ",") }

// usableAddrs drops invalid addresses and unmaps IPv4-mapped ones: a pod or node address
// given as ::ffff:a.b.c.d (net.IP's 16-byte form) is used as IPv4, as the pod's stack uses it.
// An address given twice is kept once, where it first came.
func usableAddrs(ips []netip.Addr) []netip.Addr {
	out := make([]netip.Addr, 0, len(ips))
	for _, a := range ips {
		if a.IsValid() && !slices.Contains(out, a.Unmap()) {
			out = append(out, a.Unmap())
		}
	}
	return out
}

// AddrKey is an address as the data path stores it (ipcache and conntrack keys, an endpoint's
// own addresses): the inverse of KeyAddr. An IPv4-mapped IPv6 address stays IPv6: that is how
// it arrives in an IPv6 header.
func AddrKey(a netip.Addr) bpf.PodwallIpAddr {
	k := bpf.PodwallIpAddr{Family: bpf.FamV6, Addr: a.As16()}
	if a.Is4() {
		k.Family = bpf.FamV4
		k.Addr = [16]byte{}
		a4 := a.As4()
		copy(k.Addr[:], a4[:])
	}
	return k
}
