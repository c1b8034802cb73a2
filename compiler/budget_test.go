package compiler

import (
	"fmt"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/podwall/podwall/bpf"
)

// ports is an annotation allowing n single TCP ports that share no prefix: n pol_port entries.
func ports(n int) string {
	var b strings.Builder
	b.WriteString("allow tcp to ports ")
	for i := range n {
		if i > 0 {
			b.WriteString(",")
		}
		fmt.Fprint(&b, 2*i+1)
	}
	return b.String()
}

func TestPoliciesAreBudgeted(t *testing.T) {
	// Pods a..e on ifindex 1..5, with the policies given by name.
	compile := func(opts Options, policies map[string]string) *State {
		var in Input
		for i, name := range []string{"a", "b", "c", "d", "e"} {
			ann, ok := policies[name]
			if !ok {
				continue
			}
			in.Pods = append(in.Pods, Pod{Namespace: "ns", Name: name, IPs: addrs(fmt.Sprintf("10.0.0.%d", i+1)), Annotations: annotated(ann)})
			in.Endpoints = append(in.Endpoints, Endpoint{Ifindex: uint32(i + 1), Namespace: "ns", Name: name})
		}
		in.Options = opts
		return Compile(in)
	}
	const noEntry = 0xff
	type want struct {
		mode uint8       // noEntry: none
		kind ProblemKind // NumProblemKinds: none
	}
	for _, c := range []struct {
		name     string
		opts     Options
		policies map[string]string
		want     map[string]want
	}{
		{"within the budget", Options{PolicyBudget: 4}, map[string]string{"a": ports(4)},
			map[string]want{"a": {bpf.ModeEnforce, NumProblemKinds}}},
		{"over the budget", Options{PolicyBudget: 4}, map[string]string{"a": ports(5), "b": ports(1)},
			map[string]want{"a": {bpf.ModeIsolate, ProblemOverBudget}, "b": {bpf.ModeEnforce, NumProblemKinds}}},
		{"the smallest first, while there is room", Options{Capacity: Capacity{Port: 6}},
			map[string]string{"a": ports(5), "b": ports(2), "c": ports(3), "d": ports(1)},
			map[string]want{"a": {bpf.ModeIsolate, ProblemNoRoom}, "b": {bpf.ModeEnforce, NumProblemKinds},
				"c": {bpf.ModeEnforce, NumProblemKinds}, "d": {bpf.ModeEnforce, NumProblemKinds}}},
		{"pods that share a policy share its room", Options{Capacity: Capacity{Port: 3}},
			map[string]string{"a": ports(3), "b": ports(3)},
			map[string]want{"a": {bpf.ModeEnforce, NumProblemKinds}, "b": {bpf.ModeEnforce, NumProblemKinds}}},
		{"endpoints beyond the map's room get no entry", Options{Capacity: Capacity{Endpoints: 2}},
			map[string]string{"a": "allow", "b": "allow", "c": "allow"},
			map[string]want{"a": {bpf.ModeEnforce, NumProblemKinds}, "b": {bpf.ModeEnforce, NumProblemKinds}, "c": {noEntry, ProblemNoRoom}}},
		{"an ipcache without room for every address isolates enforced pods", Options{Capacity: Capacity{IPCache: 2}, OpenNamespaces: nil},
			map[string]string{"a": "allow", "b": "deny from label x=y; allow", "c": "allow"},
			map[string]want{"a": {bpf.ModeIsolate, ProblemNoRoom}, "b": {bpf.ModeIsolate, ProblemNoRoom}, "c": {bpf.ModeIsolate, ProblemNoRoom}}},
	} {
		t.Run(c.name, func(t *testing.T) {
			s := compile(c.opts, c.policies)
			problems := map[string]Problem{}
			for _, p := range s.Problems {
				problems[p.Name] = p
			}
			for i, name := range []string{"a", "b", "c", "d", "e"} {
				w, ok := c.want[name]
				if !ok {
					continue
				}
				ep, entered := s.Endpoints[uint32(i+1)]
				if w.mode == noEntry {
					require.False(t, entered, "%s: no entry", name)
				} else {
					require.Equal(t, w.mode, ep.Mode, name)
				}
				if w.mode == bpf.ModeEnforce {
					require.Contains(t, s.Policies, ep.Policy, name)
				}
				p, ok := problems[name]
				if w.kind == NumProblemKinds {
					require.False(t, ok, "%s: %v", name, p.Err)
					continue
				}
				require.True(t, ok, name)
				require.Equal(t, w.kind, p.Kind, "%s: %v", name, p.Err)
			}
		})
	}
}

func TestBudgetMessages(t *testing.T) {
	s := onePod("ns", annotated(ports(5)), Options{PolicyBudget: 4})
	require.Len(t, s.Problems, 1)
	require.EqualError(t, s.Problems[0].Err, "5 entries in map pol_port, over the budget of 4 a policy may have in one map (--policy-budget): policy over budget")

	s = onePod("ns", annotated(ports(5)), Options{Capacity: Capacity{Port: 3}})
	require.Len(t, s.Problems, 1)
	require.EqualError(t, s.Problems[0].Err, "map pol_port has room for 3 more entries, the policy needs 5: no room on the node")
}
