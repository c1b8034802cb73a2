package compiler

import (
	"net/netip"
	"slices"

	"github.com/podwall/podwall/bpf"
)

// Compiler keeps the cluster and the node's compiled policies, and changes them by what
// changed: a pod set or deleted costs its own ipcache entries, its identity (created with
// its first pod, freed with its last) and, at the next turn, the pol_ident entries of the
// node's policies that name one of that identity's tags; a local pod's annotation costs its
// own policy. Nothing walks the cluster but Compile, for a start or a resync. A turn's result
// equals Compile's of the same input, but for the numbers of identities whose hashes collide:
// an identity keeps its number while it lives, so whether it or the other has the hash's
// number depends on which came first.
//
// The States it returns share maps and Policies, which it changes in place (see Changes).
// The zero Compiler is ready; it is not safe for concurrent use.
type Compiler struct {
	cl   *cluster
	memo *memo
	last *State
	// cut says whether the last State's ipcache was cut to the map's room.
	cut bool
}

func (c *Compiler) init() {
	if c.cl == nil {
		c.cl = newCluster()
	}
}

// SetPod creates pod p, or replaces the pod of its namespace and name, before the next turn.
func (c *Compiler) SetPod(p Pod) {
	c.init()
	c.cl.set(p)
}

// DeletePod deletes a pod, if the cluster has it, before the next turn.
func (c *Compiler) DeletePod(namespace, name string) {
	c.init()
	c.cl.remove(podKey{namespace, name})
}

// SetPods makes the cluster pods, changing only the pods that differ, before the next turn:
// new identities are numbered in the order of their keys, as for any agent that starts on
// the same pods.
func (c *Compiler) SetPods(pods []Pod) {
	c.init()
	c.cl.reset(pods)
}

// Compile makes the cluster in.Pods, as SetPods does, and compiles the node's state on it.
func (c *Compiler) Compile(in Input) *State {
	c.SetPods(in.Pods)
	return c.CompileNode(in)
}

// CompileNode compiles the node's state (in's endpoints, host addresses, namespace
// annotations and options) on the cluster as SetPod and DeletePod left it: in.Pods is not
// read.
func (c *Compiler) CompileNode(in Input) *State {
	c.init()
	c.cl.setHostIPs(in.HostIPs)
	return c.turn(in)
}

func (c *Compiler) turn(in Input) *State {
	if c.memo == nil || !sameOptions(c.memo.opts, in.Options) {
		c.memo = &memo{opts: in.Options, prev: map[podKey]memoPolicy{}, prevPolicies: map[string]*memoMaterial{}}
		c.memo.opts.OpenNamespaces = slices.Clone(in.OpenNamespaces)
	}
	m := c.memo
	ids, addrs := c.cl.changes()
	m.changedIDs, m.identChanges = ids, map[bpf.PodwallIdentKey]struct{}{}
	m.next = make(map[podKey]memoPolicy, len(m.prev))
	m.nextPolicies = make(map[string]*memoMaterial, len(m.prevPolicies))
	s := compileOn(in, c.cl, m)
	m.prev, m.next = m.next, nil
	m.prevPolicies, m.nextPolicies = m.nextPolicies, nil
	cut := len(s.IPCache) != len(c.cl.ipcache)
	if c.last != nil {
		// The State before keeps no Changes: States would otherwise hold every one before them.
		c.last.Changes = nil
		s.Changes = &Changes{Since: c.last, Ident: m.identChanges}
		if !cut && !c.cut {
			s.Changes.IPCache = addrs
		}
	}
	c.last, c.cut = s, cut
	return s
}

// sameOptions says whether a and b compile every pod's annotation alike: AllowHost only
// sets the endpoints' flags.
func sameOptions(a, b Options) bool {
	return a.DefaultPolicy == b.DefaultPolicy && a.LegacyKey == b.LegacyKey && slices.Equal(a.OpenNamespaces, b.OpenNamespaces)
}

// memo is what a Compiler keeps of its last turn with one set of options: the local pods'
// policies and the materialized policies. A turn reads prev and fills next, so what a turn
// did not use is dropped.
type memo struct {
	opts                       Options
	prev, next                 map[podKey]memoPolicy
	prevPolicies, nextPolicies map[string]*memoMaterial // by encoding
	// changedIDs are the identities created or freed since the last turn, identChanges the
	// pol_ident entries this turn changed in the policies it kept.
	changedIDs   map[uint32]struct{}
	identChanges map[bpf.PodwallIdentKey]struct{}
}

// annotation is a pod's policy annotation as PolicyAnnotation picked it.
type annotation struct {
	value, key string
	ok         bool
}

// memoKey is what a local pod's policy depends on, with its addresses.
type memoKey struct {
	ann   annotation
	ident string // identityKey of the pod's own tags
}

type memoPolicy struct {
	key memoKey
	ips []netip.Addr
	pp  podPolicy
}

type memoMaterial struct {
	id       uint32
	p        *Policy
	tagRules map[string]vec
}

// policy is the podPolicy of the local pod k, compiled by compile unless the last turn did
// for the same key and addresses.
func (m *memo) policy(k podKey, key memoKey, ips []netip.Addr, compile func() podPolicy) podPolicy {
	e, ok := m.prev[k]
	if !ok || e.key != key || !slices.Equal(e.ips, ips) {
		e = memoPolicy{key: key, ips: ips, pp: compile()}
	}
	m.next[k] = e
	return e.pp
}

// materialized is the policy of encoding enc under id: the last turn's, with the pol_ident
// entries of the identities that came or left since, or made anew.
func (m *memo) materialized(cl *cluster, id uint32, enc string, f *folded) *Policy {
	e, ok := m.prevPolicies[enc]
	if ok && e.id == id {
		m.refresh(cl, e, enc)
	} else {
		e = &memoMaterial{id: id, p: materialize(cl, id, enc, f), tagRules: map[string]vec{}}
		for _, t := range f.tags {
			e.tagRules[t.tag] = t.rules
		}
	}
	m.nextPolicies[enc] = e
	return e.p
}

// refresh writes again the pol_ident entry of e's policy for each identity created or freed
// since the last turn: the rules of the tags it has that the policy names, or none.
func (m *memo) refresh(cl *cluster, e *memoMaterial, enc string) {
	p := e.p
	wild := vec(p.Record.WildIdent)
	changed := false
	for ident := range m.changedIDs {
		k := bpf.PodwallIdentKey{Policy: e.id, Identity: ident}
		var v vec
		named := false
		for _, t := range cl.byID[ident] {
			if r, ok := e.tagRules[t]; ok {
				v, named = v.or(r), true
			}
		}
		old, had := p.Ident[k]
		var now bpf.PodwallRuleVec
		if named {
			now = v.or(wild).ruleVec()
		}
		if had == named && old == now {
			continue
		}
		if had {
			p.identSum -= identHash(k, old)
			delete(p.Ident, k)
		}
		if named {
			p.Ident[k] = now
			p.identSum += identHash(k, now)
		}
		m.identChanges[k] = struct{}{}
		changed = true
	}
	if changed {
		p.Version = policyVersion(e.id, enc, p.identSum)
	}
}
