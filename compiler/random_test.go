package compiler_test

import (
	"math/rand/v2"
	"net/netip"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/podwall/podwall/bpf"
	"github.com/podwall/podwall/compiler"
	"github.com/podwall/podwall/compiler/compilertest"
)

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

// TestCompilerEqualsCompile runs random sequences of changes to random clusters through one
// Compiler: after every change its State must equal Compile's, and the State it returned
// before must still equal Compile's of the input before, which it may share maps with.
func TestCompilerEqualsCompile(t *testing.T) {
	rng := rand.New(rand.NewPCG(11, 12))
	for seq := range 60 {
		c := compilertest.Random(rng, nil)
		var inc compiler.Compiler
		var prevRef, prevInc *compiler.State
		for step := range 40 {
			what := "start"
			if step > 0 {
				what = c.Change(rng)
			}
			ref := compiler.Compile(c.Input)
			got := inc.Compile(c.Input)
			require.Equal(t, ref, got, "sequence %d, step %d: %s", seq, step, what)
			if prevRef != nil {
				require.Equal(t, prevRef, prevInc, "sequence %d, step %d: %s changed the State before", seq, step, what)
			}
			prevRef, prevInc = ref, got
		}
	}
}
