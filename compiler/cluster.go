package compiler

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"

	"github.com/podwall/podwall/bpf"
)

type podKey struct{ namespace, name string }

func cmpKey(a, b podKey) int {
	return cmp.Or(cmp.Compare(a.namespace, b.namespace), cmp.Compare(a.name, b.name))
}

// cluster is what every pod of the cluster compiles to, whatever the node's endpoints,
// annotations and options: the identities and the ipcache. It changes by one pod at a time,
// at the cost of that pod: its identity is reference counted and keeps its number while it
// lives, and only the addresses the pod had or has are looked at again.
type cluster struct {
	pods map[podKey]*clusterPod
	// dups are the names two pods of an input shared: both are left out.
	dups    map[podKey]bool
	hostIPs []netip.Addr // usable
	hosts   map[bpf.PodwallIpAddr]bool

	idents map[string]*identity // by identityKey
	byID   map[uint32][]string  // State.Identities
	tagIDs map[string]map[uint32]struct{}

	// claims are the pods with an identity that list each address, sorted by namespace and
	// name: the first is the address's owner unless the node has it.
	claims  map[bpf.PodwallIpAddr][]podKey
	ipcache map[bpf.PodwallIpAddr]uint32
	// conflicts are the addresses claimed by the node and a pod, or by two pods.
	conflicts map[bpf.PodwallIpAddr]struct{}
	// digest is the sum of entryHash over the ipcache: kept as entries change.
	digest uint64

	// What changed since the last turn took it (changes).
	changedIDs   map[uint32]struct{}
	changedAddrs map[bpf.PodwallIpAddr]struct{}
}

// clusterPod is a copy of a pod with only its usable addresses and, instead of its labels,
// its identity tags: those of its identity when it has one (a pod with addresses, not on the
// host network), so that a pod of the cluster costs no copy of its labels.
type clusterPod struct {
	Pod
	tags  []string
	ident *identity
}

// identity is a tag set with a number, and the pods that have it.
type identity struct {
	id   uint32
	tags []string
	refs int
}

func newCluster() *cluster {
	return &cluster{
		pods:         map[podKey]*clusterPod{},
		dups:         map[podKey]bool{},
		hosts:        map[bpf.PodwallIpAddr]bool{},
		idents:       map[string]*identity{},
		byID:         map[uint32][]string{},
		tagIDs:       map[string]map[uint32]struct{}{},
		claims:       map[bpf.PodwallIpAddr][]podKey{},
		ipcache:      map[bpf.PodwallIpAddr]uint32{},
		conflicts:    map[bpf.PodwallIpAddr]struct{}{},
		changedIDs:   map[uint32]struct{}{},
		changedAddrs: map[bpf.PodwallIpAddr]struct{}{},
	}
}

// reset makes the cluster hold pods, changing only what differs. Pods that share
// a name are all left out: which one is real cannot be told. The identities that come are
// numbered in the order of their keys, so a new cluster depends only on the set of pods.
func (cl *cluster) reset(pods []Pod) {
	in := make(map[podKey]*Pod, len(pods))
	dups := map[podKey]bool{}
	for i := range pods {
		k := podKey{pods[i].Namespace, pods[i].Name}
		if _, ok := in[k]; ok {
			dups[k] = true
		}
		in[k] = &pods[i]
	}
	for k := range dups {
		delete(in, k)
	}
	for k := range cl.pods {
		if _, ok := in[k]; !ok {
			cl.remove(k)
		}
	}
	var keys []string
	seen := map[string]bool{}
	for _, p := range in {
		if p.HostNetwork || !hasUsable(p.IPs) {
			continue
		}
		key := identityKey(identityTags(p.Namespace, p.Labels))
		if _, ok := cl.idents[key]; !ok && !seen[key] {
			seen[key] = true
			keys = append(keys, key)
		}
	}
	slices.Sort(keys)
	for _, key := range keys {
		cl.allocate(key, nil)
	}
	for _, p := range in {
		cl.set(*p)
	}
	cl.dups = dups
	// Identities allocated for a pod that then kept its old one (a pod whose identity did not
	// change is not set again) have no pod.
	for _, key := range keys {
		if id := cl.idents[key]; id != nil && id.refs == 0 {
			cl.release(id)
		}
	}
}

func hasUsable(ips []netip.Addr) bool {
	return slices.ContainsFunc(ips, netip.Addr.IsValid)
}

// set makes pod p's entry what p says, if it is not already.
func (cl *cluster) set(p Pod) {
	k := podKey{p.Namespace, p.Name}
	delete(cl.dups, k)
	p.IPs = usableAddrs(p.IPs)
	tags := identityTags(p.Namespace, p.Labels)
	p.Labels = nil
	if old, ok := cl.pods[k]; ok && old.HostNetwork == p.HostNetwork && slices.Equal(old.IPs, p.IPs) &&
		slices.Equal(old.tags, tags) {
		old.Annotations = p.Annotations
		return
	}
	var ident *identity
	if !p.HostNetwork && len(p.IPs) > 0 {
		ident = cl.acquire(identityKey(tags), tags)
		tags = ident.tags
	}
	var addrs []netip.Addr
	if old, ok := cl.pods[k]; ok {
		addrs = old.IPs
		cl.dropClaims(k, &old.Pod)
		if old.ident != nil {
			cl.release(old.ident)
		}
	}
	np := &clusterPod{Pod: p, tags: tags, ident: ident}
	cl.pods[k] = np
	if ident != nil {
		for _, a := range np.IPs {
			ak := AddrKey(a)
			cl.claims[ak] = insertSorted(cl.claims[ak], k)
		}
	}
	for _, a := range append(addrs, np.IPs...) {
		cl.place(AddrKey(a))
	}
}

// remove forgets pod k.
func (cl *cluster) remove(k podKey) {
	delete(cl.dups, k)
	old, ok := cl.pods[k]
	if !ok {
		return
	}
	cl.dropClaims(k, &old.Pod)
	if old.ident != nil {
		cl.release(old.ident)
	}
	delete(cl.pods, k)
	for _, a := range old.IPs {
		cl.place(AddrKey(a))
	}
}

func (cl *cluster) dropClaims(k podKey, p *Pod) {
	for _, a := range p.IPs {
		ak := AddrKey(a)
		c := cl.claims[ak]
		if i, ok := slices.BinarySearchFunc(c, k, cmpKey); ok {
			c = slices.Delete(c, i, i+1)
		}
		if len(c) == 0 {
			delete(cl.claims, ak)
		} else {
			cl.claims[ak] = c
		}
	}
}

func insertSorted(c []podKey, k podKey) []podKey {
	i, ok := slices.BinarySearchFunc(c, k, cmpKey)
	if ok {
		return c
	}
	return slices.Insert(c, i, k)
}

// setHostIPs makes the node's addresses ips.
func (cl *cluster) setHostIPs(ips []netip.Addr) {
	usable := usableAddrs(ips)
	if slices.Equal(usable, cl.hostIPs) {
		return
	}
	old := cl.hostIPs
	cl.hostIPs = usable
	clear(cl.hosts)
	for _, a := range usable {
		cl.hosts[AddrKey(a)] = true
	}
	for _, a := range append(old, usable...) {
		cl.place(AddrKey(a))
	}
}

// owner is the pod the ipcache gives address k to: none when the node has it, else the
// first of its claimants.
func (cl *cluster) owner(k bpf.PodwallIpAddr) (podKey, bool) {
	claims := cl.claims[k]
	if cl.hosts[k] || len(claims) == 0 {
		return podKey{}, false
	}
	return claims[0], true
}

// place gives address k its ipcache entry: the node's, else the first pod's by namespace
// and name that lists it, else none.
func (cl *cluster) place(k bpf.PodwallIpAddr) {
	claims := cl.claims[k]
	id, ok := uint32(0), false
	if cl.hosts[k] {
		id, ok = bpf.IDHost, true
	} else if owner, owned := cl.owner(k); owned {
		id, ok = cl.pods[owner].ident.id, true
	}
	if (cl.hosts[k] && len(claims) > 0) || len(claims) > 1 {
		cl.conflicts[k] = struct{}{}
	} else {
		delete(cl.conflicts, k)
	}
	old, had := cl.ipcache[k]
	if had == ok && old == id {
		return
	}
	if had {
		cl.digest -= entryHash(k, old)
	}
	if ok {
		cl.ipcache[k] = id
		cl.digest += entryHash(k, id)
	} else {
		delete(cl.ipcache, k)
	}
	cl.changedAddrs[k] = struct{}{}
}

// acquire is the identity of the tag set key, numbered if it is new.
func (cl *cluster) acquire(key string, tags []string) *identity {
	id, ok := cl.idents[key]
	if !ok {
		id = cl.allocate(key, tags)
	}
	id.refs++
	return id
}

// allocate numbers the new identity key: the hash of its key, else the next free number.
// A number is kept while the identity lives, so others coming and going never move it.
func (cl *cluster) allocate(key string, tags []string) *identity {
	if tags == nil {
		tags = splitKey(key)
	}
	n := identityHash(key)
	for {
		if _, taken := cl.byID[n]; !taken {
			break
		}
		n++
		if n == 0 {
			n = bpf.IDFirstPod
		}
	}
	id := &identity{id: n, tags: tags}
	cl.idents[key] = id
	cl.byID[n] = tags
	for _, t := range tags {
		s := cl.tagIDs[t]
		if s == nil {
			s = map[uint32]struct{}{}
			cl.tagIDs[t] = s
		}
		s[n] = struct{}{}
	}
	cl.changedIDs[n] = struct{}{}
	return id
}

// release drops one pod of an identity, and the identity with its last pod.
func (cl *cluster) release(id *identity) {
	if id.refs--; id.refs > 0 {
		return
	}
	delete(cl.idents, identityKey(id.tags))
	delete(cl.byID, id.id)
	for _, t := range id.tags {
		s := cl.tagIDs[t]
		delete(s, id.id)
		if len(s) == 0 {
			delete(cl.tagIDs, t)
		}
	}
	cl.changedIDs[id.id] = struct{}{}
}

// problems are the duplicate names and the address conflicts.
func (cl *cluster) problems() []Problem {
	var out []Problem
	for k := range cl.dups {
		out = append(out, Problem{Namespace: k.namespace, Name: k.name, Kind: ProblemDuplicate,
			Err: fmt.Errorf("pod %s/%s: %w", k.namespace, k.name, ErrDuplicate)})
	}
	for a := range cl.conflicts {
		claims := cl.claims[a]
		owner := "the node"
		if !cl.hosts[a] {
			owner = "pod " + claims[0].namespace + "/" + claims[0].name
			claims = claims[1:]
		}
		for _, k := range claims {
			out = append(out, Problem{Namespace: k.namespace, Name: k.name, Kind: ProblemAddressConflict,
				Err: fmt.Errorf("%s is also %s's: %w", bpf.KeyAddr(a), owner, ErrAddressConflict)})
		}
	}
	return out
}

// changes hands over what changed since the last call.
func (cl *cluster) changes() (ids map[uint32]struct{}, addrs map[bpf.PodwallIpAddr]struct{}) {
	ids, addrs = cl.changedIDs, cl.changedAddrs
	cl.changedIDs, cl.changedAddrs = map[uint32]struct{}{}, map[bpf.PodwallIpAddr]struct{}{}
	return ids, addrs
}

// entryHash is one ipcache entry's share of the digest; a sum of them does not depend on the
// order of the entries, and follows a change at the cost of the entries it changes.
func entryHash(k bpf.PodwallIpAddr, id uint32) uint64 {
	h := mix64(uint64(k.Family)<<32 | uint64(id))
	for i := 0; i < len(k.Addr); i += 8 {
		h = mix64(h ^ uint64(k.Addr[i])<<56 ^ uint64(k.Addr[i+1])<<48 ^ uint64(k.Addr[i+2])<<40 ^ uint64(k.Addr[i+3])<<32 ^
			uint64(k.Addr[i+4])<<24 ^ uint64(k.Addr[i+5])<<16 ^ uint64(k.Addr[i+6])<<8 ^ uint64(k.Addr[i+7]))
	}
	return h
}

// ipcacheDigest is the digest of a whole ipcache.
func ipcacheDigest(m map[bpf.PodwallIpAddr]uint32) uint64 {
	var sum uint64
	for k, id := range m {
		sum += entryHash(k, id)
	}
	return sum
}

// ownAddrs are the first IPv4 and IPv6 addresses of pod k that the ipcache gives to it, the
// sources from_pod lets its packets carry; zero where it has none. An address another pod or
// the node holds is not the pod's to send from, nor is a second one of a family (Kubernetes
// gives a pod at most one of each), and a duplicate endpoint (k is then the zero key) has none:
// in doubt, the pod's packets are dropped as forged.
func (cl *cluster) ownAddrs(k podKey) (addr4, addr6 bpf.PodwallIpAddr) {
	p, ok := cl.pods[k]
	if !ok {
		return addr4, addr6
	}
	for _, a := range p.IPs {
		ak := AddrKey(a)
		if owner, ok := cl.owner(ak); !ok || owner != k {
			continue
		}
		switch {
		case ak.Family == bpf.FamV4 && addr4.Family == 0:
			addr4 = ak
		case ak.Family == bpf.FamV6 && addr6.Family == 0:
			addr6 = ak
		}
	}
	return addr4, addr6
}
