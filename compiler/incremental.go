package compiler

import (
	"maps"
	"net/netip"
	"slices"
)

// Compiler compiles a sequence of inputs, reusing what the previous one computed where its
// inputs are unchanged: the identities, ipcache and its digest while no pod of the cluster
// changed its name, namespace, labels, addresses or host networking and the node its
// addresses; each local pod's folded policy while also its annotation and the options are
// the same; each policy's entries while also its id is. So an annotation change recompiles
// one pod's policy, not the cluster. Its result always equals Compile's for the same input.
//
// The States it returns share their IPCache and Identities maps, and their Policies, with
// the earlier States of the same cluster: they are read-only. The zero Compiler is ready; it
// is not safe for concurrent use.
type Compiler struct {
	cl   *cluster
	turn uint64
	memo *memo
}

// Compile is Compile(in), with the work of the previous call reused.
func (c *Compiler) Compile(in Input) *State {
	c.turn++
	if c.cl == nil || !c.cl.matches(in.Pods, in.HostIPs, c.turn) {
		c.cl = newCluster(in.Pods, in.HostIPs, true)
	}
	if c.memo == nil || c.memo.cl != c.cl || !sameOptions(c.memo.opts, in.Options) {
		c.memo = &memo{cl: c.cl, opts: in.Options, prev: map[podKey]memoPolicy{}, prevPolicies: map[string]memoMaterial{}}
		c.memo.opts.OpenNamespaces = slices.Clone(in.OpenNamespaces)
	}
	c.memo.next = make(map[podKey]memoPolicy, len(c.memo.prev))
	c.memo.nextPolicies = make(map[string]memoMaterial, len(c.memo.prevPolicies))
	s := compileOnMemo(in, c.cl, c.memo)
	c.memo.prev, c.memo.next = c.memo.next, nil
	c.memo.prevPolicies, c.memo.nextPolicies = c.memo.nextPolicies, nil
	return s
}

// matches says whether pods and hostIPs have cl as their cluster, and gives cl's pods the
// annotations of pods. Each pod must be one of cl's, and each of cl's once: turn marks the
// ones found.
func (cl *cluster) matches(pods []Pod, hostIPs []netip.Addr, turn uint64) bool {
	if cl.dups || len(pods) != len(cl.pods) || !sameAddrs(cl.hostIPs, hostIPs) {
		return false
	}
	for i := range pods {
		p := &pods[i]
		e, ok := cl.pods[podKey{p.Namespace, p.Name}]
		if !ok || e.seen == turn || e.HostNetwork != p.HostNetwork || !sameAddrs(e.IPs, p.IPs) || !maps.Equal(e.Labels, p.Labels) {
			return false
		}
		e.seen = turn
		e.Annotations = p.Annotations
	}
	return true
}

// sameAddrs says whether usable is usableAddrs(ips), without allocating.
func sameAddrs(usable, ips []netip.Addr) bool {
	n := 0
	for _, a := range ips {
		if !a.IsValid() {
			continue
		}
		if n == len(usable) || usable[n] != a.Unmap() {
			return false
		}
		n++
	}
	return n == len(usable)
}

// sameOptions says whether a and b compile every pod's annotation alike: AllowHost only
// sets the endpoints' flags.
func sameOptions(a, b Options) bool {
	return a.DefaultPolicy == b.DefaultPolicy && a.LegacyKey == b.LegacyKey && slices.Equal(a.OpenNamespaces, b.OpenNamespaces)
}

// memo is what a Compiler keeps of its last turn on one cluster with one set of options:
// the local pods' policies and the materialized policies. A turn reads prev and fills next,
// so what a turn did not use is dropped.
type memo struct {
	cl                         *cluster
	opts                       Options
	prev, next                 map[podKey]memoPolicy
	prevPolicies, nextPolicies map[string]memoMaterial // by encoding
}

// annotation is a pod's policy annotation as PolicyAnnotation picked it.
type annotation struct {
	value, key string
	ok         bool
}

type memoPolicy struct {
	ann annotation
	pp  podPolicy
}

type memoMaterial struct {
	id uint32
	p  *Policy
}

// policy is the podPolicy of the pod k with annotation ann, compiled by compile unless the
// last turn did.
func (m *memo) policy(k podKey, ann annotation, compile func() podPolicy) podPolicy {
	e, ok := m.prev[k]
	if !ok || e.ann != ann {
		e = memoPolicy{ann: ann, pp: compile()}
	}
	m.next[k] = e
	return e.pp
}

// materialized is the policy of encoding enc under id, made by materialize unless the last
// turn did.
func (m *memo) materialized(id uint32, enc string, materialize func() *Policy) *Policy {
	e, ok := m.prevPolicies[enc]
	if !ok || e.id != id {
		e = memoMaterial{id: id, p: materialize()}
	}
	m.nextPolicies[enc] = e
	return e.p
}
