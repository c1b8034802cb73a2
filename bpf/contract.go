package bpf

import (
	"net/netip"
	"strconv"
)

// Go names for the enums of podwall.h. bpf2go generates them with their C names and types;
// these are shorter and typed as the fields and loops that use them. The values exist once,
// in the header.

// Rule vectors.
const (
	MaxRules = int(PodwallLimitsMAX_RULES) // rules of one policy, one bit each
	VecWords = int(PodwallLimitsVEC_WORDS)
)

// Address families as stored in keys.
const (
	FamV4 = uint8(PodwallFamilyFAM_V4)
	FamV6 = uint8(PodwallFamilyFAM_V6)
)

// KeyAddr is the address an ipcache, event or conntrack key holds; the zero Addr for a family
// that is neither FamV4 nor FamV6.
func KeyAddr(k PodwallIpAddr) netip.Addr {
	switch k.Family {
	case FamV4:
		return netip.AddrFrom4([4]byte(k.Addr[:4]))
	case FamV6:
		return netip.AddrFrom16(k.Addr)
	}
	return netip.Addr{}
}

// Protocol classes: the second index of a policy's proto masks.
const (
	ClassTCP   = int(PodwallProtoClassPC_TCP)
	ClassUDP   = int(PodwallProtoClassPC_UDP)
	ClassICMP  = int(PodwallProtoClassPC_ICMP) // ICMP for IPv4, ICMPv6 for IPv6
	ClassOther = int(PodwallProtoClassPC_OTHER)
	NumClasses = int(PodwallProtoClassPC_MAX)
)

// Port directions in port_key.dir.
const (
	DirSrc = uint8(PodwallPortDirDIR_SRC) // "from ports": the remote side's port
	DirDst = uint8(PodwallPortDirDIR_DST) // "to ports": the pod's port
)

// Reserved identities.
const (
	IDWorld    = uint32(PodwallReservedIdentityID_WORLD)
	IDHost     = uint32(PodwallReservedIdentityID_HOST)
	IDFirstPod = uint32(PodwallReservedIdentityID_FIRST_POD)
)

// endpoint.mode.
const (
	ModeEnforce = uint8(PodwallEndpointModeMODE_ENFORCE)
	ModeOpen    = uint8(PodwallEndpointModeMODE_OPEN)
	ModeIsolate = uint8(PodwallEndpointModeMODE_ISOLATE)
)

// endpoint.flags.
const (
	EPAllowHost = uint8(PodwallEndpointFlagEP_ALLOW_HOST)
	EPAudit     = uint8(PodwallEndpointFlagEP_AUDIT) // the policy's drops pass as VerdictAudit
)

// policy.flags: which fields at least one rule constrains.
const (
	PFIdent = uint32(PodwallPolicyFlagPF_IDENT)
	PFCIDR  = uint32(PodwallPolicyFlagPF_CIDR)
	PFSport = uint32(PodwallPolicyFlagPF_SPORT)
	PFDport = uint32(PodwallPolicyFlagPF_DPORT)
	PFICMP  = uint32(PodwallPolicyFlagPF_ICMP)
)

// ICMPAnyCode is icmp_key.code for the rules that state a type but no code.
const ICMPAnyCode = uint16(PodwallIcmpCodeICMP_ANY_CODE)

// ct_entry.flags.
const (
	CTOut      = uint8(PodwallCtFlagCT_OUT)
	CTIn       = uint8(PodwallCtFlagCT_IN)
	CTAnswered = uint8(PodwallCtFlagCT_ANSWERED) // the side that did not open the flow sent a packet
	CTClosing  = uint8(PodwallCtFlagCT_CLOSING)  // TCP: a FIN or RST was seen
)

// frag_entry.verdict and event.verdict.
const (
	VerdictPass = uint8(PodwallVerdictVERDICT_PASS)
	VerdictDrop = uint8(PodwallVerdictVERDICT_DROP)
	// VerdictAudit passed a packet its policy drops: the pod is in audit mode.
	VerdictAudit = uint8(PodwallVerdictVERDICT_AUDIT)
)

// Audited says whether audit mode passes a drop for reason r: the policy's drops, never
// those of the threat model (SPEC 8).
func Audited(r Reason) bool {
	return r == PodwallReasonREASON_DENY_RULE || r == PodwallReasonREASON_NO_RULE || r == PodwallReasonREASON_ISOLATED
}

// event.hook: where the verdict was made.
const (
	HookTC  = uint8(PodwallHookHOOK_TC)  // to_pod or from_pod, on a pod's interface
	HookXDP = uint8(PodwallHookHOOK_XDP) // from_world, on an uplink
)

// Reason is why a packet got its verdict: the index of the stats map and event.reason.
type Reason = PodwallReason

const (
	ReasonNoEntry     = PodwallReasonREASON_NO_ENTRY
	ReasonOpen        = PodwallReasonREASON_OPEN
	ReasonReply       = PodwallReasonREASON_REPLY
	ReasonEstablished = PodwallReasonREASON_ESTABLISHED
	ReasonICMPError   = PodwallReasonREASON_ICMP_ERROR
	ReasonHost        = PodwallReasonREASON_HOST
	ReasonND          = PodwallReasonREASON_ND
	ReasonFragment    = PodwallReasonREASON_FRAGMENT
	ReasonAllowRule   = PodwallReasonREASON_ALLOW_RULE
	ReasonDenyRule    = PodwallReasonREASON_DENY_RULE
	ReasonNoRule      = PodwallReasonREASON_NO_RULE
	ReasonIsolated    = PodwallReasonREASON_ISOLATED
	ReasonMalformed   = PodwallReasonREASON_MALFORMED
	ReasonCTFull      = PodwallReasonREASON_CT_FULL
	ReasonNotIP       = PodwallReasonREASON_NOT_IP
	ReasonEventLost   = PodwallReasonREASON_EVENT_LOST // not a verdict: an event the ring buffer had no room for
	ReasonSpoofed     = PodwallReasonREASON_SPOOFED
	ReasonVLAN        = PodwallReasonREASON_VLAN
	ReasonARP         = PodwallReasonREASON_ARP
	ReasonCTQuota     = PodwallReasonREASON_CT_QUOTA // not a verdict: a flow its pod's conntrack share had no room for
	NumReasons        = PodwallReasonREASON_MAX
)

var reasonNames = [NumReasons]string{
	ReasonNoEntry:     "no-entry",
	ReasonOpen:        "open",
	ReasonReply:       "reply",
	ReasonEstablished: "established",
	ReasonICMPError:   "icmp-error",
	ReasonHost:        "host",
	ReasonND:          "neighbour-discovery",
	ReasonFragment:    "fragment",
	ReasonAllowRule:   "allow-rule",
	ReasonDenyRule:    "deny-rule",
	ReasonNoRule:      "no-rule",
	ReasonIsolated:    "isolated",
	ReasonMalformed:   "malformed",
	ReasonCTFull:      "ct-full",
	ReasonNotIP:       "not-ip",
	ReasonEventLost:   "event-lost",
	ReasonSpoofed:     "spoofed",
	ReasonVLAN:        "vlan",
	ReasonARP:         "arp",
	ReasonCTQuota:     "ct-quota",
}

// String is the reason's name in logs, metrics and `podwall explain`.
func (r PodwallReason) String() string {
	if r < NumReasons {
		return reasonNames[r]
	}
	return "reason-" + strconv.Itoa(int(r))
}
