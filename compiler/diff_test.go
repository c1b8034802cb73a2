package compiler_test

import (
	"cmp"
	"flag"
	"maps"
	"math/rand/v2"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/podwall/podwall/bpf"
	"github.com/podwall/podwall/compiler"
	"github.com/podwall/podwall/compiler/compilertest"
	"github.com/podwall/podwall/policy"
)

var (
	diffSeed      = flag.Uint64("diff.seed", 0, "seed of TestDifferential; 0 reads PODWALL_DIFF_SEED, else picks one from the clock")
	diffScenarios = flag.Int("diff.scenarios", 400, "clusters TestDifferential generates")
	diffPackets   = flag.Int("diff.packets", 300, "packets TestDifferential judges per cluster")
)

// TestDifferential holds Evaluate, which reads the compiled maps as the data path does,
// against a direct reading of SPEC.md on the rules as generated: random clusters, random
// rules and random packets must get the same verdict, reason and deciding rule from both.
// Replay a failure with -diff.seed or PODWALL_DIFF_SEED.
func TestDifferential(t *testing.T) {
	seed := *diffSeed
	if env := os.Getenv("PODWALL_DIFF_SEED"); seed == 0 && env != "" {
		var err error
		seed, err = strconv.ParseUint(env, 10, 64)
		require.NoError(t, err, "PODWALL_DIFF_SEED")
	}
	if seed == 0 {
		seed = uint64(time.Now().UnixNano())
	}
	t.Logf("seed %d (replay with -diff.seed=%d or PODWALL_DIFF_SEED=%d)", seed, seed, seed)
	rng := rand.New(rand.NewPCG(seed, 0))
	judged := 0
	for n := range *diffScenarios {
		c := compilertest.Random(rng, nil)
		s := compiler.Compile(c.Input)
		for range *diffPackets {
			ifindex, p := c.RandomPacket(rng)
			want := judge(c, ifindex, p)
			got := compiler.Evaluate(s, ifindex, p)
			gotVerdict := spelled{got.Pass, got.Reason, got.Rule}
			if want != gotVerdict {
				require.Equal(t, want, gotVerdict, "seed %d, cluster %d, ifindex %d, packet %+v\n%s", seed, n, ifindex, p, c.Describe(ifindex))
			}
			judged++
		}
	}
	t.Logf("%d packets judged alike", judged)
}

// spelled is a verdict as SPEC spells it: pass or not, why, and which rule (its position
// in the annotation, from 0; -1 for none).
type spelled struct {
	pass   bool
	reason bpf.Reason
	rule   int
}

// sourcePod is the pod an address belongs to, as SPEC reads it: the node's addresses are
// no pod's, host-network pods are not pods with an identity, and an address claimed by two
// pods belongs to the first by namespace and name.
func sourcePod(c *compilertest.Cluster, a netip.Addr) *compiler.Pod {
	if slices.Contains(c.Input.HostIPs, a) {
		return nil
	}
	var owner *compiler.Pod
	for i := range c.Input.Pods {
		p := &c.Input.Pods[i]
		if p.HostNetwork || !slices.Contains(p.IPs, a) {
			continue
		}
		if owner == nil || cmp.Or(cmp.Compare(p.Namespace, owner.Namespace), cmp.Compare(p.Name, owner.Name)) < 0 {
			owner = p
		}
	}
	return owner
}

// audited reads the pod's audit annotation, else its namespace's, else the node's flag; a
// value neither true nor false enforces.
func audited(c *compilertest.Cluster, pod *compiler.Pod) bool {
	for _, ann := range []map[string]string{pod.Annotations, c.Input.NamespaceAnnotations[pod.Namespace]} {
		if v, ok := ann[policy.AuditAnnotationKey]; ok {
			return v == "true"
		}
	}
	return c.Input.Audit
}

// judge is SPEC.md applied to the generated rules, written without the compiler's data
// structures. In audit mode, what the policy drops passes.
func judge(c *compilertest.Cluster, ifindex uint32, p compiler.Packet) (v spelled) {
	none := func(pass bool, r bpf.Reason) spelled { return spelled{pass, r, -1} }
	audit := false
	defer func() {
		if audit && !v.pass && (v.reason == bpf.ReasonDenyRule || v.reason == bpf.ReasonNoRule || v.reason == bpf.ReasonIsolated) {
			v.pass = true
		}
	}()
	pod, isEndpoint := c.EndpointPod(ifindex)
	if !isEndpoint || (pod != nil && pod.HostNetwork) {
		return none(false, bpf.ReasonNoEntry)
	}

	// The pod's mode (SPEC 4).
	open, isolated := false, false
	var rules []policy.Rule
	namespaceDefault := false
	switch {
	case pod == nil:
		isolated = true
	case slices.Contains(c.Input.OpenNamespaces, pod.Namespace):
		open = true
	default:
		k := compilertest.Key(pod)
		_, hasKey := pod.Annotations[policy.AnnotationKey]
		_, hasLegacy := pod.Annotations[policy.LegacyAnnotationKey]
		kind := c.Kinds[k]
		if !hasKey && (!hasLegacy || !c.Input.LegacyKey) {
			kind = compilertest.KindNone
		}
		// Only a policy is audited: not an annotation that is invalid or too long.
		audit = kind == compilertest.KindNone || kind == compilertest.KindRules
		switch kind {
		case compilertest.KindNone:
			switch c.Input.DefaultPolicy {
			case compiler.DefaultAllow:
				open, audit = true, false
			case compiler.DefaultDeny:
				isolated = true
			default:
				namespaceDefault = true
			}
		case compilertest.KindRules:
			rules = c.Rules[k]
			isolated = len(rules) == 0
		default:
			isolated = true
		}
		audit = audit && audited(c, pod)
	}

	if p.Src.Is4() != p.Dst.Is4() {
		if open {
			return none(true, bpf.ReasonOpen)
		}
		return none(false, bpf.ReasonMalformed)
	}
	if open {
		return none(true, bpf.ReasonOpen)
	}
	l4 := p.Fragment != compiler.FragLater
	if p.Src.Is6() && p.Proto == compilertest.ProtoICMPv6 && l4 && p.ICMPType >= 133 && p.ICMPType <= 137 {
		return none(true, bpf.ReasonND)
	}
	if p.FromNode && c.Input.AllowHost {
		return none(true, bpf.ReasonHost)
	}
	if isolated {
		return none(false, bpf.ReasonIsolated)
	}
	src := sourcePod(c, p.Src)
	if namespaceDefault {
		if src != nil && src.Namespace == pod.Namespace {
			return spelled{true, bpf.ReasonAllowRule, 0}
		}
		return none(false, bpf.ReasonNoRule)
	}
	allow := -1
	for i, r := range rules {
		if !matches(r, pod, src, p) {
			continue
		}
		if r.Action == policy.Deny {
			return spelled{false, bpf.ReasonDenyRule, i}
		}
		if allow < 0 {
			allow = i
		}
	}
	if allow >= 0 {
		return spelled{true, bpf.ReasonAllowRule, allow}
	}
	return none(false, bpf.ReasonNoRule)
}

// matches is SPEC 3's "a rule matches a packet when every constraint it states holds".
func matches(r policy.Rule, pod, src *compiler.Pod, p compiler.Packet) bool {
	v4 := p.Src.Is4()
	l4 := p.Fragment != compiler.FragLater
	switch r.Protocol {
	case policy.ProtoTCP:
		if p.Proto != compilertest.ProtoTCP {
			return false
		}
	case policy.ProtoUDP:
		if p.Proto != compilertest.ProtoUDP {
			return false
		}
	case policy.ProtoICMP:
		if p.Proto != compilertest.ProtoICMP || !v4 {
			return false
		}
	case policy.ProtoICMPv6:
		if p.Proto != compilertest.ProtoICMPv6 || v4 {
			return false
		}
	}
	inPorts := func(list []policy.PortRange, port uint16) bool {
		if list == nil {
			return true
		}
		// A later fragment carries no ports: it matches only rules that state none.
		return l4 && slices.ContainsFunc(list, func(pr policy.PortRange) bool { return port >= pr.First && port <= pr.Last })
	}
	hasLabel := func(p *compiler.Pod, l *policy.Label) bool {
		if l == nil {
			return true
		}
		if p == nil || p.Namespace != pod.Namespace {
			return false
		}
		v, ok := p.Labels[l.Key]
		return ok && v == l.Value
	}
	switch {
	case !inPorts(r.From.Ports, p.SrcPort), !inPorts(r.To.Ports, p.DstPort),
		!hasLabel(src, r.From.Label), !hasLabel(pod, r.To.Label),
		r.From.CIDR != nil && !r.From.CIDR.Contains(p.Src),
		r.HasType && (!l4 || p.ICMPType != r.Type),
		r.HasCode && (!l4 || p.ICMPCode != r.Code):
		return false
	}
	if r.To.CIDR != nil {
		a, ok := compilertest.PodAddr(pod, v4)
		return ok && r.To.CIDR.Contains(a)
	}
	return true
}

// The state depends on the content of the input only.
func TestDeterminism(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	for range 20 {
		c := compilertest.Random(rng, nil)
		want := compiler.Compile(c.Input)
		for range 3 {
			in := c.Input
			in.Pods = append([]compiler.Pod(nil), in.Pods...)
			in.Endpoints = append([]compiler.Endpoint(nil), in.Endpoints...)
			in.HostIPs = append([]netip.Addr(nil), in.HostIPs...)
			rng.Shuffle(len(in.Pods), func(i, j int) { in.Pods[i], in.Pods[j] = in.Pods[j], in.Pods[i] })
			rng.Shuffle(len(in.Endpoints), func(i, j int) { in.Endpoints[i], in.Endpoints[j] = in.Endpoints[j], in.Endpoints[i] })
			rng.Shuffle(len(in.HostIPs), func(i, j int) { in.HostIPs[i], in.HostIPs[j] = in.HostIPs[j], in.HostIPs[i] })
			require.Equal(t, want, compiler.Compile(in))
		}
	}
}

// Every key of a policy carries its id, every stored vector differs from the miss vector
// (a stored wildcard would be a wasted entry), and a field no rule constrains is not
// flagged, so its lookup can be skipped.
func TestStateInvariants(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 10))
	for range 50 {
		s := compiler.Compile(compilertest.Random(rng, nil).Input)
		for id, p := range s.Policies {
			r := p.Record
			var live compiler.Vec
			for fi := range r.Proto {
				for c := range r.Proto[fi] {
					live = live.Or(r.Proto[fi][c])
				}
			}
			ports := [2]int{}
			for k := range p.Port {
				ports[k.Dir]++
			}
			for _, w := range []struct {
				wild compiler.Vec
				flag uint32
				n    int
			}{
				{r.WildIdent, bpf.PFIdent, len(p.Ident)}, {r.WildCidr, bpf.PFCIDR, len(p.CIDR)},
				{r.WildSport, bpf.PFSport, ports[bpf.DirSrc]}, {r.WildDport, bpf.PFDport, ports[bpf.DirDst]},
				{r.WildIcmp, bpf.PFICMP, len(p.ICMP)},
			} {
				require.Equal(t, w.wild, w.wild.And(live))
				if r.Flags&w.flag == 0 {
					require.Equal(t, live, w.wild)
					require.Zero(t, w.n)
				}
			}
			for k, v := range p.Ident {
				require.Equal(t, id, k.Policy)
				require.NotEqual(t, compiler.Vec(r.WildIdent), compiler.Vec(v.Bits))
				require.Contains(t, s.Identities, k.Identity)
			}
			for k, v := range p.CIDR {
				require.Equal(t, id, k.Policy)
				require.NotEqual(t, compiler.Vec(r.WildCidr), compiler.Vec(v.Bits))
			}
			for k, v := range p.Port {
				require.Equal(t, id, k.Policy)
				wild := [2]compiler.Vec{bpf.DirSrc: r.WildSport, bpf.DirDst: r.WildDport}[k.Dir]
				require.NotEqual(t, wild, compiler.Vec(v.Bits))
			}
			for k, v := range p.ICMP {
				require.Equal(t, id, k.Policy)
				require.NotEqual(t, compiler.Vec(r.WildIcmp), compiler.Vec(v.Bits))
			}
			require.Len(t, p.Rules, int(r.Nrules))
		}
		for k, id := range s.IPCache {
			require.Contains(t, []uint8{bpf.FamV4, bpf.FamV6}, k.Family)
			if id != bpf.IDHost {
				require.Contains(t, s.Identities, id)
			}
		}
		for _, ep := range s.Endpoints {
			require.NotZero(t, ep.Generation)
		}
	}
}

// TestProtoMasksLeaveOtherProtocolsFieldsFree checks what classify in bpf/podwall.c relies on
// to skip lookups: the rules a packet of a class can match leave free the fields of the other
// protocols. Ports belong to tcp and udp rules and ICMP types to icmp and icmpv6 rules, so
// proto[fam][class] of ICMP and other packets is within the port wildcards, and of TCP, UDP
// and other packets within the ICMP wildcard.
func TestProtoMasksLeaveOtherProtocolsFieldsFree(t *testing.T) {
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 0))
	for range 200 {
		s := compiler.Compile(compilertest.Random(rng, nil).Input)
		for id, p := range s.Policies {
			rec := p.Record
			for fi := range rec.Proto {
				for class, proto := range rec.Proto[fi] {
					v := compiler.Vec(proto)
					if class == bpf.ClassICMP || class == bpf.ClassOther {
						require.Equal(t, v, v.And(compiler.Vec(rec.WildSport)), "policy %#x family %d class %d: a rule with source ports", id, fi, class)
						require.Equal(t, v, v.And(compiler.Vec(rec.WildDport)), "policy %#x family %d class %d: a rule with destination ports", id, fi, class)
					}
					if class != bpf.ClassICMP {
						require.Equal(t, v, v.And(compiler.Vec(rec.WildIcmp)), "policy %#x family %d class %d: a rule with an ICMP type", id, fi, class)
					}
				}
			}
		}
	}
}

// TestCompilerEqualsCompile runs random sequences of changes to random clusters through
// Compilers, one given each whole input (Compile, as after a resync) and one given the pods
// that changed (SetPod, DeletePod, CompileNode, as the agent does): after every change
// their States must equal Compile's, and their Changes must name every address and every
// pol_ident entry of a kept policy that differs from the State before.
func TestCompilerEqualsCompile(t *testing.T) {
	rng := rand.New(rand.NewPCG(11, 12))
	for seq := range 60 {
		c := compilertest.Random(rng, nil)
		var whole compiler.Compiler
		var delta compilertest.Feeder
		var prevDelta snapshot
		for step := range 40 {
			what := "start"
			if step > 0 {
				what = c.Change(rng)
			}
			ref := compiler.Compile(c.Input)
			got := whole.Compile(c.Input)
			gotDelta := delta.Turn(c.Input)
			for name, s := range map[string]*compiler.State{"Compile": got, "SetPod": gotDelta} {
				if step > 0 {
					require.NotNil(t, s.Changes, "%s: sequence %d, step %d: %s", name, seq, step, what)
				}
				if s.Changes != nil && name == "SetPod" {
					requireChangesCover(t, prevDelta, s, "%s: sequence %d, step %d: %s", name, seq, step, what)
				}
				withoutChanges := *s
				withoutChanges.Changes = nil
				require.Equal(t, ref, &withoutChanges, "%s: sequence %d, step %d: %s", name, seq, step, what)
			}
			prevDelta = snap(gotDelta)
		}
	}
}

// snapshot is a copy of what a State's shared maps held at its turn.
type snapshot struct {
	state    *compiler.State
	ipcache  map[bpf.PodwallIpAddr]uint32
	policies map[uint32]*compiler.Policy
	ident    map[uint32]map[bpf.PodwallIdentKey]bpf.PodwallRuleVec
}

func snap(s *compiler.State) snapshot {
	out := snapshot{state: s, ipcache: maps.Clone(s.IPCache), policies: maps.Clone(s.Policies),
		ident: map[uint32]map[bpf.PodwallIdentKey]bpf.PodwallRuleVec{}}
	for id, p := range s.Policies {
		out.ident[id] = maps.Clone(p.Ident)
	}
	return out
}

// requireChangesCover checks that s.Changes leads from prev and names every address whose
// entry differs, and every pol_ident entry that differs in a policy both States hold.
func requireChangesCover(t *testing.T, prev snapshot, s *compiler.State, msgAndArgs ...any) {
	require.Same(t, prev.state, s.Changes.Since, msgAndArgs...)
	if s.Changes.IPCache != nil {
		for k := range mergedKeys(prev.ipcache, s.IPCache) {
			if v, ok := s.IPCache[k]; ok != hasKey(prev.ipcache, k) || v != prev.ipcache[k] {
				require.Contains(t, s.Changes.IPCache, k, msgAndArgs...)
			}
		}
	}
	for id, p := range s.Policies {
		if prev.policies[id] != p {
			continue
		}
		for k := range mergedKeys(prev.ident[id], p.Ident) {
			if v, ok := p.Ident[k]; ok != hasKey(prev.ident[id], k) || v != prev.ident[id][k] {
				require.Contains(t, s.Changes.Ident, k, msgAndArgs...)
			}
		}
	}
}

func hasKey[K comparable, V any](m map[K]V, k K) bool { _, ok := m[k]; return ok }

func mergedKeys[K comparable, V any](a, b map[K]V) map[K]struct{} {
	out := make(map[K]struct{}, len(a)+len(b))
	for k := range a {
		out[k] = struct{}{}
	}
	for k := range b {
		out[k] = struct{}{}
	}
	return out
}
