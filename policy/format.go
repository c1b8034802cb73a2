package policy

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
)

func (a Action) String() string {
	switch a {
	case Allow:
		return "allow"
	case Deny:
		return "deny"
	}
	return fmt.Sprintf("Action(%d)", uint8(a))
}

// String is the protocol's keyword; "any" for ProtoAny, which has none.
func (p Protocol) String() string {
	switch p {
	case ProtoAny:
		return "any"
	case ProtoTCP:
		return "tcp"
	case ProtoUDP:
		return "udp"
	case ProtoICMP:
		return "icmp"
	case ProtoICMPv6:
		return "icmpv6"
	}
	return fmt.Sprintf("Protocol(%d)", uint8(p))
}

func (r PortRange) String() string {
	if r.First == r.Last {
		return strconv.Itoa(int(r.First))
	}
	return fmt.Sprintf("%d:%d", r.First, r.Last)
}

func (l Label) String() string { return l.Key + "=" + l.Value }

// FormatRule writes r in canonical form: keywords in grammar order, single spaces, ports as
// stored, CIDRs as canonical prefixes. Parse gives back the same rule (Text, Offset and Index
// aside). An empty clause (`allow tcp from`) constrains nothing and is left out.
func FormatRule(r Rule) string {
	var b strings.Builder
	b.WriteString(r.Action.String())
	if r.Protocol != ProtoAny {
		b.WriteString(" " + r.Protocol.String())
	}
	if r.HasType {
		fmt.Fprintf(&b, " type %d", r.Type)
		if r.HasCode {
			fmt.Fprintf(&b, " code %d", r.Code)
		}
	}
	formatClause(&b, "from", r.From)
	formatClause(&b, "to", r.To)
	return b.String()
}

func formatClause(b *strings.Builder, keyword string, c Clause) {
	if len(c.Ports) == 0 && c.Label == nil && c.CIDR == nil {
		return
	}
	b.WriteString(" " + keyword)
	if len(c.Ports) > 0 {
		ports := make([]string, len(c.Ports))
		for i, pr := range c.Ports {
			ports[i] = pr.String()
		}
		b.WriteString(" ports " + strings.Join(ports, ","))
	}
	if c.Label != nil {
		b.WriteString(" label " + c.Label.String())
	}
	if c.CIDR != nil {
		b.WriteString(" cidr " + c.CIDR.String())
	}
}

// jsonRule is a rule in the Calico profile-rule vocabulary (SPEC 7), fields in SPEC order.
type jsonRule struct {
	Action   string `json:"action"`
	Protocol string `json:"protocol,omitempty"`
	SrcTag   string `json:"src_tag,omitempty"`
	DstTag   string `json:"dst_tag,omitempty"`
	SrcNet   string `json:"src_net,omitempty"`
	DstNet   string `json:"dst_net,omitempty"`
	SrcPorts []any  `json:"src_ports,omitempty"`
	DstPorts []any  `json:"dst_ports,omitempty"`
	ICMPType *uint8 `json:"icmp_type,omitempty"`
	ICMPCode *uint8 `json:"icmp_code,omitempty"`
}

// MarshalRulesJSON writes rules as a JSON array of SPEC 7 rule objects, one a line. Label
// constraints become tags of the namespace: `from label` a src_tag, `to label` a dst_tag (the
// pod itself carries it). The namespace is required even when no rule has a label, so the
// output never depends on a default the caller did not choose; without one the error wraps
// ErrNoNamespace.
func MarshalRulesJSON(rules []Rule, namespace string) ([]byte, error) {
	if namespace == "" {
		return nil, fmt.Errorf("marshal rules: %w", ErrNoNamespace)
	}
	if len(rules) == 0 {
		return []byte("[]"), nil
	}
	var out bytes.Buffer
	out.WriteString("[\n")
	for i, r := range rules {
		line, err := json.Marshal(toJSONRule(r, namespace))
		if err != nil {
			return nil, fmt.Errorf("marshal rule %d: %w", r.Index, err)
		}
		out.WriteString("  ")
		out.Write(line)
		if i < len(rules)-1 {
			out.WriteByte(',')
		}
		out.WriteByte('\n')
	}
	out.WriteString("]")
	return out.Bytes(), nil
}

func toJSONRule(r Rule, namespace string) jsonRule {
	j := jsonRule{Action: r.Action.String()}
	if r.Protocol != ProtoAny {
		j.Protocol = r.Protocol.String()
	}
	if r.From.Label != nil {
		j.SrcTag = LabelTag(namespace, *r.From.Label)
	}
	if r.To.Label != nil {
		j.DstTag = LabelTag(namespace, *r.To.Label)
	}
	if r.From.CIDR != nil {
		j.SrcNet = r.From.CIDR.String()
	}
	if r.To.CIDR != nil {
		j.DstNet = r.To.CIDR.String()
	}
	j.SrcPorts = jsonPorts(r.From.Ports)
	j.DstPorts = jsonPorts(r.To.Ports)
	if r.HasType {
		t := r.Type
		j.ICMPType = &t
	}
	if r.HasCode {
		c := r.Code
		j.ICMPCode = &c
	}
	return j
}

// jsonPorts gives each port as an integer and each range as "A:B" (an integer when A == B).
func jsonPorts(ports []PortRange) []any {
	var out []any
	for _, pr := range ports {
		if pr.First == pr.Last {
			out = append(out, int(pr.First))
		} else {
			out = append(out, pr.String())
		}
	}
	return out
}
