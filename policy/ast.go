package policy

import "net/netip"

// Action is what a rule does with the packets it matches.
type Action uint8

const (
	Allow Action = iota
	Deny
)

// Protocol is the protocol a rule names; ProtoAny when it names none.
type Protocol uint8

const (
	ProtoAny Protocol = iota
	ProtoTCP
	ProtoUDP
	ProtoICMP   // ICMP for IPv4 only
	ProtoICMPv6 // ICMPv6 for IPv6 only
)

// PortRange is an inclusive range of ports; a single port has First == Last.
type PortRange struct {
	First, Last uint16
}

// Label is the KEY=VALUE of a `label` constraint.
type Label struct {
	Key, Value string
}

// Clause is the `from` or the `to` part of a rule. A zero Clause constrains nothing.
type Clause struct {
	Ports []PortRange   // nil: any port
	Label *Label        // nil: any labels
	CIDR  *netip.Prefix // nil: any address; host bits are already masked off
}

// Rule is one parsed rule of an annotation.
type Rule struct {
	Action   Action
	Protocol Protocol
	From, To Clause

	// ICMP constraints, only with ProtoICMP or ProtoICMPv6. HasCode implies HasType.
	HasType, HasCode bool
	Type, Code       uint8

	// Where the rule came from: its 1-based number (skipped empty segments not counted),
	// its text as written (trimmed of surrounding whitespace) and the byte offset of that
	// text in the annotation. Explain and drop events quote it.
	Index  int
	Text   string
	Offset int
}
