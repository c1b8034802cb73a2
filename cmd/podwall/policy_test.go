package main

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

const noRulesNote = "podwall: the annotation has no rules: it isolates the pod (only replies, the node and neighbour discovery reach it)\n"

func TestPolicyParse(t *testing.T) {
	for _, tt := range []cliTest{
		{
			name:   "seed example",
			args:   []string{"policy", "parse", "allow from label role=backend; allow tcp to ports 2379,443"},
			stdout: "allow from label role=backend;\nallow tcp to ports 2379,443;\n",
		},
		{
			name:   "canonical text",
			args:   []string{"policy", "parse", "-o", "text", " deny\ttcp  from ports 080 cidr 10.1.2.3/8 ;; allow icmpv6 type 128 code 0 to cidr 2001:DB8::1;"},
			stdout: "deny tcp from ports 80 cidr 10.0.0.0/8;\nallow icmpv6 type 128 code 0 to cidr 2001:db8::1/128;\n",
		},
		{
			name: "json in the default namespace",
			args: []string{"policy", "parse", "-o", "json", "allow from label role=backend; allow tcp to ports 2379,443"},
			stdout: "[\n" +
				`  {"action":"allow","src_tag":"default_role_backend"},` + "\n" +
				`  {"action":"allow","protocol":"tcp","dst_ports":[2379,443]}` + "\n]\n",
		},
		{
			name: "json in a namespace",
			args: []string{"policy", "parse", "-n", "production", "-o", "json", "deny udp from ports 53,1:2 label a=b to label Tier=Front_End cidr ::/0"},
			stdout: "[\n" +
				`  {"action":"deny","protocol":"udp","src_tag":"production_a_b","dst_tag":"production_Tier_Front__End","dst_net":"::/0","src_ports":[53,"1:2"]}` +
				"\n]\n",
		},
		{
			name:   "stdin",
			args:   []string{"policy", "parse", "-"},
			stdin:  "allow tcp from label role=backend\n",
			stdout: "allow tcp from label role=backend;\n",
		},
		{
			name:   "no rules",
			args:   []string{"policy", "parse", " ; "},
			stderr: noRulesNote,
		},
		{
			name:   "no rules json",
			args:   []string{"policy", "parse", "-o", "json", ""},
			stdout: "[]\n",
			stderr: noRulesNote,
		},
		{
			name:   "more rules than the agent takes",
			args:   []string{"policy", "parse", strings.Repeat("allow;", 1025)},
			stderr: "podwall: 1025 rules, at most 1024: too many rules\n",
			code:   1,
		},
		{
			name:   "more entries than the budget",
			args:   []string{"policy", "parse", "--policy-budget", "2", "allow tcp to ports 1,3,5"},
			stderr: "podwall: 3 entries in map pol_port, over the budget of 2 a policy may have in one map (--policy-budget): policy over budget\n",
			code:   1,
		},
		{
			name:   "within the budget",
			args:   []string{"policy", "parse", "--policy-budget", "3", "allow tcp to ports 1,3,5"},
			stdout: "allow tcp to ports 1,3,5;\n",
		},
		{
			name:   "syntax error",
			args:   []string{"policy", "parse", "-o", "json", "allow udp from; allow tcp from prots"},
			stderr: `podwall: rule 2, offset 31 ("prots"): expected "ports", "label", "cidr", "to" or end of rule` + "\n",
			code:   1,
		},
		{
			name:   "syntax error from stdin",
			args:   []string{"policy", "parse", "-"},
			stdin:  "allow tcp to ports 80\nallow udp",
			stderr: `podwall: rule 1, offset 22 ("allow"): expected "label", "cidr" or end of rule (rules are separated by ";")` + "\n",
			code:   1,
		},
		{
			name:   "unknown output",
			args:   []string{"policy", "parse", "-o", "yaml", "allow"},
			stderr: "podwall: unknown output format \"yaml\": want text or json\n",
			code:   1,
		},
		{
			name:   "no annotation",
			args:   []string{"policy", "parse"},
			stderr: "podwall: want one ANNOTATION (\"-\" reads stdin) or -f POD.yaml, got 0 arguments\n",
			code:   1,
		},
		{
			name:   "two annotations",
			args:   []string{"policy", "parse", "allow", "deny"},
			stderr: "podwall: want one ANNOTATION (\"-\" reads stdin) or -f POD.yaml, got 2 arguments\n",
			code:   1,
		},
		{
			name:   "empty namespace",
			args:   []string{"policy", "parse", "-n", "", "allow"},
			stderr: "podwall: -n: empty namespace\n",
			code:   1,
		},
		{
			name:   "unknown flag",
			args:   []string{"policy", "parse", "--bogus", "allow"},
			stderr: "podwall: unknown flag: --bogus\n",
			code:   1,
		},
		{
			name: "pod manifest",
			args: []string{"policy", "parse", "-f", "testdata/pod.yaml", "-o", "json"},
			stdout: "[\n" +
				`  {"action":"allow","src_tag":"production_role_frontend"},` + "\n" +
				`  {"action":"allow","protocol":"tcp","dst_ports":[2379,443]}` + "\n]\n",
		},
		{
			name:   "pod manifest json",
			args:   []string{"policy", "parse", "-f", "testdata/pod.json"},
			stdout: "allow tcp from label app.kubernetes.io/name=web cidr 10.0.0.0/8 to ports 80,8000:8080;\n",
		},
		{
			name:   "pod manifest from stdin",
			args:   []string{"policy", "parse", "-o", "json", "-f", "-"},
			stdin:  `{"kind": "Pod", "metadata": {"name": "p", "namespace": "ns", "annotations": {"projectcalico.org/policy": "allow from label a=b"}}}`,
			stdout: "[\n" + `  {"action":"allow","src_tag":"ns_a_b"}` + "\n]\n",
		},
		{
			name:   "legacy key",
			args:   []string{"policy", "parse", "-f", "testdata/legacy.yaml"},
			stdout: "allow icmp type 8;\ndeny tcp from cidr 2001:db8::/32;\n",
		},
		{
			name: "legacy key off",
			args: []string{"policy", "parse", "-f", "testdata/legacy.yaml", "--legacy-policy-key=false"},
			stderr: `podwall: pod default/old has no "projectcalico.org/policy" annotation, and its legacy "policy" annotation is not read (--legacy-policy-key=false):` +
				` the agent's --default-policy applies ("namespace" unless set: only pods of namespace default may connect)` + "\n",
		},
		{
			name:   "namespaced key wins",
			args:   []string{"policy", "parse", "-f", "testdata/both-keys.yaml"},
			stdout: "deny udp;\n",
		},
		{
			name:   "no policy annotation",
			args:   []string{"policy", "parse", "-o", "json", "-f", "testdata/no-policy.yaml"},
			stderr: `podwall: pod shop/plain has no policy annotation: the agent's --default-policy applies ("namespace" unless set: only pods of namespace shop may connect)` + "\n",
		},
		{
			name:   "invalid annotation in a manifest",
			args:   []string{"policy", "parse", "-f", "testdata/invalid.yaml"},
			stderr: `podwall: annotation projectcalico.org/policy of pod shop/broken: rule 2, offset 30 ("80,"): expected a port 0..65535 or a range A:B with A <= B (empty entry: ports are comma-separated, without spaces)` + "\n",
			code:   1,
		},
		{
			name:   "manifest and annotation",
			args:   []string{"policy", "parse", "-f", "testdata/pod.yaml", "allow"},
			stderr: "podwall: give an ANNOTATION or -f POD.yaml, not both\n",
			code:   1,
		},
		{
			name:   "manifest and namespace",
			args:   []string{"policy", "parse", "-f", "testdata/pod.yaml", "-n", "default"},
			stderr: "podwall: -n does not go with -f: the namespace comes from the manifest\n",
			code:   1,
		},
	} {
		t.Run(tt.name, func(t *testing.T) { requireCLI(t, tt) })
	}
}

// The text output is itself an annotation with the same rules.
func TestPolicyParseTextReparses(t *testing.T) {
	in := "deny tcp from ports 1:2,3 label a=b cidr 10.9.0.0/16 to ports 443 label c=d cidr 10.0.0.1; ;" +
		"allow icmp type 3 code 4 from label x=y; allow udp; allow to cidr fd00::/8"
	first, stderr, code := runInProcess([]string{"policy", "parse", in}, "")
	require.Equal(t, 0, code, stderr)
	second, stderr, code := runInProcess([]string{"policy", "parse", "-"}, first)
	require.Equal(t, 0, code, stderr)
	require.Equal(t, first, second)
	json1, _, _ := runInProcess([]string{"policy", "parse", "-o", "json", in}, "")
	json2, _, _ := runInProcess([]string{"policy", "parse", "-o", "json", "-"}, first)
	require.Equal(t, json1, json2)
}

func TestReadPodErrors(t *testing.T) {
	for _, tt := range []cliTest{
		{
			name:   "missing file",
			args:   []string{"policy", "parse", "-f", "testdata/missing.yaml"},
			stderr: "podwall: read pod manifest: open testdata/missing.yaml: no such file or directory\n",
			code:   1,
		},
		{
			name:   "not YAML",
			args:   []string{"policy", "parse", "-f", "testdata/bad.yaml"},
			stderr: "podwall: parse pod manifest testdata/bad.yaml: error converting YAML to JSON: yaml: line 2: did not find expected node content\n",
			code:   1,
		},
		{
			name:   "not a Pod",
			args:   []string{"policy", "parse", "-f", "testdata/deployment.yaml"},
			stderr: "podwall: pod manifest testdata/deployment.yaml: kind is \"Deployment\", want \"Pod\"\n",
			code:   1,
		},
		{
			name:   "no kind",
			args:   []string{"tags", "-f", "-"},
			stdin:  "metadata: {name: a}\n",
			stderr: "podwall: pod manifest -: kind is \"\", want \"Pod\"\n",
			code:   1,
		},
		{
			name:   "empty",
			args:   []string{"tags", "-f", "-"},
			stderr: "podwall: pod manifest -: kind is \"\", want \"Pod\"\n",
			code:   1,
		},
		{
			name:   "no name",
			args:   []string{"policy", "parse", "-f", "testdata/unnamed.yaml"},
			stderr: "podwall: pod manifest testdata/unnamed.yaml: no metadata.name\n",
			code:   1,
		},
		{
			name:   "two documents",
			args:   []string{"tags", "-f", "testdata/two-docs.yaml"},
			stderr: "podwall: pod manifest testdata/two-docs.yaml: 2 documents, want one Pod\n",
			code:   1,
		},
		{
			name:   "bad second document",
			args:   []string{"tags", "-f", "-"},
			stdin:  "kind: Pod\nmetadata: {name: a}\n---\nkind: Pod\nmetadata: [\n",
			stderr: "podwall: parse pod manifest -: yaml: line 5: did not find expected node content\n",
			code:   1,
		},
		{
			name:   "document markers around one Pod",
			args:   []string{"tags", "-f", "-"},
			stdin:  "---\nkind: Pod\nmetadata: {name: a}\n---\n",
			stdout: "namespace_default\ndefault_a\n",
		},
	} {
		t.Run(tt.name, func(t *testing.T) { requireCLI(t, tt) })
	}
}
