package policy

import (
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func prefix(s string) *netip.Prefix {
	p := netip.MustParsePrefix(s)
	return &p
}

func label(k, v string) *Label { return &Label{Key: k, Value: v} }

func port(p uint16) PortRange { return PortRange{First: p, Last: p} }

// parseTests are annotations that parse, with their rules minus the source fields
// (Index, Text, Offset), which TestParseSource checks. The fuzz target seeds from them.
var parseTests = []struct {
	name string
	in   string
	want []Rule
}{
	// seed/KubernetesPolicy.md
	{"seed single rule", "allow tcp from label role=backend",
		[]Rule{{Protocol: ProtoTCP, From: Clause{Label: label("role", "backend")}}}},
	{"seed two rules", "allow from label role=backend; allow tcp to ports 2379,443",
		[]Rule{
			{From: Clause{Label: label("role", "backend")}},
			{Protocol: ProtoTCP, To: Clause{Ports: []PortRange{port(2379), port(443)}}},
		}},
	{"seed syntax tcp", "allow tcp from ports 80 label role=backend cidr 10.0.0.0/8",
		[]Rule{{Protocol: ProtoTCP, From: Clause{
			Ports: []PortRange{port(80)}, Label: label("role", "backend"), CIDR: prefix("10.0.0.0/8")}}}},
	{"seed syntax udp", "allow udp from ports 53",
		[]Rule{{Protocol: ProtoUDP, From: Clause{Ports: []PortRange{port(53)}}}}},
	{"seed syntax icmp", "allow icmp type 8 code 0 from label role=backend cidr 10.0.0.0/8",
		[]Rule{{Protocol: ProtoICMP, HasType: true, Type: 8, HasCode: true,
			From: Clause{Label: label("role", "backend"), CIDR: prefix("10.0.0.0/8")}}}},
	{"seed syntax no protocol", "allow from label role=backend cidr 10.0.0.0/8",
		[]Rule{{From: Clause{Label: label("role", "backend"), CIDR: prefix("10.0.0.0/8")}}}},
	// SPEC 2 and README
	{"spec empty clause", "allow tcp from", []Rule{{Protocol: ProtoTCP}}},
	{"readme", "allow tcp from label role=backend; allow tcp to ports 443",
		[]Rule{
			{Protocol: ProtoTCP, From: Clause{Label: label("role", "backend")}},
			{Protocol: ProtoTCP, To: Clause{Ports: []PortRange{port(443)}}},
		}},

	// rule = action [body]
	{"allow", "allow", []Rule{{Action: Allow}}},
	{"deny", "deny", []Rule{{Action: Deny}}},
	{"deny wins written first", "deny tcp to ports 22; allow",
		[]Rule{{Action: Deny, Protocol: ProtoTCP, To: Clause{Ports: []PortRange{port(22)}}}, {}}},
	// protocols
	{"tcp", "allow tcp", []Rule{{Protocol: ProtoTCP}}},
	{"udp", "allow udp", []Rule{{Protocol: ProtoUDP}}},
	{"icmp", "allow icmp", []Rule{{Protocol: ProtoICMP}}},
	{"icmpv6", "deny icmpv6", []Rule{{Action: Deny, Protocol: ProtoICMPv6}}},
	// empty clauses
	{"empty to", "allow tcp to", []Rule{{Protocol: ProtoTCP}}},
	{"empty from and to", "allow udp from to", []Rule{{Protocol: ProtoUDP}}},
	{"no protocol empty from", "allow from", []Rule{{}}},
	{"no protocol empty to", "allow to", []Rule{{}}},
	{"icmp empty clauses", "allow icmp from to", []Rule{{Protocol: ProtoICMP}}},
	// tcp/udp clauses, each item alone and all together
	{"from ports", "allow tcp from ports 1024:65535",
		[]Rule{{Protocol: ProtoTCP, From: Clause{Ports: []PortRange{{1024, 65535}}}}}},
	{"from label", "allow udp from label app=dns",
		[]Rule{{Protocol: ProtoUDP, From: Clause{Label: label("app", "dns")}}}},
	{"from cidr", "allow tcp from cidr 192.168.0.0/16",
		[]Rule{{Protocol: ProtoTCP, From: Clause{CIDR: prefix("192.168.0.0/16")}}}},
	{"to ports", "allow udp to ports 53", []Rule{{Protocol: ProtoUDP, To: Clause{Ports: []PortRange{port(53)}}}}},
	{"to label", "allow tcp to label tier=db", []Rule{{Protocol: ProtoTCP, To: Clause{Label: label("tier", "db")}}}},
	{"to cidr", "allow tcp to cidr 10.0.0.5", []Rule{{Protocol: ProtoTCP, To: Clause{CIDR: prefix("10.0.0.5/32")}}}},
	{"everything", "deny udp from ports 53 label k8s-app=kube-dns cidr 10.96.0.0/12 to ports 1024:65535,8080 label app=web cidr 10.0.0.1",
		[]Rule{{Action: Deny, Protocol: ProtoUDP,
			From: Clause{Ports: []PortRange{port(53)}, Label: label("k8s-app", "kube-dns"), CIDR: prefix("10.96.0.0/12")},
			To:   Clause{Ports: []PortRange{{1024, 65535}, port(8080)}, Label: label("app", "web"), CIDR: prefix("10.0.0.1/32")}}}},
	{"ports then cidr", "allow tcp to ports 443 cidr 10.0.0.0/8",
		[]Rule{{Protocol: ProtoTCP, To: Clause{Ports: []PortRange{port(443)}, CIDR: prefix("10.0.0.0/8")}}}},
	// no-protocol clauses
	{"no protocol both clauses", "allow from label role=backend cidr 192.168.0.0/16 to label tier=front cidr 192.168.1.10",
		[]Rule{{
			From: Clause{Label: label("role", "backend"), CIDR: prefix("192.168.0.0/16")},
			To:   Clause{Label: label("tier", "front"), CIDR: prefix("192.168.1.10/32")}}}},
	// icmp type and code
	{"icmp type", "allow icmp type 8", []Rule{{Protocol: ProtoICMP, HasType: true, Type: 8}}},
	{"icmp type 0 code 0", "allow icmp type 0 code 0", []Rule{{Protocol: ProtoICMP, HasType: true, HasCode: true}}},
	{"icmp limits", "allow icmp type 254 code 255",
		[]Rule{{Protocol: ProtoICMP, HasType: true, Type: 254, HasCode: true, Code: 255}}},
	{"icmpv6 type and clauses", "allow icmpv6 type 128 from cidr fd00::/8 to label a=b",
		[]Rule{{Protocol: ProtoICMPv6, HasType: true, Type: 128,
			From: Clause{CIDR: prefix("fd00::/8")}, To: Clause{Label: label("a", "b")}}}},
	{"icmp leading zeros", "allow icmp type 008 code 000",
		[]Rule{{Protocol: ProtoICMP, HasType: true, Type: 8, HasCode: true}}},
	// ports: limits, ranges, leading zeros, list order kept
	{"port limits", "allow tcp to ports 0,65535,0:65535,80:80",
		[]Rule{{Protocol: ProtoTCP, To: Clause{Ports: []PortRange{port(0), port(65535), {0, 65535}, port(80)}}}}},
	{"ports leading zeros", "allow tcp to ports 080,0443:00444,000000000000000000000000000000065535",
		[]Rule{{Protocol: ProtoTCP, To: Clause{Ports: []PortRange{port(80), {443, 444}, port(65535)}}}}},
	{"ports order kept", "allow udp from ports 9000:9100,53,53",
		[]Rule{{Protocol: ProtoUDP, From: Clause{Ports: []PortRange{{9000, 9100}, port(53), port(53)}}}}},
	// labels
	{"label with prefix", "allow from label app.kubernetes.io/name=web",
		[]Rule{{From: Clause{Label: label("app.kubernetes.io/name", "web")}}}},
	{"label every character", "allow from label AZaz09/._-=-_./09zaZA",
		[]Rule{{From: Clause{Label: label("AZaz09/._-", "-_./09zaZA")}}}},
	// CIDRs: IPv4, IPv6, bare addresses, host bits masked
	{"cidr host bits masked", "deny tcp from cidr 10.1.2.3/8",
		[]Rule{{Action: Deny, Protocol: ProtoTCP, From: Clause{CIDR: prefix("10.0.0.0/8")}}}},
	{"cidr all v4", "allow from cidr 0.0.0.0/0", []Rule{{From: Clause{CIDR: prefix("0.0.0.0/0")}}}},
	{"cidr v4 /0 masked", "allow from cidr 1.2.3.4/0", []Rule{{From: Clause{CIDR: prefix("0.0.0.0/0")}}}},
	{"cidr v4 /32", "allow from cidr 1.2.3.4/32", []Rule{{From: Clause{CIDR: prefix("1.2.3.4/32")}}}},
	{"cidr v6", "allow from cidr 2001:DB8::1/32", []Rule{{From: Clause{CIDR: prefix("2001:db8::/32")}}}},
	{"cidr v6 bare", "allow from cidr ::1", []Rule{{From: Clause{CIDR: prefix("::1/128")}}}},
	{"cidr v6 all", "allow to cidr ::/0", []Rule{{To: Clause{CIDR: prefix("::/0")}}}},
	{"cidr v6 /128", "allow to cidr fe80::1:2/128", []Rule{{To: Clause{CIDR: prefix("fe80::1:2/128")}}}},
	{"cidr v6 masked odd length", "allow from cidr 2001:db8:ffff::/33",
		[]Rule{{From: Clause{CIDR: prefix("2001:db8:8000::/33")}}}},
	{"cidr v6 dotted tail", "allow from cidr 64:ff9b::192.0.2.1/120",
		[]Rule{{From: Clause{CIDR: prefix("64:ff9b::c000:200/120")}}}},
	// whitespace and empty segments (SPEC 1)
	{"whitespace forms", "  allow\ttcp\r\nfrom\n\nlabel  role=backend  \t",
		[]Rule{{Protocol: ProtoTCP, From: Clause{Label: label("role", "backend")}}}},
	{"empty segments skipped", ";;allow;; ;\t;\r\n;deny;",
		[]Rule{{Action: Allow}, {Action: Deny}}},
	{"no space around semicolons", "allow tcp;deny udp",
		[]Rule{{Protocol: ProtoTCP}, {Action: Deny, Protocol: ProtoUDP}}},
	{"empty annotation", "", nil},
	{"only a semicolon", ";", nil},
	{"only blank segments", " ; \n ;\t", nil},
}

// withoutSource clears the fields that say where a rule was written.
func withoutSource(rules []Rule) []Rule {
	if rules == nil {
		return nil
	}
	out := make([]Rule, len(rules))
	for i, r := range rules {
		r.Index, r.Text, r.Offset = 0, "", 0
		out[i] = r
	}
	return out
}

func TestParse(t *testing.T) {
	for _, tt := range parseTests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Parse(tt.in)
			require.NoError(t, err)
			require.Equal(t, tt.want, withoutSource(got))
		})
	}
}

func TestParseSource(t *testing.T) {
	in := " ;  allow tcp\t from ;\n;\tdeny \n; allow;"
	got, err := Parse(in)
	require.NoError(t, err)
	require.Equal(t, []Rule{
		{Action: Allow, Protocol: ProtoTCP, Index: 1, Text: "allow tcp\t from", Offset: 4},
		{Action: Deny, Index: 2, Text: "deny", Offset: 24},
		{Action: Allow, Index: 3, Text: "allow", Offset: 32},
	}, got)
	for _, r := range got {
		require.Equal(t, r.Text, in[r.Offset:r.Offset+len(r.Text)])
	}
}

// errorTests are annotations that do not parse, with the exact message. The fuzz target
// seeds from them.
var errorTests = []struct {
	name string
	in   string
	want string
}{
	// SPEC 2's example, with an annotation that puts "prots" at offset 31 of rule 2.
	{"spec example", "allow udp from; allow tcp from prots",
		`rule 2, offset 31 ("prots"): expected "ports", "label", "cidr", "to" or end of rule`},

	// action
	{"no action", "tcp from label a=b", `rule 1, offset 0 ("tcp"): expected "allow" or "deny"`},
	{"unknown action", "permit tcp", `rule 1, offset 0 ("permit"): expected "allow" or "deny"`},
	{"uppercase action", "Allow tcp", `rule 1, offset 0 ("Allow"): expected "allow" or "deny" (keywords are lowercase)`},
	{"rules numbered without empty segments", " ;; allow tcp ;\n; ALLOW",
		`rule 2, offset 18 ("ALLOW"): expected "allow" or "deny" (keywords are lowercase)`},
	{"action twice", "allow tcp allow", `rule 1, offset 10 ("allow"): expected "from", "to" or end of rule (rules are separated by ";")`},
	{"deny after action", "allow deny", `rule 1, offset 6 ("deny"): expected "tcp", "udp", "icmp", "icmpv6", "from", "to" or end of rule (rules are separated by ";")`},

	// protocol
	{"unknown protocol", "allow sctp", `rule 1, offset 6 ("sctp"): expected "tcp", "udp", "icmp", "icmpv6", "from", "to" or end of rule`},
	{"uppercase protocol", "allow TCP", `rule 1, offset 6 ("TCP"): expected "tcp", "udp", "icmp", "icmpv6", "from", "to" or end of rule (keywords are lowercase)`},
	{"two protocols", "allow tcp udp", `rule 1, offset 10 ("udp"): expected "from", "to" or end of rule (one protocol per rule)`},
	{"protocol after from", "allow from tcp", `rule 1, offset 11 ("tcp"): expected "label", "cidr", "to" or end of rule (the protocol comes right after "allow" or "deny")`},
	{"icmp6 is not a keyword", "allow icmp6", `rule 1, offset 6 ("icmp6"): expected "tcp", "udp", "icmp", "icmpv6", "from", "to" or end of rule`},

	// type and code
	{"type without icmp", "allow tcp type 8", `rule 1, offset 10 ("type"): expected "from", "to" or end of rule ("type" needs "icmp" or "icmpv6")`},
	{"type without protocol", "allow type 8", `rule 1, offset 6 ("type"): expected "tcp", "udp", "icmp", "icmpv6", "from", "to" or end of rule ("type" needs "icmp" or "icmpv6")`},
	{"code without icmp", "allow udp code 0", `rule 1, offset 10 ("code"): expected "from", "to" or end of rule ("code" needs "icmp" or "icmpv6")`},
	{"code without type", "allow icmp code 0", `rule 1, offset 11 ("code"): expected "type", "from", "to" or end of rule ("code" needs a "type" before it)`},
	{"type twice", "allow icmp type 8 type 9", `rule 1, offset 18 ("type"): expected "code", "from", "to" or end of rule ("type" at most once)`},
	{"code twice", "allow icmp type 8 code 0 code 1", `rule 1, offset 25 ("code"): expected "from", "to" or end of rule ("code" at most once)`},
	{"type after from", "allow icmp from type 8", `rule 1, offset 16 ("type"): expected "label", "cidr", "to" or end of rule ("type" comes before "from" and "to")`},
	{"code after from", "allow icmp type 8 from code 0", `rule 1, offset 23 ("code"): expected "label", "cidr", "to" or end of rule ("code" comes right after "type")`},
	{"code before type", "allow icmpv6 code 0 type 1", `rule 1, offset 13 ("code"): expected "type", "from", "to" or end of rule ("code" needs a "type" before it)`},
	{"type 255", "allow icmp type 255", `rule 1, offset 16 ("255"): expected an ICMP type 0..254`},
	{"code 256", "allow icmp type 254 code 256", `rule 1, offset 25 ("256"): expected an ICMP code 0..255`},
	{"type missing", "allow icmp type", `rule 1, offset 15 (end of rule): expected an ICMP type 0..254`},
	{"type missing before next rule", "allow icmp type ; allow", `rule 1, offset 15 (end of rule): expected an ICMP type 0..254`},
	{"code missing", "allow icmp type 8 code", `rule 1, offset 22 (end of rule): expected an ICMP code 0..255`},
	{"type not a number", "allow icmp type echo", `rule 1, offset 16 ("echo"): expected an ICMP type 0..254`},
	{"type negative", "allow icmp type -1", `rule 1, offset 16 ("-1"): expected an ICMP type 0..254 (numbers have no sign)`},
	{"code with plus", "allow icmp type 3 code +1", `rule 1, offset 23 ("+1"): expected an ICMP code 0..255 (numbers have no sign)`},
	{"type huge", "allow icmp type 99999999999999999999999999999", `rule 1, offset 16 ("99999999999999999999999999999"): expected an ICMP type 0..254`},
	{"type hex", "allow icmp type 0x8", `rule 1, offset 16 ("0x8"): expected an ICMP type 0..254`},

	// from and to
	{"to twice", "allow to to", `rule 1, offset 9 ("to"): expected "label", "cidr" or end of rule ("to" at most once)`},
	{"from twice", "allow from from", `rule 1, offset 11 ("from"): expected "label", "cidr", "to" or end of rule ("from" at most once)`},
	{"from after to", "allow tcp to ports 80 from", `rule 1, offset 22 ("from"): expected "label", "cidr" or end of rule ("from" comes before "to")`},
	{"cidr keyword missing", "allow from 10.0.0.0/8", `rule 1, offset 11 ("10.0.0.0/8"): expected "label", "cidr", "to" or end of rule`},
	{"word after cidr", "allow from cidr 1.2.3.4 foo", `rule 1, offset 24 ("foo"): expected "to" or end of rule`},
	{"nothing may follow to cidr", "allow tcp to cidr ::1 ports 1", `rule 1, offset 22 ("ports"): expected end of rule ("ports" comes before "label" and "cidr")`},
	{"uppercase from", "allow tcp FROM", `rule 1, offset 10 ("FROM"): expected "from", "to" or end of rule (keywords are lowercase)`},

	// clause order and repetition
	{"ports twice", "allow tcp from ports 80 ports 443", `rule 1, offset 24 ("ports"): expected "label", "cidr", "to" or end of rule ("ports" at most once per clause: list the ports comma-separated)`},
	{"ports after label", "allow tcp from label a=b ports 80", `rule 1, offset 25 ("ports"): expected "cidr", "to" or end of rule ("ports" comes before "label" and "cidr")`},
	{"ports after cidr", "allow tcp to cidr 10.0.0.0/8 ports 80", `rule 1, offset 29 ("ports"): expected end of rule ("ports" comes before "label" and "cidr")`},
	{"label after cidr", "allow from cidr 10.0.0.1/8 label a=b", `rule 1, offset 27 ("label"): expected "to" or end of rule ("label" comes before "cidr")`},
	{"label twice", "allow from label a=b to label c=d label e=f", `rule 1, offset 34 ("label"): expected "cidr" or end of rule (one "label" per clause)`},
	{"cidr twice", "allow from cidr 1.2.3.4 cidr 1.2.3.5", `rule 1, offset 24 ("cidr"): expected "to" or end of rule (one "cidr" per clause)`},
	{"ports outside a clause", "allow tcp ports 80", `rule 1, offset 10 ("ports"): expected "from", "to" or end of rule ("ports" goes after "from" or "to")`},
	{"label outside a clause", "allow label a=b", `rule 1, offset 6 ("label"): expected "tcp", "udp", "icmp", "icmpv6", "from", "to" or end of rule ("label" goes after "from" or "to")`},
	{"cidr outside a clause", "allow icmp cidr ::/0", `rule 1, offset 11 ("cidr"): expected "type", "from", "to" or end of rule ("cidr" goes after "from" or "to")`},
	{"ports after icmp", "allow icmp from ports 80", `rule 1, offset 16 ("ports"): expected "label", "cidr", "to" or end of rule ("ports" needs "tcp" or "udp")`},
	{"ports after icmpv6 type", "allow icmpv6 type 1 to ports 80", `rule 1, offset 23 ("ports"): expected "label", "cidr" or end of rule ("ports" needs "tcp" or "udp")`},
	{"ports without protocol", "allow from ports 80", `rule 1, offset 11 ("ports"): expected "label", "cidr", "to" or end of rule ("ports" needs "tcp" or "udp")`},
	{"ports without protocol or clause", "allow ports 80", `rule 1, offset 6 ("ports"): expected "tcp", "udp", "icmp", "icmpv6", "from", "to" or end of rule ("ports" needs "tcp" or "udp")`},

	// ports values
	{"ports missing", "allow tcp to ports", `rule 1, offset 18 (end of rule): expected a port 0..65535 or a range A:B with A <= B`},
	{"ports missing with trailing space", "allow tcp to ports  \t; deny", `rule 1, offset 18 (end of rule): expected a port 0..65535 or a range A:B with A <= B`},
	{"port 65536", "allow tcp to ports 65536", `rule 1, offset 19 ("65536"): expected a port 0..65535 or a range A:B with A <= B`},
	{"port 30 digits", "allow tcp to ports 123456789012345678901234567890", `rule 1, offset 19 ("123456789012345678901234567890"): expected a port 0..65535 or a range A:B with A <= B`},
	{"port plus", "allow tcp to ports +80", `rule 1, offset 19 ("+80"): expected a port 0..65535 or a range A:B with A <= B (numbers have no sign)`},
	{"port minus", "allow tcp to ports -80", `rule 1, offset 19 ("-80"): expected a port 0..65535 or a range A:B with A <= B (numbers have no sign)`},
	{"port named", "allow tcp to ports 80,http", `rule 1, offset 22 ("http"): expected a port 0..65535 or a range A:B with A <= B`},
	{"range reversed", "allow tcp to ports 90:80", `rule 1, offset 19 ("90:80"): expected a port 0..65535 or a range A:B with A <= B`},
	{"range past 65535", "allow udp from ports 1:65536", `rule 1, offset 21 ("1:65536"): expected a port 0..65535 or a range A:B with A <= B`},
	{"range with dash", "allow tcp to ports 80,8000-8080", `rule 1, offset 22 ("8000-8080"): expected a port 0..65535 or a range A:B with A <= B (a range is written A:B)`},
	{"range open start", "allow tcp to ports :80", `rule 1, offset 19 (":80"): expected a port 0..65535 or a range A:B with A <= B`},
	{"range open end", "allow tcp to ports 80:", `rule 1, offset 19 ("80:"): expected a port 0..65535 or a range A:B with A <= B`},
	{"range of three", "allow tcp to ports 1,80:90:100", `rule 1, offset 21 ("80:90:100"): expected a port 0..65535 or a range A:B with A <= B`},
	{"ports double comma", "allow tcp to ports 80,,443", `rule 1, offset 19 ("80,,443"): expected a port 0..65535 or a range A:B with A <= B (empty entry: ports are comma-separated, without spaces)`},
	{"ports leading comma", "allow tcp to ports ,80", `rule 1, offset 19 (",80"): expected a port 0..65535 or a range A:B with A <= B (empty entry: ports are comma-separated, without spaces)`},
	{"ports space after comma", "allow tcp to ports 80, 443", `rule 1, offset 19 ("80,"): expected a port 0..65535 or a range A:B with A <= B (empty entry: ports are comma-separated, without spaces)`},
	{"ports then keyword", "allow tcp from ports to", `rule 1, offset 21 ("to"): expected a port 0..65535 or a range A:B with A <= B`},

	// label values
	{"label missing", "allow from label", `rule 1, offset 16 (end of rule): expected KEY=VALUE, each of [A-Za-z0-9/._-]+`},
	{"label without equals", "allow from label role", `rule 1, offset 17 ("role"): expected KEY=VALUE, each of [A-Za-z0-9/._-]+`},
	{"label empty key", "allow from label =b", `rule 1, offset 17 ("=b"): expected KEY=VALUE, each of [A-Za-z0-9/._-]+`},
	{"label empty value", "allow from label a=", `rule 1, offset 17 ("a="): expected KEY=VALUE, each of [A-Za-z0-9/._-]+`},
	{"label two equals", "allow from label a=b=c", `rule 1, offset 17 ("a=b=c"): expected KEY=VALUE, each of [A-Za-z0-9/._-]+ (exactly one "=")`},
	{"label bad character", "allow tcp to label a=b$", `rule 1, offset 19 ("a=b$"): expected KEY=VALUE, each of [A-Za-z0-9/._-]+ ("$" is not allowed)`},
	{"label colon", "allow from label role:backend", `rule 1, offset 17 ("role:backend"): expected KEY=VALUE, each of [A-Za-z0-9/._-]+`},
	{"label quoted", `allow from label a="b"`, `rule 1, offset 17 ("a=\"b\""): expected KEY=VALUE, each of [A-Za-z0-9/._-]+ ("\"" is not allowed)`},
	{"label non-ASCII", "allow from label app=café", `rule 1, offset 17 ("app=café"): expected KEY=VALUE, each of [A-Za-z0-9/._-]+ ("é" is not allowed)`},
	{"label second label", "allow from label a=b c=d", `rule 1, offset 21 ("c=d"): expected "cidr", "to" or end of rule`},

	// cidr values
	{"cidr missing", "allow from cidr", `rule 1, offset 15 (end of rule): expected an IPv4 or IPv6 prefix or address`},
	{"cidr partial IPv4", "allow from cidr 10.1", `rule 1, offset 16 ("10.1"): expected an IPv4 or IPv6 prefix or address (an IPv4 address has four parts)`},
	{"cidr partial IPv4 prefix", "allow from cidr 10.1/16", `rule 1, offset 16 ("10.1/16"): expected an IPv4 or IPv6 prefix or address (an IPv4 address has four parts)`},
	{"cidr one number", "allow from cidr 10", `rule 1, offset 16 ("10"): expected an IPv4 or IPv6 prefix or address (an IPv4 address has four parts)`},
	{"cidr netmask", "allow from cidr 10.0.0.0/255.0.0.0", `rule 1, offset 16 ("10.0.0.0/255.0.0.0"): expected an IPv4 or IPv6 prefix or address (netmask form: write a prefix length)`},
	{"cidr zone", "allow from cidr fe80::1%eth0", `rule 1, offset 16 ("fe80::1%eth0"): expected an IPv4 or IPv6 prefix or address (zones are not allowed)`},
	{"cidr zone with prefix", "allow from cidr fe80::1%eth0/64", `rule 1, offset 16 ("fe80::1%eth0/64"): expected an IPv4 or IPv6 prefix or address (zones are not allowed)`},
	{"cidr IPv4-mapped", "allow from cidr ::ffff:1.2.3.4", `rule 1, offset 16 ("::ffff:1.2.3.4"): expected an IPv4 or IPv6 prefix or address (write an IPv4-mapped address as IPv4)`},
	{"cidr IPv4-mapped prefix", "allow from cidr ::ffff:10.0.0.0/104", `rule 1, offset 16 ("::ffff:10.0.0.0/104"): expected an IPv4 or IPv6 prefix or address (write an IPv4-mapped address as IPv4)`},
	{"cidr v4 length 33", "allow from cidr 10.0.0.0/33", `rule 1, offset 16 ("10.0.0.0/33"): expected an IPv4 or IPv6 prefix or address (the prefix length is 0..32)`},
	{"cidr v6 length 129", "allow to cidr ::1/129", `rule 1, offset 14 ("::1/129"): expected an IPv4 or IPv6 prefix or address (the prefix length is 0..128)`},
	{"cidr length leading zero", "allow from cidr 10.0.0.0/08", `rule 1, offset 16 ("10.0.0.0/08"): expected an IPv4 or IPv6 prefix or address (a prefix length has no leading zeros)`},
	{"cidr length missing", "allow from cidr 10.0.0.0/", `rule 1, offset 16 ("10.0.0.0/"): expected an IPv4 or IPv6 prefix or address`},
	{"cidr length sign", "allow from cidr 10.0.0.0/+8", `rule 1, offset 16 ("10.0.0.0/+8"): expected an IPv4 or IPv6 prefix or address`},
	{"cidr two slashes", "allow from cidr 10.0.0.0/8/8", `rule 1, offset 16 ("10.0.0.0/8/8"): expected an IPv4 or IPv6 prefix or address`},
	{"cidr octet 256", "allow from cidr 10.0.0.256", `rule 1, offset 16 ("10.0.0.256"): expected an IPv4 or IPv6 prefix or address`},
	{"cidr octet leading zero", "allow from cidr 010.0.0.1", `rule 1, offset 16 ("010.0.0.1"): expected an IPv4 or IPv6 prefix or address`},
	{"cidr hostname", "allow from cidr localhost", `rule 1, offset 16 ("localhost"): expected an IPv4 or IPv6 prefix or address`},
	{"cidr bad v6", "allow from cidr 2001:db8:::1", `rule 1, offset 16 ("2001:db8:::1"): expected an IPv4 or IPv6 prefix or address`},

	// words: what separates them, how they are quoted
	{"vertical tab is not whitespace", "allow\vtcp", `rule 1, offset 0 ("allow\vtcp"): expected "allow" or "deny"`},
	{"no-break space is not whitespace", "allow tcp\u00a0from", `rule 1, offset 6 ("tcp\u00a0from"): expected "tcp", "udp", "icmp", "icmpv6", "from", "to" or end of rule`},
	{"non-ASCII word", "allow tcp frôm", `rule 1, offset 10 ("frôm"): expected "from", "to" or end of rule`},
	{"invalid UTF-8", "allow tcp \xff", `rule 1, offset 10 ("\xff"): expected "from", "to" or end of rule`},
	{"long word cut", "allow " + strings.Repeat("x", 100),
		`rule 1, offset 6 ("` + strings.Repeat("x", 61) + `..."): expected "tcp", "udp", "icmp", "icmpv6", "from", "to" or end of rule`},
	{"long word cut on a rune boundary", "allow " + strings.Repeat("é", 40),
		`rule 1, offset 6 ("` + strings.Repeat("é", 30) + `..."): expected "tcp", "udp", "icmp", "icmpv6", "from", "to" or end of rule`},
	{"offset counts bytes", "allow from label é=1; allow tcp from prots",
		`rule 1, offset 17 ("é=1"): expected KEY=VALUE, each of [A-Za-z0-9/._-]+ ("é" is not allowed)`},
	{"offset in a later line", "allow tcp to ports 443;\nallow udp to ports 53;\nallow tcp to ports 80,8o",
		`rule 3, offset 69 ("8o"): expected a port 0..65535 or a range A:B with A <= B`},
	{"first error wins", "allow foo; allow bar", `rule 1, offset 6 ("foo"): expected "tcp", "udp", "icmp", "icmpv6", "from", "to" or end of rule`},
}

func TestParseErrors(t *testing.T) {
	for _, tt := range errorTests {
		t.Run(tt.name, func(t *testing.T) {
			rules, err := Parse(tt.in)
			require.Nil(t, rules)
			var se *SyntaxError
			require.ErrorAs(t, err, &se)
			require.Equal(t, tt.want, err.Error())
			// The offset points at the word the message names, or at the end of its rule.
			require.LessOrEqual(t, se.Offset, len(tt.in))
			require.True(t, strings.HasPrefix(tt.in[se.Offset:], se.Word))
		})
	}
}

func TestSyntaxErrorFields(t *testing.T) {
	_, err := Parse("allow tcp; deny tcp from ports 22 label a=b ports 23")
	var se *SyntaxError
	require.True(t, errors.As(err, &se))
	require.Equal(t, &SyntaxError{
		Rule:     2,
		Offset:   44,
		Word:     "ports",
		Expected: `"cidr", "to" or end of rule`,
		Hint:     `"ports" at most once per clause: list the ports comma-separated`,
	}, se)

	_, err = Parse("allow tcp to ports 80,x")
	require.True(t, errors.As(err, &se))
	require.Equal(t, &SyntaxError{Rule: 1, Offset: 22, Word: "x", Expected: expectPort}, se)

	_, err = Parse("allow icmp type")
	require.True(t, errors.As(err, &se))
	require.Equal(t, &SyntaxError{Rule: 1, Offset: 15, Expected: expectType}, se)
}

func TestParseNumber(t *testing.T) {
	for _, tt := range []struct {
		in   string
		max  int
		want int
		ok   bool
	}{
		{"0", 0, 0, true},
		{"00000", 254, 0, true},
		{"254", 254, 254, true},
		{"255", 254, 0, false},
		{"65535", 65535, 65535, true},
		{"065535", 65535, 65535, true},
		{"65536", 65535, 0, false},
		{"18446744073709551617", 65535, 0, false},
		{"", 65535, 0, false},
		{"+1", 65535, 0, false},
		{"1 ", 65535, 0, false},
		{"١", 65535, 0, false}, // an Arabic-Indic digit is not a decimal digit here
	} {
		got, ok := parseNumber(tt.in, tt.max)
		require.Equal(t, tt.ok, ok, tt.in)
		require.Equal(t, tt.want, got, tt.in)
	}
}
