package main

import "testing"

func TestTags(t *testing.T) {
	for _, tt := range []cliTest{
		{
			name:   "seed example",
			args:   []string{"tags", "-f", "testdata/pod.yaml"},
			stdout: "namespace_production\nproduction_pod1\nproduction_role_backend\nproduction_version_v1.2.3\n",
		},
		{
			name:   "escaping and order",
			args:   []string{"tags", "-f", "testdata/pod.json"},
			stdout: "namespace_my-ns\nmy-ns_web-0\nmy-ns_Tier_Front__End\nmy-ns_app.kubernetes.io_name_web\n",
		},
		{
			name:   "default namespace, no labels",
			args:   []string{"tags", "-f", "testdata/legacy.yaml"},
			stdout: "namespace_default\ndefault_old\n",
		},
		{
			name:   "stdin",
			args:   []string{"tags", "-f", "-"},
			stdin:  "kind: Pod\nmetadata:\n  name: my_pod\n  namespace: ns\n  labels: {b: \"2\", a: x_y}\n",
			stdout: "namespace_ns\nns_my__pod\nns_a_x__y\nns_b_2\n",
		},
		{
			name:   "no manifest",
			args:   []string{"tags"},
			stderr: "podwall: required flag(s) \"filename\" not set\n",
			code:   1,
		},
		{
			name:   "argument",
			args:   []string{"tags", "-f", "testdata/pod.yaml", "extra"},
			stderr: "podwall: unknown command \"extra\" for \"podwall tags\"\n",
			code:   1,
		},
	} {
		t.Run(tt.name, func(t *testing.T) { requireCLI(t, tt) })
	}
}
