package main

import (
	"fmt"

	"github.com/spf13/pflag"

	"github.com/podwall/podwall/compiler"
	"github.com/podwall/podwall/policy"
)

// policyOptions are the flags that change what a policy means, shared by the agent and by
// explain so that explain answers as the agent enforces.
type policyOptions struct {
	defaultPolicy  string
	openNamespaces []string
	allowHost      bool
	legacyKey      bool
	budget         int
	audit          bool
}

func (o *policyOptions) addFlags(f *pflag.FlagSet) {
	f.StringVar(&o.defaultPolicy, "default-policy", "namespace", "policy of pods without a policy annotation: namespace (accept from the pod's namespace), allow or deny")
	f.StringSliceVar(&o.openNamespaces, "open-namespaces", []string{"kube-system"}, "namespaces whose pods accept all traffic (their annotations are ignored)")
	f.BoolVar(&o.allowHost, "allow-host", true, "let traffic from the node's own addresses reach every pod (kubelet probes)")
	f.BoolVar(&o.legacyKey, "legacy-policy-key", true, `read the annotation "policy" when "`+policy.AnnotationKey+`" is absent`)
	f.BoolVar(&o.audit, "audit", false, `audit mode for the node's pods: what a policy would drop passes and is reported as verdict audit (a pod's or its namespace's annotation `+policy.AuditAnnotationKey+` says otherwise)`)
	f.IntVar(&o.budget, "policy-budget", compiler.DefaultPolicyBudget, "the most entries one policy may have in any one classifier map; a pod whose policy needs more is isolated (0: no budget)")
}

func (o policyOptions) compilerOptions() (compiler.Options, error) {
	if o.budget < 0 {
		return compiler.Options{}, fmt.Errorf("--policy-budget %d: must not be negative", o.budget)
	}
	opts := compiler.Options{OpenNamespaces: o.openNamespaces, AllowHost: o.allowHost, LegacyKey: o.legacyKey, PolicyBudget: o.budget, Audit: o.audit}
	switch o.defaultPolicy {
	case "namespace":
		opts.DefaultPolicy = compiler.DefaultNamespace
	case "allow":
		opts.DefaultPolicy = compiler.DefaultAllow
	case "deny":
		opts.DefaultPolicy = compiler.DefaultDeny
	default:
		return opts, fmt.Errorf("unknown --default-policy %q: want namespace, allow or deny", o.defaultPolicy)
	}
	return opts, nil
}
