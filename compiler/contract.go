package compiler

import (
	"strconv"

	"github.com/podwall/podwall/bpf"
)

// The constants of bpf/podwall.h. bpf2go exports the header's structs and enum but not its
// #defines, so those are written here once, for every Go package; contract_test.go reads the
// header and fails when a value here drifts from it.

// Rule vectors.
const (
	MaxRules = 1024          // MAX_RULES: rules of one policy, one bit each
	VecWords = MaxRules / 64 // VEC_WORDS
)

// Address families as stored in keys (FAM_*).
const (
	FamV4 = 4
	FamV6 = 6
)

// Protocol classes (PC_*): the second index of a policy's proto masks.
const (
	ClassTCP   = 0
	ClassUDP   = 1
	ClassICMP  = 2 // ICMP for IPv4, ICMPv6 for IPv6
	ClassOther = 3
	NumClasses = 4 // PC_MAX
)

// Port directions in port_key.dir (DIR_*).
const (
	DirSrc = 0 // "from ports": the remote side's port
	DirDst = 1 // "to ports": the pod's port
)

// Reserved identities (ID_*).
const (
	IDWorld    = 0
	IDHost     = 1
	IDFirstPod = 256
)

// endpoint.mode (MODE_*).
const (
	ModeEnforce = 0
	ModeOpen    = 1
	ModeIsolate = 2
)

// endpoint.flags (EP_*).
const EPAllowHost = 1

// policy.flags (PF_*): which fields at least one rule constrains.
const (
	PFIdent = 1
	PFCIDR  = 2
	PFSport = 4
	PFDport = 8
	PFICMP  = 16
)

// ICMPAnyCode is icmp_key.code for the rules that state a type but no code (ICMP_ANY_CODE).
const ICMPAnyCode = 0xffff

// ct_entry.flags (CT_*).
const (
	CTOut      = 1
	CTIn       = 2
	CTAnswered = 4 // the side that did not open the flow sent a packet
	CTClosing  = 8 // TCP: a FIN or RST was seen
)

// frag_entry.verdict (VERDICT_*).
const (
	VerdictPass = 1
	VerdictDrop = 2
)

// Reason is why a packet got its verdict: enum reason of the header, the index of the stats
// map and event.reason. Its values are bpf2go's, in a byte as event.reason holds them.
type Reason uint8

const (
	ReasonNoEntry     = Reason(bpf.PodwallReasonREASON_NO_ENTRY)
	ReasonOpen        = Reason(bpf.PodwallReasonREASON_OPEN)
	ReasonReply       = Reason(bpf.PodwallReasonREASON_REPLY)
	ReasonEstablished = Reason(bpf.PodwallReasonREASON_ESTABLISHED)
	ReasonICMPError   = Reason(bpf.PodwallReasonREASON_ICMP_ERROR)
	ReasonHost        = Reason(bpf.PodwallReasonREASON_HOST)
	ReasonND          = Reason(bpf.PodwallReasonREASON_ND)
	ReasonFragment    = Reason(bpf.PodwallReasonREASON_FRAGMENT)
	ReasonAllowRule   = Reason(bpf.PodwallReasonREASON_ALLOW_RULE)
	ReasonDenyRule    = Reason(bpf.PodwallReasonREASON_DENY_RULE)
	ReasonNoRule      = Reason(bpf.PodwallReasonREASON_NO_RULE)
	ReasonIsolated    = Reason(bpf.PodwallReasonREASON_ISOLATED)
	ReasonMalformed   = Reason(bpf.PodwallReasonREASON_MALFORMED)
	ReasonCTFull      = Reason(bpf.PodwallReasonREASON_CT_FULL)
	ReasonNotIP       = Reason(bpf.PodwallReasonREASON_NOT_IP)
	ReasonEventLost   = Reason(bpf.PodwallReasonREASON_EVENT_LOST) // not a verdict: an event the ring buffer had no room for
	ReasonSpoofed     = Reason(bpf.PodwallReasonREASON_SPOOFED)
	ReasonVLAN        = Reason(bpf.PodwallReasonREASON_VLAN)
	ReasonARP         = Reason(bpf.PodwallReasonREASON_ARP)
	ReasonCTQuota     = Reason(bpf.PodwallReasonREASON_CT_QUOTA) // not a verdict: a flow its pod's conntrack share had no room for
	NumReasons        = Reason(bpf.PodwallReasonREASON_MAX)
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
func (r Reason) String() string {
	if r < NumReasons {
		return reasonNames[r]
	}
	return "reason-" + strconv.Itoa(int(r))
}
