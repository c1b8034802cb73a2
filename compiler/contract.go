package compiler

import "strconv"

// The constants of bpf/podwall.h. bpf2go exports the header's structs but not its #defines
// nor its enum reason, so they are written here once, for every Go package; contract_test.go
// reads the header and fails when a value here drifts from it.

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
	CTOut = 1
	CTIn  = 2
)

// frag_entry.verdict (VERDICT_*).
const (
	VerdictPass = 1
	VerdictDrop = 2
)

// Reason is why a packet got its verdict: enum reason of the header, the index of the stats
// map and event.reason.
type Reason uint8

const (
	ReasonNotEndpoint Reason = iota
	ReasonOpen
	ReasonReply
	ReasonEstablished
	ReasonICMPError
	ReasonHost
	ReasonND
	ReasonFragment
	ReasonAllowRule
	ReasonDenyRule
	ReasonNoRule
	ReasonIsolated
	ReasonNoPolicy
	ReasonMalformed
	ReasonCTFull
	ReasonNotIP
	ReasonEventLost // not a verdict: an event the ring buffer had no room for
	NumReasons      // REASON_MAX
)

var reasonNames = [NumReasons]string{
	ReasonNotEndpoint: "not-endpoint",
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
	ReasonNoPolicy:    "no-policy",
	ReasonMalformed:   "malformed",
	ReasonCTFull:      "ct-full",
	ReasonNotIP:       "not-ip",
	ReasonEventLost:   "event-lost",
}

// String is the reason's name in logs, metrics and `podwall explain`.
func (r Reason) String() string {
	if r < NumReasons {
		return reasonNames[r]
	}
	return "reason-" + strconv.Itoa(int(r))
}
