package maps

import (
	"fmt"

	"github.com/podwall/podwall/bpf"
	"github.com/podwall/podwall/compiler"
)

// Applier keeps the pinned maps equal to the last desired state it was given.
type Applier struct {
	endpoints *table[uint32, bpf.PodwallEndpoint]
	policies  *table[uint32, bpf.PodwallPolicy]
	ipcache   *table[bpf.PodwallIpAddr, uint32]
	ident     *table[bpf.PodwallIdentKey, bpf.PodwallRuleVec]
	cidr      *table[bpf.PodwallCidrKey, bpf.PodwallRuleVec]
	port      *table[bpf.PodwallPortKey, bpf.PodwallRuleVec]
	icmp      *table[bpf.PodwallIcmpKey, bpf.PodwallRuleVec]

	// synced is false until the maps were read, and again after a failed apply, when what
	// the kernel holds is no longer known.
	synced bool
}

// NewApplier returns an applier for the maps of a loaded collection. It reads them on the
// first Apply, so a restarted agent changes only what differs from what it finds pinned.
func NewApplier(m *bpf.PodwallMaps) *Applier {
	return &Applier{
		endpoints: newTable[uint32, bpf.PodwallEndpoint](m.Endpoints, bpf.PodwallMapEndpoints),
		policies:  newTable[uint32, bpf.PodwallPolicy](m.Policies, bpf.PodwallMapPolicies),
		ipcache:   newTable[bpf.PodwallIpAddr, uint32](m.Ipcache, bpf.PodwallMapIpcache),
		ident:     newTable[bpf.PodwallIdentKey, bpf.PodwallRuleVec](m.PolIdent, bpf.PodwallMapPolIdent),
		cidr:      newTable[bpf.PodwallCidrKey, bpf.PodwallRuleVec](m.PolCidr, bpf.PodwallMapPolCidr),
		port:      newTable[bpf.PodwallPortKey, bpf.PodwallRuleVec](m.PolPort, bpf.PodwallMapPolPort),
		icmp:      newTable[bpf.PodwallIcmpKey, bpf.PodwallRuleVec](m.PolIcmp, bpf.PodwallMapPolIcmp),
	}
}

// desired is a compiled state laid out map by map.
type desired struct {
	endpoints map[uint32]bpf.PodwallEndpoint
	policies  map[uint32]bpf.PodwallPolicy
	ipcache   map[bpf.PodwallIpAddr]uint32
	ident     map[bpf.PodwallIdentKey]bpf.PodwallRuleVec
	cidr      map[bpf.PodwallCidrKey]bpf.PodwallRuleVec
	port      map[bpf.PodwallPortKey]bpf.PodwallRuleVec
	icmp      map[bpf.PodwallIcmpKey]bpf.PodwallRuleVec
}

func flatten(s *compiler.State) desired {
	d := desired{
		endpoints: s.Endpoints,
		policies:  make(map[uint32]bpf.PodwallPolicy, len(s.Policies)),
		ipcache:   s.IPCache,
		ident:     make(map[bpf.PodwallIdentKey]bpf.PodwallRuleVec),
		cidr:      make(map[bpf.PodwallCidrKey]bpf.PodwallRuleVec),
		port:      make(map[bpf.PodwallPortKey]bpf.PodwallRuleVec),
		icmp:      make(map[bpf.PodwallIcmpKey]bpf.PodwallRuleVec),
	}
	for id, p := range s.Policies {
		d.policies[id] = p.Record
		for k, v := range p.Ident {
			d.ident[k] = v
		}
		for k, v := range p.CIDR {
			d.cidr[k] = v
		}
		for k, v := range p.Port {
			d.port[k] = v
		}
		for k, v := range p.ICMP {
			d.icmp[k] = v
		}
	}
	return d
}

// Apply makes the maps hold s. The order is what keeps every packet judged by a whole
// policy: a policy's field entries are written before its record, the record before any
// endpoint points at it, and entries are deleted only once no endpoint can reach them. The
// ipcache is pruned before it grows: an address that leaves it is a pod that is gone, so its
// removal can go first, and a nearly full ipcache then still takes the new pods.
func (a *Applier) Apply(s *compiler.State) error {
	if !a.synced {
		if err := a.load(); err != nil {
			return err
		}
	}
	d := flatten(s)
	steps := []func() error{
		func() error { return a.ident.put(d.ident) },
		func() error { return a.cidr.put(d.cidr) },
		func() error { return a.port.put(d.port) },
		func() error { return a.icmp.put(d.icmp) },
		func() error { return a.policies.put(d.policies) },
		func() error { return a.ipcache.prune(d.ipcache) },
		func() error { return a.ipcache.put(d.ipcache) },
		func() error { return a.endpoints.put(d.endpoints) },
		func() error { return a.endpoints.prune(d.endpoints) },
		func() error { return a.policies.prune(d.policies) },
		func() error { return a.ident.prune(d.ident) },
		func() error { return a.cidr.prune(d.cidr) },
		func() error { return a.port.prune(d.port) },
		func() error { return a.icmp.prune(d.icmp) },
	}
	for _, step := range steps {
		if err := step(); err != nil {
			a.synced = false
			return fmt.Errorf("apply desired state: %w", err)
		}
	}
	return nil
}

func (a *Applier) load() error {
	for _, l := range []interface{ load() error }{a.endpoints, a.policies, a.ipcache, a.ident, a.cidr, a.port, a.icmp} {
		if err := l.load(); err != nil {
			return err
		}
	}
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
		a.endpoints.fill(), a.policies.fill(), a.ipcache.fill(),
		a.ident.fill(), a.cidr.fill(), a.port.fill(), a.icmp.fill(),
	}
}
