package compiler

import (
	"cmp"
	"encoding/binary"
	"fmt"
	"hash/fnv"
	"slices"

	"github.com/podwall/podwall/bpf"
)

type podKey struct{ namespace, name string }

// compilation is the work of one Compile.
type compilation struct {
	in       Input
	state    *State
	pods     map[podKey]*Pod
	podTags  map[podKey][]string
	podIDs   map[podKey]uint32
	tagIDs   map[string][]uint32 // tag -> the identities that have it, ascending
	open     map[string]bool
	policies map[string]*folded // by encoding
}

// Compile computes the desired state of every map from the cluster as this node sees it.
// It never fails as a whole: what cannot be compiled as written is isolated, left out or
// ignored as Problem says, and listed in State.Problems. The result depends only on the
// content of in, not on the order of its slices.
func Compile(in Input) *State {
	c := &compilation{
		in: in,
		state: &State{
			Endpoints:  map[uint32]bpf.PodwallEndpoint{},
			Policies:   map[uint32]*Policy{},
			IPCache:    map[bpf.PodwallIpAddr]uint32{},
			Identities: map[uint32][]string{},
		},
		podTags:  map[podKey][]string{},
		podIDs:   map[podKey]uint32{},
		tagIDs:   map[string][]uint32{},
		open:     map[string]bool{},
		policies: map[string]*folded{},
	}
	for _, ns := range in.OpenNamespaces {
		c.open[ns] = true
	}
	sorted := c.uniquePods()
	c.identities(sorted)
	c.ipcache(sorted)
	c.endpoints()
	slices.SortFunc(c.state.Problems, func(a, b Problem) int {
		return cmp.Or(cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name),
			cmp.Compare(a.Kind, b.Kind), cmp.Compare(a.Err.Error(), b.Err.Error()))
	})
	return c.state
}

func (c *compilation) problem(k podKey, kind ProblemKind, err error) {
	c.state.Problems = append(c.state.Problems, Problem{Namespace: k.namespace, Name: k.name, Kind: kind, Err: err})
}

// uniquePods indexes copies of the pods, with only their usable addresses, and returns them
// sorted by namespace and name. Pods that share a name are all left out: which one is real
// cannot be told.
func (c *compilation) uniquePods() []*Pod {
	c.pods = make(map[podKey]*Pod, len(c.in.Pods))
	dup := map[podKey]bool{}
	pods := slices.Clone(c.in.Pods)
	for i := range pods {
		p := &pods[i]
		p.IPs = usableAddrs(p.IPs)
		k := podKey{p.Namespace, p.Name}
		if _, ok := c.pods[k]; ok {
			dup[k] = true
		}
		c.pods[k] = p
	}
	for k := range dup {
		delete(c.pods, k)
		c.problem(k, ProblemDuplicate, fmt.Errorf("pod %s/%s: %w", k.namespace, k.name, ErrDuplicate))
	}
	sorted := make([]*Pod, 0, len(c.pods))
	for _, p := range c.pods {
		sorted = append(sorted, p)
	}
	slices.SortFunc(sorted, func(a, b *Pod) int {
		return cmp.Or(cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name))
	})
	return sorted
}

// identities numbers the tag sets of the pods that have addresses, and indexes them by tag.
func (c *compilation) identities(pods []*Pod) {
	var keys []string
	byKey := map[string][]string{}
	podKeys := map[podKey]string{}
	for _, p := range pods {
		if p.HostNetwork {
			continue
		}
		pk := podKey{p.Namespace, p.Name}
		tags := identityTags(p.Namespace, p.Labels)
		c.podTags[pk] = tags
		if len(p.IPs) == 0 {
			continue
		}
		k := identityKey(tags)
		podKeys[pk] = k
		if _, ok := byKey[k]; !ok {
			byKey[k] = tags
			keys = append(keys, k)
		}
	}
	ids := allocateIdentities(keys)
	for pk, k := range podKeys {
		c.podIDs[pk] = ids[k]
	}
	for k, id := range ids {
		tags := byKey[k]
		c.state.Identities[id] = tags
		for _, t := range tags {
			c.tagIDs[t] = append(c.tagIDs[t], id)
		}
	}
	for _, ids := range c.tagIDs {
		slices.Sort(ids)
	}
}

// ipcache maps the node's addresses to IDHost and each pod address to its pod's identity.
// An address claimed twice goes to the node, else to the first pod by namespace and name.
func (c *compilation) ipcache(pods []*Pod) {
	owner := map[bpf.PodwallIpAddr]string{}
	for _, a := range usableAddrs(c.in.HostIPs) {
		k := addrKey(a)
		c.state.IPCache[k] = IDHost
		owner[k] = "the node"
	}
	for _, p := range pods {
		if p.HostNetwork {
			continue
		}
		pk := podKey{p.Namespace, p.Name}
		id := c.podIDs[pk]
		name := "pod " + p.Namespace + "/" + p.Name
		for _, a := range p.IPs {
			k := addrKey(a)
			switch o, ok := owner[k]; {
			case !ok:
				c.state.IPCache[k] = id
				owner[k] = name
			case o != name:
				c.problem(pk, ProblemAddressConflict, fmt.Errorf("%s is also %s's: %w", a, o, ErrAddressConflict))
			}
		}
	}
}

// endpoints compiles the local pods, then numbers the distinct policies they use.
func (c *compilation) endpoints() {
	eps := slices.Clone(c.in.Endpoints)
	slices.SortFunc(eps, func(a, b Endpoint) int {
		return cmp.Or(cmp.Compare(a.Ifindex, b.Ifindex), cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name))
	})
	type pending struct {
		ifindex uint32
		mode    uint8
		enc     string
	}
	var todo []pending
	for i, ep := range eps {
		k := podKey{ep.Namespace, ep.Name}
		dupIfindex := (i > 0 && eps[i-1].Ifindex == ep.Ifindex) || (i+1 < len(eps) && eps[i+1].Ifindex == ep.Ifindex)
		if dupIfindex {
			c.problem(k, ProblemDuplicate, fmt.Errorf("ifindex %d: %w", ep.Ifindex, ErrDuplicate))
			todo = append(todo, pending{ifindex: ep.Ifindex, mode: ModeIsolate})
			continue
		}
		mode, f, ok := c.endpoint(ep)
		if !ok {
			continue
		}
		p := pending{ifindex: ep.Ifindex, mode: mode}
		if f != nil {
			p.enc = string(f.encode())
			c.policies[p.enc] = f
		}
		todo = append(todo, p)
	}

	ids := c.policyIDs()
	digest := ipcacheDigest(c.state.IPCache)
	var flags uint8
	if c.in.AllowHost {
		flags |= EPAllowHost
	}
	for _, p := range todo {
		id := ids[p.enc]
		c.state.Endpoints[p.ifindex] = bpf.PodwallEndpoint{
			Policy:     id,
			Generation: generation(p.mode, flags, id, digest),
			Mode:       p.mode,
			Flags:      flags,
		}
	}
}

// endpoint decides the mode of a local pod and, in ModeEnforce, its folded policy. It
// reports false for a host-network pod, which has no endpoint.
func (c *compilation) endpoint(ep Endpoint) (uint8, *folded, bool) {
	k := podKey{ep.Namespace, ep.Name}
	pod, ok := c.pods[k]
	switch {
	case !ok:
		c.problem(k, ProblemUnknownPod, fmt.Errorf("ifindex %d: %w", ep.Ifindex, ErrUnknownPod))
		return ModeIsolate, nil, true
	case pod.HostNetwork:
		return 0, nil, false
	}
	value, key, annotated := PolicyAnnotation(pod.Annotations, c.in.LegacyKey)
	if c.open[pod.Namespace] {
		if annotated {
			c.problem(k, ProblemIgnored, fmt.Errorf("annotation %s: %w", key, ErrIgnored))
		}
		return ModeOpen, nil, true
	}
	var rules []rule
	if !annotated {
		switch c.in.DefaultPolicy {
		case DefaultAllow:
			return ModeOpen, nil, true
		case DefaultDeny:
			return ModeIsolate, nil, true
		}
		rules = []rule{namespaceRule(pod.Namespace)}
	} else {
		parsed, err := Parse(value)
		switch {
		case err != nil:
			c.problem(k, ProblemInvalid, err)
			return ModeIsolate, nil, true
		case len(parsed) == 0:
			return ModeIsolate, nil, true
		case len(parsed) > MaxRules:
			c.problem(k, ProblemTooManyRules, fmt.Errorf("%d rules, at most %d: %w", len(parsed), MaxRules, ErrTooManyRules))
			return ModeIsolate, nil, true
		}
		rules = podRules(pod.Namespace, parsed)
	}
	f := fold(rules, c.podTags[k], pod.IPs)
	return ModeEnforce, &f, true
}

// policyIDs numbers the distinct policies by the hash of their encoding, probing in the
// order of the encodings, and fills State.Policies. The empty encoding (no policy) is 0.
func (c *compilation) policyIDs() map[string]uint32 {
	encs := sortedKeys(c.policies)
	ids := make(map[string]uint32, len(encs)+1)
	taken := map[uint32]bool{0: true}
	for _, enc := range encs {
		id := fold32(fnv64(enc))
		for taken[id] {
			id++
		}
		taken[id] = true
		ids[enc] = id
		c.state.Policies[id] = c.materialize(id, c.policies[enc])
	}
	return ids
}

// materialize keys a folded policy's entries by its id, and adds its pol_ident entries:
// one for each identity that has a tag the policy names.
func (c *compilation) materialize(id uint32, f *folded) *Policy {
	p := &Policy{
		Record: f.record,
		Ident:  map[bpf.PodwallIdentKey]bpf.PodwallRuleVec{},
		CIDR:   make(map[bpf.PodwallCidrKey]bpf.PodwallRuleVec, len(f.cidrs)),
		Port:   make(map[bpf.PodwallPortKey]bpf.PodwallRuleVec, len(f.ports)),
		ICMP:   make(map[bpf.PodwallIcmpKey]bpf.PodwallRuleVec, len(f.icmps)),
		Rules:  f.rules,
	}
	wild := vec(f.record.WildIdent)
	byID := map[uint32]vec{}
	for _, t := range f.tags {
		for _, ident := range c.tagIDs[t.tag] {
			byID[ident] = byID[ident].or(t.rules)
		}
	}
	for ident, v := range byID {
		p.Ident[bpf.PodwallIdentKey{Policy: id, Identity: ident}] = v.or(wild).ruleVec()
	}
	for _, e := range f.cidrs {
		p.CIDR[cidrKey(id, e.prefix)] = e.rules.ruleVec()
	}
	for _, e := range f.ports {
		p.Port[bpf.PodwallPortKey{
			Prefixlen:  portKeyBits + uint32(e.prefix.bits),
			Policy:     id,
			ProtoClass: e.class,
			Dir:        e.dir,
			Port:       netPort(e.prefix.port),
		}] = e.rules.ruleVec()
	}
	for _, e := range f.icmps {
		p.ICMP[bpf.PodwallIcmpKey{Policy: id, Family: e.family, Type: e.typ, Code: e.code}] = e.rules.ruleVec()
	}
	return p
}

// ipcacheDigest hashes the whole ipcache, in key order.
func ipcacheDigest(m map[bpf.PodwallIpAddr]uint32) uint64 {
	keys := make([]bpf.PodwallIpAddr, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b bpf.PodwallIpAddr) int {
		return cmp.Or(cmp.Compare(a.Family, b.Family), slices.Compare(a.Addr[:], b.Addr[:]))
	})
	h := fnv.New64a()
	var b []byte
	for _, k := range keys {
		b = append(b[:0], k.Family)
		b = append(b, k.Addr[:]...)
		b = binary.LittleEndian.AppendUint32(b, m[k])
		h.Write(b)
	}
	return h.Sum64()
}

// generation changes whenever anything that judges the endpoint's traffic changes: its
// mode, flags, policy, or the identity of any address.
func generation(mode, flags uint8, policy uint32, digest uint64) uint32 {
	var b []byte
	b = append(b, mode, flags)
	b = binary.LittleEndian.AppendUint32(b, policy)
	b = binary.LittleEndian.AppendUint64(b, digest)
	g := fold32(fnv64(string(b)))
	if g == 0 {
		g = 1
	}
	return g
}

func fnv64(s string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(s))
	return h.Sum64()
}

func fold32(h uint64) uint32 { return uint32(h) ^ uint32(h>>32) }
