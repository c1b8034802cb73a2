package compiler

import (
	"errors"
	"net/netip"

	"github.com/podwall/podwall/bpf"
)

// Pod is what the compiler needs of a pod of the cluster, on any node.
type Pod struct {
	Namespace, Name string
	Labels          map[string]string
	Annotations     map[string]string
	IPs             []netip.Addr
	// HostNetwork pods share the node's addresses: they get no identity and no endpoint.
	HostNetwork bool
}

// Endpoint is a pod of this node: the host-side interface its traffic goes through.
type Endpoint struct {
	Ifindex         uint32
	Namespace, Name string
}

// DefaultPolicy is what a pod without a policy annotation gets (--default-policy).
type DefaultPolicy int

const (
	// DefaultNamespace accepts traffic from the pods of the pod's own namespace.
	DefaultNamespace DefaultPolicy = iota
	DefaultAllow
	DefaultDeny
)

// Options are the agent's flags that shape the compiled state.
type Options struct {
	DefaultPolicy DefaultPolicy
	// OpenNamespaces accept all traffic; their pods' annotations are ignored.
	OpenNamespaces []string
	// AllowHost lets traffic from the node's own addresses reach every pod (SPEC 3.2).
	AllowHost bool
	// LegacyKey reads the annotation `policy` when `projectcalico.org/policy` is absent.
	LegacyKey bool
	// PolicyBudget is the most entries one policy may have in any one classifier map (0: no
	// budget): a policy over it isolates its pods rather than take the room of others'.
	PolicyBudget int
	// Capacity is the room of the maps on this node: what does not fit is isolated, never
	// written in part. The zero Capacity has room for everything.
	Capacity Capacity
	// Audit puts the node's pods in audit mode (--audit) unless their own or their
	// namespace's audit annotation says otherwise.
	Audit bool
}

// DefaultPolicyBudget is the default of Options.PolicyBudget: an eighth of the smallest map
// that holds ports or CIDRs, at their default sizes.
const DefaultPolicyBudget = 8192

// Capacity is how many entries each map the compiler fills holds; 0 is no limit.
type Capacity struct {
	Endpoints, IPCache, Ident, CIDR, Port, ICMP int
}

// Input is everything the compiled state depends on. Pods are unique by namespace and name,
// endpoints by ifindex; their order does not matter.
type Input struct {
	Pods      []Pod
	Endpoints []Endpoint
	// HostIPs are the node's own addresses: identity IDHost.
	HostIPs []netip.Addr
	// NamespaceAnnotations are the annotations podwall reads of each namespace that has any
	// (the audit annotation), by name.
	NamespaceAnnotations map[string]map[string]string
	Options
}

// State is the desired content of every map the data path reads, and what explains it.
type State struct {
	Endpoints map[uint32]bpf.PodwallEndpoint // ifindex ->
	Policies  map[uint32]*Policy             // policy id ->
	IPCache   map[bpf.PodwallIpAddr]uint32   // address -> identity
	// IPCacheVersion is a hash of IPCache: two States with equal versions hold equal
	// ipcaches. 0: unknown (a State not made by the compiler).
	IPCacheVersion uint64
	// Identities maps each pod identity of the ipcache to its tags, namespace tag first.
	Identities map[uint32][]string
	// Problems are the pods whose annotation or addresses could not be used as they are,
	// sorted by namespace, name and kind.
	Problems []Problem
	// Changes are what differs from the State the same Compiler returned before; nil for
	// the first State of a Compiler.
	Changes *Changes
}

// Changes are what differs between two States of a Compiler, for an applier to write only
// that. The States of one Compiler share their IPCache and Identities maps and the Policies
// they both hold, which the Compiler changes in place: a State is read-only, and its maps
// hold what it says only until the Compiler's next turn, which also drops its Changes (so
// that a State does not hold every State before it).
type Changes struct {
	// Since is the State these changes lead from.
	Since *State
	// IPCache are the addresses whose entry came, left or changed; nil when unknown (the
	// ipcache of one of the States was cut to the map's room): then compare whole ipcaches.
	IPCache map[bpf.PodwallIpAddr]struct{}
	// Ident are the pol_ident entries that came, left or changed of the Policies that both
	// States hold (the same *Policy): the entries of other policies are all new or all gone.
	Ident map[bpf.PodwallIdentKey]struct{}
}

// Policy is one compiled policy: its record and its entries in the classifier maps, all
// keyed by its id. Pods whose folded policies are equal share it.
type Policy struct {
	Record bpf.PodwallPolicy
	Ident  map[bpf.PodwallIdentKey]bpf.PodwallRuleVec
	CIDR   map[bpf.PodwallCidrKey]bpf.PodwallRuleVec
	Port   map[bpf.PodwallPortKey]bpf.PodwallRuleVec
	ICMP   map[bpf.PodwallIcmpKey]bpf.PodwallRuleVec
	// Rules[i] is where bit i came from.
	Rules []RuleSource
	// Version is a hash of the policy's content: two Policies of one id with equal Versions
	// hold the same entries. 0: unknown (a Policy not made by the compiler).
	Version uint64
	// identSum is the sum of the identHash of the Ident entries.
	identSum uint64
}

// RuleSource is the origin of one rule bit.
type RuleSource struct {
	// Index is the 1-based number of the rule in the annotation; 0 for the rule the
	// namespace default policy synthesizes.
	Index int
	Text  string
}

// ProblemKind says what went wrong with a pod.
type ProblemKind int

const (
	// ProblemInvalid: the annotation does not parse; the pod is isolated.
	ProblemInvalid ProblemKind = iota
	// ProblemTooManyRules: the annotation has more than MaxRules rules; the pod is isolated.
	ProblemTooManyRules
	// ProblemIgnored: the pod is in an open namespace and its annotation is ignored.
	ProblemIgnored
	// ProblemUnknownPod: an endpoint names a pod that is not in the input; it is isolated.
	ProblemUnknownPod
	// ProblemDuplicate: two pods with one name, or two endpoints with one ifindex; the pods
	// are left out and the endpoint is isolated.
	ProblemDuplicate
	// ProblemAddressConflict: an address of the pod is the node's or another pod's; the
	// node, then the first pod by namespace and name, keeps it.
	ProblemAddressConflict
	// ProblemOverBudget: the pod's policy has more entries in a map than Options.PolicyBudget;
	// the pod is isolated.
	ProblemOverBudget
	// ProblemNoRoom: a map of the node has no room for the pod's policy, its endpoint or the
	// cluster's addresses (Options.Capacity); the pod is isolated.
	ProblemNoRoom
	// ProblemInvalidAudit: the audit annotation of the pod or its namespace is neither true
	// nor false; the pod is enforced.
	ProblemInvalidAudit
	// NumProblemKinds is the number of kinds.
	NumProblemKinds
)

var problemNames = []string{
	ProblemInvalid:         "invalid-policy",
	ProblemTooManyRules:    "too-many-rules",
	ProblemIgnored:         "ignored-policy",
	ProblemUnknownPod:      "unknown-pod",
	ProblemDuplicate:       "duplicate",
	ProblemAddressConflict: "address-conflict",
	ProblemOverBudget:      "over-budget",
	ProblemNoRoom:          "no-room",
	ProblemInvalidAudit:    "invalid-audit",
}

func (k ProblemKind) String() string { return problemNames[k] }

// Problem is a pod that did not compile as written. Err is the *SyntaxError of Parse for
// ProblemInvalid, and wraps one of the sentinel errors below otherwise.
type Problem struct {
	Namespace, Name string
	Kind            ProblemKind
	Err             error
}

// Sentinel errors of Problem.Err.
var (
	ErrTooManyRules    = errors.New("too many rules")
	ErrIgnored         = errors.New("policy ignored in an open namespace")
	ErrUnknownPod      = errors.New("endpoint of an unknown pod")
	ErrDuplicate       = errors.New("duplicate")
	ErrAddressConflict = errors.New("address conflict")
	ErrOverBudget      = errors.New("policy over budget")
	ErrNoRoom          = errors.New("no room on the node")
)
