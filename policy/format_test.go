package policy

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestFormatRule(t *testing.T) {
	for _, tt := range []struct{ in, want string }{
		{"allow", "allow"},
		{"deny", "deny"},
		{"allow tcp from", "allow tcp"},
		{"allow from to", "allow"},
		{"allow   udp\tto\nports 053,0:0,1:65535", "allow udp to ports 53,0,1:65535"},
		{"allow icmp type 08", "allow icmp type 8"},
		{"deny icmpv6 type 1 code 004 to cidr ::1", "deny icmpv6 type 1 code 4 to cidr ::1/128"},
		{"allow tcp from ports 1:2 label a=b cidr 10.1.2.3/8 to ports 3 label c=d cidr 2001:DB8::/32",
			"allow tcp from ports 1:2 label a=b cidr 10.0.0.0/8 to ports 3 label c=d cidr 2001:db8::/32"},
		{"allow to label app.kubernetes.io/name=web", "allow to label app.kubernetes.io/name=web"},
		{"allow from cidr 10.0.0.1", "allow from cidr 10.0.0.1/32"},
	} {
		rules, err := Parse(tt.in)
		require.NoError(t, err, tt.in)
		require.Len(t, rules, 1, tt.in)
		require.Equal(t, tt.want, FormatRule(rules[0]), tt.in)
	}
}

// requireRoundTrip checks that the rules of in, formatted and joined, parse to the same rules.
func requireRoundTrip(t testing.TB, in string) {
	rules, err := Parse(in)
	if err != nil {
		return
	}
	texts := make([]string, len(rules))
	for i, r := range rules {
		texts[i] = FormatRule(r)
	}
	again, err := Parse(strings.Join(texts, "; "))
	require.NoError(t, err, "formatted %q", texts)
	require.Equal(t, withoutSource(rules), withoutSource(again), "formatted %q", texts)
}

func TestFormatRoundTrip(t *testing.T) {
	for _, tt := range parseTests {
		requireRoundTrip(t, tt.in)
	}
}

func TestStrings(t *testing.T) {
	require.Equal(t, "allow", Allow.String())
	require.Equal(t, "deny", Deny.String())
	require.Equal(t, "Action(7)", Action(7).String())
	require.Equal(t, "any", ProtoAny.String())
	require.Equal(t, "icmpv6", ProtoICMPv6.String())
	require.Equal(t, "Protocol(9)", Protocol(9).String())
	require.Equal(t, "80", port(80).String())
	require.Equal(t, "80:90", PortRange{80, 90}.String())
	require.Equal(t, "a=b", Label{"a", "b"}.String())
}

func TestMarshalRulesJSON(t *testing.T) {
	for _, tt := range []struct {
		name, in, ns, want string
	}{
		{"no rules", ";", "default", `[]`},
		{"bare allow", "allow", "default", "[\n" + `  {"action":"allow"}` + "\n]"},
		{"seed", "allow from label role=backend; allow tcp to ports 2379,443", "production", "[\n" +
			`  {"action":"allow","src_tag":"production_role_backend"},` + "\n" +
			`  {"action":"allow","protocol":"tcp","dst_ports":[2379,443]}` + "\n]"},
		{"every tcp field", "deny tcp from ports 53,1:2,7:7 label a=b cidr 10.1.0.0/8 to ports 0:65535 label app.kubernetes.io/name=web cidr 2001:DB8::1",
			"my-ns", "[\n" +
				`  {"action":"deny","protocol":"tcp","src_tag":"my-ns_a_b","dst_tag":"my-ns_app.kubernetes.io_name_web",` +
				`"src_net":"10.0.0.0/8","dst_net":"2001:db8::1/128","src_ports":[53,"1:2",7],"dst_ports":["0:65535"]}` + "\n]"},
		{"icmp type and code", "allow icmp type 0 code 0; allow icmpv6 type 128; allow icmp", "default", "[\n" +
			`  {"action":"allow","protocol":"icmp","icmp_type":0,"icmp_code":0},` + "\n" +
			`  {"action":"allow","protocol":"icmpv6","icmp_type":128},` + "\n" +
			`  {"action":"allow","protocol":"icmp"}` + "\n]"},
		{"tag escaping", "allow from label Tier=Front_End to label x=y", "ns", "[\n" +
			`  {"action":"allow","src_tag":"ns_Tier_Front__End","dst_tag":"ns_x_y"}` + "\n]"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			rules, err := Parse(tt.in)
			require.NoError(t, err)
			got, err := MarshalRulesJSON(rules, tt.ns)
			require.NoError(t, err)
			require.Equal(t, tt.want, string(got))
		})
	}
}

func TestMarshalRulesJSONNoNamespace(t *testing.T) {
	_, err := MarshalRulesJSON([]Rule{{}}, "")
	require.ErrorIs(t, err, ErrNoNamespace)
	require.EqualError(t, err, "marshal rules: no namespace")
}
