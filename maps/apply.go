package maps

import (
	"errors"
	"fmt"
	"maps"

	"github.com/podwall/podwall/bpf"
	"github.com/podwall/podwall/compiler"
)

// Applier keeps the pinned maps equal to the last desired state it was given.
type Applier struct {
	endpoints *table[uint32, bpf.PodwallEndpointEntry]
	ipcache   *table[bpf.PodwallIpAddr, uint32]
	ident     *table[bpf.PodwallIdentKey, bpf.PodwallRuleVec]
	cidr      *table[bpf.PodwallCidrKey, bpf.PodwallRuleVec]
	port      *table[bpf.PodwallPortKey, bpf.PodwallRuleVec]
	icmp      *table[bpf.PodwallIcmpKey, bpf.PodwallRuleVec]
	local     *table[bpf.PodwallIpAddr, uint32]
	epoch     *epoch
	ct        *Conntrack
	counters  *counters

	// gone are the addresses that left the ipcache and whose conntrack entries are not
	// flushed yet, changed those that came or whose identity changed, and whose inbound flows
	// are not flushed yet: a failed flush is tried again by the next Apply.
	gone, changed []bpf.PodwallIpAddr

	// synced is false until the maps were read, and again after a failed apply, when what
	// the kernel holds is no longer known.
	synced bool
	// last is the state the maps hold, nil when only the maps themselves tell.
	last *compiler.State
}

// NewApplier returns an applier for the maps of a loaded collection. It reads them on the
// first Apply, so a restarted agent changes only what differs from what it finds pinned.
func NewApplier(objs *bpf.PodwallObjects) *Applier {
	a := newApplier(&objs.PodwallMaps)
	a.ct = NewConntrack(objs)
	return a
}

func newApplier(m *bpf.PodwallMaps) *Applier {
	return &Applier{
		endpoints: newTable[uint32, bpf.PodwallEndpointEntry](m.Endpoints, bpf.PodwallMapEndpoints),
		ipcache:   newTable[bpf.PodwallIpAddr, uint32](m.Ipcache, bpf.PodwallMapIpcache),
		ident:     newTable[bpf.PodwallIdentKey, bpf.PodwallRuleVec](m.PolIdent, bpf.PodwallMapPolIdent),
		cidr:      newTable[bpf.PodwallCidrKey, bpf.PodwallRuleVec](m.PolCidr, bpf.PodwallMapPolCidr),
		port:      newTable[bpf.PodwallPortKey, bpf.PodwallRuleVec](m.PolPort, bpf.PodwallMapPolPort),
		icmp:      newTable[bpf.PodwallIcmpKey, bpf.PodwallRuleVec](m.PolIcmp, bpf.PodwallMapPolIcmp),
		local:     newTable[bpf.PodwallIpAddr, uint32](m.LocalPods, bpf.PodwallMapLocalPods),
		epoch:     &epoch{m: m.Epoch},
		counters:  newCounters(m.RuleCounters),
	}
}

// Contents are what the maps an Applier writes hold, map by map.
type Contents struct {
	Endpoints map[uint32]bpf.PodwallEndpointEntry
	IPCache   map[bpf.PodwallIpAddr]uint32
	Ident     map[bpf.PodwallIdentKey]bpf.PodwallRuleVec
	CIDR      map[bpf.PodwallCidrKey]bpf.PodwallRuleVec
	Port      map[bpf.PodwallPortKey]bpf.PodwallRuleVec
	ICMP      map[bpf.PodwallIcmpKey]bpf.PodwallRuleVec
	// LocalPods maps each endpoint's addresses to its ifindex, for the uplinks' XDP.
	LocalPods map[bpf.PodwallIpAddr]uint32
}

// Want is what the maps hold once s is applied.
func Want(s *compiler.State) Contents {
	ends := entries(s)
	d := Contents{
		Endpoints: ends,
		LocalPods: localPods(ends),
		IPCache:   s.IPCache,
		Ident:     make(map[bpf.PodwallIdentKey]bpf.PodwallRuleVec),
		CIDR:      make(map[bpf.PodwallCidrKey]bpf.PodwallRuleVec),
		Port:      make(map[bpf.PodwallPortKey]bpf.PodwallRuleVec),
		ICMP:      make(map[bpf.PodwallIcmpKey]bpf.PodwallRuleVec),
	}
	for _, p := range s.Policies {
		maps.Copy(d.Ident, p.Ident)
		maps.Copy(d.CIDR, p.CIDR)
		maps.Copy(d.Port, p.Port)
		maps.Copy(d.ICMP, p.ICMP)
	}
	return d
}

// Read reads what the maps an Applier writes hold, as Want says it: the endpoints' rule
// counters are the Applier's choice, not the State's, and are left out.
func Read(m *bpf.PodwallMaps) (Contents, error) {
	a := newApplier(m)
	if err := a.load(); err != nil {
		return Contents{}, err
	}
	for ifindex, e := range a.endpoints.present {
		e.Ep.Counters = 0
		a.endpoints.present[ifindex] = e
	}
	return Contents{
		Endpoints: a.endpoints.present, IPCache: a.ipcache.present,
		Ident: a.ident.present, CIDR: a.cidr.present, Port: a.port.present, ICMP: a.icmp.present,
		LocalPods: a.local.present,
	}, nil
}

// localPods are the values of local_pods: the address of each endpoint, to its ifindex.
func localPods(ends map[uint32]bpf.PodwallEndpointEntry) map[bpf.PodwallIpAddr]uint32 {
	out := make(map[bpf.PodwallIpAddr]uint32, 2*len(ends))
	for ifindex, e := range ends {
		for _, addr := range []bpf.PodwallIpAddr{e.Ep.Addr4, e.Ep.Addr6} {
			if addr.Family != 0 {
				out[addr] = ifindex
			}
		}
	}
	return out
}

// entries are the values of the endpoints map: each endpoint with its policy's record. An
// endpoint whose policy s lacks (no compiled State has one) is isolated: there is no record to
// judge it with, and an endpoint left out would let everything in.
func entries(s *compiler.State) map[uint32]bpf.PodwallEndpointEntry {
	out := make(map[uint32]bpf.PodwallEndpointEntry, len(s.Endpoints))
	for ifindex, ep := range s.Endpoints {
		e := bpf.PodwallEndpointEntry{Ep: ep}
		if ep.Mode == bpf.ModeEnforce {
			if p, ok := s.Policies[ep.Policy]; ok {
				e.Rules = p.Record
			} else {
				e.Ep.Mode = bpf.ModeIsolate
			}
		}
		out[ifindex] = e
	}
	return out
}

// Apply makes the maps hold s. The order is what keeps every packet judged by a whole
// policy: a policy's field entries are written before an endpoint's entry holds its record
// and id, and entries are deleted only once no endpoint can reach them. A
// change to the endpoints is framed by the conntrack epochs (epoch.around). The
// ipcache is pruned before it grows: an address that leaves it is a pod that is gone, so its
// removal can go first, and a nearly full ipcache then still takes the new pods.
//
// After a successful Apply, the next one writes only what changed: a policy whose Version is
// the one of the last state applied is not looked at again, nor is an ipcache of the same
// IPCacheVersion. A State whose Changes lead from the last one applied costs what they
// name: its addresses, and the pol_ident entries of the policies both hold. States are
// read-only.
func (a *Applier) Apply(s *compiler.State) error {
	if !a.synced {
		if err := a.load(); err != nil {
			return err
		}
	}
	var steps []func() error
	if a.last == nil || (s.Changes != nil && s.Changes.Since != a.last) {
		// The maps hold no State this one leads from: compare them whole.
		steps = a.full(s)
	} else {
		steps = a.incremental(s)
	}
	err := a.run(steps)
	if errors.Is(err, ErrMapFull) {
		// The maps may be too small for the policies s replaces and those it brings at
		// once, though they hold s: isolate the endpoints whose policy s replaces, drop
		// that policy, and write s into the room made.
		if err = a.load(); err == nil {
			err = a.run(a.makeRoom(s))
		}
		if err == nil {
			err = a.run(a.full(s))
		}
	}
	if err != nil {
		return fmt.Errorf("apply desired state: %w", err)
	}
	a.last = s
	if len(a.gone) > 0 || len(a.changed) > 0 {
		if _, err := a.ct.Collect(a.gone, a.changed); err != nil {
			return fmt.Errorf("flush the conntrack entries of %d addresses that left the ipcache and %d whose identity changed: %w",
				len(a.gone), len(a.changed), err)
		}
		a.gone, a.changed = nil, nil
	}
	return nil
}

// run runs the steps until one fails. After a failure, what the kernel holds is no longer
// known: the next Apply reads the maps again.
func (a *Applier) run(steps []func() error) error {
	for _, step := range steps {
		if err := step(); err != nil {
			a.synced = false
			a.last = nil
			return err
		}
	}
	return nil
}

// makeRoom isolates the endpoints whose policy s does not have, then deletes every policy
// entry s does not want: what a full map needs before s fits. The endpoints it isolates are
// those s changes anyway; until s is written, they drop what their old policy would have let
// in, rather than keep a policy that no longer fits beside the new one.
func (a *Applier) makeRoom(s *compiler.State) []func() error {
	isolated := maps.Clone(a.endpoints.present)
	for ifindex, e := range isolated {
		if _, ok := s.Policies[e.Ep.Policy]; ok || e.Ep.Mode != bpf.ModeEnforce {
			continue
		}
		e.Ep.Mode, e.Ep.Policy, e.Rules = bpf.ModeIsolate, 0, bpf.PodwallPolicy{}
		// Another generation: inbound flows allowed under the old one pass no more.
		e.Ep.Generation = e.Ep.Generation*2654435761 + 1
		if e.Ep.Generation == 0 {
			e.Ep.Generation = 1
		}
		isolated[ifindex] = e
	}
	// Every endpoint left enforced uses a policy of s, whose entries s holds but for the
	// pol_ident entries of identities that leave (a policy keeps its id when only the pods its
	// labels select change): the tables can shrink to exactly s's entries.
	d := Want(s)
	steps := a.epoch.around(func() error { return a.endpoints.put(isolated) })
	return append(steps,
		func() error { return a.ident.prune(d.Ident) },
		func() error { return a.cidr.prune(d.CIDR) },
		func() error { return a.port.prune(d.Port) },
		func() error { return a.icmp.prune(d.ICMP) },
	)
}

// pruneIPCache deletes the addresses s does not have, and keeps them to flush their
// conntrack entries once the apply is done: a pod that reuses one starts clean.
func (a *Applier) pruneIPCache(want map[bpf.PodwallIpAddr]uint32) error {
	var gone []bpf.PodwallIpAddr
	for k := range a.ipcache.present {
		if _, ok := want[k]; !ok {
			gone = append(gone, k)
		}
	}
	if err := a.ipcache.prune(want); err != nil {
		return err
	}
	a.gone = append(a.gone, gone...)
	return nil
}

// putIPCache writes the addresses want adds or gives another identity, and keeps them to
// flush the flows they opened once the apply is done: a flow is judged by its source's
// identity when it starts, and the endpoints' generations no longer follow the ipcache, so
// an address whose identity changes (a relabel, a pod on an address that was the world's)
// has its inbound flows judged again by its new labels, and other flows are left alone.
func (a *Applier) putIPCache(want map[bpf.PodwallIpAddr]uint32) error {
	var changed []bpf.PodwallIpAddr
	for k, v := range want {
		if old, ok := a.ipcache.present[k]; !ok || old != v {
			changed = append(changed, k)
		}
	}
	if err := a.ipcache.put(want); err != nil {
		return err
	}
	a.changed = append(a.changed, changed...)
	return nil
}

// full diffs every map against s: after the maps were read, they may hold anything, such
// as what a failed apply wrote of a policy no endpoint came to use. Those orphans go first,
// so that they never take the room of what s needs.
func (a *Applier) full(s *compiler.State) []func() error {
	d := Want(s)
	keep := map[uint32]bool{}
	for id := range s.Policies {
		keep[id] = true
	}
	for _, e := range a.endpoints.present {
		keep[e.Ep.Policy] = true
	}
	steps := []func() error{
		func() error {
			return pruneOrphans(a.ident, keep, func(k bpf.PodwallIdentKey) uint32 { return k.Policy })
		},
		func() error { return pruneOrphans(a.cidr, keep, func(k bpf.PodwallCidrKey) uint32 { return k.Policy }) },
		func() error { return pruneOrphans(a.port, keep, func(k bpf.PodwallPortKey) uint32 { return k.Policy }) },
		func() error { return pruneOrphans(a.icmp, keep, func(k bpf.PodwallIcmpKey) uint32 { return k.Policy }) },
		func() error { return a.ident.put(d.Ident) },
		func() error { return a.cidr.put(d.CIDR) },
		func() error { return a.port.put(d.Port) },
		func() error { return a.icmp.put(d.ICMP) },
		func() error { return a.pruneIPCache(d.IPCache) },
		func() error { return a.putIPCache(d.IPCache) },
	}
	steps = append(steps, a.endpointSteps(d.Endpoints, s.Policies)...)
	return append(steps,
		func() error { return a.ident.prune(d.Ident) },
		func() error { return a.cidr.prune(d.CIDR) },
		func() error { return a.port.prune(d.Port) },
		func() error { return a.icmp.prune(d.ICMP) },
	)
}

// incremental writes the difference between a.last, which the maps hold, and s, in the
// order of full. Policy ids are in every key of a policy's entries, so a policy's entries
// change only with it. When s's Changes lead from a.last, a policy both hold (the same
// *Policy, changed in place) differs by the pol_ident entries they name, and the ipcache
// by the addresses they name.
func (a *Applier) incremental(s *compiler.State) []func() error {
	last, d := a.last, s.Changes
	kept := func(id uint32) bool {
		return d != nil && last.Policies[id] != nil && last.Policies[id] == s.Policies[id]
	}
	var added []*compiler.Policy             // new or changed
	removed := map[uint32]*compiler.Policy{} // gone or changed, by id
	for id, p := range s.Policies {
		if !kept(id) && changed(last.Policies[id], p) {
			added = append(added, p)
		}
	}
	for id, old := range last.Policies {
		if !kept(id) && changed(old, s.Policies[id]) {
			removed[id] = old
		}
	}
	identPut, identDrop := map[bpf.PodwallIdentKey]bpf.PodwallRuleVec{}, map[bpf.PodwallIdentKey]bpf.PodwallRuleVec{}
	if d != nil {
		for k := range d.Ident {
			if v, ok := s.Policies[k.Policy].Ident[k]; ok {
				identPut[k] = v
			} else {
				identDrop[k] = bpf.PodwallRuleVec{}
			}
		}
	}
	steps := []func() error{
		func() error {
			if err := a.ident.put(identPut); err != nil {
				return err
			}
			return putEach(a.ident, added, func(p *compiler.Policy) map[bpf.PodwallIdentKey]bpf.PodwallRuleVec { return p.Ident })
		},
		func() error {
			return putEach(a.cidr, added, func(p *compiler.Policy) map[bpf.PodwallCidrKey]bpf.PodwallRuleVec { return p.CIDR })
		},
		func() error {
			return putEach(a.port, added, func(p *compiler.Policy) map[bpf.PodwallPortKey]bpf.PodwallRuleVec { return p.Port })
		},
		func() error {
			return putEach(a.icmp, added, func(p *compiler.Policy) map[bpf.PodwallIcmpKey]bpf.PodwallRuleVec { return p.ICMP })
		},
	}
	switch {
	case d != nil && d.IPCache != nil:
		steps = append(steps, func() error { return a.ipcacheChanges(s.IPCache, d.IPCache) })
	case s.IPCacheVersion == 0 || s.IPCacheVersion != last.IPCacheVersion:
		steps = append(steps,
			func() error { return a.pruneIPCache(s.IPCache) },
			func() error { return a.putIPCache(s.IPCache) })
	}
	steps = append(steps, a.endpointSteps(entries(s), s.Policies)...)
	return append(steps,
		func() error {
			if err := a.ident.remove(presentKeys(a.ident, identDrop)); err != nil {
				return err
			}
			return dropEach(a.ident, removed, s, func(p *compiler.Policy) map[bpf.PodwallIdentKey]bpf.PodwallRuleVec { return p.Ident })
		},
		func() error {
			return dropEach(a.cidr, removed, s, func(p *compiler.Policy) map[bpf.PodwallCidrKey]bpf.PodwallRuleVec { return p.CIDR })
		},
		func() error {
			return dropEach(a.port, removed, s, func(p *compiler.Policy) map[bpf.PodwallPortKey]bpf.PodwallRuleVec { return p.Port })
		},
		func() error {
			return dropEach(a.icmp, removed, s, func(p *compiler.Policy) map[bpf.PodwallIcmpKey]bpf.PodwallRuleVec { return p.ICMP })
		},
	)
}

// ipcacheChanges writes the addresses named by changed as want has them: first deleting
// those it does not have, then writing the others, with the conntrack flushes of
// pruneIPCache and putIPCache.
func (a *Applier) ipcacheChanges(want map[bpf.PodwallIpAddr]uint32, changed map[bpf.PodwallIpAddr]struct{}) error {
	var gone []bpf.PodwallIpAddr
	put := map[bpf.PodwallIpAddr]uint32{}
	for k := range changed {
		v, ok := want[k]
		_, had := a.ipcache.present[k]
		switch {
		case ok:
			put[k] = v
		case had:
			gone = append(gone, k)
		}
	}
	if err := a.ipcache.remove(gone); err != nil {
		return err
	}
	a.gone = append(a.gone, gone...)
	return a.putIPCache(put)
}

// presentKeys are the keys of m that t holds.
func presentKeys[K, V comparable](t *table[K, V], m map[K]V) []K {
	var keys []K
	for k := range m {
		if _, ok := t.present[k]; ok {
			keys = append(keys, k)
		}
	}
	return keys
}

// endpointSteps makes the endpoints map hold want, between the two epochs when anything
// changes, and also when an earlier apply failed between them. It gives each endpoint its
// rule counters first (policies are the rules' texts).
func (a *Applier) endpointSteps(want map[uint32]bpf.PodwallEndpointEntry, policies map[uint32]*compiler.Policy) []func() error {
	if err := a.counters.assign(want, policies); err != nil {
		return []func() error{func() error { return err }}
	}
	local := localPods(want)
	if !a.endpoints.differs(want) && !a.epoch.changing() && !a.local.differs(local) {
		a.counters.release()
		return nil
	}
	// An address that leaves or moves to another interface leaves local_pods before the
	// endpoints change, and one that comes enters after: the uplinks' XDP then never judges
	// a packet by an endpoint that is not its pod's (it passes what it cannot place).
	steps := []func() error{func() error { return a.local.prune(unchanged(a.local.present, local)) }}
	// The interfaces that leave go first: a full map then still takes the new ones.
	steps = append(steps, a.epoch.around(
		func() error { return a.endpoints.prune(want) },
		func() error { return a.endpoints.put(want) },
	)...)
	return append(steps,
		func() error { return a.local.put(local) },
		func() error { a.counters.release(); return nil })
}

// unchanged are the entries of present that want holds with the same value.
func unchanged[K, V comparable](present, want map[K]V) map[K]V {
	out := make(map[K]V, len(present))
	for k, v := range present {
		if w, ok := want[k]; ok && w == v {
			out[k] = v
		}
	}
	return out
}

// pruneOrphans deletes the entries of the policies that are not kept: neither wanted nor
// used by an endpoint entry the kernel holds.
func pruneOrphans[K, V comparable](t *table[K, V], keep map[uint32]bool, policy func(K) uint32) error {
	var keys []K
	for k := range t.present {
		if !keep[policy(k)] {
			keys = append(keys, k)
		}
	}
	return t.remove(keys)
}

// putEach writes the entries of the policies, the field of each that entries picks.
func putEach[K, V comparable](t *table[K, V], policies []*compiler.Policy, entries func(*compiler.Policy) map[K]V) error {
	for _, p := range policies {
		if err := t.put(entries(p)); err != nil {
			return err
		}
	}
	return nil
}

// dropEach deletes the entries of the policies that s does not have: the same key in s is
// the same policy id, whose entries are s's.
func dropEach[K, V comparable](t *table[K, V], policies map[uint32]*compiler.Policy, s *compiler.State, entries func(*compiler.Policy) map[K]V) error {
	var keys []K
	for id, old := range policies {
		var now map[K]V
		if p, ok := s.Policies[id]; ok {
			now = entries(p)
		}
		for k := range entries(old) {
			if _, ok := now[k]; !ok {
				keys = append(keys, k)
			}
		}
	}
	return t.remove(keys)
}

// changed says whether policy p must be written where old was: one of them is missing, or
// their contents differ by version, or a version is unknown.
func changed(old, p *compiler.Policy) bool {
	return old == nil || p == nil || p.Version == 0 || old.Version != p.Version
}

func (a *Applier) load() error {
	for _, l := range []interface{ load() error }{a.endpoints, a.ipcache, a.ident, a.cidr, a.port, a.icmp, a.local, a.epoch} {
		if err := l.load(); err != nil {
			return err
		}
	}
	a.counters.load(a.endpoints.present)
	a.synced = true
	return nil
}

// Fill is how full one map is, as far as the applier knows.
type Fill struct {
	Map     string
	Entries int
	Max     uint32
}

// Fill reports the entries of every map the applier writes, for metrics and `podwall maps`.
func (a *Applier) Fill() []Fill {
	return []Fill{
		a.endpoints.fill(), a.ipcache.fill(),
		a.ident.fill(), a.cidr.fill(), a.port.fill(), a.icmp.fill(), a.local.fill(),
		a.counters.fillLevel(),
	}
}
