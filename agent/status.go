package agent

import (
	"cmp"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/podwall/podwall/bpf"
	"github.com/podwall/podwall/compiler"
	"github.com/podwall/podwall/k8s"
)

// PodStatus is one local pod as `podwall status` shows it: where and how it is enforced, and
// what its rules decided (read from the kernel when asked).
type PodStatus struct {
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	Interface string `json:"interface,omitempty"`
	Ifindex   uint32 `json:"ifindex,omitempty"`
	Attach    string `json:"attach,omitempty"` // tcx or clsact
	// Mode is enforce, audit, open, isolated, or none: no entry in the kernel yet.
	Mode string `json:"mode"`
	// Why says why the pod is isolated or has no entry: the condition's message.
	Why        string `json:"why,omitempty"`
	Policy     string `json:"policy,omitempty"`
	Generation uint32 `json:"generation,omitempty"`
	// EnforcedSince is when the podwall.io/policy-enforced condition last became true.
	EnforcedSince *time.Time   `json:"enforced_since,omitempty"`
	Rules         []RuleStatus `json:"rules,omitempty"`
	// Allowed counts the packets allow rules passed, Dropped those deny rules or the lack of
	// an allow rule dropped (isolation included), Audited those audit mode passed instead.
	Allowed uint64 `json:"allowed"`
	Dropped uint64 `json:"dropped"`
	Audited uint64 `json:"audited"`
	// Uncounted: rule_counters had no room for the pod; its rules are enforced, not counted.
	Uncounted bool `json:"uncounted,omitempty"`
}

// RuleStatus is what one rule of a pod decided. Rule is its number in the annotation,
// "default" for the namespace default, "-" for the packets no rule decided.
type RuleStatus struct {
	Rule    string `json:"rule"`
	Text    string `json:"text"`
	Deny    bool   `json:"deny,omitempty"`
	Packets uint64 `json:"packets"`
	Flows   uint64 `json:"flows"`
	// Audited are the packets audit mode passed, of Packets.
	Audited uint64 `json:"audited"`
}

// keepStatus notes each local pod's status after an apply, from the state it applied and the
// conditions publishEnforcement computed.
func (a *Agent) keepStatus(locals []k8s.Pod, ifindexOf map[podKey]uint32, state *compiler.State) {
	out := make([]PodStatus, 0, len(locals))
	for _, p := range locals {
		if len(p.IPs) == 0 || p.HostNetwork {
			continue
		}
		k := keyOf(p)
		s := PodStatus{Namespace: k.namespace, Name: k.name, Mode: "none"}
		c, ok := a.enforcement[podUID{k, p.UID}]
		if ok && c.enforced {
			since := c.since
			s.EnforcedSince = &since
		} else if ok {
			s.Why = c.message
		}
		ifindex, found := ifindexOf[k]
		ep, entered := state.Endpoints[ifindex]
		if found {
			s.Ifindex = ifindex
			s.Interface = "if" + strconv.Itoa(int(ifindex))
			if f, ok := a.found[k]; ok && f.ifindex == int(ifindex) {
				s.Interface = f.name
			}
			s.Attach = string(a.cfg.Datapath.Mode())
		}
		if found && entered {
			s.Generation = ep.Generation
			s.Mode = modeName(ep)
			if ep.Mode == bpf.ModeEnforce {
				s.Policy = fmt.Sprintf("%#08x", ep.Policy)
				if pol, ok := state.Policies[ep.Policy]; ok {
					for i, r := range pol.Rules {
						s.Rules = append(s.Rules, RuleStatus{Rule: ruleNumber(r), Text: r.Text,
							Deny: pol.Record.Deny[i/64]&(1<<(i%64)) != 0})
					}
				}
			}
			if ep.Mode != bpf.ModeOpen {
				s.Rules = append(s.Rules, RuleStatus{Rule: "-", Text: "(no rule matched)", Deny: true})
			}
		}
		out = append(out, s)
	}
	slices.SortFunc(out, func(x, y PodStatus) int {
		return cmp.Or(strings.Compare(x.Namespace, y.Namespace), strings.Compare(x.Name, y.Name))
	})
	a.status.Store(&out)
}

func modeName(ep bpf.PodwallEndpoint) string {
	switch {
	case ep.Mode == bpf.ModeOpen:
		return "open"
	case ep.Flags&bpf.EPAudit != 0:
		return "audit"
	case ep.Mode == bpf.ModeIsolate:
		return "isolated"
	}
	return "enforce"
}

// ruleNumber is a rule's number in its annotation, "default" for the namespace default's.
func ruleNumber(r compiler.RuleSource) string {
	if r.Index == 0 {
		return "default"
	}
	return strconv.Itoa(r.Index)
}

// Status is every local pod as the last apply left it, with what its rules decided, read
// from the kernel now. Empty before the first apply.
func (a *Agent) Status() ([]PodStatus, error) {
	kept := a.status.Load()
	if kept == nil {
		return []PodStatus{}, nil
	}
	out := make([]PodStatus, len(*kept))
	for i, p := range *kept {
		p.Rules = slices.Clone(p.Rules)
		if len(p.Rules) > 0 {
			counts, err := a.cfg.Datapath.RuleCounts(p.Ifindex)
			if err != nil {
				return nil, fmt.Errorf("read the counters of %s/%s: %w", p.Namespace, p.Name, err)
			}
			// The kernel's block has the policy's rules then the undecided slot, as Rules.
			if len(counts) == len(p.Rules) {
				for j, c := range counts {
					r := &p.Rules[j]
					r.Packets, r.Flows, r.Audited = c.Packets, c.Flows, c.Audited
					p.Audited += c.Audited
					if r.Deny {
						p.Dropped += c.Packets - c.Audited
					} else {
						p.Allowed += c.Packets
					}
				}
			} else {
				p.Uncounted = true
			}
		}
		out[i] = p
	}
	return out, nil
}
