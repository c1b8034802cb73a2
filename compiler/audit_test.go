package compiler

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/podwall/podwall/bpf"
	"github.com/podwall/podwall/policy"
)

func TestAuditMode(t *testing.T) {
	const allowWeb = "allow tcp to ports 80"
	audit := func(policyValue, auditValue string) map[string]string {
		a := map[string]string{}
		if policyValue != "-" {
			a[policy.AnnotationKey] = policyValue
		}
		if auditValue != "" {
			a[policy.AuditAnnotationKey] = auditValue
		}
		return a
	}
	for _, c := range []struct {
		name      string
		node      bool
		defaults  DefaultPolicy
		pod       map[string]string
		namespace string // the namespace's audit annotation; "": none
		audit     bool
		mode      uint8
		problem   ProblemKind // NumProblemKinds: none
	}{
		{"enforced by default", false, DefaultNamespace, audit(allowWeb, ""), "", false, bpf.ModeEnforce, NumProblemKinds},
		{"the pod's annotation", false, DefaultNamespace, audit(allowWeb, "true"), "", true, bpf.ModeEnforce, NumProblemKinds},
		{"the namespace's annotation", false, DefaultNamespace, audit(allowWeb, ""), "true", true, bpf.ModeEnforce, NumProblemKinds},
		{"the node's flag", true, DefaultNamespace, audit(allowWeb, ""), "", true, bpf.ModeEnforce, NumProblemKinds},
		{"the pod's false beats its namespace's true", false, DefaultNamespace, audit(allowWeb, "false"), "true", false, bpf.ModeEnforce, NumProblemKinds},
		{"the pod's true beats its namespace's false", false, DefaultNamespace, audit(allowWeb, "true"), "false", true, bpf.ModeEnforce, NumProblemKinds},
		{"the namespace's false beats the node's flag", true, DefaultNamespace, audit(allowWeb, ""), "false", false, bpf.ModeEnforce, NumProblemKinds},
		{"an invalid value enforces, whatever the namespace says", false, DefaultNamespace, audit(allowWeb, "yes"), "true", false, bpf.ModeEnforce, ProblemInvalidAudit},
		{"an invalid namespace value enforces, whatever the node says", true, DefaultNamespace, audit(allowWeb, ""), "1", false, bpf.ModeEnforce, ProblemInvalidAudit},
		{"a policy of no rules isolates in audit", false, DefaultNamespace, audit("", "true"), "", true, bpf.ModeIsolate, NumProblemKinds},
		{"the default deny isolates in audit", false, DefaultDeny, audit("-", "true"), "", true, bpf.ModeIsolate, NumProblemKinds},
		{"an invalid policy still isolates", false, DefaultNamespace, audit("allow bogus", "true"), "", false, bpf.ModeIsolate, ProblemInvalid},
		{"an open pod has nothing to audit", false, DefaultAllow, audit("-", "true"), "", false, bpf.ModeOpen, NumProblemKinds},
	} {
		t.Run(c.name, func(t *testing.T) {
			in := Input{
				Pods:      []Pod{{Namespace: "ns", Name: "p", IPs: addrs("10.0.0.1"), Annotations: c.pod}},
				Endpoints: []Endpoint{{Ifindex: 1, Namespace: "ns", Name: "p"}},
				Options:   Options{Audit: c.node, DefaultPolicy: c.defaults},
			}
			if c.namespace != "" {
				in.NamespaceAnnotations = map[string]map[string]string{"ns": {policy.AuditAnnotationKey: c.namespace}}
			}
			s := Compile(in)
			ep := s.Endpoints[1]
			require.Equal(t, c.mode, ep.Mode)
			require.Equal(t, c.audit, ep.Flags&bpf.EPAudit != 0, "audit flag")
			kind := NumProblemKinds
			if len(s.Problems) > 0 {
				kind = s.Problems[0].Kind
			}
			require.Equal(t, c.problem, kind, "problems: %v", s.Problems)

			// What the policy drops passes in audit mode, with the reason and rule that would
			// have dropped it; leaving audit mode changes the generation, so established flows
			// are judged again.
			v := Evaluate(s, 1, Packet{Src: addrs("192.0.2.1")[0], Dst: addrs("10.0.0.1")[0], Proto: protoTCP, SrcPort: 1000, DstPort: 81})
			if c.mode != bpf.ModeOpen {
				require.Equal(t, c.audit, v.Pass)
				require.Equal(t, c.audit, v.Audit)
				require.True(t, bpf.Audited(v.Reason), "reason %v", v.Reason)
			}
			flipped := in
			flipped.Audit = !c.node
			flipped.NamespaceAnnotations = nil
			if s2 := Compile(flipped); s2.Endpoints[1].Flags != ep.Flags {
				require.NotEqual(t, ep.Generation, s2.Endpoints[1].Generation)
			}
		})
	}
}
