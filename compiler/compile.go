package compiler

import (
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"slices"

	"github.com/podwall/podwall/bpf"
	"github.com/podwall/podwall/policy"
)

// compilation is the work of one Compile on a cluster.
type compilation struct {
	in       Input
	cl       *cluster
	state    *State
	open     map[string]bool
	policies map[string]*folded // by encoding
	// memo is what the Compiler's last turn compiled.
	memo *memo
}

// Compile computes the desired state of every map from the cluster as this node sees it.
// It never fails as a whole: what cannot be compiled as written is isolated, left out or
// ignored as Problem says, and listed in State.Problems. The result depends only on the
// content of in, not on the order of its slices. It is the reference a Compiler's
// incremental States are tested against.
func Compile(in Input) *State {
	var c Compiler
	return c.Compile(in)
}

// compileOn compiles the endpoints of in on cl, which holds the cluster of in, reusing the
// policies of m.
func compileOn(in Input, cl *cluster, m *memo) *State {
	c := &compilation{
		in:   in,
		cl:   cl,
		memo: m,
		state: &State{
			Endpoints:  map[uint32]bpf.PodwallEndpoint{},
			Policies:   map[uint32]*Policy{},
			IPCache:    cl.ipcache,
			Identities: cl.byID,
			Problems:   cl.problems(),
		},
		open:     map[string]bool{},
		policies: map[string]*folded{},
	}
	for _, ns := range in.OpenNamespaces {
		c.open[ns] = true
	}
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
		pod     podKey
		audit   bool
	}
	todo := make([]pending, 0, len(eps))
	for i, ep := range eps {
		k := podKey{ep.Namespace, ep.Name}
		dupIfindex := (i > 0 && eps[i-1].Ifindex == ep.Ifindex) || (i+1 < len(eps) && eps[i+1].Ifindex == ep.Ifindex)
		if dupIfindex {
			c.problem(k, ProblemDuplicate, fmt.Errorf("ifindex %d: %w", ep.Ifindex, ErrDuplicate))
			todo = append(todo, pending{ifindex: ep.Ifindex, mode: bpf.ModeIsolate})
			continue
		}
		pp, ok := c.endpoint(ep)
		if !ok {
			continue
		}
		if pp.f != nil {
			c.policies[pp.enc] = pp.f
		}
		// Only a policy can be audited: a pod isolated in doubt (an invalid annotation, no
		// room) stays isolated.
		audit := pp.mode != bpf.ModeOpen && pp.problem == nil && c.audit(k)
		todo = append(todo, pending{ifindex: ep.Ifindex, mode: pp.mode, enc: pp.enc, pod: k, audit: audit})
	}

	ids := c.policyIDs()
	left := admit(c.state.Policies, c.in.PolicyBudget, c.in.Capacity)
	ipcacheFull := c.fitIPCache()
	digest := c.cl.digest
	if ipcacheFull != nil {
		digest = ipcacheDigest(c.state.IPCache)
	}
	c.state.IPCacheVersion = digest | 1
	var flags uint8
	if c.in.AllowHost {
		flags |= bpf.EPAllowHost
	}
	for i, p := range todo {
		if max := c.in.Capacity.Endpoints; max > 0 && i >= max {
			// No entry: the programs on its interface drop everything.
			c.problem(p.pod, ProblemNoRoom, fmt.Errorf("ifindex %d: map %s holds %d endpoints, this node has %d: %w",
				p.ifindex, bpf.PodwallMapEndpoints, max, len(todo), ErrNoRoom))
			continue
		}
		id := ids[p.enc]
		switch {
		case p.mode == bpf.ModeEnforce && ipcacheFull != nil:
			c.problem(p.pod, ProblemNoRoom, ipcacheFull)
			p.mode, id, p.audit = bpf.ModeIsolate, 0, false
		case left[id] != nil:
			kind := ProblemNoRoom
			if errors.Is(left[id], ErrOverBudget) {
				kind = ProblemOverBudget
			}
			c.problem(p.pod, kind, left[id])
			p.mode, id, p.audit = bpf.ModeIsolate, 0, false
		}
		epFlags := flags
		if p.audit {
			epFlags |= bpf.EPAudit
		}
		addr4, addr6 := c.cl.ownAddrs(p.pod)
		c.state.Endpoints[p.ifindex] = bpf.PodwallEndpoint{
			Policy:     id,
			Generation: generation(p.mode, epFlags, id),
			Mode:       p.mode,
			Flags:      epFlags,
			Addr4:      addr4,
			Addr6:      addr6,
		}
	}
}

// audit says whether local pod k is in audit mode: its own annotation, else its namespace's,
// else the node's --audit. A value that is neither true nor false is reported and enforces:
// only an explicit "true" passes what a policy drops.
func (c *compilation) audit(k podKey) bool {
	pod, ok := c.cl.pods[k]
	if !ok {
		return false // an endpoint of an unknown pod: isolated in doubt
	}
	for _, ann := range []map[string]string{pod.Annotations, c.in.NamespaceAnnotations[k.namespace]} {
		on, set, err := policy.Audit(ann)
		if err != nil {
			c.problem(k, ProblemInvalidAudit, err)
			return false
		}
		if set {
			return on
		}
	}
	return c.in.Audit
}

// fitIPCache leaves in the state's ipcache what the map has room for, the node's addresses
// first, then by address, and says why it could not hold all: a pod address left out is the
// world's to the programs, which a policy that denies some pods by label would let in. So the
// enforced endpoints are all isolated then.
func (c *compilation) fitIPCache() error {
	max, all := c.in.Capacity.IPCache, c.cl.ipcache
	if max <= 0 || len(all) <= max {
		return nil
	}
	keys := make([]bpf.PodwallIpAddr, 0, len(all))
	for k := range all {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b bpf.PodwallIpAddr) int {
		return cmp.Or(cmp.Compare(b2i(all[a] == bpf.IDHost), b2i(all[b] == bpf.IDHost)), cmp.Compare(a.Family, b.Family),
			slices.Compare(a.Addr[:], b.Addr[:]))
	})
	fit := make(map[bpf.PodwallIpAddr]uint32, max)
	for _, k := range keys[:max] {
		fit[k] = all[k]
	}
	c.state.IPCache = fit
	return fmt.Errorf("map %s holds %d addresses, the cluster has %d: the identity of the others is unknown, so enforced pods are isolated: %w",
		bpf.PodwallMapIpcache, max, len(all), ErrNoRoom)
}

// b2i orders true before false.
func b2i(b bool) int {
	if b {
		return 0
	}
	return 1
}

// podPolicy is what a local pod's annotation compiles to: its mode and, in ModeEnforce, its
// folded policy and that policy's encoding; with the problem its annotation has, if any.
type podPolicy struct {
	mode    uint8
	f       *folded
	enc     string
	problem *Problem
}

// endpoint decides the mode of a local pod and, in ModeEnforce, its folded policy. It
// reports false for a host-network pod, which has no endpoint.
func (c *compilation) endpoint(ep Endpoint) (podPolicy, bool) {
	k := podKey{ep.Namespace, ep.Name}
	pod, ok := c.cl.pods[k]
	switch {
	case !ok:
		c.problem(k, ProblemUnknownPod, fmt.Errorf("ifindex %d: %w", ep.Ifindex, ErrUnknownPod))
		return podPolicy{mode: bpf.ModeIsolate}, true
	case pod.HostNetwork:
		return podPolicy{}, false
	}
	value, key, annotated := policy.PolicyAnnotation(pod.Annotations, c.in.LegacyKey)
	pp := c.memo.policy(k, memoKey{ann: annotation{value, key, annotated}, ident: identityKey(pod.tags)}, pod.IPs,
		func() podPolicy { return c.podPolicy(k, &pod.Pod, pod.tags, value, key, annotated) })
	if pp.problem != nil {
		c.state.Problems = append(c.state.Problems, *pp.problem)
	}
	return pp, true
}

// podPolicy compiles the policy annotation of a local pod, found under key when annotated.
func (c *compilation) podPolicy(k podKey, pod *Pod, tags []string, value, key string, annotated bool) podPolicy {
	isolate := func(kind ProblemKind, err error) podPolicy {
		return podPolicy{mode: bpf.ModeIsolate, problem: &Problem{Namespace: k.namespace, Name: k.name, Kind: kind, Err: err}}
	}
	if c.open[pod.Namespace] {
		pp := podPolicy{mode: bpf.ModeOpen}
		if annotated {
			pp.problem = &Problem{Namespace: k.namespace, Name: k.name, Kind: ProblemIgnored,
				Err: fmt.Errorf("annotation %s: %w", key, ErrIgnored)}
		}
		return pp
	}
	var rules []rule
	if !annotated {
		switch c.in.DefaultPolicy {
		case DefaultAllow:
			return podPolicy{mode: bpf.ModeOpen}
		case DefaultDeny:
			return podPolicy{mode: bpf.ModeIsolate}
		}
		rules = []rule{namespaceRule(pod.Namespace)}
	} else {
		parsed, err := policy.Parse(value)
		switch {
		case err != nil:
			return isolate(ProblemInvalid, err)
		case len(parsed) == 0:
			return podPolicy{mode: bpf.ModeIsolate}
		case len(parsed) > bpf.MaxRules:
			return isolate(ProblemTooManyRules, tooManyRules(len(parsed)))
		}
		rules = podRules(pod.Namespace, parsed)
	}
	f := fold(rules, tags, pod.IPs)
	return podPolicy{mode: bpf.ModeEnforce, f: &f, enc: string(f.encode())}
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
		c.state.Policies[id] = c.memo.materialized(c.cl, id, enc, c.policies[enc])
	}
	return ids
}

// materialize keys a folded policy's entries by its id, and adds its pol_ident entries:
// one for each identity of cl that has a tag the policy names. enc is f's encoding.
func materialize(cl *cluster, id uint32, enc string, f *folded) *Policy {
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
		for ident := range cl.tagIDs[t.tag] {
			byID[ident] = byID[ident].or(t.rules)
		}
	}
	for ident, v := range byID {
		k := bpf.PodwallIdentKey{Policy: id, Identity: ident}
		p.Ident[k] = v.or(wild).ruleVec()
		p.identSum += identHash(k, p.Ident[k])
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
	p.Version = policyVersion(id, enc, p.identSum)
	return p
}

// identHash is one pol_ident entry's share of its policy's identSum.
func identHash(k bpf.PodwallIdentKey, v bpf.PodwallRuleVec) uint64 {
	h := mix64(uint64(k.Identity))
	for _, w := range v.Bits {
		h = mix64(h ^ w)
	}
	return h
}

// policyVersion hashes what a policy's entries are made of: its id, its folded encoding
// (which gives its record and its CIDR, port and ICMP entries) and its pol_ident entries,
// which depend on the cluster's identities too: identSum, the sum of their identHash, which
// follows one entry's change at the cost of that entry. Never 0.
func policyVersion(id uint32, enc string, identSum uint64) uint64 {
	return mix64(fnv64(enc)^uint64(id)<<32^identSum) | 1
}

// mix64 is splitmix64's finalizer: every bit of x moves about half the bits of the result.
func mix64(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	return x ^ x>>31
}

// generation changes whenever what judges the endpoint's traffic changes: its mode, flags
// or policy. A source's identity is not in it: an address whose identity changes has its
// inbound flows removed from conntrack (maps.Applier), so that churn elsewhere in the cluster
// leaves the endpoint's established flows alone.
func generation(mode, flags uint8, policy uint32) uint32 {
	var b []byte
	b = append(b, mode, flags)
	b = binary.LittleEndian.AppendUint32(b, policy)
	g := fold32(fnv64(string(b)))
	if g == 0 {
		g = 1
	}
	return g
}

func fnv64(s string) uint64 {
	h := fnv.New64a()
	_, _ = h.Write([]byte(s)) // a hash takes every write
	return h.Sum64()
}

func fold32(h uint64) uint32 { return uint32(h) ^ uint32(h>>32) }
